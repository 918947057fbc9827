package e2e

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/keyward/keyward/envoy"
	"github.com/keyward/keyward/internal/fakeprovider"
	"github.com/keyward/keyward/internal/testpki"
)

// The provider hosts of the Istio example (examples/istio).
const (
	openaiHost    = "api.openai.com"
	anthropicHost = "api.anthropic.com"
	// unroutedHost is a provider the gateway serves (a ServiceEntry and
	// VirtualService of its own) that keyward's routes do not list.
	unroutedHost = "api.mistral.ai"
)

// istioRoutes is the example's keyward configuration for Istio: the
// provider comes from the Host header.
const istioRoutes = "../examples/istio/keyward-routes.yaml"

// TestIstioGateway runs the Istio example's request path end to end: real
// Envoy configured as Istio configures an egress gateway or waypoint with
// examples/istio (the ext_authz filter of the mesh's extension provider,
// no per-route context_extensions, one virtual host per provider host,
// TLS origination to the provider), keyward with the example's host
// routes, a fake provider behind TLS with a certificate for the provider
// names, and the official SDKs calling http://api.openai.com as a meshed
// application does.
func TestIstioGateway(t *testing.T) {
	routes, err := os.ReadFile(istioRoutes)
	if err != nil {
		t.Fatal(err)
	}
	var upstream *tlsProvider
	s := newStack(t, stackOptions{
		routes: string(routes),
		envoy: func(s *stack, listen, admin string) []byte {
			upstream = startTLSProvider(t, s.provider, openaiHost, anthropicHost, unroutedHost)
			caFile := filepath.Join(s.dir, "provider-ca.pem")
			testpki.WriteAtomic(t, caFile, upstream.caPEM)
			b, err := istioGatewayBootstrap(istioGateway{
				listen: listen, admin: admin, authz: s.authz,
				provider: upstream.addr, caFile: caFile, hosts: []string{openaiHost, anthropicHost, unroutedHost},
			})
			if err != nil {
				t.Fatal(err)
			}
			y, err := envoy.MarshalYAML(b)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(y, []byte("context_extensions")) {
				t.Fatalf("the gateway's bootstrap sets context_extensions, which Istio cannot:\n%s", y)
			}
			return y
		},
	})
	tok := s.token("alice", "eng", "-name", "istio")
	tokens := []string{tok}
	secrets := []string{tok, tok[19:], openaiKey, anthropicKey}
	hostEnv := func(host string) string { return "KW_HOST=" + host }

	// sawProvider checks the last request the provider received: with
	// the Host host, over TLS naming the provider in SNI, with the
	// provider's key, and nothing of any keyward token.
	sawProvider := func(t *testing.T, host, header, want string) fakeprovider.Request {
		t.Helper()
		req, ok := s.provider.Last()
		if !ok {
			t.Fatal("the provider received nothing")
		}
		if req.Host != host {
			t.Errorf("provider saw Host %q, want %q", req.Host, host)
		}
		if got := req.Header.Get(header); got != want {
			t.Errorf("provider saw %s without the provider key (%d characters)", header, len(got))
		}
		for name, values := range req.Header {
			for _, v := range values {
				for _, kt := range tokens {
					if strings.Contains(v, kt[3:]) {
						t.Errorf("provider saw a keyward token in %s", name)
					}
				}
			}
		}
		name, _, _ := strings.Cut(strings.ToLower(host), ":")
		if sni := upstream.lastSNI(); sni != name {
			t.Errorf("the provider's TLS handshake named %q, want %q", sni, name)
		}
		return req
	}

	for _, mode := range sdkModes {
		t.Run("python-"+mode, func(t *testing.T) {
			host, header, want := openaiHost, "authorization", "Bearer "+openaiKey
			if strings.HasPrefix(mode, "anthropic") {
				host, header, want = anthropicHost, "x-api-key", anthropicKey
			}
			r := s.pythonSDK(t, mode, tok, hostEnv(host))
			if !r.OK || r.Text != fakeprovider.Reply {
				t.Fatalf("SDK call: %+v, want the fake provider's reply", r)
			}
			req := sawProvider(t, host, header, want)
			if host == anthropicHost && req.Header.Get("authorization") != "" {
				t.Error("an authorization header reached Anthropic")
			}
		})
	}

	t.Run("bad-token", func(t *testing.T) {
		last := "x" // the token with its last character changed
		if strings.HasSuffix(tok, last) {
			last = "y"
		}
		before := len(s.provider.Requests())
		for _, host := range []string{openaiHost, anthropicHost} {
			mode := strings.Split(host, ".")[1]
			r := s.pythonSDK(t, mode, tok[:len(tok)-1]+last, hostEnv(host))
			if r.Error != "AuthenticationError" || r.Status != 401 || r.Code != "invalid_token" {
				t.Errorf("%s: %+v, want AuthenticationError 401 with keyward's code invalid_token", host, r)
			}
		}
		if n := len(s.provider.Requests()) - before; n != 0 {
			t.Errorf("the provider received %d requests", n)
		}
	})

	t.Run("host-spellings", func(t *testing.T) {
		// The gateway's virtual host takes the provider's name with any
		// port and letter case; so does keyward's host mapping.
		for _, host := range []string{"api.openai.com:80", "API.OpenAI.com"} {
			r := s.do("POST", "/v1/chat/completions", map[string]string{"host": host, "authorization": "Bearer " + tok}, chatBody)
			if r.status != 200 {
				t.Errorf("Host %s: %d %s", host, r.status, r.body)
				continue
			}
			sawProvider(t, host, "authorization", "Bearer "+openaiKey)
		}
	})

	t.Run("unknown-host", func(t *testing.T) {
		before := len(s.provider.Requests())
		// A host the gateway serves and keyward does not map: keyward
		// refuses it, whatever the token.
		for _, host := range []string{unroutedHost, unroutedHost + ":80"} {
			r := s.do("POST", "/v1/chat/completions", map[string]string{"host": host, "authorization": "Bearer " + tok}, chatBody)
			if r.status != 403 || r.errorCode() != "unknown_provider" {
				t.Errorf("Host %s: %d %s, want keyward's 403 unknown_provider", host, r.status, r.body)
			}
		}
		// A host no virtual host of the gateway serves: Envoy answers 404
		// before any check (no route, nothing to authorize).
		for _, host := range []string{"api.example.com", "api.openai.com.evil.example"} {
			r := s.do("POST", "/v1/chat/completions", map[string]string{"host": host, "authorization": "Bearer " + tok}, chatBody)
			if r.status != 404 {
				t.Errorf("Host %s: %d %s, want Envoy's 404", host, r.status, r.body)
			}
		}
		if n := len(s.provider.Requests()) - before; n != 0 {
			t.Errorf("the provider received %d requests", n)
		}
	})

	t.Run("restricted-models", func(t *testing.T) {
		// A group that restricts models needs the body: the gateway
		// forwards it (includeRequestBodyInCheck), keyward reads the model.
		s.kw("group", "add", "claude", "-models", "claude-sonnet-4-5")
		s.kw("user", "set", "alice", "-groups", "eng,claude")
		// s.token returns once keyward knows the token, created after the
		// user's new group: keyward knows both.
		ctok := s.token("alice", "claude")
		tokens, secrets = append(tokens, ctok), append(secrets, ctok, ctok[19:])
		r := s.pythonSDK(t, "anthropic", ctok, hostEnv(anthropicHost)) // the script asks for claude-sonnet-4-5
		if !r.OK || r.Text != fakeprovider.Reply {
			t.Fatalf("allowed model: %+v", r)
		}
		sawProvider(t, anthropicHost, "x-api-key", anthropicKey)
		before := len(s.provider.Requests())
		r = s.pythonSDK(t, "openai", ctok, hostEnv(openaiHost)) // the script asks for gpt-4o-mini
		if r.Error != "PermissionDeniedError" || r.Status != 403 || r.Code != "model_not_allowed" {
			t.Errorf("disallowed model: %+v, want PermissionDeniedError 403 model_not_allowed", r)
		}
		resp := s.do("POST", "/v1/messages", map[string]string{"host": anthropicHost, "x-api-key": ctok},
			`{"model":"claude-opus-4","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
		if resp.status != 403 || resp.errorCode() != "model_not_allowed" {
			t.Errorf("disallowed model: %d %s, want 403 model_not_allowed", resp.status, resp.body)
		}
		if n := len(s.provider.Requests()) - before; n != 0 {
			t.Errorf("the provider received %d refused requests", n)
		}
	})

	t.Run("no-secrets-in-logs", func(t *testing.T) {
		assertNoSecrets(t, "keyward's log", s.logs.String(), secrets...)
	})
}

// tlsProvider is the fake provider behind TLS, with a certificate for the
// provider hosts from a CA of its own, recording the server name (SNI)
// of the connection each request came on.
type tlsProvider struct {
	addr  string // 127.0.0.1:port
	caPEM []byte
	mu    sync.Mutex
	snis  []string
}

func startTLSProvider(t *testing.T, provider *fakeprovider.Server, hosts ...string) *tlsProvider {
	t.Helper()
	ca := testpki.NewCA(t, "fake LLM provider CA")
	leaf := ca.Issue(t, hosts...)
	p := &tlsProvider{caPEM: ca.PEM}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.snis = append(p.snis, r.TLS.ServerName)
		p.mu.Unlock()
		provider.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.addr = srv.Listener.Addr().String()
	return p
}

// lastSNI is the server name of the latest request's connection.
func (p *tlsProvider) lastSNI() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.snis) == 0 {
		return ""
	}
	return p.snis[len(p.snis)-1]
}

// istioGateway is what Istio would configure an egress gateway (or
// waypoint) with from examples/istio.
type istioGateway struct {
	listen, admin string
	// authz is keyward's address: the extension provider's service.
	authz string
	// provider is where every provider host resolves to (the ServiceEntry's
	// DNS), the fake provider's TLS address.
	provider string
	// caFile is the bundle the provider's certificate is checked against
	// (Istio's system CA bundle).
	caFile string
	hosts  []string
}

// istioGatewayBootstrap builds the gateway's Envoy configuration the way
// istiod builds it from examples/istio, named as Istio names things:
// the CUSTOM policy's ext_authz filter from the meshConfig extension
// provider (timeout 0.5s, fail closed, 503 on error, the body up to 1 MiB,
// partial allowed, as bytes) and nothing per route; Istio's default
// connection manager settings (path normalization BASE: normalized, no
// slash merging, escaped slashes kept, headers with underscores allowed);
// one virtual host per ServiceEntry host, matching any port; one cluster
// per host on port 443 originating TLS with the host as SNI and required
// SAN (the DestinationRule). Istio also puts an RBAC filter in shadow mode
// before ext_authz so that only requests the policy's rules match are
// checked; the example's rule matches every request, so it is left out.
func istioGatewayBootstrap(g istioGateway) (*bootstrapv3.Bootstrap, error) {
	authzHost, authzPort, err := hostPort(g.authz)
	if err != nil {
		return nil, err
	}
	providerHost, providerPort, err := hostPort(g.provider)
	if err != nil {
		return nil, err
	}
	authzCluster := fmt.Sprintf("outbound|%d||keyward.keyward.svc.cluster.local", authzPort)
	h2, err := anyOf(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		},
	}})
	if err != nil {
		return nil, err
	}
	authz := staticCluster(authzCluster, authzHost, authzPort)
	authz.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2}
	clusters := []*clusterv3.Cluster{authz}

	var vhosts []*routev3.VirtualHost
	for _, host := range g.hosts {
		name := "outbound|443||" + host
		c := staticCluster(name, providerHost, providerPort)
		tlsCtx, err := anyOf(&tlsv3.UpstreamTlsContext{
			Sni: host,
			CommonTlsContext: &tlsv3.CommonTlsContext{
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: g.caFile}},
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
						SanType: tlsv3.SubjectAltNameMatcher_DNS,
						Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: host}},
					}},
				}},
			},
		})
		if err != nil {
			return nil, err
		}
		c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx}}
		clusters = append(clusters, c)
		vhosts = append(vhosts, &routev3.VirtualHost{
			Name:    host + ":80",
			Domains: []string{host, host + ":*"},
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name},
					Timeout:          durationpb.New(0), // Istio's default: no route timeout
				}},
			}},
		})
	}

	extAuthz, err := anyOf(&extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: authzCluster}},
			Timeout:         durationpb.New(500 * time.Millisecond),
		}},
		TransportApiVersion: corev3.ApiVersion_V3,
		FailureModeAllow:    false,
		StatusOnError:       &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		WithRequestBody: &extauthzv3.BufferSettings{
			MaxRequestBytes:     envoy.DefaultMaxRequestBytes,
			AllowPartialMessage: true,
			PackAsBytes:         true,
		},
	})
	if err != nil {
		return nil, err
	}
	router, err := anyOf(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm, err := anyOf(&hcmv3.HttpConnectionManager{
		StatPrefix:       "outbound_0.0.0.0_80",
		CodecType:        hcmv3.HttpConnectionManager_AUTO,
		UseRemoteAddress: wrapperspb.Bool(true),
		NormalizePath:    wrapperspb.Bool(true),
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name:         "http.80",
			VirtualHosts: vhosts,
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: envoy.ExtAuthzFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: extAuthz}},
			{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}},
		},
	})
	if err != nil {
		return nil, err
	}
	listenHost, listenPort, err := hostPort(g.listen)
	if err != nil {
		return nil, err
	}
	adminHost, adminPort, err := hostPort(g.admin)
	if err != nil {
		return nil, err
	}
	return &bootstrapv3.Bootstrap{
		Admin: &bootstrapv3.Admin{Address: socketAddr(adminHost, adminPort)},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: []*listenerv3.Listener{{
				Name:    "0.0.0.0_80",
				Address: socketAddr(listenHost, listenPort),
				FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
					Name:       "envoy.filters.network.http_connection_manager",
					ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
				}}}},
			}},
			Clusters: clusters,
		},
	}, nil
}

func staticCluster(name, host string, port uint32) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddr(host, port)}},
			}}}},
		},
	}
}

func socketAddr(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func hostPort(addr string) (string, uint32, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: port: %w", addr, err)
	}
	return host, uint32(port), nil
}

func anyOf(m proto.Message) (*anypb.Any, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return a, nil
}
