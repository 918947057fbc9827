package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Config configures the Vault store.
type Config struct {
	// Address is Vault's URL: one that always reaches the active node (a
	// single server, or a load balancer or service that routes to the
	// active node only, as sys/health's 200 tells). Default $VAULT_ADDR
	// (api.DefaultConfig also reads VAULT_CACERT and the other standard
	// variables).
	Address string `yaml:"address"`
	// Addresses lists every node of a cluster instead, as
	// http(s)://HOST:PORT: keyward asks each one's sys/health, sends every
	// request to the active one and follows it through failovers. Set
	// address or addresses, not both.
	Addresses []string `yaml:"addresses"`
	// Mount is the KV v2 mount keyward's records live under. Default
	// "keyward".
	Mount string `yaml:"mount"`
	// Namespace is the Vault Enterprise / OpenBao namespace, if any.
	Namespace string `yaml:"namespace"`
	// Auth says how keyward logs in.
	Auth AuthConfig `yaml:"auth"`
	// PollInterval is how often the change marker is read. Default 1s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// Timeout bounds each request to Vault. Default 5s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxStale is how long past their TTL cached records keep serving
	// while Vault cannot be reached (fail static). Default 10m.
	MaxStale time.Duration `yaml:"max_stale"`
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Mount == "" {
		c.Mount = "keyward"
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.MaxStale == 0 {
		c.MaxStale = 10 * time.Minute
	}
	if c.Auth.Method == "" {
		c.Auth.Method = "token"
	}
	return c
}

// Store reads and writes keyward's records in Vault. Create it with New,
// then Start it.
type Store struct {
	cfg      Config
	log      *slog.Logger
	client   *api.Client
	kv       *api.KVv2
	requests *atomic.Uint64
	nodes    *activeNode
	method   api.AuthMethod
	keeper   *tokenKeeper
	// background is the token keeper's goroutine.
	background sync.WaitGroup

	// mu guards the poller's view of provider versions.
	mu               sync.Mutex
	providerVersions map[string]int
}

// New returns a store for cfg. It does not contact Vault: Start logs in.
func New(cfg Config, log *slog.Logger, getenv func(string) string) (*Store, error) {
	cfg = cfg.WithDefaults()
	client, nodes, requests, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	method, err := newAuthMethod(cfg.Auth, getenv)
	if err != nil {
		return nil, err
	}
	return &Store{
		cfg:              cfg,
		log:              log,
		client:           client,
		kv:               client.KVv2(cfg.Mount),
		requests:         requests,
		nodes:            nodes,
		method:           method,
		keeper:           newTokenKeeper(client, method, log),
		providerVersions: map[string]int{},
	}, nil
}

// maxIdleConnsPerHost is how many idle connections to each Vault node are
// kept for reuse.
const maxIdleConnsPerHost = 64

// newClient returns a Vault client whose requests go to the active node
// among cfg's addresses, without retries or redirects, counted.
func newClient(cfg Config) (*api.Client, *activeNode, *atomic.Uint64, error) {
	vc := api.DefaultConfig()
	if vc.Error != nil {
		return nil, nil, nil, fmt.Errorf("vault: %w", vc.Error)
	}
	addrs := cfg.Addresses
	if len(addrs) == 0 {
		if cfg.Address != "" {
			vc.Address = cfg.Address
		}
		addrs = []string{vc.Address}
	}
	vc.Address = addrs[0] // requests are routed to the active node
	vc.Timeout = cfg.Timeout
	// No retries inside a request: a check waiting on Vault should fail
	// over to its cached record at once; the poller tries again next tick.
	vc.MaxRetries = 0
	// Every request is counted and no redirect is followed; the client's
	// requests go to the active node, the health probes to each address.
	requests := &atomic.Uint64{}
	base := vc.HttpClient.Transport
	if t, ok := base.(*http.Transport); ok {
		// A burst of cache misses (a cold start behind busy Envoys)
		// opens many connections at once; with the default of
		// GOMAXPROCS+1 idle ones kept, all but those few were closed
		// after each request, and 32 concurrent writers left 14,000
		// sockets in TIME_WAIT.
		t.MaxIdleConnsPerHost = maxIdleConnsPerHost
	}
	probe := &http.Client{Timeout: cfg.Timeout, Transport: &countingTransport{n: requests, next: refuseRedirects{next: base}}}
	nodes, err := newActiveNode(addrs, probe, base)
	if err != nil {
		return nil, nil, nil, err
	}
	vc.HttpClient.Transport = &countingTransport{n: requests, next: refuseRedirects{next: nodes}}
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("vault client: %w", err)
	}
	// The token comes from the auth method, never implicitly from the
	// environment of whoever started keyward.
	client.ClearToken()
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	return client, nodes, requests, nil
}

// Start finds the active node, logs in and keeps the token alive in the
// background until ctx is done (Wait waits for that). It returns the
// first error of either.
func (s *Store) Start(ctx context.Context) error {
	if _, err := s.nodes.check(ctx); err != nil {
		return err
	}
	s.log.Info("vault active node", "address", s.nodes.current())
	secret, err := s.keeper.login(ctx)
	if err != nil {
		return err
	}
	s.background.Go(func() { s.keeper.run(ctx, secret) })
	return nil
}

// Wait returns once the background work Start began has stopped (after
// Start's ctx is done).
func (s *Store) Wait() { s.background.Wait() }

// Requests returns how many HTTP requests the store has sent to Vault,
// health probes included.
func (s *Store) Requests() uint64 { return s.requests.Load() }

