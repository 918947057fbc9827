package filestore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// A load reads the store's files into a state. The small files (the store
// file, .env, credentials, API tokens) are read whole when they changed;
// the token file is read as a log, from where the last load stopped.
//
// A store is a set of files that Update creates together, the store file
// first, and then records in the lock file that the set is complete. A
// load fails with ErrFileLost, rather than take an empty store, when:
//   - a file is empty (keyward writes a header in every file, so an empty
//     one was cut short), or the token file shrank in place (keyward only
//     appends to it);
//   - a file is missing while the lock file says the set was complete, or
//     the store file is missing while another file of the set is there;
//   - a file the last good load read (the .env file among them) is gone
//     or empty now.
//
// A store written by an older keyward, or by hand, is one whose lock file
// is empty: its missing JSON lines files are empty sets until the next
// Update completes it.

// loadMode says how a load tells whether a small file changed.
type loadMode int

const (
	// loadPoll trusts a file's stamp (inode, size, modification time):
	// the cheap look a poll takes at every interval.
	loadPoll loadMode = iota
	// loadWrite reads every small file and compares its content: a write
	// must start from what is on disk, even after an edit in place within
	// one tick of the file system's clock.
	loadWrite
)

// errBusy reports a file that changed while it was read (an editor saving
// in place): what was read may be half of it. A poll tries again at the
// next one.
var errBusy = errors.New("changed while it was read; try again")

// state is what a load read and the snapshot built from it. A load makes a
// new state, sharing what did not change with the last; one is never
// changed.
type state struct {
	store, env, creds, api filePart
	tokens                 *tokenLog
	// complete is set when the lock file says every file of the store
	// was written.
	complete bool
	snap     *snapshot
}

// filePart is one of the small files as a load read it.
type filePart struct {
	stamp  string
	raw    []byte
	exists bool
}

func (p filePart) same(q filePart) bool { return p.exists == q.exists && bytes.Equal(p.raw, q.raw) }

// blank reports whether the file is there but holds nothing.
func (p filePart) blank() bool { return p.exists && len(bytes.TrimSpace(p.raw)) == 0 }

// load reads the files into a new state, reusing what did not change
// since prev (the zero state for a first load).
func (s *Store) load(prev *state, mode loadMode) (*state, error) {
	next := &state{snap: &snapshot{}}
	// The files are read in the reverse of the order Update creates them
	// (the lock file's mark last), and keyward never removes one: a file
	// seen here was created after every file read after it, which were
	// there by then. Read the other way, a load beside a first Update
	// could see a file missing that the mark, read later, says is there.
	next.complete = lockComplete(s.opts.Path + ".lock")
	var err error
	for _, f := range []struct {
		path     string
		old, new *filePart
	}{
		{s.opts.APITokensPath, &prev.api, &next.api},
		{s.opts.CredentialsPath, &prev.creds, &next.creds},
	} {
		if *f.new, err = readPart(f.path, *f.old, mode); err != nil {
			return nil, err
		}
	}
	if next.tokens, err = prev.tokenLog().sync(s.opts.TokensPath); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		path     string
		old, new *filePart
	}{
		{s.opts.EnvPath, &prev.env, &next.env},
		{s.opts.Path, &prev.store, &next.store},
	} {
		if *f.new, err = readPart(f.path, *f.old, mode); err != nil {
			next.tokens.release(prev.tokens)
			return nil, err
		}
	}
	next.snap.tokens = next.tokens.index
	reused, err := s.buildParts(prev, next)
	if err == nil {
		err = s.checkSet(prev, next)
	}
	if err != nil {
		next.tokens.release(prev.tokens)
		return nil, err
	}
	if reused && next.tokens == prev.tokens {
		next.snap = prev.snap // nothing changed: the same records
	}
	return next, nil
}

func (st *state) tokenLog() *tokenLog {
	if st.tokens == nil {
		return &tokenLog{}
	}
	return st.tokens
}

// buildParts builds next's snapshot from the small files, reusing prev's
// parts whose files did not change. It reports whether it reused them all.
func (s *Store) buildParts(prev, next *state) (bool, error) {
	if prev.snap == nil {
		prev = &state{snap: &snapshot{}}
	}
	var err error
	reused := 0
	if prev.snap.policy != nil && next.store.same(prev.store) && next.env.same(prev.env) {
		next.snap.policy = prev.snap.policy
		reused++
	} else if next.snap.policy, err = s.buildPolicy(next.store, next.env); err != nil {
		return false, err
	}
	if prev.snap.credentials != nil && next.creds.same(prev.creds) {
		next.snap.credentials = prev.snap.credentials
		reused++
	} else if next.snap.credentials, err = buildLineFile(s.opts.CredentialsPath, next.creds, parseCredentials, buildCredentials); err != nil {
		return false, err
	}
	if prev.snap.apiTokens != nil && next.api.same(prev.api) {
		next.snap.apiTokens = prev.snap.apiTokens
		reused++
	} else if next.snap.apiTokens, err = buildLineFile(s.opts.APITokensPath, next.api, parseAPITokens, buildAPITokens); err != nil {
		return false, err
	}
	return reused == 3, nil
}

