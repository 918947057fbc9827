package config

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/envoy"
	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
)

// minPollInterval is the shortest interval at which files are checked
// for changes (store.poll_interval, tls.reload_interval).
const minPollInterval = 10 * time.Millisecond

// logLevels are the values of log_level.
var logLevels = []string{"debug", "info", "warn", "error"}

// Validate checks every field and reports all problems at once, each a
// *field.Error whose path is the field's YAML path (see field.Paths), e.g.
// "routes[1].provider" or "vault.auth.role". Each section's rules are its
// own validate method; rules shared with the package that uses a field
// (credential sources, route prefixes and upstreams, provider names,
// rotation graces, Envoy's TLS) are that package's.
func (c *Config) Validate() error {
	var l field.List
	l.Merge("listen", checkListen(c.Listen))
	l.Merge("tls", c.TLS.validate(true))
	l.Merge("envoy", c.Envoy.validate())
	l.Merge("management", c.Management.validate())
	l.Merge("metrics", c.Metrics.validate())
	c.validateStore(&l)
	l.Merge("cache", c.Cache.validate(c.Envoy.AuthzTimeout))
	c.validateProcess(&l)
	for i, s := range c.Credentials {
		l.Merge(fmt.Sprintf("credentials[%d]", i), authz.Source{Header: s.Header, Query: s.Query}.Validate())
	}
	l.Merge("endpoints", c.validateEndpoints())
	l.Merge("key_delivery", validateKeyDelivery(c.KeyDelivery))
	l.Merge("routes", validateRoutes(c.Routes))
	l.Merge("jwt", c.validateJWT())
	return l.Err()
}

// checkHostPort checks a TCP address: host:port, the port given (the host
// may be empty: every interface).
func checkHostPort(addr string) error {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return fmt.Errorf("%q is not host:port", addr)
	}
	return nil
}

// checkListen checks an address keyward listens on or Envoy dials: a TCP
// address, or unix: and an absolute socket path.
func checkListen(addr string) error {
	if path, ok := strings.CutPrefix(addr, UnixPrefix); ok {
		if !filepath.IsAbs(path) {
			return fmt.Errorf("%q: the unix socket path must be absolute", addr)
		}
		return nil
	}
	return checkHostPort(addr)
}

// validate checks the TLS of a listener, when on. The ext_authz listener
// (mutual) answers with provider keys: its TLS must authenticate the
// client with a client CA and an allow-list, where management and metrics
// may leave client certificates out. Paths are relative to the tls
// section.
func (t TLS) validate(mutual bool) error {
	if !t.Enabled() {
		return nil
	}
	var l field.List
	l.Merge("", t.Files.Validate(""))
	if mutual && t.ClientCAFile == "" {
		l.Add("client_ca_file", "required: only Envoy may ask for keys")
	}
	if mutual && len(t.AllowedClients) == 0 {
		l.Add("allowed_clients", "at least one identity (Envoy's spiffe:// ID or DNS name): the CA may sign other workloads too")
	}
	if t.ReloadInterval < minPollInterval {
		l.Add("reload_interval", "%s is too short (at least %s)", t.ReloadInterval, minPollInterval)
	}
	return l.Err()
}

// validateOptionalListener checks a listener that an empty listen turns
// off (management, metrics): a TCP address, and TLS only with an address.
// Paths are relative to the listener's section.
func validateOptionalListener(l *field.List, listen string, t TLS) {
	if listen != "" {
		l.Merge("listen", checkHostPort(listen))
	} else if t.Enabled() {
		l.Add("tls", "set without listen")
	}
	l.Merge("tls", t.validate(false))
}

// validate checks the management section; paths are relative to it.
func (m Management) validate() error {
	var l field.List
	validateOptionalListener(&l, m.Listen, m.TLS)
	l.Merge("rotation_grace", manage.ValidateRotationGrace(m.RotationGrace))
	if m.MaxActiveTokens < 1 {
		l.Add("max_active_tokens", "must be at least 1")
	}
	l.Merge("oidc", m.OIDC.Validate())
	if m.OIDC.Enabled() && m.Listen == "" {
		l.Add("oidc", "set without listen")
	}
	return l.Err()
}

