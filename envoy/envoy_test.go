package envoy_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	jose "github.com/go-jose/go-jose/v4"
	kwauthz "github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/envoy"
	"github.com/keyward/keyward/envoy/envoytest"
	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/internal/testoidc"
	"github.com/keyward/keyward/internal/testpki"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the current output")

func validOptions() envoy.Options {
	return envoy.Options{
		ListenAddress: "127.0.0.1:10000",
		AuthzAddress:  "127.0.0.1:9000",
		Routes: []envoy.Route{
			{Provider: "openai", PathPrefix: "/openai/", Upstream: "https://api.openai.com"},
		},
	}
}

// goldenCases are rendered, compared with testdata and fed to Envoy.
var goldenCases = map[string]envoy.Options{
	// minimal: defaults everywhere, IP authz (STATIC), no admin listener.
	"minimal": validOptions(),
	// full: every kind of upstream, DNS authz, admin, body forwarding, and
	// a nested prefix given after its parent to show the reordering.
	"full": {
		ListenAddress:  "0.0.0.0:10000",
		AdminAddress:   "127.0.0.1:9901",
		AuthzAddress:   "keyward.keyward.svc.cluster.local:9000",
		AuthzTimeout:   250 * time.Millisecond,
		ForwardBody:    true,
		TrustedCAFile:  "/etc/pki/tls/certs/ca-bundle.crt",
		MaxConnections: 1000,
		Routes: []envoy.Route{
			{Provider: "openai", PathPrefix: "/openai/", Upstream: "https://api.openai.com"},
			{Provider: "anthropic", PathPrefix: "/anthropic/", Upstream: "https://api.anthropic.com/"},
			{Provider: "azure", PathPrefix: "/azure/", Upstream: "https://myres.openai.azure.com/openai"},
			{Provider: "openai-v2", PathPrefix: "/openai/v2/", Upstream: "https://api.openai.com:8443/v1/"},
			{Provider: "local", PathPrefix: "/local/", Upstream: "http://127.0.0.1:8080"},
			{Provider: "vllm", PathPrefix: "/vllm/", Upstream: "http://vllm.internal"},
			{Provider: "ipv6", PathPrefix: "/ipv6/", Upstream: "https://[2001:db8::1]"},
		},
	},
	// replicas: two keyward replicas by IP over mutual TLS.
	"replicas-mtls": {
		ListenAddress:  "127.0.0.1:10000",
		AuthzAddresses: []string{"10.0.0.11:9191", "10.0.0.12:9191"},
		AuthzTLS: envoy.AuthzTLS{
			CertFile: "/etc/envoy/keyward/tls.crt", KeyFile: "/etc/envoy/keyward/tls.key", CAFile: "/etc/envoy/keyward/ca.crt",
			ServerIdentities: []string{"spiffe://cluster.local/ns/keyward/sa/keyward", "keyward.keyward.svc"},
		},
		Routes: []envoy.Route{{Provider: "openai", PathPrefix: "/openai/", Upstream: "https://api.openai.com"}},
	},
	// downstream-mtls: the LLM listener over TLS, requiring client
	// certificates of the mesh CA, whose URI SANs keyward maps.
	"downstream-mtls": {
		ListenAddress: "0.0.0.0:10443",
		AuthzAddress:  "127.0.0.1:9191",
		DownstreamTLS: envoy.DownstreamTLS{
			CertFile: "/etc/envoy/llm/tls.crt", KeyFile: "/etc/envoy/llm/tls.key",
			ClientCAFile: "/etc/envoy/llm/mesh-ca.crt", RequireClientCert: true,
		},
		Routes: []envoy.Route{{Provider: "openai", PathPrefix: "/openai/", Upstream: "https://api.openai.com"}},
	},
	// tracing: Envoy's OpenTelemetry tracer, to a collector by name,
	// sampling a quarter of the requests that come without a trace.
	"tracing": {
		ListenAddress: "127.0.0.1:10000",
		AuthzAddress:  "127.0.0.1:9191",
		Tracing:       envoy.Tracing{OTLPAddress: "otel-collector.observability:4317", ServiceName: "mesh-envoy", Sampling: ptr(25.0)},
		Routes:        []envoy.Route{{Provider: "openai", PathPrefix: "/openai/", Upstream: "https://api.openai.com"}},
	},
	// jwt: jwt_authn before ext_authz, one issuer with a local JWKS
	// file and the default headers, one with a remote JWKS over https
	// (its own cluster) and a custom header.
	"jwt": {
		ListenAddress: "127.0.0.1:10000",
		AuthzAddress:  "127.0.0.1:9191",
		JWT: []envoy.JWTIssuer{
			{Issuer: "https://idp.example.com", Audiences: []string{"llm-gateway"}, LocalJWKS: "/etc/envoy/jwks/idp.json"},
			{
				Issuer:      "https://login.corp.example",
				RemoteJWKS:  envoy.RemoteJWKS{URI: "https://login.corp.example/.well-known/jwks.json", CacheDuration: 5 * time.Minute},
				FromHeaders: []envoy.JWTHeader{{Name: "x-corp-jwt"}},
			},
		},
		Routes: []envoy.Route{{Provider: "openai", PathPrefix: "/openai/", Upstream: "https://api.openai.com"}},
	},
	// unix: keyward as a sidecar on a unix socket (a pipe address).
	"unix": {
		ListenAddress: "127.0.0.1:10000",
		AuthzAddress:  "unix:/run/keyward/authz.sock",
		Routes:        []envoy.Route{{Provider: "openai", PathPrefix: "/openai/", Upstream: "https://api.openai.com"}},
	},
}

