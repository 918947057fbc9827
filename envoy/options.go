// Package envoy generates the Envoy bootstrap that `keyward envoy-config`
// prints: one HTTP listener whose ext_authz filter asks keyward over gRPC
// (transport API v3) and whose router sends path prefixes to LLM provider
// upstreams. The keyward cluster may hold several replicas (health-checked,
// a failed check retried on another) over mutual TLS or a unix socket.
// Everything is built from go-control-plane typed messages; YAML is only a
// rendering of those messages (see MarshalYAML).
package envoy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/record"
)

// DefaultAuthzTimeout is the ext_authz gRPC call timeout used when
// Options.AuthzTimeout is zero.
const DefaultAuthzTimeout = 500 * time.Millisecond

// DefaultTrustedCAFile is the system trust bundle (Debian/Ubuntu/Alpine path)
// used to verify https upstreams when Options.TrustedCAFile is empty.
const DefaultTrustedCAFile = "/etc/ssl/certs/ca-certificates.crt"

// DefaultMaxConnections caps concurrent downstream connections when
// Options.MaxConnections is zero. Envoy has no cap unless told (and warns at
// startup); long SSE streams hold a connection each, so the cap is generous.
const DefaultMaxConnections = 50000

// DefaultMaxRequestBytes is how much of a request body Envoy buffers and
// sends to keyward when Options.ForwardBody is set and
// Options.MaxRequestBytes is zero. Larger bodies are sent truncated
// (allow_partial_message): keyward then refuses them in groups that
// restrict models (it cannot see every "model" key), and lets them through
// elsewhere. A megabyte holds the long prompts of long-context models.
const DefaultMaxRequestBytes = 1 << 20

// MaxMaxRequestBytes bounds Options.MaxRequestBytes: the body travels in
// the check request, which keyward's gRPC server takes up to 4 MiB.
const MaxMaxRequestBytes = 3 << 20

// Route sends one path prefix to one LLM provider upstream.
type Route struct {
	// Provider is the provider's name. It names the Envoy cluster
	// ("provider_<name>") and is sent to keyward as the route's
	// context_extensions {"provider": Provider}. Letters, digits, '.', '_'
	// and '-' only.
	Provider string
	// PathPrefix is the request path prefix, e.g. "/openai/". It must start
	// and end with '/' so "/openai/" never matches "/openaiX". It is
	// replaced by the upstream's path before forwarding.
	PathPrefix string
	// Upstream is the provider's base URL, e.g. "https://api.openai.com",
	// "http://127.0.0.1:8080" or "https://myres.openai.azure.com/openai".
	// https means TLS with SNI and certificate checks against TrustedCAFile;
	// the Host header is rewritten to the URL's host; a path in the URL
	// becomes the prefix the PathPrefix is rewritten to ("/" when none).
	Upstream string
}

