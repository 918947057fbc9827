package envoy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/servertls"
)

// UnixPrefix starts an authz address that is a unix socket path
// ("unix:/run/keyward/authz.sock"): Envoy reaches it as a pipe address.
const UnixPrefix = "unix:"

// AuthzHealthService is the gRPC health service name Envoy checks on each
// keyward replica; keyward reports it NOT_SERVING until it is ready and
// from the moment it starts to shut down.
const AuthzHealthService = "envoy.service.auth.v3.Authorization"

// How Envoy watches keyward replicas and retries a check that one of them
// could not answer. A replica turning NOT_SERVING is out of rotation
// within about unhealthy_threshold × interval (2 s), which keyward's
// shutdown_drain (5 s by default) covers; a replica that vanishes without
// a word is caught by the retry on another host until the health check
// notices.
const (
	healthInterval          = time.Second
	healthNoTrafficInterval = 5 * time.Second
	healthTimeout           = time.Second
	healthUnhealthy         = 2
	healthHealthy           = 1
	// Retries must fit in the check's timeout (500 ms by default): a
	// refused connection fails at once, so short back-offs suffice.
	retryOn          = "connect-failure,refused-stream,reset,unavailable"
	retryCount       = 2
	retryBaseBackoff = 10 * time.Millisecond
	// maxRetries lifts Envoy's default of 3 concurrent retries per
	// cluster: when a replica dies every check in flight on it retries at
	// once, and each retry refused by the breaker is a failed request.
	maxRetries = 1024

	previousHostsPredicate = "envoy.retry_host_predicates.previous_hosts"
)

// AuthzTLS is how Envoy speaks mutual TLS to keyward: it presents its
// client certificate and accepts only a keyward certificate that chains to
// CAFile and carries one of ServerIdentities. Envoy reads the files at
// start; to rotate Envoy's own certificate without a restart, deliver it
// by SDS (as Istio's and SPIRE's agents do).
type AuthzTLS struct {
	// CertFile is Envoy's client certificate chain, an absolute path.
	CertFile string `yaml:"cert_file"`
	// KeyFile is its private key, an absolute path.
	KeyFile string `yaml:"key_file"`
	// CAFile is the bundle keyward's certificate must chain to, an
	// absolute path.
	CAFile string `yaml:"ca_file"`
	// ServerIdentities are keyward's acceptable identities, at least one:
	// "spiffe://…" URIs are matched with URI SANs, anything else with DNS
	// SANs. The first DNS name is also sent as SNI.
	ServerIdentities []string `yaml:"server_identities"`
}

// Enabled reports whether any field is set: TLS to keyward is then on.
func (t AuthzTLS) Enabled() bool {
	return t.CertFile != "" || t.KeyFile != "" || t.CAFile != "" || len(t.ServerIdentities) > 0
}

// Validate checks t; each problem is a *field.Error whose path is prefix,
// a dot and the field's snake_case name.
func (t AuthzTLS) Validate(prefix string) error { return errors.Join(t.problems(prefix)...) }

func (t AuthzTLS) problems(prefix string) []error {
	var errs []error
	add := func(name, format string, args ...any) {
		errs = append(errs, field.Errorf(prefix+"."+name, format, args...))
	}
	for _, f := range []struct{ name, path string }{{"cert_file", t.CertFile}, {"key_file", t.KeyFile}, {"ca_file", t.CAFile}} {
		if !strings.HasPrefix(f.path, "/") {
			add(f.name, "required with TLS, an absolute path as Envoy sees it; got %q", f.path)
		}
	}
	if len(t.ServerIdentities) == 0 {
		add("server_identities", "at least one: without it Envoy would accept any certificate of the CA")
	}
	for i, id := range t.ServerIdentities {
		if err := servertls.ValidateIdentity(id); err != nil {
			add(fmt.Sprintf("server_identities[%d]", i), "%v", err)
		}
	}
	return errs
}

// authzEndpoint is one parsed keyward address.
type authzEndpoint struct {
	pipe string // a unix socket path, or
	host string // a hostname or IP, and
	port uint32
}

func parseAuthzAddress(addr string) (authzEndpoint, error) {
	if path, ok := strings.CutPrefix(addr, UnixPrefix); ok {
		if !strings.HasPrefix(path, "/") {
			return authzEndpoint{}, fmt.Errorf("unix socket path must be absolute, got %q", path)
		}
		return authzEndpoint{pipe: path}, nil
	}
	host, port, err := splitHostPort(addr)
	return authzEndpoint{host: host, port: port}, err
}

// authzAddresses returns the keyward addresses o names.
func (o Options) authzAddresses() []string {
	if len(o.AuthzAddresses) > 0 {
		return o.AuthzAddresses
	}
	if o.AuthzAddress == "" {
		return nil
	}
	return []string{o.AuthzAddress}
}

