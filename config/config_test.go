package config_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/vault"
)

// env returns a getenv backed by a map, so that tests never read the
// process environment.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// writeConfig writes data as keyward.yaml in a fresh folder and returns its
// path.
func writeConfig(t *testing.T, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyward.yaml")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// paths returns the YAML path of every problem in a Load or Validate
// error, sorted, and fails the test for a problem that is not a
// *field.Error.
func paths(t *testing.T, err error) []string {
	t.Helper()
	var out []string
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *field.Error:
			out = append(out, e.Path)
		case interface{ Unwrap() []error }:
			for _, e := range e.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }: // Load's "config <path>: "
			walk(e.Unwrap())
		default:
			t.Errorf("problem %q is not a *field.Error", err)
		}
	}
	walk(err)
	slices.Sort(out)
	return out
}

// wantPaths fails the test unless err holds exactly one problem at each of
// want.
func wantPaths(t *testing.T, err error, want []string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	if got := paths(t, err); !slices.Equal(got, want) {
		t.Errorf("problems at %v, want %v:\n%v", got, want, err)
	}
}

func wantDefaults(t *testing.T, c *config.Config) {
	t.Helper()
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "127.0.0.1:9191"},
		{"store.file", c.Store.File, "keyward-store.yaml"},
		{"store.env_file", c.Store.EnvFile, ""},
		{"store.poll_interval", c.Store.PollInterval, 500 * time.Millisecond},
		{"credentials", c.Credentials, config.DefaultCredentials()},
		{"model_header", c.ModelHeader, "x-ai-eg-model"},
		{"disable_custom_keys", c.DisableCustomKeys, false},
		{"routes", len(c.Routes), 0},
		{"envoy.listen", c.Envoy.Listen, "127.0.0.1:10000"},
		{"envoy.admin", c.Envoy.Admin, "127.0.0.1:9901"},
		{"envoy.authz_address", c.Envoy.AuthzAddress, "127.0.0.1:9191"},
		{"envoy.authz_timeout", c.Envoy.AuthzTimeout, 500 * time.Millisecond},
		{"envoy.max_request_bytes", c.Envoy.MaxRequestBytes, uint32(1 << 20)},
		{"cache.size", c.Cache.Size, 100_000},
		{"cache.answers", c.Cache.Answers, 10_000},
		{"cache.ttl", c.Cache.TTL, 30 * time.Second},
		{"cache.check_deadline", c.Cache.CheckDeadline, 250 * time.Millisecond},
		{"log_level", c.LogLevel, "info"},
		{"shutdown_grace", c.ShutdownGrace, 10 * time.Second},
		{"management.rotation_grace", c.Management.RotationGrace, 24 * time.Hour},
		{"metrics.listen", c.Metrics.Listen, ""},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestDefault(t *testing.T) {
	c := config.Default()
	wantDefaults(t, c)
	if err := c.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
}

func TestLoadNoFileEmptyEnvironment(t *testing.T) {
	c, err := config.Load("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	wantDefaults(t, c)
}

func TestLoadEmptyFile(t *testing.T) {
	path := writeConfig(t, "# nothing set\n")
	c, err := config.Load(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	// The store file is the default one, next to the configuration.
	if want := filepath.Join(filepath.Dir(path), "keyward-store.yaml"); c.Store.File != want {
		t.Errorf("store.file = %q, want %q", c.Store.File, want)
	}
	c.Store.File = "keyward-store.yaml"
	wantDefaults(t, c)
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "absent.yaml"), env(nil))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want a not-exist error", err)
	}
}