// Options describes the bootstrap to generate. The zero values of the
// optional fields select the documented defaults.
type Options struct {
	// ListenAddress is the IP:port of the LLM listener, e.g.
	// "127.0.0.1:10000". Required.
	ListenAddress string
	// AdminAddress is the IP:port of Envoy's admin listener; "" means no
	// admin listener.
	AdminAddress string
	// AuthzAddress is keyward's gRPC ext_authz address: host:port (an IP
	// gives a STATIC cluster, a hostname a STRICT_DNS one with every
	// address the name resolves to an endpoint) or unix:/path, a unix
	// socket. Set it or AuthzAddresses.
	AuthzAddress string
	// AuthzAddresses are several keyward replicas, each written as
	// AuthzAddress is; unix sockets and TCP addresses do not mix. Every
	// replica is health-checked (gRPC health, AuthzHealthService) and a
	// check a replica cannot answer is retried on another.
	AuthzAddresses []string
	// AuthzTLS, when any field is set, makes Envoy speak mutual TLS to
	// keyward.
	AuthzTLS AuthzTLS
	// DownstreamTLS, when any field is set, serves the LLM listener over
	// TLS, verifying client certificates when it names a client CA (mesh
	// identity: see DownstreamTLS). Off by default.
	DownstreamTLS DownstreamTLS
	// AuthzTimeout bounds each ext_authz call. Defaults to
	// DefaultAuthzTimeout (500ms).
	AuthzTimeout time.Duration
	// Routes are the provider routes. At least one is required. They are
	// emitted longest prefix first so a more specific prefix always wins.
	Routes []Route
	// ForwardBody makes Envoy buffer up to MaxRequestBytes of the request
	// body and send it to keyward, so keyward can read the model from the
	// JSON. Defaults to false: headers only.
	ForwardBody bool
	// MaxRequestBytes is how much of the body ForwardBody sends. Defaults
	// to DefaultMaxRequestBytes; at most MaxMaxRequestBytes.
	MaxRequestBytes uint32
	// TrustedCAFile is the PEM bundle that https upstreams are verified
	// against. Defaults to DefaultTrustedCAFile.
	TrustedCAFile string
	// MaxConnections caps active downstream connections across all
	// listeners (Envoy's global_downstream_max_connections overload
	// monitor). Defaults to DefaultMaxConnections.
	MaxConnections int64
	// Tracing, when any field is set, turns on Envoy's OpenTelemetry
	// tracing, joined by keyward's Check spans. Off by default.
	Tracing Tracing
	// JWT are the issuers whose JWTs Envoy's jwt_authn verifies before
	// ext_authz, passing the verified payloads to keyward (see
	// JWTIssuer). None by default: no jwt_authn filter.
	JWT []JWTIssuer
}

// Validate reports every problem in o, each as a *field.Error naming its
// field, joined with errors.Join; nil when o can be turned into a bootstrap.
func (o Options) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, field.Errorf(path, format, args...))
	}

	if err := checkListenAddress(o.ListenAddress); err != nil {
		add("listen_address", "%v", err)
	}
	if o.AdminAddress != "" {
		if err := checkListenAddress(o.AdminAddress); err != nil {
			add("admin_address", "%v", err)
		}
	}
	errs = append(errs, o.validateAuthz(add)...)
	if o.DownstreamTLS.Enabled() {
		errs = append(errs, o.DownstreamTLS.problems("downstream_tls")...)
	}
	if o.AuthzTimeout < 0 {
		add("authz_timeout", "must not be negative, got %s", o.AuthzTimeout)
	}
	if o.MaxConnections < 0 {
		add("max_connections", "must not be negative, got %d", o.MaxConnections)
	}
	if o.MaxRequestBytes > MaxMaxRequestBytes {
		add("max_request_bytes", "at most %d, got %d", MaxMaxRequestBytes, o.MaxRequestBytes)
	}
	if o.Tracing.Enabled() {
		errs = append(errs, o.Tracing.problems("tracing")...)
	}
	if o.TrustedCAFile != "" && !strings.HasPrefix(o.TrustedCAFile, "/") {
		add("trusted_ca_file", "must be an absolute path, got %q", o.TrustedCAFile)
	}

	if err := ValidateJWT(o.JWT); err != nil {
		errs = append(errs, field.Prefix("jwt", err))
	}
	if len(o.Routes) == 0 {
		add("routes", "at least one route is required")
	}
	errs = append(errs, o.validateRoutes())
	return errors.Join(errs...)
}

// validateRoutes checks each route, and that no two share a provider or a
// path prefix.
func (o Options) validateRoutes() error {
	var l field.List
	providers := map[string]int{}
	prefixes := map[string]int{}
	for i, r := range o.Routes {
		path := fmt.Sprintf("routes[%d]", i)
		if err := record.ValidateName("provider", r.Provider); err != nil {
			l.Merge(path+".provider", err)
		} else if j, dup := providers[r.Provider]; dup {
			l.Add(path+".provider", "%q already used by routes[%d]", r.Provider, j)
		} else {
			providers[r.Provider] = i
		}
		if err := ValidatePathPrefix(r.PathPrefix); err != nil {
			l.Merge(path+".path_prefix", err)
		} else if j, dup := prefixes[r.PathPrefix]; dup {
			l.Add(path+".path_prefix", "%q already used by routes[%d]", r.PathPrefix, j)
		} else {
			prefixes[r.PathPrefix] = i
		}
		l.Merge(path+".upstream", ValidateUpstream(r.Upstream))
	}
	return l.Err()
}

