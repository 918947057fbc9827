// Package filestore is keyward's embedded store: a YAML file of providers,
// groups, users and signing keys that people edit, a token file of token
// hashes (one JSON record per line, appended to) that the CLI writes, a
// credentials file of users' own provider credentials (JSON lines, mode
// 0600: it holds their keys), an API token file of management token hashes
// (likewise), and provider keys read from environment variables or a .env
// file. It is for a first run and for single node use without Vault; it
// offers the same reads as the Vault store, and picks up changes to any of
// the files while keyward serves.
//
// Writers (the CLI) lock the store, re-read it, change it and write it
// back (the token file by appending, the others by replacing them
// atomically), so concurrent commands lose nothing and a reader never sees
// a half-written file. A file that cannot be read, or that is empty or
// missing where the store had one, is never taken for an empty store: the
// last good records stay in force and nothing is written over it.
package filestore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Store is the file-backed record store. Reads are served from an
// in-memory snapshot and never touch the disk.
type Store struct {
	opts Options
	snap atomic.Pointer[snapshot]
	// failedLoads counts loads that failed, for FailedLoads.
	failedLoads atomic.Uint64

	// mu serialises loads and guards state.
	mu sync.Mutex
	// state is what the last good load read; snap is its snapshot.
	state *state
	// closed is set by Close.
	closed bool
	// compactMin is how many superseded lines the token file must hold
	// (and more than its records) before a write rewrites it whole.
	compactMin int
}

// Options locate a Store's files.
type Options struct {
	// Path is the YAML store file. A missing file is an empty store,
	// created by the first write, as long as none of the store's other
	// files exist either.
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

// defaultCompactMin is Store.compactMin: a small store's token file is
// not rewritten for a few superseded lines.
const defaultCompactMin = 1024

// openTries is how many times Open reads a file that changes while it is
// read (an editor saving in place) before it gives up.
const openTries = 3

// Open loads the store. It fails, rather than open an empty store, when a
// file is lost (ErrFileLost): emptied, or missing while the rest of the
// store is there.
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
	s := &Store{opts: opts, compactMin: defaultCompactMin}
	st, err := s.load(&state{}, loadPoll)
	for try := 1; errors.Is(err, errBusy) && try < openTries; try++ {
		st, err = s.load(&state{}, loadPoll)
	}
	if err != nil {
		return nil, err
	}
	s.publish(st)
	return s, nil
}

// Close releases the token file the Store holds open to follow it (see
// tokenLog). The Store's reads keep answering from the records loaded;
// loads and writes fail with ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.state.tokens.release(nil)
	}
	return nil
}

// ErrClosed is the error of loads and writes after Close.
var ErrClosed = errors.New("filestore: store closed")

// Path returns the store file's path.
func (s *Store) Path() string { return s.opts.Path }

// FailedLoads returns how many times loading the files failed since Open,
// while serving (Watch) or before a write (Update): each time, the last
// good records stayed in force. It is keyward_store_errors_total for the
// file store.
func (s *Store) FailedLoads() uint64 { return s.failedLoads.Load() }

// WarnMissing logs the environment variables that provider keys name but
// that are not set (names only, never values).
func (s *Store) WarnMissing(log *slog.Logger) {
	if m := s.snap.Load().missingEnv; len(m) > 0 {
		log.Warn("provider keys not set in the environment", "variables", m)
	}
}

// Token returns the token record with the given id, its strings its own
// (see ResidentToken for the record without a copy).
func (s *Store) Token(ctx context.Context, id string) (*record.Token, error) {
	t, err := s.ResidentToken(ctx, id)
	if err != nil {
		return nil, err
	}
	return detached(t), nil
}

// ResidentToken returns the token record with the given id by value,
// without allocating: its ID is id itself and its other strings are views
// of the store's memory, which stay valid while they are held. With it
// the store is a cache.ResidentSource: its tokens, users, groups and
// providers are in memory, and Watch reports every change.
func (s *Store) ResidentToken(_ context.Context, id string) (record.Token, error) {
	raw, ok := token.ParseID(id)
	if !ok {
		return record.Token{}, unreadable(tokenID.check(id))
	}
	if t, ok := s.snap.Load().tokens.value(id, raw); ok {
		return t, nil
	}
	return record.Token{}, fmt.Errorf("token %q: %w", id, record.ErrNotFound)
}

// User returns the named user.
func (s *Store) User(_ context.Context, name string) (*record.User, error) {
	return find(s.snap.Load().users, userName, name)
}

// Group returns the named group.
func (s *Store) Group(_ context.Context, name string) (*record.Group, error) {
	return find(s.snap.Load().groups, groupName, name)
}

// Provider returns the named provider with its keys.
func (s *Store) Provider(_ context.Context, name string) (*record.Provider, error) {
	return find(s.snap.Load().providers, providerName, name)
}

// SigningKeys returns the token signing keys.
func (s *Store) SigningKeys(context.Context) ([]token.SigningKey, error) {
	return s.snap.Load().signingKeys, nil
}

// find returns the record m holds under the name of kind k.
func find[V any](m map[string]*V, k nameKind, name string) (*V, error) {
	if v, ok := m[name]; ok {
		// Its name was checked as the store was read.
		return v, nil
	}
	if err := k.check(name); err != nil {
		return nil, unreadable(err)
	}
	return nil, fmt.Errorf("%s %q: %w", k, name, record.ErrNotFound)
}

// Read returns the store's data as it is on disk now.
func (s *Store) Read(context.Context) (*Data, error) {
	st, err := s.load(&state{}, loadWrite)
	if err != nil {
		return nil, err
	}
	defer st.tokens.release(nil)
	return st.data()
}

// EnsureSigningKey adds a random token signing key if the store has none.
// A complete store whose loaded records hold a key is left as it is,
// without an Update: keyward serve calls this at every start, and an
// Update reads, encodes and validates the whole store file again.
func (s *Store) EnsureSigningKey(ctx context.Context) error {
	if s.hasSigningKey() {
		return nil
	}
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

// hasSigningKey reports whether the records in force hold a signing key,
// from a store whose lock file says every file of it was written.
func (s *Store) hasSigningKey() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && s.state != nil && s.state.complete && len(s.state.snap.signingKeys) > 0
}

// HashString encodes a token hash for the store file.
func HashString(h [32]byte) string { return record.FormatHash(h) }