func render(t *testing.T, o envoy.Options) []byte {
	t.Helper()
	b, err := envoy.Bootstrap(o)
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	y, err := envoy.MarshalYAML(b)
	if err != nil {
		t.Fatalf("MarshalYAML: %v", err)
	}
	return y
}

func TestGolden(t *testing.T) {
	for name, o := range goldenCases {
		t.Run(name, func(t *testing.T) {
			got := render(t, o)
			if again := render(t, o); !bytes.Equal(got, again) {
				t.Fatal("output differs between two renders of the same options")
			}
			path := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (run with -update to accept):\n%s", path, got)
			}
		})
	}
}

// TestEnvoyAcceptsConfig runs the real `envoy --mode validate` on every
// golden case, so the YAML is known to load, not only to look right.
func TestEnvoyAcceptsConfig(t *testing.T) {
	bin := envoytest.Binary(t)
	for name, o := range goldenCases {
		t.Run(name, func(t *testing.T) {
			// Validation opens the CA file: point at one that exists here.
			o.TrustedCAFile = writeCA(t)
			if o.AuthzTLS.Enabled() {
				o.AuthzTLS = writeAuthzTLS(t, o.AuthzTLS.ServerIdentities)
			}
			if o.DownstreamTLS.Enabled() {
				tls := writeAuthzTLS(t, nil)
				o.DownstreamTLS.CertFile, o.DownstreamTLS.KeyFile, o.DownstreamTLS.ClientCAFile = tls.CertFile, tls.KeyFile, tls.CAFile
			}
			o.JWT = slices.Clone(o.JWT)
			for i := range o.JWT {
				if o.JWT[i].LocalJWKS != "" {
					o.JWT[i].LocalJWKS = writeJWKS(t)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := envoytest.Validate(ctx, bin, render(t, o))
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// writeAuthzTLS writes Envoy's client certificate and the CA that keyward's
// certificate chains to, for validation.
func writeAuthzTLS(t *testing.T, identities []string) envoy.AuthzTLS {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "envoy_test keyward CA")
	cert, key := ca.Issue(t, "spiffe://cluster.local/ns/gateway/sa/envoy").WriteFiles(t, dir, "envoy")
	caFile := filepath.Join(dir, "ca.crt")
	testpki.WriteAtomic(t, caFile, ca.PEM)
	return envoy.AuthzTLS{CertFile: cert, KeyFile: key, CAFile: caFile, ServerIdentities: identities}
}

// writeJWKS writes a JWKS of one throwaway EC key, for validation (Envoy
// reads a local JWKS when it loads the config).
func writeJWKS(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, testoidc.JWKS(testoidc.NewKey(t, "k1", jose.ES256)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeCA writes a throwaway self-signed CA certificate (never used to trust
// anything) so the test does not depend on the machine's trust bundle.
func writeCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "envoy_test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBootstrapStructure(t *testing.T) {
	o := validOptions()
	o.Routes = append(o.Routes, envoy.Route{Provider: "azure", PathPrefix: "/openai/azure/", Upstream: "https://r.openai.azure.com/openai"})
	b, err := envoy.Bootstrap(o)
	if err != nil {
		t.Fatal(err)
	}
	if b.GetAdmin() != nil {
		t.Error("admin listener present although AdminAddress is empty")
	}
	var hcm hcmv3.HttpConnectionManager
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range hcm.GetHttpFilters() {
		names = append(names, f.GetName())
	}
	if want := []string{envoy.ExtAuthzFilter, "envoy.filters.http.router"}; !slices.Equal(names, want) {
		t.Errorf("http filters = %v, want %v", names, want)
	}
	var authz extauthzv3.ExtAuthz
	if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&authz); err != nil {
		t.Fatal(err)
	}
	if got := authz.GetGrpcService().GetTimeout().AsDuration(); got != envoy.DefaultAuthzTimeout {
		t.Errorf("authz timeout = %s, want default %s", got, envoy.DefaultAuthzTimeout)
	}
	if authz.GetWithRequestBody() != nil {
		t.Error("with_request_body set although ForwardBody is false")
	}
	if authz.GetAllowedHeaders() != nil || authz.GetDecoderHeaderMutationRules() != nil {
		t.Error("filter restricts headers; keyward must see and mutate all of them")
	}

	routes := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()
	var prefixes []string
	for _, r := range routes {
		prefixes = append(prefixes, r.GetMatch().GetPrefix())
	}
	if want := []string{"/openai/azure/", "/openai/", "/"}; !slices.Equal(prefixes, want) {
		t.Fatalf("route prefixes = %v, want longest first then the 404: %v", prefixes, want)
	}
	var per extauthzv3.ExtAuthzPerRoute
	if err := routes[0].GetTypedPerFilterConfig()[envoy.ExtAuthzFilter].UnmarshalTo(&per); err != nil {
		t.Fatal(err)
	}
	if got := per.GetCheckSettings().GetContextExtensions()[envoy.ContextExtensionProvider]; got != "azure" {
		t.Errorf("context_extensions provider = %q, want azure", got)
	}
	if got := routes[0].GetRoute().GetPrefixRewrite(); got != "/openai/" {
		t.Errorf("prefix_rewrite = %q, want /openai/", got)
	}
	// keyward rewrites the path as Envoy does, to match it against the
	// provider's endpoints: it reads the same keys.
	ext := per.GetCheckSettings().GetContextExtensions()
	if ext[kwauthz.PathPrefixExtension] != "/openai/azure/" || ext[kwauthz.PrefixRewriteExtension] != "/openai/" || ext[kwauthz.ProviderExtension] != "azure" {
		t.Errorf("context_extensions = %v, want the route's prefix and rewrite", ext)
	}
	// What the provider could read another way than keyward does is
	// refused or dropped before any filter, and Envoy adds no x-envoy-*
	// header (x-envoy-original-path) upstream.
	if hcm.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_REJECT_REQUEST ||
		hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() != corev3.HttpProtocolOptions_DROP_HEADER {
		t.Errorf("escaped slashes %v, headers with underscores %v", hcm.GetPathWithEscapedSlashesAction(), hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction())
	}
	var router routerv3.Router
	if err := hcm.GetHttpFilters()[1].GetTypedConfig().UnmarshalTo(&router); err != nil || !router.GetSuppressEnvoyHeaders() {
		t.Errorf("router: suppress_envoy_headers %v (%v)", router.GetSuppressEnvoyHeaders(), err)
	}
	if err := routes[2].GetTypedPerFilterConfig()[envoy.ExtAuthzFilter].UnmarshalTo(&per); err != nil {
		t.Fatal(err)
	}
	if !per.GetDisabled() {
		t.Error("ext_authz not disabled on the 404 route")
	}
}

func TestBootstrapRejectsInvalid(t *testing.T) {
	o := validOptions()
	o.ListenAddress = ""
	_, err := envoy.Bootstrap(o)
	var fe *field.Error
	if !errors.As(err, &fe) || fe.Path != "listen_address" {
		t.Fatalf("Bootstrap error = %v, want a field.Error for listen_address", err)
	}
}

func TestMarshalYAMLNil(t *testing.T) {
	if _, err := envoy.MarshalYAML(nil); err == nil {
		t.Fatal("MarshalYAML(nil) succeeded")
	}
}

func TestValidate(t *testing.T) {
	route := func(mod func(*envoy.Route)) func(*envoy.Options) {
		return func(o *envoy.Options) { mod(&o.Routes[0]) }
	}
	tests := map[string]struct {
		mod  func(*envoy.Options)
		want []string // fields named by the error, in order; nil = valid
	}{
		"valid":               {mod: func(*envoy.Options) {}},
		"valid with admin":    {mod: func(o *envoy.Options) { o.AdminAddress = "127.0.0.1:9901" }},
		"valid ipv6 listener": {mod: func(o *envoy.Options) { o.ListenAddress = "[::1]:10000" }},
		"valid dns authz":     {mod: func(o *envoy.Options) { o.AuthzAddress = "keyward:9000" }},
		"valid root prefix":   {mod: route(func(r *envoy.Route) { r.PathPrefix = "/" })},
		"valid jwt": {mod: func(o *envoy.Options) {
			o.JWT = []envoy.JWTIssuer{{Issuer: "https://idp", LocalJWKS: "/j.json"}, {Issuer: "https://b", RemoteJWKS: envoy.RemoteJWKS{URI: "http://idp:8080/jwks?x=1"}}}
		}},
		"jwt problems": {mod: func(o *envoy.Options) {
			o.JWT = []envoy.JWTIssuer{
				{Issuer: "https://idp", LocalJWKS: "j.json", Audiences: []string{""}, FromHeaders: []envoy.JWTHeader{{Name: "X-Api-Key"}}},
				{Issuer: "https://idp", RemoteJWKS: envoy.RemoteJWKS{URI: "ftp://idp/jwks", Timeout: -1}, UserClaim: "a.b"},
				{LocalJWKS: "/j.json", RemoteJWKS: envoy.RemoteJWKS{URI: "https://idp/jwks"}, UserClaim: "g", GroupClaim: "g"},
				{Issuer: "https://c"},
			}
		}, want: []string{
			"jwt[0].audiences[0]", "jwt[0].local_jwks", "jwt[0].from_headers[0].name",
			"jwt[1].issuer", "jwt[1].remote_jwks.uri", "jwt[1].remote_jwks.timeout", "jwt[1].user_claim",
			"jwt[2].issuer", "jwt[2].local_jwks", "jwt[2].group_claim",
			"jwt[3].remote_jwks.uri",
		}},
		"valid http ip upstream": {mod: route(func(r *envoy.Route) { r.Upstream = "http://127.0.0.1:8080/v1" })},
		"listen missing":         {mod: func(o *envoy.Options) { o.ListenAddress = "" }, want: []string{"listen_address"}},
		"listen no port":         {mod: func(o *envoy.Options) { o.ListenAddress = "127.0.0.1" }, want: []string{"listen_address"}},
		"listen hostname":        {mod: func(o *envoy.Options) { o.ListenAddress = "localhost:10000" }, want: []string{"listen_address"}},
		"listen port 0":          {mod: func(o *envoy.Options) { o.ListenAddress = "127.0.0.1:0" }, want: []string{"listen_address"}},
		"listen port too big":    {mod: func(o *envoy.Options) { o.ListenAddress = "127.0.0.1:70000" }, want: []string{"listen_address"}},
		"admin bad":              {mod: func(o *envoy.Options) { o.AdminAddress = "admin" }, want: []string{"admin_address"}},
		"authz missing":          {mod: func(o *envoy.Options) { o.AuthzAddress = "" }, want: []string{"authz_address"}},
		"authz no host":          {mod: func(o *envoy.Options) { o.AuthzAddress = ":9000" }, want: []string{"authz_address"}},
		"valid replicas": {mod: func(o *envoy.Options) {
			o.AuthzAddress, o.AuthzAddresses = "", []string{"10.0.0.1:9191", "keyward:9191"}
		}},
		"valid unix":          {mod: func(o *envoy.Options) { o.AuthzAddress = "unix:/run/keyward.sock" }},
		"valid tls":           {mod: func(o *envoy.Options) { o.AuthzTLS = validTLS() }},
		"authz both":          {mod: func(o *envoy.Options) { o.AuthzAddresses = []string{"10.0.0.1:9191"} }, want: []string{"authz_addresses"}},
		"authz unix relative": {mod: func(o *envoy.Options) { o.AuthzAddress = "unix:keyward.sock" }, want: []string{"authz_address"}},
		"authz replica bad":   {mod: func(o *envoy.Options) { o.AuthzAddress, o.AuthzAddresses = "", []string{"10.0.0.1:9191", "nope"} }, want: []string{"authz_addresses[1]"}},
		"authz replica twice": {mod: func(o *envoy.Options) {
			o.AuthzAddress, o.AuthzAddresses = "", []string{"10.0.0.1:9191", "10.0.0.1:9191"}
		}, want: []string{"authz_addresses[1]"}},
		"authz unix and tcp": {mod: func(o *envoy.Options) {
			o.AuthzAddress, o.AuthzAddresses = "", []string{"unix:/a.sock", "10.0.0.1:9191"}
		}, want: []string{"authz_addresses"}},
		"tls relative files": {
			mod: func(o *envoy.Options) {
				o.AuthzTLS = validTLS()
				o.AuthzTLS.CertFile, o.AuthzTLS.KeyFile = "tls.crt", ""
			},
			want: []string{"authz_tls.cert_file", "authz_tls.key_file"},
		},
		"tls no identity":  {mod: func(o *envoy.Options) { o.AuthzTLS = validTLS(); o.AuthzTLS.ServerIdentities = nil }, want: []string{"authz_tls.server_identities"}},
		"tls bad identity": {mod: func(o *envoy.Options) { o.AuthzTLS = validTLS(); o.AuthzTLS.ServerIdentities = []string{"*.svc"} }, want: []string{"authz_tls.server_identities[0]"}},
		"tls no ca":        {mod: func(o *envoy.Options) { o.AuthzTLS = validTLS(); o.AuthzTLS.CAFile = "" }, want: []string{"authz_tls.ca_file"}},
		"downstream tls no cert": {
			mod:  func(o *envoy.Options) { o.DownstreamTLS = envoy.DownstreamTLS{ClientCAFile: "/ca.crt"} },
			want: []string{"downstream_tls.cert_file", "downstream_tls.key_file"},
		},
		"downstream tls relative ca": {
			mod: func(o *envoy.Options) {
				o.DownstreamTLS = envoy.DownstreamTLS{CertFile: "/c", KeyFile: "/k", ClientCAFile: "ca.crt"}
			},
			want: []string{"downstream_tls.client_ca_file"},
		},
		"downstream tls require without ca": {
			mod: func(o *envoy.Options) {
				o.DownstreamTLS = envoy.DownstreamTLS{CertFile: "/c", KeyFile: "/k", RequireClientCert: true}
			},
			want: []string{"downstream_tls.require_client_cert"},
		},
		"valid tracing": {mod: func(o *envoy.Options) { o.Tracing = envoy.Tracing{OTLPAddress: "127.0.0.1:4317"} }},
		"valid tracing sampling 0": {mod: func(o *envoy.Options) {
			o.Tracing = envoy.Tracing{OTLPAddress: "collector:4317", ServiceName: "envoy-eu", Sampling: ptr(0.0)}
		}},
		"tracing no address":     {mod: func(o *envoy.Options) { o.Tracing.ServiceName = "envoy" }, want: []string{"tracing.otlp_address"}},
		"tracing address port 0": {mod: func(o *envoy.Options) { o.Tracing.OTLPAddress = "collector:0" }, want: []string{"tracing.otlp_address"}},
		"tracing address url":    {mod: func(o *envoy.Options) { o.Tracing.OTLPAddress = "http://collector:4317" }, want: []string{"tracing.otlp_address"}},
		"tracing bad service name": {mod: func(o *envoy.Options) {
			o.Tracing = envoy.Tracing{OTLPAddress: "collector:4317", ServiceName: "my envoy"}
		}, want: []string{"tracing.service_name"}},
		"tracing sampling over 100": {mod: func(o *envoy.Options) {
			o.Tracing = envoy.Tracing{OTLPAddress: "collector:4317", Sampling: ptr(100.5)}
		}, want: []string{"tracing.sampling"}},
		"authz timeout negative": {mod: func(o *envoy.Options) { o.AuthzTimeout = -time.Second }, want: []string{"authz_timeout"}},
		"max conns negative":     {mod: func(o *envoy.Options) { o.MaxConnections = -1 }, want: []string{"max_connections"}},
		"body too big":           {mod: func(o *envoy.Options) { o.MaxRequestBytes = envoy.MaxMaxRequestBytes + 1 }, want: []string{"max_request_bytes"}},
		"ca file relative":       {mod: func(o *envoy.Options) { o.TrustedCAFile = "ca.pem" }, want: []string{"trusted_ca_file"}},
		"no routes":              {mod: func(o *envoy.Options) { o.Routes = nil }, want: []string{"routes"}},
		"provider missing":       {mod: route(func(r *envoy.Route) { r.Provider = "" }), want: []string{"routes[0].provider"}},
		"provider bad chars":     {mod: route(func(r *envoy.Route) { r.Provider = "open ai" }), want: []string{"routes[0].provider"}},
		"provider too long": {
			mod: route(func(r *envoy.Route) { r.Provider = strings.Repeat("a", 64) }), want: []string{"routes[0].provider"},
		},
		"prefix missing":     {mod: route(func(r *envoy.Route) { r.PathPrefix = "" }), want: []string{"routes[0].path_prefix"}},
		"prefix no slash":    {mod: route(func(r *envoy.Route) { r.PathPrefix = "openai/" }), want: []string{"routes[0].path_prefix"}},
		"prefix no trailing": {mod: route(func(r *envoy.Route) { r.PathPrefix = "/openai" }), want: []string{"routes[0].path_prefix"}},
		"prefix with query":  {mod: route(func(r *envoy.Route) { r.PathPrefix = "/a?b/" }), want: []string{"routes[0].path_prefix"}},
		"upstream missing":   {mod: route(func(r *envoy.Route) { r.Upstream = "" }), want: []string{"routes[0].upstream"}},
		"upstream scheme":    {mod: route(func(r *envoy.Route) { r.Upstream = "ftp://api.openai.com" }), want: []string{"routes[0].upstream"}},
		"upstream no host":   {mod: route(func(r *envoy.Route) { r.Upstream = "https:///v1" }), want: []string{"routes[0].upstream"}},
		"upstream user info": {mod: route(func(r *envoy.Route) { r.Upstream = "https://u:p@api.openai.com" }), want: []string{"routes[0].upstream"}},
		"upstream query":     {mod: route(func(r *envoy.Route) { r.Upstream = "https://api.openai.com/?x=1" }), want: []string{"routes[0].upstream"}},
		"upstream fragment":  {mod: route(func(r *envoy.Route) { r.Upstream = "https://api.openai.com/#x" }), want: []string{"routes[0].upstream"}},
		"upstream port 0":    {mod: route(func(r *envoy.Route) { r.Upstream = "https://api.openai.com:0" }), want: []string{"routes[0].upstream"}},
		"upstream not a url": {mod: route(func(r *envoy.Route) { r.Upstream = "https://api openai com:x" }), want: []string{"routes[0].upstream"}},
		"duplicates": {
			mod: func(o *envoy.Options) {
				o.Routes = append(o.Routes, o.Routes[0])
			},
			want: []string{"routes[1].provider", "routes[1].path_prefix"},
		},
		"every problem reported": {
			mod: func(o *envoy.Options) {
				*o = envoy.Options{Routes: []envoy.Route{
					{Provider: "ok", PathPrefix: "/ok/", Upstream: "https://ok.example"},
					{Upstream: "gopher://x"},
				}}
			},
			want: []string{"listen_address", "authz_address", "routes[1].provider", "routes[1].path_prefix", "routes[1].upstream"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o := validOptions()
			o.Routes = slices.Clone(o.Routes)
			tc.mod(&o)
			err := o.Validate()
			if got := fields(err); !slices.Equal(got, tc.want) {
				t.Errorf("Validate() fields = %v, want %v (error: %v)", got, tc.want, err)
			}
			for _, f := range tc.want {
				if !strings.Contains(err.Error(), f+": ") {
					t.Errorf("error text %q does not name %s", err, f)
				}
			}
		})
	}
}

func validTLS() envoy.AuthzTLS {
	return envoy.AuthzTLS{CertFile: "/t/tls.crt", KeyFile: "/t/tls.key", CAFile: "/t/ca.crt", ServerIdentities: []string{"spiffe://td/keyward"}}
}

func TestValidateUpstreamSchemeMessage(t *testing.T) {
	o := validOptions()
	o.Routes = append(o.Routes, envoy.Route{Provider: "x", PathPrefix: "/x/", Upstream: "ftp://x"})
	err := o.Validate()
	if want := `routes[1].upstream: scheme must be http or https`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Validate() = %v, want prefix %q", err, want)
	}
}

// fields lists the path of every field.Error joined in err (at any
// depth), and any other error as such.
func fields(err error) []string {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range joined.Unwrap() {
			out = append(out, fields(e)...)
		}
		return out
	}
	var fe *field.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return []string{fe.Path}
	}
	return []string{"not a field.Error: " + err.Error()}
}

// TestAuthzCluster: the keyward cluster has every replica, checks their
// gRPC health, Envoy retries a check on another replica, and speaks
// mutual TLS when asked.
func TestAuthzCluster(t *testing.T) {
	tests := map[string]struct {
		mod       func(*envoy.Options)
		endpoints []string
		kind      clusterv3.Cluster_DiscoveryType
		sni       string
		sans      []string // "DNS:name" / "URI:uri"; nil: no TLS
	}{
		"one ip": {mod: func(*envoy.Options) {}, endpoints: []string{"127.0.0.1:9000"}, kind: clusterv3.Cluster_STATIC},
		"replicas by name": {
			mod: func(o *envoy.Options) {
				o.AuthzAddress, o.AuthzAddresses = "", []string{"keyward-0.keyward:9191", "10.0.0.2:9191"}
			},
			endpoints: []string{"keyward-0.keyward:9191", "10.0.0.2:9191"}, kind: clusterv3.Cluster_STRICT_DNS,
		},
		"unix socket": {mod: func(o *envoy.Options) { o.AuthzAddress = "unix:/run/k.sock" }, endpoints: []string{"unix:/run/k.sock"}, kind: clusterv3.Cluster_STATIC},
		"mtls": {
			mod: func(o *envoy.Options) {
				o.AuthzTLS = validTLS()
				o.AuthzTLS.ServerIdentities = append(o.AuthzTLS.ServerIdentities, "keyward.svc", "other.svc")
			},
			endpoints: []string{"127.0.0.1:9000"}, kind: clusterv3.Cluster_STATIC,
			sni: "keyward.svc", sans: []string{"URI:spiffe://td/keyward", "DNS:keyward.svc", "DNS:other.svc"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o := validOptions()
			tc.mod(&o)
			b, err := envoy.Bootstrap(o)
			if err != nil {
				t.Fatal(err)
			}
			c := b.GetStaticResources().GetClusters()[0]
			if c.GetName() != envoy.AuthzCluster || c.GetType() != tc.kind {
				t.Fatalf("cluster %s of type %v, want %s of type %v", c.GetName(), c.GetType(), envoy.AuthzCluster, tc.kind)
			}
			var got []string
			for _, ep := range c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints() {
				a := ep.GetEndpoint().GetAddress()
				if p := a.GetPipe(); p != nil {
					got = append(got, envoy.UnixPrefix+p.GetPath())
				} else {
					got = append(got, net.JoinHostPort(a.GetSocketAddress().GetAddress(), fmt.Sprint(a.GetSocketAddress().GetPortValue())))
				}
			}
			if !slices.Equal(got, tc.endpoints) {
				t.Errorf("endpoints %v, want %v", got, tc.endpoints)
			}
			hc := c.GetHealthChecks()
			if len(hc) != 1 || hc[0].GetGrpcHealthCheck().GetServiceName() != envoy.AuthzHealthService {
				t.Errorf("health checks %v, want one gRPC check of %s", hc, envoy.AuthzHealthService)
			}
			if got := c.GetCircuitBreakers().GetThresholds()[0].GetMaxRetries().GetValue(); got < 100 {
				t.Errorf("max_retries %d: a replica's death would overflow the retry breaker", got)
			}
			checkRetry(t, b)
			checkTLS(t, c, tc.sni, tc.sans)
		})
	}
}

func checkRetry(t *testing.T, b *bootstrapv3.Bootstrap) {
	t.Helper()
	var hcm hcmv3.HttpConnectionManager
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	var authz extauthzv3.ExtAuthz
	if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&authz); err != nil {
		t.Fatal(err)
	}
	r := authz.GetGrpcService().GetRetryPolicy()
	if r.GetNumRetries().GetValue() < 1 || len(r.GetRetryHostPredicate()) != 1 || r.GetRetryHostPredicate()[0].GetName() != "envoy.retry_host_predicates.previous_hosts" {
		t.Errorf("retry policy %v: want retries on another host", r)
	}
	for _, on := range []string{"connect-failure", "reset", "unavailable"} {
		if !strings.Contains(r.GetRetryOn(), on) {
			t.Errorf("retry_on %q lacks %s", r.GetRetryOn(), on)
		}
	}
	// Envoy takes the per-try timeout from max_interval: it must not cut
	// a check shorter than the authz timeout (a check that waits for the
	// store takes up to cache.check_deadline).
	if back := r.GetRetryBackOff().GetMaxInterval().AsDuration(); back < envoy.DefaultAuthzTimeout {
		t.Errorf("retry max_interval %v: Envoy's per-try timeout would cut checks shorter than the authz timeout", back)
	}
	// The waits between retries (base_interval, then 3 times it) fit in
	// the authz timeout.
	if base := r.GetRetryBackOff().GetBaseInterval().AsDuration(); base == 0 || 4*base*time.Duration(r.GetNumRetries().GetValue()) >= envoy.DefaultAuthzTimeout {
		t.Errorf("retry base_interval %v: the retries do not fit in the check's timeout", base)
	}
}

func checkTLS(t *testing.T, c *clusterv3.Cluster, sni string, sans []string) {
	t.Helper()
	if sans == nil {
		if c.GetTransportSocket() != nil {
			t.Error("TLS to keyward without AuthzTLS")
		}
		return
	}
	var up tlsv3.UpstreamTlsContext
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&up); err != nil {
		t.Fatal(err)
	}
	if up.GetSni() != sni {
		t.Errorf("sni %q, want %q", up.GetSni(), sni)
	}
	common := up.GetCommonTlsContext()
	if len(common.GetTlsCertificates()) != 1 || !slices.Equal(common.GetAlpnProtocols(), []string{"h2"}) {
		t.Errorf("client certificate %v, alpn %v", common.GetTlsCertificates(), common.GetAlpnProtocols())
	}
	var got []string
	for _, m := range common.GetValidationContext().GetMatchTypedSubjectAltNames() {
		got = append(got, m.GetSanType().String()+":"+m.GetMatcher().GetExact())
	}
	if !slices.Equal(got, sans) {
		t.Errorf("SAN matchers %v, want %v", got, sans)
	}
}

func ptr[T any](v T) *T { return &v }
