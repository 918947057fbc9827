// Package filestore is keyward's embedded store: a YAML file of providers,
// groups, users and signing keys that people edit, a token file of token
// hashes (one JSON record per line) that the CLI writes, a credentials file
// of users' own provider credentials (likewise, mode 0600: it holds their
// keys), an API token file of management token hashes (likewise), and
// provider keys read from environment variables or a .env file. It is for a first run and
// for single node use without Vault; it offers the same reads as the Vault
// store, and picks up changes to any of the files while keyward serves.
//
// Writers (the CLI) lock the file, re-read it, change it and replace it
// atomically, so concurrent commands lose nothing and a reader never sees a
// half-written file.
package filestore

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Store is the file-backed record store. Reads are served from an
// in-memory snapshot and never touch the disk.
type Store struct {
	opts Options
	snap atomic.Pointer[snapshot]

	mu sync.Mutex // serialises reloads
	// stamp identifies the files' versions at the last load.
	stamp string
}

// Options locate a Store's files.
type Options struct {
	// Path is the YAML store file. A missing file is an empty store,
	// created by the first write.
	Path string
	// TokensPath is the token file. Default: Path with its extension
	// replaced by ".tokens.jsonl".
	TokensPath string
	// CredentialsPath is the credentials file, which holds users' own
	// provider keys. Default: Path with its extension replaced by
	// ".credentials.jsonl".
	CredentialsPath string
	// APITokensPath is the API token file, which holds management token
	// hashes. Default: Path with its extension replaced by
	// ".api-tokens.jsonl".
	APITokensPath string
	// EnvPath is an optional .env file with provider keys.
	EnvPath string
	// Getenv reads the process environment, which wins over EnvPath.
	// Default os.Getenv.
	Getenv func(string) string
}

// DefaultTokensPath is where the token file of the store file at path is
// when Options.TokensPath is empty.
func DefaultTokensPath(path string) string {
	return strings.TrimSuffix(path, filepath.Ext(path)) + ".tokens.jsonl"
}

// DefaultCredentialsPath is where the credentials file of the store file
// at path is when Options.CredentialsPath is empty.
func DefaultCredentialsPath(path string) string {
	return strings.TrimSuffix(path, filepath.Ext(path)) + ".credentials.jsonl"
}

// DefaultAPITokensPath is where the API token file of the store file at
// path is when Options.APITokensPath is empty.
func DefaultAPITokensPath(path string) string {
	return strings.TrimSuffix(path, filepath.Ext(path)) + ".api-tokens.jsonl"
}

// Open loads the store.
func Open(opts Options) (*Store, error) {
	if opts.TokensPath == "" {
		opts.TokensPath = DefaultTokensPath(opts.Path)
	}
	if opts.CredentialsPath == "" {
		opts.CredentialsPath = DefaultCredentialsPath(opts.Path)
	}
	if opts.APITokensPath == "" {
		opts.APITokensPath = DefaultAPITokensPath(opts.Path)
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	s := &Store{opts: opts}
	if _, err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// wrapParse names the file a parse error is in.
func (s *Store) wrapParse(err error) error {
	var le *lineFileError
	if errors.As(err, &le) {
		path := s.opts.TokensPath
		switch le.file {
		case credentialsFile:
			path = s.opts.CredentialsPath
		case apiTokensFile:
			path = s.opts.APITokensPath
		}
		return fmt.Errorf("%s: %w", path, le.err)
	}
	return fmt.Errorf("store %s: %w", s.opts.Path, err)
}

// Path returns the store file's path.
func (s *Store) Path() string { return s.opts.Path }

// stamps identifies the versions of all the files.
func (s *Store) stamps() string {
	return fileStamp(s.opts.Path) + "|" + fileStamp(s.opts.TokensPath) + "|" +
		fileStamp(s.opts.CredentialsPath) + "|" + fileStamp(s.opts.APITokensPath) + "|" +
		fileStamp(s.opts.EnvPath)
}

// reload reads the files, and swaps in a new snapshot if they changed. It
// reports whether it did.
func (s *Store) reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	stamp := s.stamps()
	if stamp == s.stamp && s.snap.Load() != nil {
		return false, nil
	}
	f, err := s.readFiles()
	if err != nil {
		return false, err
	}
	env, err := readOptional(s.opts.EnvPath)
	if err != nil {
		return false, fmt.Errorf("read env file: %w", err)
	}
	if s.stamps() != stamp {
		// Written to while we read (an editor saving in place): this
		// may be half a file. The next poll reads it whole.
		return false, nil
	}
	snap, err := s.parse(f, env)
	if err != nil {
		return false, err
	}
	s.snap.Store(snap)
	s.stamp = stamp
	return true, nil
}

// files is the content of the store file and the JSON lines files beside
// it.
type files struct {
	store, tokens, credentials, apiTokens []byte
}

func (s *Store) readFiles() (f files, err error) {
	if f.store, err = readOptional(s.opts.Path); err != nil {
		return files{}, fmt.Errorf("read store: %w", err)
	}
	if f.tokens, err = readOptional(s.opts.TokensPath); err != nil {
		return files{}, fmt.Errorf("read token file: %w", err)
	}
	if f.credentials, err = readOptional(s.opts.CredentialsPath); err != nil {
		return files{}, fmt.Errorf("read credentials file: %w", err)
	}
	if f.apiTokens, err = readOptional(s.opts.APITokensPath); err != nil {
		return files{}, fmt.Errorf("read API token file: %w", err)
	}
	return f, nil
}

// fileStamp identifies a file's version without reading it: writers
// replace the file by rename (a new inode) and editors change its mtime.
func fileStamp(path string) string {
	if path == "" {
		return ""
	}
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

func (s *Store) parse(f files, env []byte) (*snapshot, error) {
	vars, err := ParseEnv(env)
	if err != nil {
		return nil, fmt.Errorf("env file %s: %w", s.opts.EnvPath, err)
	}
	getenv := func(k string) string {
		if v := s.opts.Getenv(k); v != "" {
			return v
		}
		return vars[k]
	}
	d, err := parseAll(f)
	if err != nil {
		return nil, s.wrapParse(err)
	}
	snap, err := d.build(getenv)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.opts.Path, err)
	}
	return snap, nil
}

