package istio

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1 "istio.io/api/networking/v1"
	securityv1 "istio.io/api/security/v1"
	typev1beta1 "istio.io/api/type/v1beta1"
	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/envoy"
)

const (
	// providerName is the extension provider keyward is in mesh config.
	providerName = "keyward"
	// kubernetesDir holds the manifests that run keyward.
	kubernetesDir = "../../deploy/kubernetes"
	// authzPortName is the keyward Service's ext_authz port.
	authzPortName = "grpc-authz"
	// useWaypoint is the label that sends a ServiceEntry's traffic through
	// a waypoint.
	useWaypoint = "istio.io/use-waypoint"
)

// modes are the example's folders, one per Istio data plane mode.
var modes = []string{"sidecar", "ambient"}

// example is one mode's resources, by kind.
type example struct {
	serviceEntries   []named[*networkingv1.ServiceEntry]
	gateways         []named[*networkingv1.Gateway]
	virtualServices  []named[*networkingv1.VirtualService]
	destinationRules []named[*networkingv1.DestinationRule]
	policies         []named[*securityv1.AuthorizationPolicy]
	waypoints        []*gatewayv1.Gateway
	namespaces       []*corev1.Namespace
	all              []object
}

// named is an Istio resource's spec with its object's identity.
type named[T any] struct {
	object
	spec T
}

func loadMode(t *testing.T, dir string) *example {
	t.Helper()
	objs, err := decodeFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := &example{all: objs}
	for _, o := range objs {
		switch s := o.spec.(type) {
		case *networkingv1.ServiceEntry:
			e.serviceEntries = append(e.serviceEntries, named[*networkingv1.ServiceEntry]{o, s})
		case *networkingv1.Gateway:
			e.gateways = append(e.gateways, named[*networkingv1.Gateway]{o, s})
		case *networkingv1.VirtualService:
			e.virtualServices = append(e.virtualServices, named[*networkingv1.VirtualService]{o, s})
		case *networkingv1.DestinationRule:
			e.destinationRules = append(e.destinationRules, named[*networkingv1.DestinationRule]{o, s})
		case *securityv1.AuthorizationPolicy:
			e.policies = append(e.policies, named[*securityv1.AuthorizationPolicy]{o, s})
		case *gatewayv1.Gateway:
			e.waypoints = append(e.waypoints, s)
		case *corev1.Namespace:
			e.namespaces = append(e.namespaces, s)
		default:
			t.Fatalf("%s: no place for %T", o, s)
		}
	}
	return e
}

func loadMeshConfig(t *testing.T) *meshv1alpha1.MeshConfig {
	t.Helper()
	data, err := os.ReadFile("meshconfig.yaml")
	if err != nil {
		t.Fatal(err)
	}
	mc, err := decodeMeshConfig(data)
	if err != nil {
		t.Fatalf("meshconfig.yaml: %v", err)
	}
	return mc
}

