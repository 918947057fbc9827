package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyward/keyward/envoy/envoytest"
	"github.com/keyward/keyward/internal/testbin"
	"github.com/keyward/keyward/internal/testpki"
)

// The Envoy Gateway example, and what the test knows of it.
const (
	egExample = "../examples/envoy-gateway"
	// egGateway is the key of the example's one Gateway in egctl's xDS
	// output: namespace/name.
	egGateway = "llm-gateway/llm"
	// egKeywardIP is the ClusterIP the test gives keyward's Service, as
	// Kubernetes would: Envoy Gateway routes to a Service's ClusterIP.
	egKeywardIP = "10.96.91.91"
)

// egProviders are the example's routes: the provider each names in its
// context extensions, and the upstream host its Backend and URL rewrite
// name.
var egProviders = []struct{ name, host string }{
	{"openai", "api.openai.com"},
	{"anthropic", "api.anthropic.com"},
}

// TestEnvoyGateway runs examples/envoy-gateway/ as Envoy Gateway would:
// Envoy Gateway's own translator (egctl x translate, offline) turns the
// example and keyward's Service from deploy/kubernetes/ into Envoy
// configuration, and real Envoy runs that configuration, with only its
// addresses pointed at loopback, in front of keyward and a fake provider
// serving TLS as the providers' hosts. The official SDKs call through it.
func TestEnvoyGateway(t *testing.T) {
	egctl := testbin.Egctl(t)
	envoytest.Binary(t) // before the translation: skip (or fail) early
	translated := egTranslate(t, egctl)
	dump := translated.xds(t)
	checkEGConfig(t, dump)

	ca := testpki.NewCA(t, "fake provider CA")
	hosts := make([]string, len(egProviders))
	for i, p := range egProviders {
		hosts[i] = p.host
	}
	cert := ca.Issue(t, hosts...)
	var snis sync.Map // the server names Envoy asked the fake provider for
	s := newStack(t, stackOptions{envoy: func(s *stack, listen, admin string) []byte {
		upstream := httptest.NewUnstartedServer(s.provider)
		upstream.TLS = &tls.Config{GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			snis.Store(hello.ServerName, true)
			return &cert.TLS, nil
		}}
		upstream.StartTLS()
		t.Cleanup(upstream.Close)
		addrs := map[string]string{egKeywardIP + ":9191": s.authz}
		for _, p := range egProviders {
			addrs[p.host+":443"] = upstream.Listener.Addr().String()
		}
		config := assembleEG(t, dump, egAddresses{listen: listen, admin: admin, upstreams: addrs, providerCA: string(ca.PEM)})
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("Envoy configuration assembled from egctl's output:\n%s", config)
			}
		})
		return config
	}})
	s.kw("group", "add", "mini", "-models", "gpt-4o-mini")
	s.kw("user", "set", "alice", "-groups", "eng,mini")
	tok := s.token("alice", "eng")
	mini := s.token("alice", "mini")
	secrets := []string{tok, tok[19:], mini, mini[19:], openaiKey, anthropicKey}

	// sawProvider checks the last upstream request: the provider's path
	// and host (the route's rewrite), its key in its header, and nothing
	// of the client's token.
	sawProvider := func(t *testing.T, host, path, header, want string) {
		t.Helper()
		req, ok := s.provider.Last()
		if !ok {
			t.Fatal("the provider received nothing")
		}
		if req.Host != host || req.Path != path {
			t.Errorf("provider saw %s %s, want %s %s", req.Host, req.Path, host, path)
		}
		if got := req.Header.Get(header); got != want {
			t.Errorf("provider saw %s = %q, want the provider key", header, got)
		}
		for name, values := range req.Header {
			for _, v := range values {
				if strings.Contains(v, tok[3:]) || strings.Contains(v, mini[3:]) {
					t.Errorf("provider saw the client's token in %s", name)
				}
			}
		}
	}

	t.Run("sdk-allowed", func(t *testing.T) {
		r := s.pythonSDK(t, "openai", tok)
		if !r.OK || r.Text == "" {
			t.Fatalf("openai SDK: %+v", r)
		}
		sawProvider(t, "api.openai.com", "/v1/chat/completions", "authorization", "Bearer "+openaiKey)
		r = s.pythonSDK(t, "anthropic-stream", tok)
		if !r.OK || r.Text == "" {
			t.Fatalf("anthropic SDK: %+v", r)
		}
		sawProvider(t, "api.anthropic.com", "/v1/messages", "x-api-key", anthropicKey)
		for _, host := range hosts {
			if _, ok := snis.Load(host); !ok {
				t.Errorf("Envoy never asked the provider for %s in TLS", host)
			}
		}
	})

	t.Run("bad-token", func(t *testing.T) {
		before := len(s.provider.Requests())
		last := "x" // the token's last character changed (see TestSpine)
		if strings.HasSuffix(tok, last) {
			last = "y"
		}
		r := s.pythonSDK(t, "openai", tok[:len(tok)-1]+last)
		if r.Error != "AuthenticationError" || r.Status != 401 || r.Code != "invalid_token" {
			t.Errorf("bad token: %+v, want keyward's 401 invalid_token", r)
		}
		if n := len(s.provider.Requests()) - before; n != 0 {
			t.Errorf("the provider received %d requests", n)
		}
	})

	// bodyToExtAuth: keyward reads the model from the body Envoy forwards,
	// and finds the endpoint through the path_prefix and prefix_rewrite
	// extensions (a group that restricts models may call only endpoints
	// keyward knows).
	t.Run("model-policy", func(t *testing.T) {
		if r := s.pythonSDK(t, "openai", mini); !r.OK { // the script asks for gpt-4o-mini
			t.Fatalf("gpt-4o-mini: %+v", r)
		}
		before := len(s.provider.Requests())
		body := strings.Replace(chatBody, "gpt-4o-mini", "gpt-4o", 1)
		r := s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + mini}, body)
		if r.status != 403 || r.errorCode() != "model_not_allowed" {
			t.Errorf("gpt-4o: %d %s, want 403 model_not_allowed", r.status, r.body)
		}
		if n := len(s.provider.Requests()) - before; n != 0 {
			t.Errorf("the provider received %d requests", n)
		}
	})

	// failOpen: false. Last: it stops keyward.
	t.Run("keyward-down", func(t *testing.T) {
		if err := s.stopKeyward(); err != nil {
			t.Fatal(err)
		}
		before := len(s.provider.Requests())
		r := s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + tok}, chatBody)
		if r.status != 403 {
			t.Errorf("with keyward down: %d %s, want Envoy Gateway's 403", r.status, r.body)
		}
		if n := len(s.provider.Requests()) - before; n != 0 {
			t.Errorf("the provider received %d requests", n)
		}
	})

	assertNoSecrets(t, "keyward log", s.logs.String(), secrets...)
	assertNoSecrets(t, "Envoy log", s.envoy.Log(), secrets...)
}

