package filestore

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Update changes the store under an exclusive lock: it loads the files as
// they are on disk, applies change to their data, validates the result
// and writes what changed: the token records it changed appended to the
// token file, the other files replaced atomically. Nothing is written when
// the store cannot be loaded (a lost file among the reasons), or when
// change or validation fails. The first Update creates every file of the
// store. change must not call the Store's write methods.
func (s *Store) Update(_ context.Context, change func(*Data) error) error {
	lock, err := lockStore(s.opts.Path + ".lock")
	if err != nil {
		return err
	}
	defer lock.unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	cur, err := s.load(s.state, loadWrite)
	if err != nil {
		s.failedLoads.Add(1)
		return fmt.Errorf("store not written: %w", err)
	}
	s.publish(cur)
	d, err := cur.data()
	if err != nil {
		return err
	}
	// The store file is compared as it would be written, not as it is on
	// disk, so that a hand-edited file keeps its comments and layout until
	// its own records change.
	oldRaw, err := d.marshal()
	if err != nil {
		return fmt.Errorf("encode store: %w", err)
	}
	if err := change(d); err != nil {
		return err
	}
	if err := d.validate(); err != nil {
		return err
	}
	if err := s.write(cur, d, oldRaw); err != nil {
		return err
	}
	if !cur.complete {
		if err := lock.markComplete(); err != nil {
			return err
		}
	}
	next, err := s.load(cur, loadWrite)
	if err != nil {
		return fmt.Errorf("load after write: %w", err)
	}
	s.publish(next)
	return nil
}

// write writes what d changed of cur, and every file cur lacks. Only what
// changed is written, so that the other files keep their stamps and
// serving processes do not read them again.
func (s *Store) write(cur *state, d *Data, oldRaw []byte) error {
	newRaw, err := d.marshal()
	if err != nil {
		return fmt.Errorf("encode store: %w", err)
	}
	newCreds, err := d.marshalCredentials()
	if err != nil {
		return fmt.Errorf("encode credentials: %w", err)
	}
	newAPI, err := d.marshalAPITokens()
	if err != nil {
		return fmt.Errorf("encode API tokens: %w", err)
	}
	// A new store file goes first: a crash after it leaves a store that
	// loads, where the others without it would be a lost store file.
	storeDue := !bytes.Equal(newRaw, oldRaw)
	if !cur.store.exists {
		if err := writeAtomic(s.opts.Path, newRaw); err != nil {
			return err
		}
		storeDue = false
	}
	if err := s.writeTokens(cur.tokens, &d.Tokens); err != nil {
		return err
	}
	for _, f := range []struct {
		path string
		old  filePart
		new  []byte
	}{
		{s.opts.CredentialsPath, cur.creds, newCreds},
		{s.opts.APITokensPath, cur.api, newAPI},
	} {
		if !f.old.exists || !bytes.Equal(f.new, f.old.raw) {
			if err := writeAtomic(f.path, f.new); err != nil {
				return err
			}
		}
	}
	if storeDue {
		return writeAtomic(s.opts.Path, newRaw)
	}
	return nil
}

// writeTokens writes an Update's token changes: appended to the token
// file, in one write; or the file written whole when it does not exist
// yet, ends in an unfinished line (a write cut short), or would hold more
// superseded lines than records.
func (s *Store) writeTokens(l *tokenLog, t *Tokens) error {
	changes := t.written()
	switch {
	case l.exists && len(changes) == 0:
		return nil
	case !l.exists || l.pending() || s.compactDue(l.scan.records+len(changes), t.Len()):
		var all []tokenChange
		for id, td := range t.All() {
			all = append(all, tokenChange{id, new(td)})
		}
		data, err := encodeTokenFile(all)
		if err != nil {
			return fmt.Errorf("encode tokens: %w", err)
		}
		return writeAtomic(s.opts.TokensPath, data)
	}
	data, err := encodeTokenChanges(changes)
	if err != nil {
		return fmt.Errorf("encode tokens: %w", err)
	}
	return appendFile(s.opts.TokensPath, l.fi, data)
}

// compactDue reports whether a token file of lines token lines, records of
// them in force, is due to be written whole.
func (s *Store) compactDue(lines, records int) bool {
	superseded := lines - records
	return superseded > records && superseded >= s.compactMin
}

// appendFile appends data to the file at path in one write and syncs it.
// The file must still be fi, the one loaded: a file put in its place
// since holds lines this write did not see.
func appendFile(path string, fi os.FileInfo, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer f.Close()
	now, err := f.Stat()
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if !os.SameFile(now, fi) {
		return fmt.Errorf("write %s: %w", path, errBusy)
	}
	// Files made readable by others by hand are tightened.
	if now.Mode().Perm() != 0o600 {
		if err := f.Chmod(0o600); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// writeAtomic replaces the file at path with data: a new file (mode 0600)
// synced and renamed over it, and the rename synced, so that a reader sees
// the old file or the new one whole, and a crash leaves one of them.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// storeLock is the store's lock file, held by one writer at a time. Its
// content says whether every file of the store was written: once it does,
// a missing file is a lost one.
type storeLock struct{ f *os.File }

// completeMark is what the lock file holds once the store is complete.
const completeMark = "keyward store lock. Every file of this store has been written: " +
	"one that goes missing or empty is a lost file, not an empty store.\n"

func lockStore(path string) (*storeLock, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock store: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock store: %w", err)
	}
	return &storeLock{f}, nil
}

func (l *storeLock) unlock() {
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
}

// markComplete records that every file of the store was written.
func (l *storeLock) markComplete() error {
	if _, err := l.f.WriteAt([]byte(completeMark), 0); err != nil {
		return fmt.Errorf("lock store: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("lock store: %w", err)
	}
	return nil
}

// lockComplete reports whether the lock file at path says the store is
// complete.
func lockComplete(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Size() > 0
}
