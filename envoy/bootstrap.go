package envoy

import (
	"cmp"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	downstreamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Names used in the generated bootstrap. They show up in Envoy's stats and
// logs, so they are part of the output contract (and of the golden files).
const (
	// AuthzCluster is the cluster that points at keyward's gRPC server.
	AuthzCluster = "keyward"
	// ProviderClusterPrefix prefixes Route.Provider to name its cluster.
	ProviderClusterPrefix = "provider_"
	// ExtAuthzFilter is the ext_authz HTTP filter's name, also the key of
	// its per-route configuration.
	ExtAuthzFilter = "envoy.filters.http.ext_authz"
	// ContextExtensionProvider is the context_extensions key that carries
	// the provider name to keyward.
	ContextExtensionProvider = "provider"
	// ContextExtensionPathPrefix and ContextExtensionPrefixRewrite carry
	// a route's path prefix and what Envoy rewrites it to, so that keyward
	// sees the path the provider will (authz.PathPrefixExtension).
	ContextExtensionPathPrefix    = "path_prefix"
	ContextExtensionPrefixRewrite = "prefix_rewrite"
	// NoRouteBody is the body of the 404 sent for paths no route matches.
	NoRouteBody = `{"error":{"message":"no route","type":"invalid_request_error","code":"no_route"}}`

	listenerName   = "llm"
	routerFilter   = "envoy.filters.http.router"
	hcmFilter      = "envoy.filters.network.http_connection_manager"
	tlsSocket      = "envoy.transport_sockets.tls"
	httpOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

	connectionsMonitor = "envoy.resource_monitors.global_downstream_max_connections"

	authzConnectTimeout    = time.Second
	upstreamConnectTimeout = 5 * time.Second
)

// Bootstrap validates o and builds the Envoy bootstrap for it.
func Bootstrap(o Options) (*bootstrapv3.Bootstrap, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("envoy options: %w", err)
	}
	o = o.withDefaults()

	clusters, vhRoutes, err := providerRoutes(o)
	if err != nil {
		return nil, err
	}
	trace, collector, err := tracing(o.Tracing)
	if err != nil {
		return nil, err
	}
	if collector != nil {
		clusters = append(clusters, collector)
	}
	var jwt *jwtv3.JwtAuthentication
	if len(o.JWT) > 0 {
		var jwks []*clusterv3.Cluster
		if jwt, jwks, err = jwtAuthn(o); err != nil {
			return nil, err
		}
		clusters = append(clusters, jwks...)
	}
	l, err := listener(o, vhRoutes, trace, jwt)
	if err != nil {
		return nil, err
	}
	overload, err := overloadManager(o.MaxConnections)
	if err != nil {
		return nil, err
	}
	b := &bootstrapv3.Bootstrap{
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: []*listenerv3.Listener{l},
			Clusters:  clusters,
		},
		OverloadManager: overload,
	}
	if o.AdminAddress != "" {
		addr, err := socketAddress(o.AdminAddress)
		if err != nil {
			return nil, fmt.Errorf("admin address: %w", err)
		}
		b.Admin = &bootstrapv3.Admin{Address: addr}
	}
	return b, nil
}

// providerRoutes returns the clusters (keyward's, then one per provider)
// and the routes of o, the catch-all 404 route last.
func providerRoutes(o Options) ([]*clusterv3.Cluster, []*routev3.Route, error) {
	// Longest prefix first: Envoy takes the first matching route, so a
	// "/openai/v2/" route must come before "/openai/". Distinct prefixes
	// that end in '/' and have the same length never overlap, so ties keep
	// their input order without changing behaviour.
	routes := slices.Clone(o.Routes)
	slices.SortStableFunc(routes, func(a, b Route) int {
		return cmp.Compare(len(b.PathPrefix), len(a.PathPrefix))
	})
	authzCluster, err := authzCluster(o)
	if err != nil {
		return nil, nil, err
	}
	clusters := []*clusterv3.Cluster{authzCluster}
	var vhRoutes []*routev3.Route
	for _, r := range routes {
		up, err := parseUpstream(r.Upstream) // cannot fail after Validate
		if err != nil {
			return nil, nil, fmt.Errorf("route %q: %w", r.Provider, err)
		}
		c, err := providerCluster(r.Provider, up, o.TrustedCAFile)
		if err != nil {
			return nil, nil, err
		}
		rt, err := providerRoute(r, up)
		if err != nil {
			return nil, nil, err
		}
		clusters = append(clusters, c)
		vhRoutes = append(vhRoutes, rt)
	}
	notFound, err := noRoute()
	if err != nil {
		return nil, nil, err
	}
	return clusters, append(vhRoutes, notFound), nil
}

