package filestore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"github.com/keyward/keyward/token"
)

// The token file is a log: a header line, then one JSON line per change,
// a later line for an id superseding the earlier ones. A writer appends
// what an Update changed, in one write under the store's lock, so that a
// token costs the same to create however many the file holds, and a
// serving process reads only the lines added since its last look. Several
// lines written together (a rotation: the new token and the old one
// replaced) follow a batch line that counts them, and are taken together
// or not at all. When more than half the lines are superseded, a writer
// rewrites the file whole (a new file renamed over the old one), which
// readers notice as another file and read whole.
//
//	{"format":"keyward-tokens/1"}
//	{"id":"W643FQxPzZ67skCt","user":"alice","group":"eng","hash":"…","created":"…"}
//	{"batch":2}
//	{"id":"Xq2…","user":"alice","group":"eng","hash":"…","created":"…"}
//	{"id":"W643FQxPzZ67skCt","user":"alice",…,"replaced_by":"Xq2…"}
//	{"id":"W643FQxPzZ67skCt","deleted":true}

// logLine is any line of the token file.
type logLine struct {
	// Format is set on the header line only.
	Format string `json:"format,omitempty"`
	// Batch is set on a batch line only: how many lines follow in it.
	Batch int    `json:"batch,omitempty"`
	ID    string `json:"id"`
	// Deleted marks a line that removes the token; it holds only the id.
	Deleted bool `json:"deleted,omitempty"`
	TokenData
}

// Lines a writer writes.
type (
	headerLine struct {
		Format string `json:"format"`
	}
	batchLine struct {
		Batch int `json:"batch"`
	}
	tokenLine struct {
		ID string `json:"id"`
		TokenData
	}
	deletedLine struct {
		ID      string `json:"id"`
		Deleted bool   `json:"deleted"`
	}
)

// logScan is where reading the token file stopped.
type logScan struct {
	// lineNo is how many lines were read, for error messages.
	lineNo int
	// records is how many token lines were read: the records and the
	// lines that superseded or deleted them.
	records int
	// started is set once a line other than a blank one was read: the
	// header may come only before.
	started bool
	// header is set when the file has a header line.
	header bool
}

// scan applies the complete lines of raw to b, and returns how many bytes
// it consumed: up to the end of the last complete line or batch. What
// follows is a write in progress, a write cut short, or a hand edit
// without a final newline: a whole record there is applied (and read again
// next time), an incomplete one or an unfinished batch waits.
func (sc *logScan) scan(raw []byte, b *indexBuilder) (int, error) {
	pos := 0
	for pos < len(raw) {
		line, end, complete := cutLine(raw, pos)
		if !complete {
			return pos, sc.unterminated(line, b)
		}
		next := *sc // committed once the line (or batch) is whole
		next.lineNo++
		l, err := next.decode(line)
		if err != nil {
			return pos, err
		}
		switch {
		case l != nil && l.Batch != 0:
			if end, err = next.batch(raw, end, l.Batch, b); end == 0 || err != nil {
				return pos, err
			}
		case l != nil && l.Format == "":
			if err := apply(l, b, next.lineNo); err != nil {
				return pos, err
			}
			next.records++
		}
		*sc = next
		pos = end
	}
	return pos, nil
}

// cutLine returns the line at pos, where the next one starts, and whether
// the line ends in a newline.
func cutLine(raw []byte, pos int) (line []byte, next int, complete bool) {
	i := bytes.IndexByte(raw[pos:], '\n')
	if i < 0 {
		return raw[pos:], len(raw), false
	}
	return raw[pos : pos+i], pos + i + 1, true
}

// decode decodes line sc.lineNo: nil for a blank one. A header is checked
// here, since it may only come first.
func (sc *logScan) decode(line []byte) (*logLine, error) {
	if len(bytes.TrimSpace(line)) == 0 {
		return nil, nil
	}
	l, err := decodeLine[logLine](line)
	if err != nil {
		return nil, lineError(sc.lineNo, "%w", err)
	}
	if l.Format != "" {
		if sc.started || l.Batch != 0 || l.ID != "" || l.Deleted || l.TokenData != (TokenData{}) {
			return nil, lineError(sc.lineNo, "a header line may only come first, alone")
		}
		if l.Format != tokenFile.format {
			return nil, lineError(sc.lineNo, "format %q: not a token file (%q)", l.Format, tokenFile.format)
		}
		sc.header = true
	}
	sc.started = true
	return l, nil
}