// withDefaults returns o with its zero optional fields set.
func (o Options) withDefaults() Options {
	if o.AuthzTimeout == 0 {
		o.AuthzTimeout = DefaultAuthzTimeout
	}
	if o.TrustedCAFile == "" {
		o.TrustedCAFile = DefaultTrustedCAFile
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	if o.MaxRequestBytes == 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	return o
}

// checkListenAddress accepts IP:port with a non-zero port: Envoy binds
// listeners to IPs only, and port 0 would leave the port unknown to clients.
func checkListenAddress(addr string) error {
	if addr == "" {
		return errors.New("required")
	}
	host, port, err := splitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("host %q must be an IP address", host)
	}
	if port == 0 {
		return errors.New("port must not be 0")
	}
	return nil
}

// splitHostPort splits host:port and checks both parts; port 0 is allowed
// here and refused by the callers that need a real port.
func splitHostPort(addr string) (string, uint32, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("want host:port, got %q", addr)
	}
	if host == "" {
		return "", 0, fmt.Errorf("missing host in %q", addr)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return host, uint32(port), nil
}

// ValidatePathPrefix checks a route's path prefix: a plain path (no query,
// fragment or spaces) that starts and ends with '/'.
func ValidatePathPrefix(p string) error {
	switch {
	case p == "":
		return errors.New("required")
	case !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/"):
		return fmt.Errorf("%q must start and end with '/'", p)
	case strings.ContainsAny(p, "?# \t\r\n"):
		return fmt.Errorf("%q must be a plain path (no query, fragment or spaces)", p)
	}
	return nil
}

// upstream is a parsed Route.Upstream.
type upstream struct {
	tls        bool
	host       string // hostname or IP, without brackets
	port       uint32
	isIP       bool
	hostHeader string // host[:port], port omitted when it is the scheme's default
	pathPrefix string // always ends with '/'
}

// ValidateUpstream checks a route's upstream: an http or https URL with a
// host, and no user info, query or fragment.
func ValidateUpstream(raw string) error {
	_, err := parseUpstream(raw)
	return err
}

func parseUpstream(raw string) (upstream, error) {
	if raw == "" {
		return upstream{}, errors.New("required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return upstream{}, fmt.Errorf("not a URL: %w", err)
	}
	var up upstream
	var defaultPort uint32
	switch u.Scheme {
	case "https":
		up.tls, defaultPort = true, 443
	case "http":
		defaultPort = 80
	default:
		return upstream{}, fmt.Errorf("scheme must be http or https, got %q", u.Scheme)
	}
	switch {
	case u.User != nil:
		return upstream{}, errors.New("must not contain user info")
	case u.RawQuery != "" || u.ForceQuery:
		return upstream{}, errors.New("must not contain a query")
	case u.Fragment != "":
		return upstream{}, errors.New("must not contain a fragment")
	case u.Hostname() == "":
		return upstream{}, errors.New("missing host")
	}
	up.host, up.port = u.Hostname(), defaultPort
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return upstream{}, fmt.Errorf("bad port %q", p)
		}
		up.port = uint32(n)
	}
	_, ipErr := netip.ParseAddr(up.host)
	up.isIP = ipErr == nil
	up.hostHeader = up.host
	if up.port != defaultPort {
		up.hostHeader = net.JoinHostPort(up.host, strconv.Itoa(int(up.port)))
	} else if up.isIP && strings.Contains(up.host, ":") {
		up.hostHeader = "[" + up.host + "]"
	}
	up.pathPrefix = u.EscapedPath()
	if !strings.HasSuffix(up.pathPrefix, "/") {
		up.pathPrefix += "/"
	}
	return up, nil
}