func overloadManager(maxConns int64) (*overloadv3.OverloadManager, error) {
	limit, err := anyOf(&downstreamv3.DownstreamConnectionsConfig{MaxActiveDownstreamConnections: maxConns})
	if err != nil {
		return nil, err
	}
	return &overloadv3.OverloadManager{
		ResourceMonitors: []*overloadv3.ResourceMonitor{{
			Name:       connectionsMonitor,
			ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: limit},
		}},
	}, nil
}

// listener is the LLM listener; trace, when not nil, is its tracing.
func listener(o Options, routes []*routev3.Route, trace *hcmv3.HttpConnectionManager_Tracing, jwt *jwtv3.JwtAuthentication) (*listenerv3.Listener, error) {
	filters, err := httpFilters(o, jwt)
	if err != nil {
		return nil, err
	}
	hcm, err := anyOf(&hcmv3.HttpConnectionManager{
		StatPrefix: listenerName,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		// The provider, and so the key keyward injects, is chosen by path:
		// normalise it first so "/openai/../anthropic/" or "//openai/"
		// cannot route one way and be seen another way upstream.
		NormalizePath: wrapperspb.Bool(true),
		MergeSlashes:  true,
		// An escaped slash or backslash (%2F, %5C) makes a path that
		// Envoy, keyward and the provider may split differently
		// (".../models%2Fgemini-pro:..."): refused with a 400.
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_REJECT_REQUEST,
		// x_api_key is a header Envoy passes on and some servers read as
		// x-api-key: dropped before any filter, so that no credential
		// travels under a name keyward does not remove.
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			HeadersWithUnderscoresAction: corev3.HttpProtocolOptions_DROP_HEADER,
		},
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: listenerName,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    listenerName,
				Domains: []string{"*"},
				Routes:  routes,
			}},
		}},
		HttpFilters: filters,
		Tracing:     trace,
	})
	if err != nil {
		return nil, err
	}
	addr, err := socketAddress(o.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("listen address: %w", err)
	}
	chain := &listenerv3.FilterChain{
		Filters: []*listenerv3.Filter{{
			Name:       hcmFilter,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}},
	}
	if o.DownstreamTLS.Enabled() {
		if chain.TransportSocket, err = downstreamTLSSocket(o.DownstreamTLS); err != nil {
			return nil, err
		}
	}
	return &listenerv3.Listener{
		Name:         listenerName,
		Address:      addr,
		FilterChains: []*listenerv3.FilterChain{chain},
	}, nil
}

// httpFilters are the listener's HTTP filters: jwt_authn when jwt is
// not nil, ext_authz, then the router.
func httpFilters(o Options, jwt *jwtv3.JwtAuthentication) ([]*hcmv3.HttpFilter, error) {
	filter, err := extAuthz(o)
	if err != nil {
		return nil, err
	}
	authz, err := anyOf(filter)
	if err != nil {
		return nil, err
	}
	// No x-envoy-* headers towards the provider: x-envoy-original-path
	// would show it the mesh's route, and the path before any
	// rewrite; x-envoy-original-host the mesh's host names.
	router, err := anyOf(&routerv3.Router{SuppressEnvoyHeaders: true})
	if err != nil {
		return nil, err
	}
	filters := []*hcmv3.HttpFilter{
		{Name: ExtAuthzFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: authz}},
		{Name: routerFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}},
	}
	if jwt != nil {
		j, err := anyOf(jwt)
		if err != nil {
			return nil, err
		}
		filters = append([]*hcmv3.HttpFilter{{Name: JWTFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: j}}}, filters...)
	}
	return filters, nil
}

// extAuthz is the filter config. It deliberately sets no allowed_headers,
// allowed_upstream_headers or header mutation rules: keyward must be able to
// overwrite (OVERWRITE_IF_EXISTS_OR_ADD) and remove any credential header and
// query parameter, and must see every header to find the client credential.
func extAuthz(o Options) (*extauthzv3.ExtAuthz, error) {
	retry, err := authzRetryPolicy(o.AuthzTimeout)
	if err != nil {
		return nil, err
	}
	a := &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: AuthzCluster,
			}},
			Timeout:     durationpb.New(o.AuthzTimeout),
			RetryPolicy: retry,
		}},
		TransportApiVersion:    corev3.ApiVersion_V3,
		FailureModeAllow:       false, // fail closed: no keyward, no provider key
		StatusOnError:          &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		IncludePeerCertificate: true, // mesh identity (SPIFFE) from mTLS
	}
	if len(o.JWT) > 0 {
		// The verified JWT payloads, for keyward to map to a user.
		a.MetadataContextNamespaces = []string{JWTFilter}
	}
	if o.ForwardBody {
		a.WithRequestBody = &extauthzv3.BufferSettings{
			MaxRequestBytes:     o.MaxRequestBytes,
			AllowPartialMessage: true,
		}
	}
	return a, nil
}

