package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/keyward/keyward/cache"
	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
	"github.com/keyward/keyward/vault"
)

// Records is a store as keyward uses it: the records the management
// commands and API read and write, the reads the decision makes, and the
// token signing keys. The file store and the Vault store are both one.
type Records interface {
	manage.Store
	cache.Source
	SigningKeys(ctx context.Context) ([]token.SigningKey, error)
	EnsureSigningKey(ctx context.Context) error
	Tokens(ctx context.Context) ([]*record.Token, error)
}

var (
	_ Records              = (*filestore.Store)(nil)
	_ Records              = (*vault.Store)(nil)
	_ cache.ResidentSource = (*filestore.Store)(nil)
)

// ErrNotFileStore is returned by Store.Files for a Vault store: provider
// records, for one, are written with Vault's own tools.
var ErrNotFileStore = errors.New("not the file store")

// Store is the record store a configuration names, opened. OpenStore is
// the one place that chooses between the file store and Vault; what
// differs between them afterwards is behind Store's methods.
type Store struct {
	records Records
	files   *filestore.Store // nil for Vault
	kind    storeKind
	mount   string // Vault's KV mount, for messages
}

// storeKind is what differs between the stores while serving.
type storeKind interface {
	// start logs in (Vault) and runs the store's own background work
	// until ctx is done.
	start(ctx context.Context) error
	// prepare readies the store for serving: the file store makes its
	// first signing key and names the provider keys it lacks.
	prepare(ctx context.Context, log *slog.Logger) error
	// cacheOptions adds the store's needs to the record caches' options.
	cacheOptions(o cache.Options) cache.Options
	// watch feeds changes to the caches and the keyring until ctx is
	// done: records are the caches, keysChanged reloads the keyring.
	watch(ctx context.Context, records *cache.Records, keysChanged func())
}

// OpenStore opens the store cfg names (store.kind): the file store is read
// from disk, a Vault store is set up without contacting Vault (Start logs
// in). log receives the store's own events (nil: discarded).
func OpenStore(cfg *config.Config, log *slog.Logger, getenv func(string) string) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Store.Kind == "vault" {
		vs, err := vault.New(cfg.Vault, log, getenv)
		if err != nil {
			return nil, err
		}
		return &Store{records: vs, kind: vaultKind{vs: vs, cfg: cfg.Vault}, mount: cfg.Vault.Mount}, nil
	}
	fs, err := openFiles(filestore.Options{
		Path: cfg.Store.File, TokensPath: cfg.Store.TokensFile, EnvPath: cfg.Store.EnvFile, Getenv: getenv,
	})
	if err != nil {
		return nil, err
	}
	return &Store{records: fs, files: fs, kind: fileKind{fs: fs, poll: cfg.Store.PollInterval, log: log}}, nil
}

// loadGCPercent is the garbage collector's target while a file store
// loads (GOGC; the default is 100). A load makes garbage as fast as it
// builds records, and with the default target the heap grew to twice the
// records' size: 1.8x the steady memory at 10^6 tokens, where it is
// about 1.5x at 50, for a few percent more CPU time.
const loadGCPercent = 50

// openFiles opens the file store with the collector at loadGCPercent, or
// at the operator's GOGC if that is lower (or off).
func openFiles(opts filestore.Options) (*filestore.Store, error) {
	if old := debug.SetGCPercent(loadGCPercent); old >= 0 && old > loadGCPercent {
		defer debug.SetGCPercent(old)
	} else {
		debug.SetGCPercent(old)
	}
	return filestore.Open(opts)
}

// Records returns the store's records.
func (s *Store) Records() Records { return s.records }

// Start logs in to Vault and keeps the login alive until ctx is done; the
// file store needs nothing.
func (s *Store) Start(ctx context.Context) error { return s.kind.start(ctx) }

// Files returns the file store, or an error wrapping ErrNotFileStore that
// says how the same is done in Vault.
func (s *Store) Files() (*filestore.Store, error) {
	if s.files == nil {
		return nil, fmt.Errorf("%w: providers live in Vault: write them with `vault kv put %s/providers/NAME kind=openai key_<id>=...` (see README)", ErrNotFileStore, s.mount)
	}
	return s.files, nil
}

// fileKind is the embedded file store.
type fileKind struct {
	fs   *filestore.Store
	poll time.Duration // store.poll_interval
	log  *slog.Logger
}

func (fileKind) start(context.Context) error { return nil }

func (k fileKind) prepare(ctx context.Context, log *slog.Logger) error {
	if err := k.fs.EnsureSigningKey(ctx); err != nil {
		return err
	}
	k.fs.WarnMissing(log)
	return nil
}

// fileRecordTTL is how long what is cached of the file store lives (its
// tokens, users, groups, providers and users' own keys are read from its
// memory; the principal mappings are cached, indexed): the watcher drops
// it all on every change of the files (see watch), so expiry would only
// rebuild the same index. It bounds how long the index could outlive a
// change the watcher missed.
const fileRecordTTL = time.Hour

func (fileKind) cacheOptions(o cache.Options) cache.Options {
	o.TTL = max(o.TTL, fileRecordTTL)
	return o
}

func (k fileKind) watch(ctx context.Context, records *cache.Records, keysChanged func()) {
	k.fs.Watch(ctx, k.poll, k.log, func() {
		// The principal mappings' index, and the signing keys
		// (keysChanged): a change another process wrote is in use
		// within poll_interval.
		records.Purge()
		keysChanged()
		debug.FreeOSMemory() // see Run
	})
}

// vaultKind is Vault or OpenBao.
type vaultKind struct {
	vs  *vault.Store
	cfg vault.Config
}

func (k vaultKind) start(ctx context.Context) error { return k.vs.Start(ctx) }

func (vaultKind) prepare(context.Context, *slog.Logger) error { return nil }

func (k vaultKind) cacheOptions(o cache.Options) cache.Options {
	// Fail static: while Vault is unreachable, records past their TTL
	// keep serving this much longer.
	o.MaxStale = k.cfg.MaxStale
	o.LoadTimeout = k.cfg.Timeout
	return o
}

func (k vaultKind) watch(ctx context.Context, records *cache.Records, keysChanged func()) {
	k.vs.Watch(ctx, records, keysChanged)
	k.vs.Wait()
}