// egTranslation is what egctl printed: the Gateway API resources with the
// status Envoy Gateway gives them, and the xDS configuration per Gateway.
type egTranslation map[string]any

// egTranslate runs egctl x translate on the example plus keyward's Service
// and checks that Envoy Gateway accepted every resource: egctl prints
// whatever it could translate and reports refusals only in the statuses.
func egTranslate(t *testing.T, egctl string) egTranslation {
	t.Helper()
	checkEgctlVersion(t, egctl)
	input := filepath.Join(t.TempDir(), "input.yaml")
	writeFile(t, input, egInput(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, egctl, "x", "translate", "--from", "gateway-api", "--to", "gateway-api,xds", "-o", "json", "-f", input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	var out egTranslation
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("egctl printed %q: %v", stdout.String(), err)
	}

	accepted := map[string]bool{}
	for _, kind := range []string{"gatewayClass", "gateways", "httpRoutes", "securityPolicies", "backends"} {
		objects, ok := out[kind].([]any)
		if !ok && out[kind] != nil {
			objects = []any{out[kind]} // the one GatewayClass
		}
		for _, o := range objects {
			name := fmt.Sprintf("%s %v/%v", kind, dig(o, "metadata", "namespace"), dig(o, "metadata", "name"))
			for _, c := range conditions(dig(o, "status")) {
				if c.Type == "Accepted" && c.Status == "True" {
					accepted[name] = true
				}
				if (c.Type == "Accepted" || c.Type == "ResolvedRefs") && c.Status != "True" {
					t.Errorf("%s: %s %s: %s", name, c.Type, c.Status, c.Message)
				}
			}
			if !accepted[name] {
				t.Errorf("%s: not accepted", name)
			}
		}
	}
	// A route, a policy and a backend per provider, the Gateway, the class.
	if want := 3*len(egProviders) + 2; len(accepted) != want || t.Failed() {
		t.Fatalf("Envoy Gateway accepted %d resources, want all %d", len(accepted), want)
	}
	return out
}

// checkEgctlVersion fails the test when egctl is not the tested release:
// another release translates differently. go install leaves egctl's own
// version command empty, so the module version comes from the binary's
// build information.
func checkEgctlVersion(t *testing.T, egctl string) {
	t.Helper()
	out, err := exec.Command("go", "version", "-m", egctl).CombinedOutput()
	if err != nil {
		t.Fatalf("go version -m %s: %v\n%s", egctl, err, out)
	}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "mod" && f[1] == "github.com/envoyproxy/gateway" {
			if f[2] != testbin.EgctlVersion {
				t.Fatalf("%s is Envoy Gateway %s, the example is tested with %s (scripts/setup.sh installs it)", egctl, f[2], testbin.EgctlVersion)
			}
			return
		}
	}
	t.Fatalf("%s: no github.com/envoyproxy/gateway module in its build information:\n%s", egctl, out)
}