func TestLoadFile(t *testing.T) {
	path := writeConfig(t, `
listen: 127.0.0.1:7001
store:
  file: /var/lib/keyward/store.yaml
  env_file: keys.env
  poll_interval: 2s
credentials:
  - header: Authorization
  - query: key
model_header: X-Model
disable_custom_keys: true
routes:
  - provider: openai
    hosts: [API.OpenAI.com]
    path_prefix: /openai/
    upstream: https://api.openai.com
  - provider: anthropic
    hosts: [api.anthropic.com]
envoy:
  listen: 0.0.0.0:10001
  admin: 127.0.0.1:9902
  authz_address: keyward:9191
  authz_timeout: 250ms
cache:
  size: 10
  ttl: 1m
log_level: debug
shutdown_grace: 3s
metrics:
  listen: 127.0.0.1:9464
endpoints:
  vllm:
    - {method: POST, path: /v1/chat/completions, model: body.model}
    - {method: POST, path: /v1/batches, model: none}
key_delivery:
  openai: metadata
  anthropic: header
`)
	c, err := config.Load(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := &config.Config{
		Listen: "127.0.0.1:7001",
		Store: config.Store{
			Kind:         "file",
			File:         "/var/lib/keyward/store.yaml",
			EnvFile:      filepath.Join(filepath.Dir(path), "keys.env"),
			PollInterval: 2 * time.Second,
		},
		Credentials:       []config.Source{{Header: "authorization"}, {Query: "key"}},
		ModelHeader:       "x-model",
		DisableCustomKeys: true,
		Routes: []config.Route{
			{Provider: "openai", Hosts: []string{"api.openai.com"}, PathPrefix: "/openai/", Upstream: "https://api.openai.com"},
			{Provider: "anthropic", Hosts: []string{"api.anthropic.com"}},
		},
		Envoy: config.Envoy{
			Listen: "0.0.0.0:10001", Admin: "127.0.0.1:9902",
			AuthzAddress: "keyward:9191", AuthzTimeout: 250 * time.Millisecond,
			MaxRequestBytes: 1 << 20,
		},
		Vault:         vault.Config{}.WithDefaults(),
		Cache:         config.Cache{Size: 10, Answers: 1, TTL: time.Minute, CheckDeadline: 125 * time.Millisecond},
		Management:    config.Management{RotationGrace: 24 * time.Hour, MaxActiveTokens: 100},
		Metrics:       config.Metrics{Listen: "127.0.0.1:9464"},
		LogLevel:      "debug",
		ShutdownGrace: 3 * time.Second,
		Endpoints: map[string][]config.Endpoint{"vllm": {
			{Method: "POST", Path: "/v1/chat/completions", Model: "body.model"},
			{Method: "POST", Path: "/v1/batches", Model: "none"},
		}},
		KeyDelivery:   map[string]authz.KeyDelivery{"openai": authz.KeyInMetadata, "anthropic": authz.KeyInHeader},
		ShutdownDrain: 5 * time.Second,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load:\n got %+v\nwant %+v", c, want)
	}
}

// TestValidationErrors checks that each problem is reported under its
// field's YAML path.
func TestValidationErrors(t *testing.T) {
	tests := map[string]struct {
		yaml   string
		fields []string
	}{
		"listen":              {yaml: "listen: nope\nenvoy: {authz_address: 127.0.0.1:1}\n", fields: []string{"listen"}},
		"listen without port": {yaml: "listen: '127.0.0.1:'\nenvoy: {authz_address: 127.0.0.1:1}\n", fields: []string{"listen"}},
		"authz address follows listen": {
			yaml: "listen: nope\n", fields: []string{"listen", "envoy.authz_address"},
		},
		"envoy.listen":            {yaml: "envoy: {listen: 10000}\n", fields: []string{"envoy.listen"}},
		"envoy.authz_address":     {yaml: "envoy: {authz_address: keyward}\n", fields: []string{"envoy.authz_address"}},
		"envoy.admin":             {yaml: "envoy: {admin: localhost}\n", fields: []string{"envoy.admin"}},
		"store.poll_interval":     {yaml: "store: {poll_interval: 5ms}\n", fields: []string{"store.poll_interval"}},
		"envoy.authz_timeout":     {yaml: "envoy: {authz_timeout: -1s}\n", fields: []string{"envoy.authz_timeout"}},
		"envoy.max_request_bytes": {yaml: "envoy: {max_request_bytes: 4194304}\n", fields: []string{"envoy.max_request_bytes"}},
		"cache.size":              {yaml: "cache: {size: -1}\n", fields: []string{"cache.size"}},
		"cache.ttl":               {yaml: "cache: {ttl: -5s}\n", fields: []string{"cache.ttl"}},
		"cache.check_deadline":    {yaml: "cache: {check_deadline: -5ms}\n", fields: []string{"cache.check_deadline"}},
		"check_deadline too long": {yaml: "envoy: {authz_timeout: 200ms}\ncache: {check_deadline: 200ms}\n", fields: []string{"cache.check_deadline"}},
		"shutdown_grace":          {yaml: "shutdown_grace: -1s\n", fields: []string{"shutdown_grace"}},
		"jwt": {
			yaml:   "jwt: [{issuer: 'https://idp', local_jwks: jwks.json, from_headers: [{name: x-jwt}]}, {issuer: 'https://idp', remote_jwks: {uri: 'https://idp/jwks', timeout: -1s}}]\n",
			fields: []string{"jwt[0].local_jwks", "jwt[1].issuer", "jwt[1].remote_jwks.timeout", "jwt[0].from_headers[0].name"},
		},
		"rotation_grace": {yaml: "management: {rotation_grace: 721h}\n", fields: []string{"management.rotation_grace"}},
		"management.oidc without listen": {
			yaml: "management: {oidc: {issuer: 'https://idp.example.com', audience: kw}}\n", fields: []string{"management.oidc"},
		},
		"management.oidc.issuer over http": {
			yaml: "management: {listen: 127.0.0.1:9292, oidc: {issuer: 'http://idp.example.com', audience: kw}}\n", fields: []string{"management.oidc.issuer"},
		},
		"management.oidc.audience": {
			yaml: "management: {listen: 127.0.0.1:9292, oidc: {issuer: 'https://idp.example.com'}}\n", fields: []string{"management.oidc.audience"},
		},
		"management.oidc.clock_skew": {
			yaml: "management: {listen: 127.0.0.1:9292, oidc: {issuer: 'https://idp.example.com', audience: kw, clock_skew: 10m}}\n", fields: []string{"management.oidc.clock_skew"},
		},
		"management.oidc.jwks_file with jwks_uri": {
			yaml:   "management: {listen: 127.0.0.1:9292, oidc: {issuer: 'https://idp.example.com', audience: kw, jwks_uri: 'https://idp.example.com/k', jwks_file: k.json}}\n",
			fields: []string{"management.oidc.jwks_file"},
		},
		"management.oidc fields without issuer": {
			yaml: "management: {listen: 127.0.0.1:9292, oidc: {audience: kw}}\n", fields: []string{"management.oidc.issuer"},
		},
		"deny_log_per_second":  {yaml: "audit: {deny_log_per_second: -1}\n", fields: []string{"audit.deny_log_per_second"}},
		"log_level":            {yaml: "log_level: verbose\n", fields: []string{"log_level"}},
		"model_header":         {yaml: "model_header: x model\n", fields: []string{"model_header"}},
		"model_header colon":   {yaml: "model_header: 'x-model:'\n", fields: []string{"model_header"}},
		"credentials[i] empty": {yaml: "credentials: [{header: authorization}, {}]\n", fields: []string{"credentials[1]"}},
		"credentials[i] both": {
			yaml: "credentials: [{header: authorization, query: key}]\n", fields: []string{"credentials[0]"},
		},
		"credentials[i].header": {
			yaml: "credentials: [{header: authorization}, {header: 'x api key'}]\n", fields: []string{"credentials[1].header"},
		},
		"credentials[i].header keyward's own": {
			yaml: "credentials: [{header: X-Keyward-Token}]\n", fields: []string{"credentials[0].header"},
		},
		"routes[i].provider": {
			yaml: "routes: [{provider: openai}, {provider: 'bad name'}]\n", fields: []string{"routes[1].provider"},
		},
		"routes[i].provider missing": {yaml: "routes: [{hosts: [a.example]}]\n", fields: []string{"routes[0].provider"}},
		"routes[i].hosts[j] port": {
			yaml: "routes: [{provider: openai, hosts: [api.openai.com, 'api.openai.com:443']}]\n", fields: []string{"routes[0].hosts[1]"},
		},
		"routes[i].hosts[j] scheme": {
			yaml: "routes: [{provider: openai, hosts: ['https://api.openai.com']}]\n", fields: []string{"routes[0].hosts[0]"},
		},
		"routes[i].hosts[j] empty": {
			yaml: "routes: [{provider: openai, hosts: ['']}]\n", fields: []string{"routes[0].hosts[0]"},
		},
		"routes[i].hosts[j] duplicate": {
			yaml:   "routes: [{provider: a, hosts: [x.example]}, {provider: b, hosts: [X.example]}]\n",
			fields: []string{"routes[1].hosts[0]"},
		},
		"routes[i].path_prefix": {
			yaml:   "routes: [{provider: openai, path_prefix: openai, upstream: 'https://api.openai.com'}]\n",
			fields: []string{"routes[0].path_prefix"},
		},
		"routes[i].path_prefix duplicate": {
			yaml: "routes: [{provider: a, path_prefix: /x/, upstream: 'https://a.example'}," +
				" {provider: b, path_prefix: /x/, upstream: 'https://b.example'}]\n",
			fields: []string{"routes[1].path_prefix"},
		},
		"routes[i].upstream scheme": {
			yaml:   "routes: [{provider: openai, path_prefix: /openai/, upstream: 'ftp://api.openai.com'}]\n",
			fields: []string{"routes[0].upstream"},
		},
		"routes[i].upstream no host": {
			yaml:   "routes: [{provider: openai, path_prefix: /openai/, upstream: 'https:///v1'}]\n",
			fields: []string{"routes[0].upstream"},
		},
		"routes[i].upstream query (envoy-config's rule)": {
			yaml:   "routes: [{provider: openai, path_prefix: /openai/, upstream: 'https://api.openai.com/?x=1'}]\n",
			fields: []string{"routes[0].upstream"},
		},
		"routes[i].path_prefix query (envoy-config's rule)": {
			yaml:   "routes: [{provider: openai, path_prefix: '/openai/?/', upstream: 'https://api.openai.com'}]\n",
			fields: []string{"routes[0].path_prefix"},
		},
		"routes[i].provider too long": {
			yaml: "routes: [{provider: " + strings.Repeat("a", 64) + "}]\n", fields: []string{"routes[0].provider"},
		},
		"path_prefix without upstream": {
			yaml: "routes: [{provider: openai, path_prefix: /openai/}]\n", fields: []string{"routes[0]"},
		},
		"upstream without path_prefix": {
			yaml: "routes: [{provider: a}, {provider: openai, upstream: 'https://api.openai.com'}]\n", fields: []string{"routes[1]"},
		},
		"metrics.listen": {
			yaml: "metrics: {listen: localhost}\n", fields: []string{"metrics.listen"},
		},
		"endpoints.p[i].path": {
			yaml:   "endpoints: {vllm: [{method: POST, path: /v1/chat, model: none}, {method: POST, path: '/v1/a%2Fb', model: none}]}\n",
			fields: []string{"endpoints.vllm[1].path"},
		},
		"endpoints.p[i].model": {
			yaml: "endpoints: {vllm: [{method: POST, path: /v1/chat, model: header}]}\n", fields: []string{"endpoints.vllm[0].model"},
		},
		"endpoints.p[i].method": {
			yaml: "endpoints: {vllm: [{path: /v1/chat, model: none}]}\n", fields: []string{"endpoints.vllm[0].method"},
		},
		"endpoints provider": {
			yaml: "endpoints: {'bad name': [{method: POST, path: /v1/chat, model: none}]}\n", fields: []string{"endpoints"},
		},
		"key_delivery.p unknown": {
			yaml: "key_delivery: {openai: metadata, anthropic: Metadata}\n", fields: []string{"key_delivery.anthropic"},
		},
		"key_delivery.p empty": {
			yaml: "key_delivery: {openai: ''}\n", fields: []string{"key_delivery.openai"},
		},
		"key_delivery.p bearer": {
			yaml: "key_delivery: {openai: bearer}\n", fields: []string{"key_delivery.openai"},
		},
		"key_delivery provider": {
			yaml: "key_delivery: {'bad name': metadata}\n", fields: []string{"key_delivery"},
		},
		"metrics.listen without port": {
			yaml: "metrics: {listen: '127.0.0.1:'}\n", fields: []string{"metrics.listen"},
		},
		"several at once": {
			yaml: "listen: nope\nenvoy: {authz_address: 127.0.0.1:1, authz_timeout: -1s}\ncache: {size: -3, ttl: -1s}\n" +
				"log_level: loud\nroutes: [{provider: '-x', path_prefix: y}]\n",
			fields: []string{
				"listen", "envoy.authz_timeout", "cache.size", "cache.ttl", "log_level",
				"routes[0].provider", "routes[0].path_prefix", "routes[0]",
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := writeConfig(t, tc.yaml)
			_, err := config.Load(path, env(nil))
			if err == nil {
				t.Fatalf("Load(%q) succeeded, want errors for %v", tc.yaml, tc.fields)
			}
			wantPaths(t, err, tc.fields)
			if !strings.HasPrefix(err.Error(), "config "+path+": ") {
				t.Errorf("error does not name the file: %v", err)
			}
		})
	}
}

// TestValidateDirect checks Validate on values built in Go, where the
// defaults have not been applied.
func TestValidateDirect(t *testing.T) {
	tests := map[string]struct {
		mutate func(*config.Config)
		fields []string
	}{
		"default":         {mutate: func(*config.Config) {}},
		"no admin":        {mutate: func(c *config.Config) { c.Envoy.Admin = "" }},
		"zero poll":       {mutate: func(c *config.Config) { c.Store.PollInterval = 0 }, fields: []string{"store.poll_interval"}},
		"zero timeout":    {mutate: func(c *config.Config) { c.Envoy.AuthzTimeout = 0 }, fields: []string{"envoy.authz_timeout"}},
		"zero cache size": {mutate: func(c *config.Config) { c.Cache.Size = 0 }, fields: []string{"cache.size"}},
		"zero answers":    {mutate: func(c *config.Config) { c.Cache.Answers = -1 }, fields: []string{"cache.answers"}},
		"zero ttl":        {mutate: func(c *config.Config) { c.Cache.TTL = 0 }, fields: []string{"cache.ttl"}},
		"zero grace":      {mutate: func(c *config.Config) { c.ShutdownGrace = 0 }},
		"upper-case model header": {
			mutate: func(c *config.Config) { c.ModelHeader = "X-Model" }, fields: []string{"model_header"},
		},
		"empty model header": {mutate: func(c *config.Config) { c.ModelHeader = "" }, fields: []string{"model_header"}},
		"empty log level":    {mutate: func(c *config.Config) { c.LogLevel = "" }, fields: []string{"log_level"}},
		"metrics listen":     {mutate: func(c *config.Config) { c.Metrics.Listen = "9464" }, fields: []string{"metrics.listen"}},
		"metrics port 0":     {mutate: func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" }},
		"everything empty": {
			mutate: func(c *config.Config) { *c = config.Config{} },
			fields: []string{
				"listen", "envoy.listen", "envoy.authz_address", "store.poll_interval", "envoy.authz_timeout",
				"cache.size", "cache.ttl", "management.max_active_tokens", "log_level", "model_header",
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := config.Default()
			tc.mutate(c)
			err := c.Validate()
			if len(tc.fields) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors for %v", tc.fields)
			}
			wantPaths(t, err, tc.fields)
		})
	}
}

func TestParseStrict(t *testing.T) {
	tests := map[string]struct {
		yaml string
		want []string // substrings of the error
	}{
		"unknown top-level field": {yaml: "listen: 127.0.0.1:1\nlisten_addr: x\n", want: []string{"line 2", "listen_addr"}},
		"unknown nested field":    {yaml: "store:\n  file: s.yaml\n  fil: t.yaml\n", want: []string{"line 3", "fil"}},
		"unknown route field":     {yaml: "routes:\n  - provider: a\n    host: [x]\n", want: []string{"line 3", "host"}},
		"wrong type":              {yaml: "cache:\n  size: lots\n", want: []string{"line 2"}},
		"duration without unit":   {yaml: "shutdown_grace: 10\n", want: []string{"line 1"}},
		"not a mapping":           {yaml: "- listen\n", want: []string{"line 1"}},
		"syntax":                  {yaml: "listen: [\n", want: []string{"yaml"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := config.Parse([]byte(tc.yaml)); err == nil {
				t.Fatalf("Parse succeeded, want an error")
			}
			path := writeConfig(t, tc.yaml)
			_, err := config.Load(path, env(nil))
			if err == nil {
				t.Fatalf("Load succeeded, want an error")
			}
			for _, w := range append(tc.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "\n", "# comment\n", "---\n", "~\n"} {
		c, err := config.Parse([]byte(in))
		if err != nil {
			t.Errorf("Parse(%q) = %v", in, err)
			continue
		}
		if c == nil {
			t.Errorf("Parse(%q) returned nil config", in)
		}
	}
}

func TestEnvironment(t *testing.T) {
	tests := map[string]struct {
		file   string // configuration file content; none when empty
		env    map[string]string
		check  func(t *testing.T, c *config.Config)
		fields []string // the paths of the problems; none when valid
	}{
		"KEYWARD_LISTEN": {
			env: map[string]string{"KEYWARD_LISTEN": "127.0.0.1:7777"},
			check: func(t *testing.T, c *config.Config) {
				if c.Listen != "127.0.0.1:7777" || c.Envoy.AuthzAddress != "127.0.0.1:7777" {
					t.Errorf("listen = %q, authz_address = %q", c.Listen, c.Envoy.AuthzAddress)
				}
			},
		},
		"KEYWARD_LISTEN over the file": {
			file: "listen: 127.0.0.1:1000\n",
			env:  map[string]string{"KEYWARD_LISTEN": "127.0.0.1:2000"},
			check: func(t *testing.T, c *config.Config) {
				if c.Listen != "127.0.0.1:2000" {
					t.Errorf("listen = %q", c.Listen)
				}
			},
		},
		"KEYWARD_LISTEN invalid": {
			env:    map[string]string{"KEYWARD_LISTEN": "localhost"},
			fields: []string{"listen", "envoy.authz_address"}, // which follows listen
		},
		"KEYWARD_METRICS_LISTEN": {
			env: map[string]string{"KEYWARD_METRICS_LISTEN": "0.0.0.0:9464"},
			check: func(t *testing.T, c *config.Config) {
				if c.Metrics.Listen != "0.0.0.0:9464" {
					t.Errorf("metrics.listen = %q", c.Metrics.Listen)
				}
			},
		},
		"KEYWARD_METRICS_LISTEN over the file": {
			file: "metrics: {listen: 127.0.0.1:1000}\n",
			env:  map[string]string{"KEYWARD_METRICS_LISTEN": "127.0.0.1:2000"},
			check: func(t *testing.T, c *config.Config) {
				if c.Metrics.Listen != "127.0.0.1:2000" {
					t.Errorf("metrics.listen = %q", c.Metrics.Listen)
				}
			},
		},
		"KEYWARD_METRICS_LISTEN invalid": {
			env:    map[string]string{"KEYWARD_METRICS_LISTEN": "metrics.local"},
			fields: []string{"metrics.listen"},
		},
		"KEYWARD_STORE_FILE": {
			env: map[string]string{"KEYWARD_STORE_FILE": "/srv/store.yaml"},
			check: func(t *testing.T, c *config.Config) {
				if c.Store.File != "/srv/store.yaml" {
					t.Errorf("store.file = %q", c.Store.File)
				}
			},
		},
		"KEYWARD_LOG_LEVEL": {
			file: "log_level: error\n",
			env:  map[string]string{"KEYWARD_LOG_LEVEL": "debug"},
			check: func(t *testing.T, c *config.Config) {
				if c.LogLevel != "debug" {
					t.Errorf("log_level = %q", c.LogLevel)
				}
			},
		},
		"KEYWARD_LOG_LEVEL invalid": {
			env:    map[string]string{"KEYWARD_LOG_LEVEL": "chatty"},
			fields: []string{"log_level"},
		},
		"KEYWARD_DISABLE_CUSTOM_KEYS true": {
			env: map[string]string{"KEYWARD_DISABLE_CUSTOM_KEYS": "true"},
			check: func(t *testing.T, c *config.Config) {
				if !c.DisableCustomKeys {
					t.Error("disable_custom_keys = false")
				}
			},
		},
		"KEYWARD_DISABLE_CUSTOM_KEYS 0 over the file": {
			file: "disable_custom_keys: true\n",
			env:  map[string]string{"KEYWARD_DISABLE_CUSTOM_KEYS": "0"},
			check: func(t *testing.T, c *config.Config) {
				if c.DisableCustomKeys {
					t.Error("disable_custom_keys = true")
				}
			},
		},
		"KEYWARD_DISABLE_CUSTOM_KEYS invalid": {
			env:    map[string]string{"KEYWARD_DISABLE_CUSTOM_KEYS": "yes please"},
			fields: []string{"KEYWARD_DISABLE_CUSTOM_KEYS"},
		},
		"unrelated variables are ignored": {
			env: map[string]string{"KEYWARD_CACHE_SIZE": "x", "LISTEN": "x"},
			check: func(t *testing.T, c *config.Config) {
				wantDefaults(t, c)
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = writeConfig(t, tc.file)
			}
			c, err := config.Load(path, env(tc.env))
			if tc.fields != nil {
				wantPaths(t, err, tc.fields)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestStorePaths(t *testing.T) {
	tests := map[string]struct {
		yaml        string
		env         map[string]string
		wantFile    string // relative to the configuration's folder when it starts with "@"
		wantEnvFile string
	}{
		"defaults": {
			yaml: "", wantFile: "@keyward-store.yaml", wantEnvFile: "",
		},
		"relative to the file": {
			yaml: "store: {file: data/store.yaml, env_file: .env}\n", wantFile: "@data/store.yaml", wantEnvFile: "@.env",
		},
		"absolute stays": {
			yaml: "store: {file: /srv/store.yaml, env_file: /srv/keys.env}\n", wantFile: "/srv/store.yaml", wantEnvFile: "/srv/keys.env",
		},
		"env stays relative to the working dir": {
			yaml:     "store: {file: data/store.yaml}\n",
			env:      map[string]string{"KEYWARD_STORE_FILE": "run/store.yaml"},
			wantFile: "run/store.yaml",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := writeConfig(t, tc.yaml)
			dir := filepath.Dir(path)
			resolve := func(p string) string {
				if rest, ok := strings.CutPrefix(p, "@"); ok {
					return filepath.Join(dir, rest)
				}
				return p
			}
			c, err := config.Load(path, env(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if want := resolve(tc.wantFile); c.Store.File != want {
				t.Errorf("store.file = %q, want %q", c.Store.File, want)
			}
			if want := resolve(tc.wantEnvFile); c.Store.EnvFile != want {
				t.Errorf("store.env_file = %q, want %q", c.Store.EnvFile, want)
			}
		})
	}
}

// TestOIDCConfig: management.oidc's defaults, and its files relative to
// the configuration file.
func TestOIDCConfig(t *testing.T) {
	path := writeConfig(t, "management:\n  listen: 127.0.0.1:9292\n  oidc:\n    issuer: https://idp.example.com/realms/k\n    audience: keyward\n    ca_file: ca.pem\n    jwks_file: /srv/jwks.json\n")
	c, err := config.Load(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	o := c.Management.OIDC
	if o.CAFile != filepath.Join(filepath.Dir(path), "ca.pem") || o.JWKSFile != "/srv/jwks.json" {
		t.Fatalf("paths: %q %q", o.CAFile, o.JWKSFile)
	}
	if o.ClockSkew != 30*time.Second || o.RoleClaim != "keyward_role" || o.UserClaim != "sub" || len(o.AdminValues) != 1 || o.UserValues[0] != "user" {
		t.Fatalf("defaults: %+v", o)
	}
	if d := config.Default().Management.OIDC; d.Enabled() || d.RoleClaim != "" {
		t.Fatalf("OIDC on by default: %+v", d)
	}
}

func TestStorePathsRelativeConfigPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.Mkdir("etc", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("etc", "keyward.yaml"), []byte("store: {file: s.yaml}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(filepath.Join("etc", "keyward.yaml"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join("etc", "s.yaml"); c.Store.File != want {
		t.Errorf("store.file = %q, want %q", c.Store.File, want)
	}
}

// TestEnvoyAdmin checks that envoy.admin defaults when absent and that an
// explicit empty value turns the admin listener off, as documented.
func TestEnvoyAdmin(t *testing.T) {
	tests := map[string]struct {
		yaml string
		want string
	}{
		"absent":           {yaml: "", want: "127.0.0.1:9901"},
		"envoy without it": {yaml: "envoy: {listen: 127.0.0.1:10000}\n", want: "127.0.0.1:9901"},
		"empty envoy":      {yaml: "envoy:\n", want: "127.0.0.1:9901"},
		"set":              {yaml: "envoy: {admin: 127.0.0.1:9000}\n", want: "127.0.0.1:9000"},
		"off":              {yaml: "envoy: {admin: ''}\n", want: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := config.Load(writeConfig(t, tc.yaml), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			if c.Envoy.Admin != tc.want {
				t.Errorf("envoy.admin = %q, want %q", c.Envoy.Admin, tc.want)
			}
		})
	}
}

func TestHeaderNamesLowerCased(t *testing.T) {
	path := writeConfig(t, `
credentials:
  - header: X-API-Key
  - header: Authorization
  - query: Key
model_header: X-AI-EG-Model
routes:
  - provider: openai
    hosts: [API.OPENAI.COM]
`)
	c, err := config.Load(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	wantCreds := []config.Source{{Header: "x-api-key"}, {Header: "authorization"}, {Query: "Key"}}
	if !reflect.DeepEqual(c.Credentials, wantCreds) {
		t.Errorf("credentials = %+v, want %+v", c.Credentials, wantCreds)
	}
	if c.ModelHeader != "x-ai-eg-model" {
		t.Errorf("model_header = %q", c.ModelHeader)
	}
	if h := c.Routes[0].Hosts[0]; h != "api.openai.com" {
		t.Errorf("routes[0].hosts[0] = %q", h)
	}
}

func TestDefaultCredentialsFresh(t *testing.T) {
	// Each call returns a new slice: a caller changing one must not change
	// the defaults of the next configuration.
	a := config.DefaultCredentials()
	a[0].Header = "changed"
	if b := config.DefaultCredentials(); b[0].Header != "authorization" {
		t.Errorf("DefaultCredentials()[0] = %q after a caller changed its copy", b[0].Header)
	}
}

func FuzzParse(f *testing.F) {
	seeds := []string{
		"",
		"listen: 127.0.0.1:9191\n",
		"store: {file: s.yaml, env_file: .env, poll_interval: 1s}\n",
		"credentials: [{header: Authorization}, {query: key}, {}]\n",
		"routes: [{provider: openai, hosts: [a.example, 'b:1'], path_prefix: /o/, upstream: 'https://a.example'}]\n",
		"envoy: {listen: ':1', admin: '', authz_address: x, authz_timeout: -1s}\n",
		"cache: {size: -1, ttl: 1h}\nlog_level: debug\nshutdown_grace: 0s\n",
		"model_header: 'X Y'\ndisable_custom_keys: yes\n",
		"listen: &a x\nenvoy: {listen: *a}\n",
		"--- \n...\n",
		"[1, 2",
		"routes: !!map {}\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data)
		if err != nil {
			return
		}
		if c == nil {
			t.Fatal("Parse returned nil config and nil error")
		}
		_ = c.Validate()
	})
}

func TestVaultStoreConfig(t *testing.T) {
	c, err := config.Parse([]byte("store: {kind: vault}\nvault: {address: 'http://127.0.0.1:8200', auth: {method: approle, role_id: r}}\n"))
	if err != nil || c.Store.Kind != "vault" || c.Vault.Auth.RoleID != "r" || c.Vault.Address != "http://127.0.0.1:8200" {
		t.Fatalf("parse: %+v, %v", c, err)
	}
	if c, err = config.Load("", func(k string) string {
		return map[string]string{"KEYWARD_STORE": "vault"}[k]
	}); err != nil || c.Store.Kind != "vault" || c.Vault.Mount != "keyward" || c.Vault.PollInterval != time.Second {
		t.Fatalf("env KEYWARD_STORE=vault: %+v, %v", c, err)
	}
	for in, want := range map[string]string{
		"store: {kind: consul}\n":                                     "store.kind",
		"store: {kind: vault}\nvault: {auth: {method: ldap}}\n":       "vault.auth.method",
		"store: {kind: vault}\nvault: {auth: {method: kubernetes}}\n": "vault.auth.role",
		"store: {kind: vault}\nvault: {poll_interval: 1ms}\n":         "vault.poll_interval",
		"store: {kind: vault}\nvault: {mount: 'a b'}\n":               "vault.mount",
	} {
		path := filepath.Join(t.TempDir(), "k.yaml")
		os.WriteFile(path, []byte(in), 0o600)
		_, err := config.Load(path, func(string) string { return "" })
		got := paths(t, err)
		if !slices.Contains(got, want) {
			t.Errorf("%q: problems at %v, want %s:\n%v", in, got, want, err)
		}
	}
}

// The AI Gateway example's keyward configuration loads and puts both
// providers' keys in metadata.
func TestAIGatewayExample(t *testing.T) {
	c, err := config.Load("../examples/ai-gateway/keyward.yaml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"openai", "anthropic"} {
		if c.KeyDelivery[p] != authz.KeyInMetadata {
			t.Errorf("key_delivery.%s = %q, want metadata", p, c.KeyDelivery[p])
		}
	}
	if !c.DisableCustomKeys {
		t.Error("the example lets clients' own keys through, which cannot travel in metadata")
	}
}
