// Package config reads keyward's process configuration: a YAML file, then
// KEYWARD_* environment variables on top. It is parsed and validated once;
// every error names the field (as written in YAML) and what is wrong with it.
//
// The configuration says how keyward runs (addresses, where the store is,
// where clients put credentials, how routes map to providers). The records
// keyward serves (providers and their keys, groups, users, tokens) live in
// the store.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/cache"
	"github.com/keyward/keyward/envoy"
	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/manage/httpapi/oidc"
	"github.com/keyward/keyward/servertls"
	"github.com/keyward/keyward/vault"
)

// Config is keyward's validated process configuration.
type Config struct {
	// Listen is the ext_authz gRPC address: host:port, or unix:/path for
	// a unix socket (for an Envoy in the same pod). Default
	// 127.0.0.1:9191; env KEYWARD_LISTEN.
	Listen string `yaml:"listen"`
	// TLS secures Listen with mutual TLS: keyward's answers carry
	// provider keys, so only the clients on tls.allowed_clients (Envoy)
	// may ask. Off by default.
	TLS TLS `yaml:"tls"`
	// AllowPlaintext lets Listen be a TCP address other hosts can reach
	// without TLS; serve refuses that otherwise, and warns at start when
	// allowed. Default false.
	AllowPlaintext bool `yaml:"allow_plaintext"`
	// Store says where records live.
	Store Store `yaml:"store"`
	// Credentials lists where clients may put their credential, in the
	// order they are looked at. Default: authorization (Bearer),
	// x-api-key, x-goog-api-key, api-key, and the query parameter key.
	Credentials []Source `yaml:"credentials"`
	// ModelHeader is the request header that names the model, e.g. set by
	// Envoy AI Gateway. Default x-ai-eg-model.
	ModelHeader string `yaml:"model_header"`
	// DisableCustomKeys refuses every client-supplied provider key: every
	// call goes out on a server-held key. Default false; env
	// KEYWARD_DISABLE_CUSTOM_KEYS.
	DisableCustomKeys bool `yaml:"disable_custom_keys"`
	// Routes maps requests to providers when the Envoy route carries no
	// provider context extension, and tells envoy-config where each
	// provider is.
	Routes []Route `yaml:"routes"`
	// KeyDelivery says, by provider name, how keyward hands that
	// provider's key to Envoy: header (the provider's own auth header, the
	// default for a provider not listed) or metadata (only the raw key in
	// the ext_authz dynamic metadata field x-aigw-api-key, no auth header:
	// for Envoy AI Gateway's BackendSecurityPolicy.credentialOverride).
	// Operators choose it here, not store admins: it decides where a
	// secret travels. Default: header for every provider.
	KeyDelivery map[string]authz.KeyDelivery `yaml:"key_delivery"`
	// Endpoints add to keyward's built-in endpoint tables, by provider
	// name: the endpoints a group that restricts models may call, and
	// where each keeps its models. An entry replaces the built-in ones a
	// request could match both. Default: none added.
	Endpoints map[string][]Endpoint `yaml:"endpoints"`
	// JWT are the issuers whose JWTs Envoy's jwt_authn verifies (keyward
	// envoy-config emits the filter) and whose verified claims keyward
	// maps to a user and group: issuer (the exact iss), audiences,
	// local_jwks (a file, Envoy's absolute path) or remote_jwks {uri,
	// timeout, cache_duration}, from_headers (default authorization
	// "Bearer " and x-api-key, where the SDKs put their api key; each a
	// credentials header), user_claim (default sub), group_claim
	// (default groups). Default: none.
	JWT []envoy.JWTIssuer `yaml:"jwt"`
	// Vault configures the Vault/OpenBao store (store.kind: vault).
	Vault vault.Config `yaml:"vault"`
	// Management configures the management API.
	Management Management `yaml:"management"`
	// Metrics configures the Prometheus metrics endpoint.
	Metrics Metrics `yaml:"metrics"`
	// Envoy configures the bootstrap printed by keyward envoy-config.
	Envoy Envoy `yaml:"envoy"`
	// Cache sizes the record caches.
	Cache Cache `yaml:"cache"`
	// Audit configures the audit log of denials.
	Audit Audit `yaml:"audit"`
	// LogLevel is debug, info, warn or error. Default info; env
	// KEYWARD_LOG_LEVEL.
	LogLevel string `yaml:"log_level"`
	// ShutdownGrace is how long serve waits for in-flight checks on
	// SIGTERM. Default 10s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// ShutdownDrain is how long serve keeps answering after SIGTERM with
	// its health already NOT_SERVING, so that Envoy's health checks take
	// it out of rotation before its listeners close; then in-flight
	// requests get ShutdownGrace. Default 5s; 0 stops at once.
	ShutdownDrain time.Duration `yaml:"shutdown_drain"`
}