// batch applies the n token lines after the batch line sc read, which
// ends at pos, if they are all there: it returns where they end, or 0 if
// they are not.
func (sc *logScan) batch(raw []byte, pos, n int, b *indexBuilder) (int, error) {
	if n < 0 {
		return 0, lineError(sc.lineNo, "a batch of %d lines", n)
	}
	type numbered struct {
		l  *logLine
		no int
	}
	lines := make([]numbered, 0, min(n, 64))
	for len(lines) < n {
		line, end, complete := cutLine(raw, pos)
		if !complete {
			return 0, nil
		}
		pos = end
		sc.lineNo++
		l, err := sc.decode(line)
		switch {
		case err != nil:
			return 0, err
		case l == nil:
			continue
		case l.Format != "" || l.Batch != 0:
			return 0, lineError(sc.lineNo, "a batch holds token lines only")
		}
		lines = append(lines, numbered{l, sc.lineNo})
	}
	for _, nl := range lines {
		if err := apply(nl.l, b, nl.no); err != nil {
			return 0, err
		}
	}
	sc.records += n
	return pos, nil
}

// unterminated applies the file's last line, which has no newline, if it
// holds a whole record. It is not consumed: it is read again next time.
func (sc *logScan) unterminated(line []byte, b *indexBuilder) error {
	if len(bytes.TrimSpace(line)) == 0 {
		return nil
	}
	l, err := decodeLine[logLine](line)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) && bytes.HasPrefix(bytes.TrimSpace(line), []byte("{")):
		// The start of a line being written, or cut short: keyward's
		// lines are objects, of which no part is whole.
		return nil
	case err != nil:
		return lineError(sc.lineNo+1, "%w", err)
	case l.Format != "" || l.Batch != 0:
		return nil
	}
	return apply(l, b, sc.lineNo+1)
}

// apply applies token line l, line lineNo of the file.
func apply(l *logLine, b *indexBuilder, lineNo int) error {
	raw, ok := token.ParseID(l.ID)
	if l.Deleted {
		if !ok || l.TokenData != (TokenData{}) {
			return lineError(lineNo, "a deleted line holds a token id and nothing else")
		}
		b.remove(raw)
		return nil
	}
	// The index's names passed checkToken before they were added.
	user, knownUser := b.lookup(l.User)
	group, knownGroup := b.lookup(l.Group)
	if err := checkToken(l.ID, &l.TokenData, knownNames{user: knownUser, group: knownGroup}); err != nil {
		return lineError(lineNo, "%w", err)
	}
	if !knownUser {
		user = b.name(l.User)
	}
	if !knownGroup {
		group = b.name(l.Group)
	}
	b.setNamed(raw, &l.TokenData, user, group)
	return nil
}

// lineError is an error in line lineNo of the token file.
func lineError(lineNo int, format string, args ...any) error {
	return fmt.Errorf("%s line %d: %w", tokenFile.name, lineNo, fmt.Errorf(format, args...))
}

// tokenLog is the token file as a load left it. A load makes a new one;
// one is never changed.
type tokenLog struct {
	// exists is set when there was a file.
	exists bool
	// f is the file read, kept open so that no other file can take its
	// inode number while this log tells an append to it from a new file
	// by that number. The Store closes it when no state in force has it.
	f *os.File
	// fi is f's information, size how much of it was read.
	fi   os.FileInfo
	size int64
	// off is where reading stopped: after the last complete line.
	off int64
	// tail are the bytes just before off: an append leaves them as they
	// are, a rewrite in place almost never does.
	tail []byte
	scan logScan
	// index holds the records.
	index *tokenIndex
	// intern is the index builder's, kept for the next one.
	intern map[string]uint32
}

// tailKeep is how many bytes before the end of what was read a log keeps
// to tell an append from an edit in place: about twenty lines.
const tailKeep = 4096

// pending reports whether the file holds more than was consumed: an
// unfinished line or batch.
func (l *tokenLog) pending() bool { return l.size > l.off }

// sync brings l up to date with the file at path: when the file is the
// one l read and grew, only what was appended is read; when it is another
// file or was changed in place, all of it. A file that shrank in place lost
// lines that were read: that is a lost file, not a smaller store.
func (l *tokenLog) sync(path string) (*tokenLog, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &tokenLog{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read token file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read token file: %w", err)
	}
	if l.f != nil && os.SameFile(l.fi, fi) {
		f.Close() // l holds this file open already
		switch {
		case fi.Size() < l.off:
			return nil, lostFile(path, fmt.Sprintf("shrank in place from %d to %d bytes; keyward only appends to it "+
				"(to change it by hand, write a new file and rename it over this one)", l.off, fi.Size()))
		case fi.Size() == l.size && fi.ModTime().Equal(l.fi.ModTime()):
			return l, nil
		}
		if next, err := l.readTail(fi, path); next != nil || err != nil {
			return next, err
		}
		if f, err = os.Open(path); err != nil {
			return nil, fmt.Errorf("read token file: %w", err)
		}
	}
	next, err := readLog(f, fi, path)
	if err != nil {
		f.Close()
	}
	return next, err
}