// buildPolicy parses the store file and the .env file.
func (s *Store) buildPolicy(store, env filePart) (*policy, error) {
	d, doc, err := parseStoreFile(store.raw)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.opts.Path, err)
	}
	if store.exists && !doc {
		return nil, lostFile(s.opts.Path, "holds no records (it is empty or only comments), and keyward never writes it so")
	}
	vars, err := ParseEnv(env.raw)
	if err != nil {
		return nil, fmt.Errorf("env file %s: %w", s.opts.EnvPath, err)
	}
	p, err := d.buildPolicy(func(k string) string {
		if v := s.opts.Getenv(k); v != "" {
			return v
		}
		return vars[k]
	})
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.opts.Path, err)
	}
	return p, nil
}

// buildLineFile parses and validates a JSON lines file that keyward
// rewrites whole.
func buildLineFile[R, B any](path string, f filePart, parse func([]byte) (R, bool, error), build func(R) (B, error)) (B, error) {
	var none B
	if f.blank() {
		return none, lostFile(path, "is empty, and keyward never writes an empty one")
	}
	r, _, err := parse(f.raw)
	if err != nil {
		return none, fmt.Errorf("%s: %w", path, err)
	}
	b, err := build(r)
	if err != nil {
		return none, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// checkSet fails for a file that is missing where the store had one.
func (s *Store) checkSet(prev, next *state) error {
	others := next.tokens.exists || next.creds.exists || next.api.exists
	var errs []error
	for _, f := range []struct {
		path                string
		exists, had, needed bool
	}{
		{s.opts.Path, next.store.exists, prev.store.exists, next.complete || others},
		{s.opts.TokensPath, next.tokens.exists, prev.tokenLog().exists, next.complete},
		{s.opts.CredentialsPath, next.creds.exists, prev.creds.exists, next.complete},
		{s.opts.APITokensPath, next.api.exists, prev.api.exists, next.complete},
	} {
		if !f.exists && (f.had || f.needed) {
			errs = append(errs, lostFile(f.path, "is missing where the store had one"))
		}
	}
	// The .env file is optional, but one that held provider keys and is
	// gone or empty now took them all with it.
	if prev.env.exists && !prev.env.blank() && (!next.env.exists || next.env.blank()) {
		errs = append(errs, lostFile(s.opts.EnvPath, "is missing or empty where it held provider keys"))
	}
	return errors.Join(errs...)
}

// readPart reads one of the small files. A poll skips a file whose stamp
// is the one prev read.
func readPart(path string, prev filePart, mode loadMode) (filePart, error) {
	if path == "" {
		return filePart{}, nil
	}
	stamp := fileStamp(path)
	if mode == loadPoll && prev.stamp != "" && stamp == prev.stamp {
		return prev, nil
	}
	raw, err := os.ReadFile(path)
	switch {
	case os.IsNotExist(err):
		return filePart{stamp: stamp}, nil
	case err != nil:
		return filePart{}, fmt.Errorf("read %s: %w", path, err)
	case fileStamp(path) != stamp:
		return filePart{}, fmt.Errorf("%s: %w", path, errBusy)
	}
	return filePart{stamp: stamp, raw: raw, exists: true}, nil
}

// fileStamp identifies a file's version without reading it: writers
// replace the file by rename (a new inode) and editors change its mtime.
func fileStamp(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "missing"
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf("%d/%d/%d", ino, fi.Size(), fi.ModTime().UnixNano())
}

// data returns the state's records as Update changes them.
func (st *state) data() (*Data, error) {
	d, _, err := parseStoreFile(st.store.raw)
	if err != nil {
		return nil, err
	}
	if d.credentials, _, err = parseCredentials(st.creds.raw); err != nil {
		return nil, err
	}
	if d.apiTokens, _, err = parseAPITokens(st.api.raw); err != nil {
		return nil, err
	}
	d.Tokens = Tokens{base: st.tokens.index}
	return d, nil
}

// reload loads what changed on disk since the last load, and swaps in the
// new snapshot if the records changed. It reports whether they did. A
// failed load leaves the last good records in force and is counted.
func (s *Store) reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ErrClosed
	}
	st, err := s.load(s.state, loadPoll)
	switch {
	case errors.Is(err, errBusy):
		return false, nil
	case err != nil:
		s.failedLoads.Add(1)
		return false, err
	}
	return s.publish(st), nil
}

// publish makes st the state in force, and reports whether its records
// differ from the last.
func (s *Store) publish(st *state) bool {
	changed := s.state == nil || st.snap != s.state.snap
	if s.state != nil {
		s.state.tokens.release(st.tokens)
	}
	s.state = st
	s.snap.Store(st.snap)
	return changed
}