// TLS is the TLS of one of serve's listeners: its certificate and key,
// and optionally the CA bundle client certificates must chain to and the
// identities admitted. The files are re-read every ReloadInterval and a
// changed, usable set serves new connections without a restart.
type TLS struct {
	servertls.Files `yaml:",inline"`
	// ReloadInterval is how often the files are checked for changes.
	// Default 10s.
	ReloadInterval time.Duration `yaml:"reload_interval"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.Files.Enabled() }

// Store says where records live.
type Store struct {
	// Kind is file (the embedded store, default) or vault (HashiCorp
	// Vault or OpenBao, configured under vault:). Env KEYWARD_STORE.
	Kind string `yaml:"kind"`
	// File is the YAML record file (providers, groups, users, tokens),
	// relative to the configuration file. Default keyward-store.yaml; env
	// KEYWARD_STORE_FILE.
	File string `yaml:"file"`
	// TokensFile is the token file (token hashes, one JSON record per
	// line, written by the CLI), relative to the configuration file.
	// Default: File with its extension replaced by .tokens.jsonl.
	TokensFile string `yaml:"tokens_file"`
	// EnvFile is an optional .env file with provider keys, relative to the
	// configuration file. Variables already in the environment win.
	EnvFile string `yaml:"env_file"`
	// PollInterval is how often the files are checked for changes.
	// Default 500ms.
	PollInterval time.Duration `yaml:"poll_interval"`
}

// Source is one place a client credential may be: exactly one of Header or
// Query.
type Source struct {
	// Header is a request header name. For "authorization" the value must
	// be "Bearer <credential>".
	Header string `yaml:"header,omitempty"`
	// Query is a query parameter name.
	Query string `yaml:"query,omitempty"`
}

// Route maps requests to a provider.
type Route struct {
	// Provider is the provider record's name.
	Provider string `yaml:"provider"`
	// Hosts are request hosts (:authority, without port) that mean this
	// provider, e.g. api.openai.com for mesh egress.
	Hosts []string `yaml:"hosts"`
	// PathPrefix is the listener path that envoy-config routes to this
	// provider, e.g. /openai/. It is stripped before forwarding.
	PathPrefix string `yaml:"path_prefix"`
	// Upstream is the provider's base URL for envoy-config, e.g.
	// https://api.openai.com.
	Upstream string `yaml:"upstream"`
}

// Endpoint is one endpoint of a provider's API and where its model is
// (see authz.EndpointSpec).
type Endpoint struct {
	// Method is the HTTP method, e.g. POST.
	Method string `yaml:"method"`
	// Path is the path the provider serves, e.g. /v1/chat/completions or
	// /v1beta/models/{model}:generateContent.
	Path string `yaml:"path"`
	// Model is where the model is: path, body.<json path> (body.model,
	// body.requests[].params.model) or none (refused).
	Model string `yaml:"model"`
}

// Management configures the HTTP management API served by keyward serve.
type Management struct {
	// Listen is its address, e.g. 127.0.0.1:9292. Empty, the default,
	// turns the API off. Env KEYWARD_MANAGEMENT_LISTEN.
	Listen string `yaml:"listen"`
	// TLS serves the API over HTTPS; client certificates are asked for
	// only when tls.client_ca_file is set. Off by default.
	TLS TLS `yaml:"tls"`
	// AllowPlaintext lets Listen be a TCP address other hosts can reach
	// without TLS (see Config.AllowPlaintext).
	AllowPlaintext bool `yaml:"allow_plaintext"`
	// RotationGrace is how long a rotated token keeps working when the
	// rotation names no grace period of its own. Default (and when 0)
	// 24h; at most 720h.
	RotationGrace time.Duration `yaml:"rotation_grace"`
	// MaxActiveTokens caps the active LLM tokens one user may hold (made
	// through the API or the CLI; rotated, revoked and expired ones do
	// not count). Default 100.
	MaxActiveTokens int `yaml:"max_active_tokens"`
	// OIDC lets the API accept the JWTs of an OpenID Connect issuer
	// beside management tokens: issuer, audience, where its keys are, and
	// which claims give the role and the user. Off by default.
	OIDC oidc.Config `yaml:"oidc"`
}

// Metrics configures the Prometheus metrics endpoint served by keyward
// serve.
type Metrics struct {
	// Listen is the address of its own HTTP server, which serves
	// /metrics (Prometheus text format) and /healthz, e.g.
	// 127.0.0.1:9464. Empty, the default, turns metrics off. Env
	// KEYWARD_METRICS_LISTEN.
	Listen string `yaml:"listen"`
	// TLS serves the endpoint over HTTPS. Off by default.
	TLS TLS `yaml:"tls"`
	// AllowPlaintext lets Listen be a TCP address other hosts can reach
	// without TLS (see Config.AllowPlaintext).
	AllowPlaintext bool `yaml:"allow_plaintext"`
}

// Audit configures the audit log.
type Audit struct {
	// DenyLogPerSecond, when positive, caps the LLM-path denials logged
	// one by one per second; the rest are counted, and the count is
	// reported with the next logged denial (suppressed_before). Zero, the
	// default, logs every denial.
	DenyLogPerSecond float64 `yaml:"deny_log_per_second"`
}

// Envoy configures keyward envoy-config.
type Envoy struct {
	// Listen is Envoy's LLM listener. Default 127.0.0.1:10000.
	Listen string `yaml:"listen"`
	// Admin is Envoy's admin listener; empty for none. Default
	// 127.0.0.1:9901.
	Admin string `yaml:"admin"`
	// AuthzAddress is how Envoy reaches keyward: host:port (a name that
	// resolves to several addresses makes each a replica) or unix:/path.
	// Default: Listen of keyward, unless AuthzAddresses is set.
	AuthzAddress string `yaml:"authz_address"`
	// AuthzAddresses are several keyward replicas, each written as
	// AuthzAddress; set this or AuthzAddress. Envoy health-checks every
	// replica and retries a check on another when one cannot answer.
	AuthzAddresses []string `yaml:"authz_addresses"`
	// AuthzTLS makes Envoy speak mutual TLS to keyward: Envoy's client
	// certificate, the CA keyward's certificate chains to, and keyward's
	// identities. Paths are Envoy's, absolute. Off by default.
	AuthzTLS envoy.AuthzTLS `yaml:"authz_tls"`
	// DownstreamTLS serves Envoy's LLM listener over TLS, and with a
	// client CA verifies client certificates, whose URI SAN (a SPIFFE
	// ID) principal mappings match. Paths are Envoy's, absolute. Off by
	// default.
	DownstreamTLS envoy.DownstreamTLS `yaml:"downstream_tls"`
	// AuthzTimeout bounds each check. Default 500ms.
	AuthzTimeout time.Duration `yaml:"authz_timeout"`
	// MaxRequestBytes is how much of a request body envoy-config
	// -forward-body has Envoy send to keyward. Default 1 MiB; at most
	// 3 MiB. A longer body is cut there, and refused in groups that
	// restrict models (model_unknown).
	MaxRequestBytes uint32 `yaml:"max_request_bytes"`
	// Tracing turns on Envoy's OpenTelemetry tracing: otlp_address (the
	// collector's OTLP/gRPC host:port), service_name (default envoy),
	// sampling (percent, default 100). Off by default.
	Tracing envoy.Tracing `yaml:"tracing"`
}

// Cache sizes the record caches.
type Cache struct {
	// Size is the number of entries per record kind. Default
	// cache.DefaultSize (100000).
	Size int `yaml:"size"`
	// Answers is how many ready-made allowed answers are kept, one per
	// active (token, key), about 350 bytes each: past it, arbitrary ones
	// make room, and are built again when next needed, which costs a
	// check about 1µs and 256 bytes (BenchmarkCheckAllowedUncached), not
	// a cliff. Default: a tenth of Size.
	Answers int `yaml:"answers"`
	// TTL is how long a record loaded from Vault is trusted. Default
	// 30s. The file store's tokens, users, groups and providers are read
	// from its memory, uncached, and what is cached of it (users' own
	// credentials, the principal mappings, indexed) lives until the
	// files change (at most an hour, or TTL if longer).
	TTL time.Duration `yaml:"ttl"`
	// CheckDeadline is how long one check may wait for the store, all its
	// lookups together; past it the check answers from last-known-good
	// records, or 503 store_unavailable. Default half of
	// envoy.authz_timeout; it must be shorter than that.
	CheckDeadline time.Duration `yaml:"check_deadline"`
}

const (
	defaultStoreFile     = "keyward-store.yaml"
	defaultEnvoyAdmin    = "127.0.0.1:9901"
	defaultShutdownDrain = 5 * time.Second
)

// UnixPrefix starts a listen address that is a unix socket path.
const UnixPrefix = envoy.UnixPrefix

// DefaultCredentials is where clients' credentials are looked for when the
// configuration names none: the headers of the OpenAI, Anthropic, Gemini and
// Azure SDKs, and Gemini's ?key=.
func DefaultCredentials() []Source {
	return []Source{
		{Header: "authorization"}, {Header: "x-api-key"}, {Header: "x-goog-api-key"},
		{Header: "api-key"}, {Query: "key"},
	}
}

// Default returns the configuration used when no file is given.
func Default() *Config {
	c := newConfig()
	c.applyDefaults()
	return c
}

// newConfig returns a Config holding the defaults that an explicit empty
// value overrides, so they are set before decoding rather than by
// applyDefaults: envoy.admin: "" means no admin listener, shutdown_drain:
// 0s no drain.
func newConfig() *Config {
	return &Config{Envoy: Envoy{Admin: defaultEnvoyAdmin}, ShutdownDrain: defaultShutdownDrain}
}

// Load reads the file at path (none when path is empty), applies the
// environment, fills defaults and validates. Relative store paths are made
// relative to the file's folder.
func Load(path string, getenv func(string) string) (*Config, error) {
	c := newConfig()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if c, err = Parse(data); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if path != "" {
		// Paths in the file are relative to the file; paths from the
		// environment are relative to the working directory.
		dir := filepath.Dir(path)
		setDefault(&c.Store.File, defaultStoreFile)
		c.Store.File = relativeTo(dir, c.Store.File)
		c.Store.TokensFile = relativeTo(dir, c.Store.TokensFile)
		c.Store.EnvFile = relativeTo(dir, c.Store.EnvFile)
		for _, t := range []*TLS{&c.TLS, &c.Management.TLS, &c.Metrics.TLS} {
			t.CertFile = relativeTo(dir, t.CertFile)
			t.KeyFile = relativeTo(dir, t.KeyFile)
			t.ClientCAFile = relativeTo(dir, t.ClientCAFile)
		}
		c.Management.OIDC.CAFile = relativeTo(dir, c.Management.OIDC.CAFile)
		c.Management.OIDC.JWKSFile = relativeTo(dir, c.Management.OIDC.JWKSFile)
	}
	if err := c.applyEnv(getenv); err != nil {
		return nil, err
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		if path != "" {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// Parse decodes YAML strictly: an unknown field is an error.
func Parse(data []byte) (*Config, error) {
	c := newConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return c, nil
}

func (c *Config) applyEnv(getenv func(string) string) error {
	if v := getenv("KEYWARD_LISTEN"); v != "" {
		c.Listen = v
	}
	if v := getenv("KEYWARD_MANAGEMENT_LISTEN"); v != "" {
		c.Management.Listen = v
	}
	if v := getenv("KEYWARD_METRICS_LISTEN"); v != "" {
		c.Metrics.Listen = v
	}
	if v := getenv("KEYWARD_STORE"); v != "" {
		c.Store.Kind = v
	}
	if v := getenv("KEYWARD_STORE_FILE"); v != "" {
		c.Store.File = v
	}
	if v := getenv("KEYWARD_LOG_LEVEL"); v != "" {
		c.LogLevel = v
	}
	if v := getenv("KEYWARD_DISABLE_CUSTOM_KEYS"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return field.Errorf("KEYWARD_DISABLE_CUSTOM_KEYS", "%q is not true or false", v)
		}
		c.DisableCustomKeys = b
	}
	return nil
}

func (c *Config) applyDefaults() {
	setDefault(&c.Listen, "127.0.0.1:9191")
	setDefault(&c.Store.Kind, "file")
	setDefault(&c.Store.File, defaultStoreFile)
	c.Vault = c.Vault.WithDefaults()
	setDefault(&c.Store.PollInterval, 500*time.Millisecond)
	if len(c.Credentials) == 0 {
		c.Credentials = DefaultCredentials()
	}
	for i := range c.Credentials {
		c.Credentials[i].Header = strings.ToLower(c.Credentials[i].Header)
	}
	for i := range c.JWT {
		c.JWT[i] = c.JWT[i].WithDefaults()
	}
	setDefault(&c.ModelHeader, "x-ai-eg-model")
	c.ModelHeader = strings.ToLower(c.ModelHeader)
	setDefault(&c.Envoy.Listen, "127.0.0.1:10000")
	if len(c.Envoy.AuthzAddresses) == 0 {
		setDefault(&c.Envoy.AuthzAddress, c.Listen)
	}
	for _, t := range []*TLS{&c.TLS, &c.Management.TLS, &c.Metrics.TLS} {
		if t.Enabled() {
			setDefault(&t.ReloadInterval, 10*time.Second)
		}
	}
	setDefault(&c.Envoy.AuthzTimeout, 500*time.Millisecond)
	setDefault(&c.Envoy.MaxRequestBytes, envoy.DefaultMaxRequestBytes)
	setDefault(&c.Cache.Size, cache.DefaultSize)
	if c.Cache.Size > 0 {
		setDefault(&c.Cache.Answers, max(1, c.Cache.Size/10))
	}
	setDefault(&c.Cache.TTL, 30*time.Second)
	if c.Envoy.AuthzTimeout > 0 {
		setDefault(&c.Cache.CheckDeadline, c.Envoy.AuthzTimeout/2)
	}
	setDefault(&c.LogLevel, "info")
	setDefault(&c.ShutdownGrace, 10*time.Second)
	setDefault(&c.Management.RotationGrace, 24*time.Hour)
	setDefault(&c.Management.MaxActiveTokens, manage.DefaultMaxActiveTokens)
	c.Management.OIDC = c.Management.OIDC.WithDefaults()
	for i := range c.Routes {
		for j, h := range c.Routes[i].Hosts {
			c.Routes[i].Hosts[j] = strings.ToLower(h)
		}
	}
}

func setDefault[T comparable](field *T, value T) {
	var zero T
	if *field == zero {
		*field = value
	}
}

func relativeTo(dir, path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

// EndpointSpecs is Endpoints as the authorizer takes them.
func (c *Config) EndpointSpecs() map[string][]authz.EndpointSpec {
	out := make(map[string][]authz.EndpointSpec, len(c.Endpoints))
	for provider, eps := range c.Endpoints {
		for _, e := range eps {
			out[provider] = append(out[provider], authz.EndpointSpec{Method: e.Method, Path: e.Path, Model: e.Model})
		}
	}
	return out
}