// validate checks the metrics section; paths are relative to it.
func (m Metrics) validate() error {
	var l field.List
	validateOptionalListener(&l, m.Listen, m.TLS)
	return l.Err()
}

// validate checks the envoy section; paths are relative to it.
func (e Envoy) validate() error {
	var l field.List
	l.Merge("listen", checkHostPort(e.Listen))
	if e.Admin != "" {
		l.Merge("admin", checkHostPort(e.Admin))
	}
	if e.AuthzAddress != "" || len(e.AuthzAddresses) == 0 {
		l.Merge("authz_address", checkListen(e.AuthzAddress))
	}
	for i, a := range e.AuthzAddresses {
		l.Merge(fmt.Sprintf("authz_addresses[%d]", i), checkListen(a))
	}
	if e.AuthzAddress != "" && len(e.AuthzAddresses) > 0 {
		l.Add("authz_addresses", "set envoy.authz_address or envoy.authz_addresses, not both")
	}
	if e.AuthzTLS.Enabled() {
		l.Merge("", e.AuthzTLS.Validate("authz_tls"))
	}
	if e.DownstreamTLS.Enabled() {
		l.Merge("", e.DownstreamTLS.Validate("downstream_tls"))
	}
	if e.Tracing.Enabled() {
		l.Merge("", e.Tracing.Validate("tracing"))
	}
	if e.AuthzTimeout <= 0 {
		l.Add("authz_timeout", "must be positive")
	}
	if e.MaxRequestBytes > envoy.MaxMaxRequestBytes {
		l.Add("max_request_bytes", "%d is more than %d", e.MaxRequestBytes, envoy.MaxMaxRequestBytes)
	}
	return l.Err()
}

// validateStore checks the store section, and the vault section when the
// store is Vault.
func (c *Config) validateStore(l *field.List) {
	switch c.Store.Kind {
	case "file", "": // "" only in configurations built in Go
	case "vault":
		l.Merge("vault", c.Vault.Validate())
	default:
		l.Add("store.kind", "%q is not file or vault", c.Store.Kind)
	}
	if c.Store.PollInterval < minPollInterval {
		l.Add("store.poll_interval", "%s is too short (at least %s)", c.Store.PollInterval, minPollInterval)
	}
}

// validate checks the cache section against Envoy's authz timeout, which
// the check deadline must undercut; paths are relative to the section.
func (c Cache) validate(authzTimeout time.Duration) error {
	var l field.List
	if c.Size < 1 {
		l.Add("size", "must be at least 1")
	}
	if c.Answers < 0 {
		l.Add("answers", "must not be negative")
	}
	if c.TTL <= 0 {
		l.Add("ttl", "must be positive")
	}
	switch d := c.CheckDeadline; {
	case d < 0 || d == 0 && authzTimeout > 0:
		l.Add("check_deadline", "must be positive")
	case authzTimeout <= 0:
		// Reported as envoy.authz_timeout; the default deadline derives
		// from it.
	case d >= authzTimeout:
		l.Add("check_deadline", "%s is not shorter than envoy.authz_timeout (%s): Envoy would give up first", d, authzTimeout)
	}
	return l.Err()
}