func providerRoute(r Route, up upstream) (*routev3.Route, error) {
	perRoute, err := anyOf(&extauthzv3.ExtAuthzPerRoute{
		Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{
			ContextExtensions: map[string]string{
				ContextExtensionProvider:      r.Provider,
				ContextExtensionPathPrefix:    r.PathPrefix,
				ContextExtensionPrefixRewrite: up.pathPrefix,
			},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &routev3.Route{
		Name:  ProviderClusterPrefix + r.Provider,
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: r.PathPrefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ProviderClusterPrefix + r.Provider},
			PrefixRewrite:    up.pathPrefix,
			// A literal rather than auto_host_rewrite: auto rewrite does
			// nothing for STATIC clusters, and the literal is what the
			// provider's virtual hosting and certificate expect.
			HostRewriteSpecifier: &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: up.hostHeader},
			// 0 disables the route timeout: streamed (SSE) completions
			// can run for minutes.
			Timeout: durationpb.New(0),
		}},
		TypedPerFilterConfig: map[string]*anypb.Any{ExtAuthzFilter: perRoute},
	}, nil
}

// noRoute answers every unmatched path without asking keyward: there is no
// provider to authorize for, and keyward should not see such traffic.
func noRoute() (*routev3.Route, error) {
	disabled, err := anyOf(&extauthzv3.ExtAuthzPerRoute{
		Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true},
	})
	if err != nil {
		return nil, err
	}
	return &routev3.Route{
		Name:  "no_route",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: http.StatusNotFound,
			Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: NoRouteBody}},
		}},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "content-type", Value: "application/json"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
		TypedPerFilterConfig: map[string]*anypb.Any{ExtAuthzFilter: disabled},
	}, nil
}

func providerCluster(provider string, up upstream, caFile string) (*clusterv3.Cluster, error) {
	return upstreamCluster(ProviderClusterPrefix+provider, up, caFile)
}

// upstreamCluster is the cluster name of an http or https upstream,
// verified against caFile.
func upstreamCluster(name string, up upstream, caFile string) (*clusterv3.Cluster, error) {
	// LOGICAL_DNS: one connection target at a time, re-resolved as DNS
	// changes — what a large provider behind a CDN wants.
	c := cluster(name, up.host, up.port, up.isIP, clusterv3.Cluster_LOGICAL_DNS, upstreamConnectTimeout)
	if !up.tls {
		return c, nil
	}
	san := &tlsv3.SubjectAltNameMatcher{
		SanType: tlsv3.SubjectAltNameMatcher_DNS,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: up.host}},
	}
	sni := up.host
	if up.isIP {
		// SNI cannot carry an IP (RFC 6066); check the IP SAN instead.
		san.SanType, sni = tlsv3.SubjectAltNameMatcher_IP_ADDRESS, ""
	}
	tlsCtx, err := anyOf(&tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: caFile}},
				// Envoy checks only the chain unless told which name to
				// expect; without this any publicly trusted certificate
				// would be accepted for the provider.
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{san},
			}},
		},
	})
	if err != nil {
		return nil, err
	}
	c.TransportSocket = &corev3.TransportSocket{
		Name:       tlsSocket,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx},
	}
	return c, nil
}

// cluster builds a one-endpoint cluster: STATIC for an IP, dnsType for a
// hostname.
func cluster(name, host string, port uint32, ip bool, dnsType clusterv3.Cluster_DiscoveryType, connectTimeout time.Duration) *clusterv3.Cluster {
	return clusterOf(name, []*corev3.Address{address(host, port)}, !ip, dnsType, connectTimeout)
}

// clusterOf builds a cluster of addrs: dnsType when one of them is a
// hostname, else STATIC.
func clusterOf(name string, addrs []*corev3.Address, dns bool, dnsType clusterv3.Cluster_DiscoveryType, connectTimeout time.Duration) *clusterv3.Cluster {
	endpoints := make([]*endpointv3.LbEndpoint, len(addrs))
	for i, a := range addrs {
		endpoints[i] = &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: a}}}
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: endpoints}},
		},
	}
	if dns {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: dnsType}
		// Prefer IPv4: many containers have no IPv6 route, and AUTO would
		// try an unreachable AAAA first.
		c.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
	}
	return c
}

func socketAddress(hostPort string) (*corev3.Address, error) {
	host, port, err := splitHostPort(hostPort)
	if err != nil {
		return nil, err
	}
	return address(host, port), nil
}

func address(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func isIP(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}

func anyOf(m proto.Message) (*anypb.Any, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return a, nil
}