// Client returns the underlying Vault client (for tests and tools). Its
// requests go to the active node, whatever its Address says, and fail
// with ErrNoActiveNode while none is known.
func (s *Store) Client() *api.Client { return s.client }

// countingTransport counts requests, so that tests and the load tool can
// show what keyward costs Vault.
type countingTransport struct {
	next http.RoundTripper
	n    *atomic.Uint64
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.n.Add(1)
	return t.next.RoundTrip(r)
}

// Record paths under the mount.
const (
	providersDir   = "providers/"
	groupsDir      = "groups/"
	usersDir       = "users/"
	tokensDir      = "tokens/"
	identitiesDir  = "identities/"
	principalsDir  = "identity-principals/"
	signingKeyPath = "system/signing-keys"
	markerPath     = "system/changes"
)

// get reads one record; a missing one is record.ErrNotFound.
func (s *Store) get(ctx context.Context, path string) (*api.KVSecret, error) {
	sec, err := s.kv.Get(ctx, path)
	switch {
	case errors.Is(err, api.ErrSecretNotFound):
		return nil, fmt.Errorf("%s: %w", path, record.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("vault read %s: %w", path, err)
	case sec == nil || sec.Data == nil || isTombstone(sec.Data):
		return nil, fmt.Errorf("%s: %w", path, record.ErrNotFound)
	}
	return sec, nil
}

// getNamed reads the record name at path and decodes it; invalid, the
// problem check found, is a record that cannot exist (not found).
func getNamed[R any](ctx context.Context, s *Store, invalid error, path, name string, decode func(string, map[string]any) (*R, error)) (*R, error) {
	if invalid != nil {
		return nil, notFound(invalid)
	}
	sec, err := s.get(ctx, path)
	if err != nil {
		return nil, err
	}
	return decode(name, sec.Data)
}

// Token returns the token record with the given id.
func (s *Store) Token(ctx context.Context, id string) (*record.Token, error) {
	return getNamed(ctx, s, checkTokenID("token", id), tokensDir+id, id, decodeToken)
}

// User returns the named user.
func (s *Store) User(ctx context.Context, name string) (*record.User, error) {
	return getNamed(ctx, s, checkName("user", name), usersDir+name, name, decodeUser)
}

// Group returns the named group.
func (s *Store) Group(ctx context.Context, name string) (*record.Group, error) {
	return getNamed(ctx, s, checkName("group", name), groupsDir+name, name, decodeGroup)
}

// Provider returns the named provider with its keys. The poller watches
// the versions of the providers read here, so a key rotated directly in
// Vault is picked up within a poll interval.
func (s *Store) Provider(ctx context.Context, name string) (*record.Provider, error) {
	if err := checkName("provider", name); err != nil {
		return nil, notFound(err)
	}
	sec, err := s.get(ctx, providersDir+name)
	if err != nil {
		if errors.Is(err, record.ErrNotFound) {
			s.watchProvider(name, 0)
		}
		return nil, err
	}
	version := 0
	if sec.VersionMetadata != nil {
		version = sec.VersionMetadata.Version
	}
	s.watchProvider(name, version)
	return decodeProvider(name, sec.Data)
}

func (s *Store) watchProvider(name string, version int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.providerVersions[name] = version
}

// SigningKeys returns the token signing keys.
func (s *Store) SigningKeys(ctx context.Context) ([]token.SigningKey, error) {
	sec, err := s.get(ctx, signingKeyPath)
	if errors.Is(err, record.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeSigningKeys(sec.Data)
}

// Validate checks the configuration without contacting Vault. Each
// problem is a *field.Error whose path is relative to the vault section
// of keyward.yaml ("auth.role"): the caller puts it in place.
func (c Config) Validate() error {
	var l field.List
	if err := record.ValidateName("mount", c.Mount); err != nil {
		l.Add("mount", "%q is not a plain mount name", c.Mount)
	}
	c.validateAddresses(&l)
	if c.PollInterval < 50*time.Millisecond {
		l.Add("poll_interval", "%s is too short (at least 50ms)", c.PollInterval)
	}
	if c.Timeout <= 0 {
		l.Add("timeout", "must be positive")
	}
	if c.MaxStale < 0 {
		l.Add("max_stale", "must not be negative")
	}
	c.Auth.validate(&l)
	return l.Err()
}

func (c Config) validateAddresses(l *field.List) {
	if c.Address != "" && len(c.Addresses) > 0 {
		l.Add("addresses", "set address or addresses, not both")
	}
	for i, a := range c.Addresses {
		u, err := url.Parse(a)
		path := fmt.Sprintf("addresses[%d]", i)
		switch {
		case err != nil:
			l.Add(path, "not a URL: want http(s)://HOST[:PORT]")
		case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" ||
			u.User != nil || u.RawQuery != "" || u.Fragment != "":
			// Redacted: a password in the URL stays out of the error.
			l.Add(path, "%q is not http(s)://HOST[:PORT]", u.Redacted())
		}
	}
}

func (a AuthConfig) validate(l *field.List) {
	switch a.Method {
	case "token":
	case "approle":
		if a.RoleID == "" && a.RoleIDFile == "" {
			l.Add("auth.role_id", "set role_id or role_id_file for approle")
		}
	case "kubernetes":
		if a.Role == "" {
			l.Add("auth.role", "set the Vault role for kubernetes auth")
		}
	default:
		l.Add("auth.method", "%q is not token, approle or kubernetes", a.Method)
	}
}