// validateProcess checks the settings of the process as a whole: logging,
// auditing, shutdown and the model header.
func (c *Config) validateProcess(l *field.List) {
	if c.Audit.DenyLogPerSecond < 0 {
		l.Add("audit.deny_log_per_second", "must not be negative (0 logs every denial)")
	}
	if c.ShutdownGrace < 0 {
		l.Add("shutdown_grace", "must not be negative")
	}
	if c.ShutdownDrain < 0 {
		l.Add("shutdown_drain", "must not be negative")
	}
	if !slices.Contains(logLevels, c.LogLevel) {
		l.Add("log_level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	if !record.ValidHeaderName(c.ModelHeader) {
		l.Add("model_header", "%q is not a lower-case header name", c.ModelHeader)
	}
}

// validateJWT checks the JWT issuers, and that Envoy looks for JWTs only
// in headers keyward reads credentials from: keyward removes those from
// every request it lets through, so no JWT reaches a provider.
func (c *Config) validateJWT() error {
	var l field.List
	l.Merge("", envoy.ValidateJWT(c.JWT))
	for i, j := range c.JWT {
		for k, h := range j.FromHeaders {
			if !slices.ContainsFunc(c.Credentials, func(s Source) bool { return s.Header == h.Name }) {
				l.Add(fmt.Sprintf("[%d].from_headers[%d].name", i, k), "%q is not one of credentials: keyward would not remove the JWT from it", h.Name)
			}
		}
	}
	return l.Err()
}

// validateEndpoints checks Endpoints; paths are relative to the endpoints
// section ("vllm[1].path"), a bad provider name is reported at the section.
func (c *Config) validateEndpoints() error {
	var l field.List
	for provider, specs := range c.EndpointSpecs() {
		if err := record.ValidateName("provider", provider); err != nil {
			l.Add("", "%v", err)
		}
		var ee *authz.EndpointError
		switch err := authz.ParseEndpoints(specs); {
		case errors.As(err, &ee):
			l.Add(fmt.Sprintf("%s[%d].%s", provider, ee.Index, ee.Field), "%s", ee.Msg)
		case err != nil:
			l.Merge(provider, err)
		}
	}
	return l.Err()
}

// validateKeyDelivery checks key_delivery; paths are relative to the
// section ("openai"), a bad provider name is reported at the section, as
// in endpoints. Like routes and endpoints, a provider is named, not looked
// up: the store, not the configuration, knows which exist, and a name
// without a record changes nothing.
func validateKeyDelivery(delivery map[string]authz.KeyDelivery) error {
	var l field.List
	for provider, d := range delivery {
		if err := record.ValidateName("provider", provider); err != nil {
			l.Add("", "%v", err)
			continue
		}
		if d == "" {
			l.Add(provider, "empty: header or metadata")
			continue
		}
		l.Merge(provider, d.Validate())
	}
	return l.Err()
}

// validateRoutes checks each route, and that no two share a host or a
// path prefix; paths are relative to the routes section ("[1].provider").
func validateRoutes(routes []Route) error {
	var l field.List
	hosts, prefixes := map[string]int{}, map[string]int{}
	for i, r := range routes {
		path := fmt.Sprintf("[%d]", i)
		l.Merge(path, r.validate())
		for j, h := range r.Hosts {
			if k, dup := hosts[h]; dup {
				l.Add(fmt.Sprintf("%s.hosts[%d]", path, j), "%q is already routed by routes[%d]", h, k)
			}
			hosts[h] = i
		}
		if k, dup := prefixes[r.PathPrefix]; dup && r.PathPrefix != "" {
			l.Add(path+".path_prefix", "%q is already used by routes[%d]", r.PathPrefix, k)
		}
		prefixes[r.PathPrefix] = i
	}
	return l.Err()
}

// validate checks one route on its own: a provider name, host names, and
// the path prefix and upstream envoy-config routes by (both or neither).
func (r Route) validate() error {
	var l field.List
	if err := record.ValidateName("provider", r.Provider); err != nil {
		l.Add("provider", "%v", err)
	}
	for j, h := range r.Hosts {
		if h == "" || strings.ContainsAny(h, "/: ") {
			l.Add(fmt.Sprintf("hosts[%d]", j), "%q is not a host name (no scheme, port or path)", h)
		}
	}
	if r.PathPrefix != "" {
		l.Merge("path_prefix", envoy.ValidatePathPrefix(r.PathPrefix))
	}
	if r.Upstream != "" {
		l.Merge("upstream", envoy.ValidateUpstream(r.Upstream))
	}
	if (r.PathPrefix == "") != (r.Upstream == "") {
		l.Add("", "path_prefix and upstream go together (both for envoy-config, or neither)")
	}
	return l.Err()
}