// validateAuthz checks the keyward addresses with add, and returns the
// problems of the TLS settings.
func (o Options) validateAuthz(add func(field, format string, args ...any)) []error {
	switch {
	case o.AuthzAddress != "" && len(o.AuthzAddresses) > 0:
		add("authz_addresses", "set authz_address or authz_addresses, not both")
	case o.AuthzAddress != "":
		if _, err := parseAuthzAddress(o.AuthzAddress); err != nil {
			add("authz_address", "%v", err)
		}
	case len(o.AuthzAddresses) == 0:
		add("authz_address", "required")
	}
	seen, pipes := map[string]int{}, 0
	for i, a := range o.AuthzAddresses {
		field := fmt.Sprintf("authz_addresses[%d]", i)
		ep, err := parseAuthzAddress(a)
		if err != nil {
			add(field, "%v", err)
		} else if j, dup := seen[a]; dup {
			add(field, "%q already given as authz_addresses[%d]", a, j)
		}
		seen[a] = i
		if ep.pipe != "" {
			pipes++
		}
	}
	if pipes > 0 && pipes < len(o.AuthzAddresses) {
		add("authz_addresses", "unix sockets and TCP addresses do not mix in one cluster")
	}
	if o.AuthzTLS.Enabled() {
		return o.AuthzTLS.problems("authz_tls")
	}
	return nil
}

// authzCluster is the cluster of keyward replicas: every address an
// endpoint (a hostname: every address it resolves to), each health
// checked over gRPC, HTTP/2 as ext_authz needs, and mutual TLS when
// configured.
func authzCluster(o Options) (*clusterv3.Cluster, error) {
	var addrs []*corev3.Address
	dns := false
	for _, a := range o.authzAddresses() {
		ep, err := parseAuthzAddress(a)
		if err != nil {
			return nil, fmt.Errorf("authz address: %w", err)
		}
		if ep.pipe != "" {
			addrs = append(addrs, &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: ep.pipe}}})
			continue
		}
		dns = dns || !isIP(ep.host)
		addrs = append(addrs, address(ep.host, ep.port))
	}
	h2, err := http2Options()
	if err != nil {
		return nil, err
	}
	c := clusterOf(AuthzCluster, addrs, dns, clusterv3.Cluster_STRICT_DNS, authzConnectTimeout)
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpOptionsKey: h2}
	c.HealthChecks = []*corev3.HealthCheck{authzHealthCheck()}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxRetries: wrapperspb.UInt32(maxRetries),
	}}}
	if o.AuthzTLS.Enabled() {
		if c.TransportSocket, err = authzTLSSocket(o.AuthzTLS); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func authzHealthCheck() *corev3.HealthCheck {
	return &corev3.HealthCheck{
		Timeout:            durationpb.New(healthTimeout),
		Interval:           durationpb.New(healthInterval),
		NoTrafficInterval:  durationpb.New(healthNoTrafficInterval),
		UnhealthyThreshold: wrapperspb.UInt32(healthUnhealthy),
		HealthyThreshold:   wrapperspb.UInt32(healthHealthy),
		HealthChecker: &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{
			ServiceName: AuthzHealthService,
		}},
	}
}

// authzRetryPolicy retries a check that a replica could not answer (it
// refused the connection, reset it, or was shutting down) on another
// replica.
//
// Envoy turns a gRPC service's retry policy into a route's, and takes the
// per-try timeout from the back-off's max_interval: a short one would cut
// every check that waits for the store (up to cache.check_deadline) and
// retry it until the authz timeout, ending in Envoy's bare 503 instead of
// keyward's answer. So max_interval is the whole authz timeout; the waits
// between retries stay short, set by base_interval (10ms, then 30ms).
func authzRetryPolicy(timeout time.Duration) (*corev3.RetryPolicy, error) {
	previous, err := anyOf(&previoushostsv3.PreviousHostsPredicate{})
	if err != nil {
		return nil, err
	}
	return &corev3.RetryPolicy{
		RetryOn:    retryOn,
		NumRetries: wrapperspb.UInt32(retryCount),
		RetryBackOff: &corev3.BackoffStrategy{
			BaseInterval: durationpb.New(retryBaseBackoff),
			MaxInterval:  durationpb.New(max(timeout, retryBaseBackoff)),
		},
		RetryHostPredicate: []*corev3.RetryPolicy_RetryHostPredicate{{
			Name:       previousHostsPredicate,
			ConfigType: &corev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: previous},
		}},
		HostSelectionRetryMaxAttempts: 5,
	}, nil
}

// authzTLSSocket is Envoy's side of the mutual TLS to keyward.
func authzTLSSocket(t AuthzTLS) (*corev3.TransportSocket, error) {
	var sans []*tlsv3.SubjectAltNameMatcher
	sni := ""
	for _, id := range t.ServerIdentities {
		kind := tlsv3.SubjectAltNameMatcher_DNS
		if servertls.IsURI(id) {
			kind = tlsv3.SubjectAltNameMatcher_URI
		} else if sni == "" {
			sni = id
		}
		sans = append(sans, &tlsv3.SubjectAltNameMatcher{
			SanType: kind,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}},
		})
	}
	file := func(path string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
	}
	tlsCtx, err := anyOf(&tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: file(t.CertFile), PrivateKey: file(t.KeyFile)}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa:                 file(t.CAFile),
				MatchTypedSubjectAltNames: sans,
			}},
			// gRPC over TLS negotiates HTTP/2 by ALPN; grpc-go refuses a
			// connection without it.
			AlpnProtocols: []string{"h2"},
		},
	})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: tlsSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx}}, nil
}

// http2Options make a cluster speak HTTP/2, as gRPC needs.
func http2Options() (*anypb.Any, error) {
	return anyOf(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
}