// kustomization is what the test reads of a kustomization.yaml.
type kustomization struct {
	Namespace string   `yaml:"namespace"`
	Resources []string `yaml:"resources"`
}

// egInput is what kubectl apply -k examples/envoy-gateway applies, and
// keyward's Service as kubectl apply -k deploy/kubernetes creates it: in
// that kustomization's namespace, with a ClusterIP as Kubernetes assigns
// one.
func egInput(t *testing.T) string {
	t.Helper()
	var example kustomization
	readYAML(t, filepath.Join(egExample, "kustomization.yaml"), &example)
	if len(example.Resources) == 0 {
		t.Fatalf("%s/kustomization.yaml lists no resources", egExample)
	}
	var docs []string
	for _, f := range example.Resources {
		b, err := os.ReadFile(filepath.Join(egExample, f))
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}

	var deploy kustomization
	readYAML(t, "../deploy/kubernetes/kustomization.yaml", &deploy)
	var service map[string]any
	readYAML(t, "../deploy/kubernetes/service.yaml", &service)
	meta, _ := service["metadata"].(map[string]any)
	spec, _ := service["spec"].(map[string]any)
	if meta == nil || spec == nil || deploy.Namespace == "" {
		t.Fatalf("deploy/kubernetes: no Service metadata and spec, or no namespace")
	}
	meta["namespace"], spec["clusterIP"] = deploy.Namespace, egKeywardIP
	b, err := yaml.Marshal(service)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(append(docs, string(b)), "\n---\n")
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

type egCondition struct{ Type, Status, Message string }

// conditions collects the conditions of a Gateway API status: its own, and
// those per listener, per parent (routes) and per ancestor (policies).
func conditions(status any) []egCondition {
	var out []egCondition
	add := func(v any) {
		list, _ := v.([]any)
		for _, c := range list {
			out = append(out, egCondition{fmt.Sprint(dig(c, "type")), fmt.Sprint(dig(c, "status")), fmt.Sprint(dig(c, "message"))})
		}
	}
	add(dig(status, "conditions"))
	for _, key := range []string{"listeners", "parents", "ancestors"} {
		list, _ := dig(status, key).([]any)
		for _, item := range list {
			add(dig(item, "conditions"))
		}
	}
	return out
}

// egDump is the xDS configuration Envoy Gateway sends one Gateway's Envoy,
// as egctl prints it (an Envoy admin config dump): the bootstrap, and the
// resources the control plane would send over ADS.
type egDump struct {
	bootstrap                              map[string]any
	listeners, clusters, endpoints, routes []map[string]any
}

// xds returns the example Gateway's configuration.
func (tr egTranslation) xds(t *testing.T) egDump {
	t.Helper()
	configs, _ := dig(map[string]any(tr), "xds", egGateway, "configs").([]any)
	if len(configs) == 0 {
		t.Fatalf("egctl printed no xDS configuration for %s", egGateway)
	}
	var d egDump
	// resources returns the resources of a config dump section, each
	// without the "@type" it has as an Any: the bootstrap embeds them as
	// messages.
	resources := func(section any, list string, path ...string) []map[string]any {
		items, _ := dig(section, list).([]any)
		var out []map[string]any
		for _, item := range items {
			r, ok := dig(item, path...).(map[string]any)
			if !ok {
				t.Fatalf("config dump: %s item without %v", list, path)
			}
			delete(r, "@type")
			out = append(out, r)
		}
		return out
	}
	for _, c := range configs {
		switch typ, _ := dig(c, "@type").(string); strings.TrimPrefix(typ, "type.googleapis.com/envoy.admin.v3.") {
		case "BootstrapConfigDump":
			d.bootstrap, _ = dig(c, "bootstrap").(map[string]any)
		case "ListenersConfigDump":
			d.listeners = resources(c, "dynamicListeners", "activeState", "listener")
		case "ClustersConfigDump":
			d.clusters = resources(c, "dynamicActiveClusters", "cluster")
		case "EndpointsConfigDump":
			d.endpoints = resources(c, "dynamicEndpointConfigs", "endpointConfig")
		case "RoutesConfigDump":
			d.routes = resources(c, "dynamicRouteConfigs", "routeConfig")
		default:
			t.Fatalf("config dump: unknown section %q", typ)
		}
	}
	if d.bootstrap == nil || d.listeners == nil || d.clusters == nil || d.routes == nil {
		t.Fatalf("config dump without a bootstrap, listeners, clusters or routes")
	}
	return d
}

// checkEGConfig checks that Envoy Gateway turned the example's
// SecurityPolicies into what keyward needs, whether or not a request shows
// it: every route checks with keyward, naming its provider; the body goes
// to keyward; no answer from keyward fails the request.
func checkEGConfig(t *testing.T, d egDump) {
	t.Helper()
	filters := map[string]any{} // the ext_authz filters by name
	for _, l := range d.listeners {
		for _, hcm := range hcms(l) {
			list, _ := dig(hcm, "httpFilters").([]any)
			for _, f := range list {
				if name, _ := dig(f, "name").(string); strings.HasPrefix(name, "envoy.filters.http.ext_authz") {
					filters[name] = dig(f, "typedConfig")
				}
			}
		}
	}
	var seen []string
	for _, rc := range d.routes {
		hosts, _ := rc["virtualHosts"].([]any)
		for _, vh := range hosts {
			routes, _ := dig(vh, "routes").([]any)
			for _, r := range routes {
				name, _ := dig(r, "name").(string)
				perFilter, _ := dig(r, "typedPerFilterConfig").(map[string]any)
				var checked bool
				for filter, cfg := range perFilter {
					ext, ok := filters[filter]
					if !ok {
						continue
					}
					checked = true
					provider := fmt.Sprint(dig(cfg, "checkSettings", "contextExtensions", "provider"))
					seen = append(seen, provider)
					if !strings.HasPrefix(name, "httproute/llm-gateway/"+provider+"/") {
						t.Errorf("route %s: context extension provider %q, not its provider", name, provider)
					}
					prefix := fmt.Sprint(dig(cfg, "checkSettings", "contextExtensions", "path_prefix"))
					rewrite := fmt.Sprint(dig(cfg, "checkSettings", "contextExtensions", "prefix_rewrite"))
					if prefix != "/"+provider+"/" || rewrite != "/" {
						t.Errorf("route %s: context extensions path_prefix %q, prefix_rewrite %q", name, prefix, rewrite)
					}
					if fail, _ := dig(ext, "failureModeAllow").(bool); fail {
						t.Errorf("%s: failure_mode_allow: true", filter)
					}
					if n, _ := dig(ext, "withRequestBody", "maxRequestBytes").(float64); n <= 0 {
						t.Errorf("%s: no with_request_body", filter)
					}
					if dig(ext, "grpcService", "envoyGrpc", "clusterName") == nil {
						t.Errorf("%s: not a gRPC ext_authz service", filter)
					}
				}
				if !checked {
					t.Errorf("route %s does not check with keyward", name)
				}
			}
		}
	}
	slices.Sort(seen)
	want := make([]string, len(egProviders))
	for i, p := range egProviders {
		want[i] = p.name
	}
	slices.Sort(want)
	if !slices.Equal(seen, want) {
		t.Errorf("routes with a provider context extension: %v, want %v", seen, want)
	}
}

// hcms returns the HTTP connection managers of a listener's filter chains.
func hcms(listener map[string]any) []map[string]any {
	chains, _ := listener["filterChains"].([]any)
	if c := listener["defaultFilterChain"]; c != nil {
		chains = append(chains, c)
	}
	var out []map[string]any
	for _, c := range chains {
		filters, _ := dig(c, "filters").([]any)
		for _, f := range filters {
			if dig(f, "name") == "envoy.filters.network.http_connection_manager" {
				if hcm, ok := dig(f, "typedConfig").(map[string]any); ok {
					out = append(out, hcm)
				}
			}
		}
	}
	return out
}

// egAddresses are where the assembled configuration's sockets go.
type egAddresses struct {
	// listen takes the Gateway's listener, admin Envoy's admin.
	listen, admin string
	// upstreams maps each host:port egctl wrote for an upstream to the
	// loopback address that stands in for it.
	upstreams map[string]string
	// providerCA is the PEM the providers' certificates are checked with,
	// in place of the system trust store.
	providerCA string
}

// egSystemCA is the secret Envoy Gateway sends over SDS with the system
// trust store, for Backends with wellKnownCACertificates: System.
const egSystemCA = "system_ca_certificates"

// assembleEG turns egctl's output into a static Envoy bootstrap that runs
// without Envoy Gateway's control plane: the resources the control plane
// would send are inlined (listeners, clusters, route configurations in
// place of RDS, endpoints in place of EDS, the CA secret in place of SDS),
// every address is moved to loopback, and nothing else is changed.
func assembleEG(t *testing.T, d egDump, a egAddresses) []byte {
	t.Helper()
	b := d.bootstrap
	// ADS from the control plane, and the clusters only it fills:
	// xds_cluster (the control plane itself, with certificates from files
	// in the pod) and local_cluster (the Envoy pods, for zone-aware
	// routing, by EDS).
	delete(b, "dynamicResources")
	if cm, ok := b["clusterManager"].(map[string]any); ok {
		delete(cm, "localClusterName")
	}
	static, _ := b["staticResources"].(map[string]any)
	if static == nil {
		static = map[string]any{}
		b["staticResources"] = static
	}
	clusters, _ := static["clusters"].([]any)
	clusters = slices.DeleteFunc(clusters, func(c any) bool {
		name := dig(c, "name")
		return name == "xds_cluster" || name == "local_cluster"
	})
	listeners, _ := static["listeners"].([]any)

	routes := map[string]map[string]any{}
	for _, rc := range d.routes {
		routes[fmt.Sprint(rc["name"])] = rc
	}
	for _, l := range d.listeners {
		for _, hcm := range hcms(l) {
			rds, ok := hcm["rds"]
			if !ok {
				continue
			}
			name := fmt.Sprint(dig(rds, "routeConfigName"))
			rc, ok := routes[name]
			if !ok {
				t.Fatalf("listener %v: no route configuration %q", l["name"], name)
			}
			delete(hcm, "rds")
			hcm["routeConfig"] = rc
		}
		listeners = append(listeners, l)
	}
	endpoints := map[string]map[string]any{}
	for _, e := range d.endpoints {
		endpoints[fmt.Sprint(e["clusterName"])] = e
	}
	for _, c := range d.clusters {
		if eds, ok := c["edsClusterConfig"]; ok {
			name := fmt.Sprint(dig(eds, "serviceName"))
			e, ok := endpoints[name]
			if !ok {
				t.Fatalf("cluster %v: no endpoints %q", c["name"], name)
			}
			delete(c, "edsClusterConfig")
			c["type"], c["loadAssignment"] = "STATIC", e
		}
		clusters = append(clusters, c)
	}
	static["listeners"], static["clusters"] = listeners, clusters

	// SDS: a secret reference without a config source names a static
	// secret.
	walk(b, func(m map[string]any) {
		for key, v := range m {
			ref, ok := v.(map[string]any)
			if !ok || !strings.HasSuffix(key, "SdsSecretConfig") {
				continue
			}
			if name := ref["name"]; name != egSystemCA {
				t.Fatalf("egctl's configuration refers to SDS secret %v, the test knows only %s", name, egSystemCA)
			}
			delete(ref, "sdsConfig")
		}
	})
	static["secrets"] = []any{map[string]any{
		"name":              egSystemCA,
		"validationContext": map[string]any{"trustedCa": map[string]any{"inlineString": a.providerCA}},
	}}

	moves := map[string]string{} // host:port in egctl's configuration → loopback
	if admin := dig(b, "admin", "address", "socketAddress"); admin != nil {
		moves[socketAddress(admin)] = a.admin // prometheus_stats proxies to the admin too
	}
	for _, l := range listeners {
		addr := socketAddress(dig(l, "address", "socketAddress"))
		if dig(l, "name") == egGateway+"/http" {
			moves[addr] = a.listen
		} else {
			moves[addr] = envoytest.FreeAddr(t) // stats and readiness
		}
	}
	for from, to := range a.upstreams {
		moves[from] = to
	}
	walk(b, func(m map[string]any) {
		sa, ok := m["socketAddress"].(map[string]any)
		if !ok {
			return
		}
		to, ok := moves[socketAddress(sa)]
		if !ok {
			t.Fatalf("egctl's configuration has an address the test does not know: %s", socketAddress(sa))
		}
		host, port, err := net.SplitHostPort(to)
		if err != nil {
			t.Fatalf("address %q: %v", to, err)
		}
		n, err := strconv.Atoi(port)
		if err != nil {
			t.Fatalf("address %q: %v", to, err)
		}
		sa["address"], sa["portValue"] = host, n
	})

	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// socketAddress is host:port of an Envoy SocketAddress.
func socketAddress(sa any) string {
	port := dig(sa, "portValue")
	if f, ok := port.(float64); ok {
		port = strconv.FormatFloat(f, 'f', -1, 64)
	}
	return net.JoinHostPort(fmt.Sprint(dig(sa, "address")), fmt.Sprint(port))
}

// dig walks decoded JSON through object keys.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// walk calls fn on every object in decoded JSON v, parents first.
func walk(v any, fn func(map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		fn(v)
		for _, child := range v {
			walk(child, fn)
		}
	case []any:
		for _, child := range v {
			walk(child, fn)
		}
	}
}