// loadRoutes loads keyward's Kubernetes configuration (the data plane's
// ConfigMap) with keyward-routes.yaml added, as the README says to, with
// keyward's own config package, and returns its host → provider map.
func loadRoutes(t *testing.T) map[string]string {
	t.Helper()
	routes, err := os.ReadFile("keyward-routes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	decodeKube(t, filepath.Join(kubernetesDir, "configmap.yaml"), &cm)
	base := cm.Data["keyward.yaml"]
	if base == "" {
		t.Fatal("deploy/kubernetes/configmap.yaml: no keyward.yaml")
	}
	path := filepath.Join(t.TempDir(), "keyward.yaml")
	if err := os.WriteFile(path, []byte(base+"\n"+string(routes)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatalf("deploy/kubernetes keyward.yaml with keyward-routes.yaml: %v", err)
	}
	hosts := map[string]string{}
	for _, r := range cfg.Routes {
		if r.PathPrefix != "" || r.Upstream != "" {
			t.Errorf("route %s: path_prefix and upstream are for envoy-config, not Istio", r.Provider)
		}
		for _, h := range r.Hosts {
			hosts[h] = r.Provider
		}
	}
	return hosts
}

// decodeKube decodes a one-object Kubernetes manifest strictly into v.
func decodeKube(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	js, err := strictJSON(data)
	if err == nil {
		err = unmarshalStrict(js, v)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestEveryDocumentDecodesStrictly(t *testing.T) {
	loadMeshConfig(t)
	loadRoutes(t)
	for _, mode := range modes {
		e := loadMode(t, mode)
		for _, o := range e.all {
			if o.meta.Name == "" || o.meta.Namespace == "" && o.Kind != "Namespace" {
				t.Errorf("%s: want a name and a namespace (kubectl apply -f puts it there)", o)
			}
		}
	}
	// Nothing else in the folder: every YAML file is one of the above.
	files, _ := filepath.Glob("*.yaml")
	if want := []string{"keyward-routes.yaml", "meshconfig.yaml"}; !slices.Equal(files, want) {
		t.Errorf("YAML files %v, want %v (and the folders %v)", files, want, modes)
	}
}

func TestStrictDecodingRefusesMistakes(t *testing.T) {
	const dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x, namespace: y}\n"
	tests := map[string]string{
		"misspelt spec field":     dr + "spec: {host: a, trafficPolicy: {tls: {mode: SIMPLE, snii: a}}}\n",
		"wrong case in spec":      dr + "spec: {host: a, TrafficPolicy: {}}\n",
		"unknown enum value":      dr + "spec: {host: a, trafficPolicy: {tls: {mode: SIMPEL}}}\n",
		"duplicate field":         dr + "spec: {host: a, host: b}\n",
		"misspelt metadata field": "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x, namespce: y}\nspec: {host: a}\n",
		"field beside spec":       dr + "spec: {host: a}\nspecs: {}\n",
		"unknown kind":            "apiVersion: networking.istio.io/v1\nkind: EnvoyFilter\nmetadata: {name: x}\nspec: {}\n",
		"policy action":           "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: {action: CUSTOMS}\n",
		"policy provider field":   "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: {action: CUSTOM, provider: {nmae: keyward}}\n",
		"waypoint listener field": "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: x}\n" +
			"spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocl: HBONE}]}\n",
	}
	for name, doc := range tests {
		if _, err := decodeDocument([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	meshTests := map[string]string{
		"misspelt provider field": "meshConfig:\n  extensionProviders:\n  - name: keyward\n    envoyExtAuthzGrpc: {service: a, port: 1, failopen: false}\n",
		"misspelt body field":     "meshConfig:\n  extensionProviders:\n  - name: keyward\n    envoyExtAuthzGrpc: {service: a, port: 1, includeRequestBodyInCheck: {maxRequestByte: 1}}\n",
		"other values key":        "meshConfig: {}\nmeshconfig: {}\n",
		"no meshConfig":           "values: {}\n",
	}
	for name, doc := range meshTests {
		if _, err := decodeMeshConfig([]byte(doc)); err == nil {
			t.Errorf("meshconfig %s: decoded without error", name)
		}
	}
}

func TestMeshConfigExtensionProvider(t *testing.T) {
	mc := loadMeshConfig(t)
	var grpc *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider
	for _, p := range mc.GetExtensionProviders() {
		if p.GetName() != providerName {
			continue
		}
		if grpc != nil {
			t.Fatalf("extension provider %s: defined twice", providerName)
		}
		if grpc = p.GetEnvoyExtAuthzGrpc(); grpc == nil {
			t.Fatalf("extension provider %s: want envoyExtAuthzGrpc (keyward speaks ext_authz gRPC v3)", providerName)
		}
	}
	if grpc == nil {
		t.Fatalf("no extension provider %s", providerName)
	}
	if d := grpc.GetTimeout(); d == nil || d.AsDuration() != 500*time.Millisecond {
		t.Errorf("timeout %v, want 0.5s", d)
	}
	if grpc.GetFailOpen() {
		t.Error("failOpen: want false (fail closed)")
	}
	if grpc.GetStatusOnError() != "503" {
		t.Errorf("statusOnError %q, want \"503\"", grpc.GetStatusOnError())
	}
	body := grpc.GetIncludeRequestBodyInCheck()
	if body == nil {
		t.Fatal("includeRequestBodyInCheck: unset; groups that restrict models need the body")
	}
	if body.GetMaxRequestBytes() != envoy.DefaultMaxRequestBytes || !body.GetAllowPartialMessage() {
		t.Errorf("includeRequestBodyInCheck %v: want maxRequestBytes %d (keyward's envoy-config default) and allowPartialMessage",
			body, envoy.DefaultMaxRequestBytes)
	}

	// The service and port are deploy/kubernetes' Service.
	var svc corev1.Service
	decodeKube(t, filepath.Join(kubernetesDir, "service.yaml"), &svc)
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Namespace  string   `json:"namespace"`
		Resources  []string `json:"resources"`
		Images     any      `json:"images"`
	}
	decodeKube(t, filepath.Join(kubernetesDir, "kustomization.yaml"), &k)
	if want := fmt.Sprintf("%s.%s.svc.cluster.local", svc.Name, k.Namespace); grpc.GetService() != want {
		t.Errorf("service %q, want deploy/kubernetes' Service: %q", grpc.GetService(), want)
	}
	i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == authzPortName })
	if i < 0 {
		t.Fatalf("deploy/kubernetes Service %s: no port %s", svc.Name, authzPortName)
	}
	if got, want := grpc.GetPort(), uint32(svc.Spec.Ports[i].Port); got != want {
		t.Errorf("port %d, want the Service's %s port %d", got, authzPortName, want)
	}
}

// TestModes checks each mode's resources against each other, the mesh
// config and keyward's routes.
func TestModes(t *testing.T) {
	mc := loadMeshConfig(t)
	hosts := loadRoutes(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			e := loadMode(t, mode)
			checkPolicies(t, e, mc)
			checkHosts(t, e, hosts)
			ns := map[string]bool{}
			for _, o := range e.all {
				if o.Kind != "Namespace" {
					ns[o.meta.Namespace] = true
				}
			}
			if len(ns) != 1 {
				t.Errorf("namespaces %v: want one, where the gateway and its policy are", ns)
			}
			switch mode {
			case "sidecar":
				checkEgressGateway(t, e)
			case "ambient":
				checkWaypoint(t, e)
			}
		})
	}
}

// checkPolicies: every AuthorizationPolicy is CUSTOM, names keyward's
// extension provider, and checks every request it applies to.
func checkPolicies(t *testing.T, e *example, mc *meshv1alpha1.MeshConfig) {
	t.Helper()
	if len(e.policies) == 0 {
		t.Fatal("no AuthorizationPolicy")
	}
	for _, p := range e.policies {
		if p.spec.GetAction() != securityv1.AuthorizationPolicy_CUSTOM {
			t.Errorf("%s: action %s, want CUSTOM", p, p.spec.GetAction())
		}
		name := p.spec.GetProvider().GetName()
		if !slices.ContainsFunc(mc.GetExtensionProviders(), func(x *meshv1alpha1.MeshConfig_ExtensionProvider) bool {
			return x.GetName() == name && x.GetEnvoyExtAuthzGrpc() != nil
		}) {
			t.Errorf("%s: provider %q is not an envoyExtAuthzGrpc extension provider of meshconfig.yaml", p, name)
		}
		// A rule with no from, to or when matches every request; one
		// that lists hosts would let a Host spelt otherwise skip keyward.
		if !slices.ContainsFunc(p.spec.GetRules(), func(r *securityv1.Rule) bool {
			return len(r.GetFrom())+len(r.GetTo())+len(r.GetWhen()) == 0
		}) {
			t.Errorf("%s: rules %v, want one that matches every request ({})", p, p.spec.GetRules())
		}
	}
}

// checkHosts: the ServiceEntries' hosts are exactly keyward's routed
// hosts, and each has a DestinationRule originating TLS to it, with its
// name as SNI and in the certificate, on the port the gateway sends to.
func checkHosts(t *testing.T, e *example, routes map[string]string) {
	t.Helper()
	var seHosts []string
	for _, se := range e.serviceEntries {
		if se.spec.GetLocation() != networkingv1.ServiceEntry_MESH_EXTERNAL || se.spec.GetResolution() != networkingv1.ServiceEntry_DNS {
			t.Errorf("%s: want MESH_EXTERNAL, resolution DNS", se)
		}
		for _, h := range se.spec.GetHosts() {
			seHosts = append(seHosts, h)
			if routes[h] == "" {
				t.Errorf("%s: host %s is not in keyward-routes.yaml: keyward would refuse it (unknown_provider)", se, h)
			}
			checkTLSOrigination(t, e, se, h)
		}
	}
	for h, p := range routes {
		if !slices.Contains(seHosts, h) {
			t.Errorf("keyward-routes.yaml: %s (provider %s) has no ServiceEntry", h, p)
		}
	}
}

func checkTLSOrigination(t *testing.T, e *example, se named[*networkingv1.ServiceEntry], host string) {
	t.Helper()
	port := upstreamPort(t, e, se, host)
	if port == 0 {
		return
	}
	var found bool
	for _, dr := range e.destinationRules {
		if dr.spec.GetHost() != host {
			continue
		}
		found = true
		tls := dr.spec.GetTrafficPolicy().GetTls()
		for _, pl := range dr.spec.GetTrafficPolicy().GetPortLevelSettings() {
			if pl.GetPort().GetNumber() == port {
				tls = pl.GetTls()
			}
		}
		if tls.GetMode() != networkingv1.ClientTLSSettings_SIMPLE || tls.GetSni() != host || !slices.Equal(tls.GetSubjectAltNames(), []string{host}) {
			t.Errorf("%s: TLS to %s port %d is %v, want mode SIMPLE, sni and subjectAltNames %s", dr, host, port, tls, host)
		}
		if tls.GetInsecureSkipVerify().GetValue() {
			t.Errorf("%s: insecureSkipVerify", dr)
		}
	}
	if !found {
		t.Errorf("no DestinationRule for %s", host)
	}
}

// upstreamPort is the ServiceEntry port the gateway connects to for host:
// in sidecar mode the egress gateway's route's destination, 443 with
// protocol HTTPS; in ambient mode the port applications call, 80 with
// targetPort 443 (the waypoint sends it there).
func upstreamPort(t *testing.T, e *example, se named[*networkingv1.ServiceEntry], host string) uint32 {
	t.Helper()
	if len(e.waypoints) > 0 {
		ports := se.spec.GetPorts()
		if len(ports) != 1 || ports[0].GetNumber() != 80 || ports[0].GetProtocol() != "HTTP" || ports[0].GetTargetPort() != 443 {
			t.Errorf("%s: ports %v, want one: 80, HTTP, targetPort 443", se, ports)
			return 0
		}
		return 80
	}
	var dest []uint32
	for _, vs := range e.virtualServices {
		for _, r := range vs.spec.GetHttp() {
			if !fromGateway(r, e) {
				continue
			}
			for _, d := range r.GetRoute() {
				if d.GetDestination().GetHost() == host {
					dest = append(dest, d.GetDestination().GetPort().GetNumber())
				}
			}
		}
	}
	if len(dest) != 1 {
		t.Errorf("%s: the egress gateway routes it to ports %v, want one", host, dest)
		return 0
	}
	if !slices.ContainsFunc(se.spec.GetPorts(), func(p *networkingv1.ServicePort) bool {
		return p.GetNumber() == dest[0] && p.GetNumber() == 443 && p.GetProtocol() == "HTTPS"
	}) {
		t.Errorf("%s: the egress gateway sends to port %d, want the ServiceEntry's port 443, HTTPS", host, dest[0])
	}
	return dest[0]
}

// fromGateway reports whether an HTTP route matches only traffic arriving
// at one of the example's Istio Gateways.
func fromGateway(r *networkingv1.HTTPRoute, e *example) bool {
	if len(r.GetMatch()) == 0 {
		return false
	}
	for _, m := range r.GetMatch() {
		if len(m.GetGateways()) == 0 {
			return false
		}
		for _, g := range m.GetGateways() {
			if !slices.ContainsFunc(e.gateways, func(gw named[*networkingv1.Gateway]) bool { return gw.meta.Name == g }) {
				return false
			}
		}
	}
	return true
}

// checkEgressGateway: sidecar mode. The policy selects the pods the
// Gateway runs on; the Gateway serves every host; the mesh routes every
// host to the egress gateway over Istio's mutual TLS.
func checkEgressGateway(t *testing.T, e *example) {
	t.Helper()
	if len(e.gateways) != 1 {
		t.Fatalf("%d Gateways, want one", len(e.gateways))
	}
	gw := e.gateways[0]
	for _, p := range e.policies {
		sel := p.spec.GetSelector().GetMatchLabels()
		if len(sel) == 0 || len(p.spec.GetTargetRefs()) > 0 {
			t.Errorf("%s: want a selector (the egress gateway's pods)", p)
		}
		for k, v := range sel {
			if gw.spec.GetSelector()[k] != v {
				t.Errorf("%s: selector %v does not match the Gateway's %v", p, sel, gw.spec.GetSelector())
			}
		}
	}
	for _, vs := range e.virtualServices {
		for _, r := range vs.spec.GetHttp() {
			if r.GetTimeout() != nil {
				t.Errorf("%s: a route timeout (%v) would cut streamed completions", vs, r.GetTimeout().AsDuration())
			}
		}
	}
	for _, se := range e.serviceEntries {
		if !slices.ContainsFunc(se.spec.GetPorts(), func(p *networkingv1.ServicePort) bool {
			return p.GetNumber() == 80 && p.GetProtocol() == "HTTP"
		}) {
			t.Errorf("%s: no port 80, HTTP, for the applications", se)
		}
		for _, h := range se.spec.GetHosts() {
			if !slices.ContainsFunc(gw.spec.GetServers(), func(s *networkingv1.Server) bool {
				return slices.Contains(s.GetHosts(), h) && s.GetTls().GetMode() == networkingv1.ServerTLSSettings_ISTIO_MUTUAL
			}) {
				t.Errorf("%s: no server of %s for %s with ISTIO_MUTUAL", gw, gw.meta.Name, h)
			}
			checkMeshRoute(t, e, h)
		}
	}
}

// checkMeshRoute: the sidecars send host to the egress gateway, through a
// subset speaking Istio's mutual TLS with host as SNI.
func checkMeshRoute(t *testing.T, e *example, host string) {
	t.Helper()
	for _, vs := range e.virtualServices {
		if !slices.Contains(vs.spec.GetHosts(), host) {
			continue
		}
		for _, r := range vs.spec.GetHttp() {
			if !slices.ContainsFunc(r.GetMatch(), func(m *networkingv1.HTTPMatchRequest) bool { return slices.Contains(m.GetGateways(), "mesh") }) {
				continue
			}
			for _, d := range r.GetRoute() {
				dest := d.GetDestination()
				if !strings.HasPrefix(dest.GetHost(), "istio-egressgateway.") {
					t.Errorf("%s: the mesh route for %s goes to %s, not the egress gateway", vs, host, dest.GetHost())
					continue
				}
				if tls := subsetTLS(e, dest.GetHost(), dest.GetSubset(), dest.GetPort().GetNumber()); tls.GetMode() != networkingv1.ClientTLSSettings_ISTIO_MUTUAL || tls.GetSni() != host {
					t.Errorf("%s: subset %q of %s: TLS %v, want ISTIO_MUTUAL with sni %s", vs, dest.GetSubset(), dest.GetHost(), tls, host)
				}
			}
			return
		}
	}
	t.Errorf("no VirtualService routes %s from the mesh", host)
}

func subsetTLS(e *example, host, subset string, port uint32) *networkingv1.ClientTLSSettings {
	for _, dr := range e.destinationRules {
		if dr.spec.GetHost() != host {
			continue
		}
		for _, s := range dr.spec.GetSubsets() {
			if s.GetName() != subset {
				continue
			}
			tls := s.GetTrafficPolicy().GetTls()
			for _, pl := range s.GetTrafficPolicy().GetPortLevelSettings() {
				if pl.GetPort().GetNumber() == port {
					tls = pl.GetTls()
				}
			}
			return tls
		}
	}
	return nil
}

// checkWaypoint: ambient mode. Every ServiceEntry uses the waypoint, and
// the policy targets every ServiceEntry (waypoints ignore selectors).
func checkWaypoint(t *testing.T, e *example) {
	t.Helper()
	if len(e.waypoints) != 1 {
		t.Fatalf("%d Gateway API Gateways, want one waypoint", len(e.waypoints))
	}
	wp := e.waypoints[0]
	if wp.Spec.GatewayClassName != "istio-waypoint" {
		t.Errorf("waypoint %s: gatewayClassName %q, want istio-waypoint", wp.Name, wp.Spec.GatewayClassName)
	}
	if wp.Labels["istio.io/waypoint-for"] != "service" {
		t.Errorf("waypoint %s: want the label istio.io/waypoint-for: service (ServiceEntries are services)", wp.Name)
	}
	if len(wp.Spec.Listeners) != 1 || wp.Spec.Listeners[0].Protocol != "HBONE" || wp.Spec.Listeners[0].Port != 15008 {
		t.Errorf("waypoint %s: listeners %v, want one HBONE on 15008", wp.Name, wp.Spec.Listeners)
	}
	for _, se := range e.serviceEntries {
		if se.meta.Labels[useWaypoint] != wp.Name || se.meta.Namespace != wp.Namespace {
			t.Errorf("%s: label %s=%q, want %s in its namespace", se, useWaypoint, se.meta.Labels[useWaypoint], wp.Name)
		}
		for _, p := range e.policies {
			if !slices.ContainsFunc(p.spec.GetTargetRefs(), func(r *typev1beta1.PolicyTargetReference) bool {
				return r.GetGroup() == "networking.istio.io" && r.GetKind() == "ServiceEntry" && r.GetName() == se.meta.Name && r.GetNamespace() == ""
			}) {
				t.Errorf("%s: does not target ServiceEntry %s", p, se.meta.Name)
			}
		}
	}
	for _, p := range e.policies {
		if p.spec.GetSelector() != nil {
			t.Errorf("%s: a selector, which waypoints ignore", p)
		}
	}
	if len(e.namespaces) != 1 || e.namespaces[0].Name != wp.Namespace {
		t.Errorf("want the Namespace %s of the waypoint", wp.Namespace)
	}
}

// TestREADME checks that the README's Istio section applies what is here:
// the mesh config with the command meshconfig.yaml names, each mode's
// folder, and shows keyward-routes.yaml's routes as they are.
func TestREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Deploy: Istio\n")
	if !ok {
		t.Fatal("README.md: no section Deploy: Istio")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	mesh, err := os.ReadFile("meshconfig.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var helm string
	for line := range strings.Lines(string(mesh)) {
		if c, ok := strings.CutPrefix(strings.TrimSpace(line), "#"); ok && strings.Contains(c, "helm upgrade") {
			helm = strings.TrimSpace(c)
		}
	}
	want := []string{helm}
	for _, mode := range modes {
		want = append(want, "kubectl apply -f examples/istio/"+mode+"/")
	}
	routes, err := os.ReadFile("keyward-routes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, strings.TrimSpace(stripComments(string(routes))))
	for _, w := range want {
		if w == "" || !strings.Contains(section, w) {
			t.Errorf("README's Istio section lacks %q", w)
		}
	}
}