// readTail reads what was appended to the file l read. It returns nil
// when the bytes before l.off changed: the file was edited in place.
func (l *tokenLog) readTail(fi os.FileInfo, path string) (*tokenLog, error) {
	start := l.off - int64(len(l.tail))
	buf := make([]byte, fi.Size()-start)
	if _, err := l.f.ReadAt(buf, start); err != nil {
		return nil, lostFile(path, fmt.Sprintf("shrank while it was read: %v", err))
	}
	if !bytes.Equal(buf[:len(l.tail)], l.tail) {
		return nil, nil
	}
	next := *l
	b := deriveIndexBuilder(l.index, l.intern)
	n, err := next.scan.scan(buf[len(l.tail):], b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	next.fi, next.size, next.off = fi, fi.Size(), l.off+int64(n)
	next.tail = keepTail(buf[:len(l.tail)+n])
	next.index = b.x
	return &next, nil
}

// readChunk is how much of the token file readLog reads at a time. The
// file is scanned as it is read rather than read whole first: a store of
// 10^6 tokens has a token file of some 200 MiB, which would otherwise sit
// in memory beside the records it holds, twice over while it grew.
const readChunk = 1 << 20

// tokenLineSize is about the size of the lines keyward writes in the
// token file, to size the index of a file before it is read.
const tokenLineSize = 200

// readLog reads the whole file f, which the log it returns keeps open.
func readLog(f *os.File, fi os.FileInfo, path string) (*tokenLog, error) {
	l := &tokenLog{exists: true, f: f, fi: fi}
	b := sizedIndexBuilder(int(fi.Size() / tokenLineSize))
	// A small file is read in one buffer of its size: a 1 MiB buffer
	// for every load of a small store is most of what the load costs.
	blank, err := l.read(f, b, int(min(readChunk, max(fi.Size()+1, 4096))))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %w", path, err)
	case blank:
		return nil, lostFile(path, "is empty, and keyward never writes an empty token file")
	}
	l.index, l.intern = b.x, b.intern
	return l, nil
}

// read scans all of r into b, chunk bytes at a time, and sets l's size,
// off, tail and scan as a read of it all at once would. It reports
// whether r held only white space.
func (l *tokenLog) read(r io.Reader, b *indexBuilder, chunk int) (blank bool, err error) {
	// buf starts with what the last scan left: the start of a line or of
	// a batch, whose end a later read brings.
	buf := make([]byte, 0, chunk)
	var tail []byte
	blank = true
	for eof := false; !eof; {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf)) // a batch longer than the buffer
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		read := buf[len(buf) : len(buf)+n]
		buf = buf[:len(buf)+n]
		l.size += int64(n)
		blank = blank && len(bytes.TrimSpace(read)) == 0
		switch {
		case errors.Is(err, io.EOF):
			eof = true
		case err != nil:
			return false, fmt.Errorf("read token file: %w", err)
		}
		upTo := len(buf)
		if !eof {
			// Whole lines only: the last one may end in the next read.
			if upTo = bytes.LastIndexByte(buf, '\n') + 1; upTo == 0 {
				continue
			}
		}
		consumed, err := l.scan.scan(buf[:upTo], b)
		if err != nil {
			return false, err
		}
		l.off += int64(consumed)
		tail = lastBytes(tail, buf[:consumed])
		buf = buf[:copy(buf, buf[consumed:])]
	}
	l.tail = slices.Clone(tail)
	return blank, nil
}

// lastBytes returns the last tailKeep bytes of tail followed by more.
func lastBytes(tail, more []byte) []byte {
	if len(more) >= tailKeep {
		return append(tail[:0], more[len(more)-tailKeep:]...)
	}
	tail = append(tail, more...)
	if over := len(tail) - tailKeep; over > 0 {
		tail = tail[:copy(tail, tail[over:])]
	}
	return tail
}

// release closes l's file unless keep holds it too.
func (l *tokenLog) release(keep *tokenLog) {
	if l != nil && l.f != nil && (keep == nil || keep.f != l.f) {
		l.f.Close()
	}
}

func keepTail(b []byte) []byte {
	return slices.Clone(b[max(0, len(b)-tailKeep):])
}