func readOptional(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	return b, err
}

// WarnMissing logs the environment variables that provider keys name but
// that are not set (names only, never values).
func (s *Store) WarnMissing(log *slog.Logger) {
	if m := s.snap.Load().missingEnv; len(m) > 0 {
		log.Warn("provider keys not set in the environment", "variables", m)
	}
}

// Token returns the token record with the given id.
func (s *Store) Token(_ context.Context, id string) (*record.Token, error) {
	if t, ok := s.snap.Load().tokens.get(id); ok {
		return t, nil
	}
	return nil, fmt.Errorf("token %q: %w", id, record.ErrNotFound)
}

// User returns the named user.
func (s *Store) User(_ context.Context, name string) (*record.User, error) {
	return find(s.snap.Load().users, "user", name)
}

// Group returns the named group.
func (s *Store) Group(_ context.Context, name string) (*record.Group, error) {
	return find(s.snap.Load().groups, "group", name)
}

// Provider returns the named provider with its keys.
func (s *Store) Provider(_ context.Context, name string) (*record.Provider, error) {
	return find(s.snap.Load().providers, "provider", name)
}

// SigningKeys returns the token signing keys.
func (s *Store) SigningKeys(context.Context) ([]token.SigningKey, error) {
	return s.snap.Load().signingKeys, nil
}

func find[V any](m map[string]*V, kind, name string) (*V, error) {
	if v, ok := m[name]; ok {
		return v, nil
	}
	return nil, fmt.Errorf("%s %q: %w", kind, name, record.ErrNotFound)
}

// Update changes the store file under an exclusive lock: it re-reads the
// file, applies change to its data, validates the result and replaces the
// file atomically. Nothing is written when change or validation fails.
func (s *Store) Update(_ context.Context, change func(*Data) error) error {
	unlock, err := lockFile(s.opts.Path + ".lock")
	if err != nil {
		return err
	}
	defer unlock()
	f, err := s.readFiles()
	if err != nil {
		return err
	}
	d, err := parseAll(f)
	if err != nil {
		return s.wrapParse(err)
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
	if _, err := d.build(func(string) string { return "" }); err != nil {
		return err
	}
	newRaw, err := d.marshal()
	if err != nil {
		return fmt.Errorf("encode store: %w", err)
	}
	newTokens, err := d.marshalTokens()
	if err != nil {
		return fmt.Errorf("encode tokens: %w", err)
	}
	newCredentials, err := d.marshalCredentials()
	if err != nil {
		return fmt.Errorf("encode credentials: %w", err)
	}
	newAPITokens, err := d.marshalAPITokens()
	if err != nil {
		return fmt.Errorf("encode API tokens: %w", err)
	}
	// Only what changed is written, so that the other files keep their
	// stamps and serving processes do not re-read them.
	if !bytes.Equal(newTokens, f.tokens) {
		if err := writeAtomic(s.opts.TokensPath, newTokens); err != nil {
			return err
		}
	}
	if !bytes.Equal(newCredentials, f.credentials) {
		if err := writeAtomic(s.opts.CredentialsPath, newCredentials); err != nil {
			return err
		}
	}
	if !bytes.Equal(newAPITokens, f.apiTokens) {
		if err := writeAtomic(s.opts.APITokensPath, newAPITokens); err != nil {
			return err
		}
	}
	if !bytes.Equal(newRaw, oldRaw) {
		if err := writeAtomic(s.opts.Path, newRaw); err != nil {
			return err
		}
	}
	_, err = s.reload()
	return err
}

// Read returns the store's data as it is on disk now.
func (s *Store) Read(context.Context) (*Data, error) {
	f, err := s.readFiles()
	if err != nil {
		return nil, err
	}
	d, err := parseAll(f)
	if err != nil {
		return nil, s.wrapParse(err)
	}
	return d, nil
}

// EnsureSigningKey adds a random token signing key if the store has none.
func (s *Store) EnsureSigningKey(ctx context.Context) error {
	return s.Update(ctx, func(d *Data) error {
		if len(d.SigningKeys) > 0 {
			return nil
		}
		k, err := token.NewSigningKey(1)
		if err != nil {
			return err
		}
		d.SigningKeys = append(d.SigningKeys, SigningKeyData{ID: k.ID, Secret: base64.StdEncoding.EncodeToString(k.Secret)})
		return nil
	})
}

// HashString encodes a token hash for the store file.
func HashString(h [32]byte) string { return record.FormatHash(h) }

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write store: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write store: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write store: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write store: %w", err)
	}
	return nil
}

func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, fs.FileMode(0o600))
	if err != nil {
		return nil, fmt.Errorf("lock store: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock store: %w", err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
