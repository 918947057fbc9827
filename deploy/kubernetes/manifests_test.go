package kubernetes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/keyward/keyward/config"
)

const (
	authzService  = "envoy.service.auth.v3.Authorization"
	configKey     = "keyward.yaml"
	dataPlane     = "keyward"            // the data plane's Deployment, Service, ConfigMap
	management    = "keyward-management" // the management API's
	authzPortName = "grpc-authz"
	mgmtPortName  = "http-management"
	// loginBackoffCap is the longest wait between two Vault logins at
	// start (serve's becomeReady).
	loginBackoffCap = 15 * time.Second
)

// kinds maps apiVersion/kind to the Kubernetes API type a manifest is
// decoded into; any other kind fails the test.
var kinds = map[string]func() any{
	"v1/Namespace":                       func() any { return new(corev1.Namespace) },
	"v1/ServiceAccount":                  func() any { return new(corev1.ServiceAccount) },
	"v1/ConfigMap":                       func() any { return new(corev1.ConfigMap) },
	"v1/Service":                         func() any { return new(corev1.Service) },
	"apps/v1/Deployment":                 func() any { return new(appsv1.Deployment) },
	"policy/v1/PodDisruptionBudget":      func() any { return new(policyv1.PodDisruptionBudget) },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return new(networkingv1.NetworkPolicy) },
}

// kustomization is the part of kustomization.yaml this folder uses,
// decoded strictly: a field kustomize knows but this test does not fails,
// so that the test is extended with it.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []image  `json:"images"`
}

// image is an entry of kustomization.yaml's images.
type image struct {
	Name    string `json:"name"`
	NewName string `json:"newName"`
	NewTag  string `json:"newTag"`
}

// decodeStrict decodes one YAML document into v as the API server's
// strict field validation does: an unknown or duplicate field, or a field
// in the wrong case, is an error.
func decodeStrict(data []byte, v any) error {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(js, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// docSeparator splits a YAML stream into documents.
var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeManifest decodes a manifest file's one object into its API type.
func decodeManifest(data []byte) (any, error) {
	var docs [][]byte
	for _, d := range docSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	if len(docs) != 1 {
		return nil, fmt.Errorf("%d YAML documents, want one object per file", len(docs))
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(docs[0], &tm); err != nil {
		return nil, err
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("kind %s/%s: not one this test knows", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	if err := decodeStrict(docs[0], obj); err != nil {
		return nil, err
	}
	return obj, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.Lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// manifests are the folder's objects by kind and name.
type manifests struct {
	deployments     map[string]*appsv1.Deployment
	services        map[string]*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	serviceAccounts map[string]*corev1.ServiceAccount
	pdbs            map[string]*policyv1.PodDisruptionBudget
	netpols         map[string]*networkingv1.NetworkPolicy
}

func manifestFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(files, func(f string) bool { return f == "kustomization.yaml" })
}

func load(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{
		deployments:     map[string]*appsv1.Deployment{},
		services:        map[string]*corev1.Service{},
		configMaps:      map[string]*corev1.ConfigMap{},
		serviceAccounts: map[string]*corev1.ServiceAccount{},
		pdbs:            map[string]*policyv1.PodDisruptionBudget{},
		netpols:         map[string]*networkingv1.NetworkPolicy{},
	}
	for _, f := range manifestFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		obj, err := decodeManifest(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			m.deployments[o.Name] = o
		case *corev1.Service:
			m.services[o.Name] = o
		case *corev1.ConfigMap:
			m.configMaps[o.Name] = o
		case *corev1.ServiceAccount:
			m.serviceAccounts[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			m.pdbs[o.Name] = o
		case *networkingv1.NetworkPolicy:
			m.netpols[o.Name] = o
		}
	}
	return m
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m := load(t)
	for _, name := range []string{dataPlane, management} {
		if m.deployments[name] == nil || m.configMaps[name] == nil || m.services[name] == nil || m.serviceAccounts[name] == nil {
			t.Errorf("%s: want a Deployment, ConfigMap, Service and ServiceAccount of that name", name)
		}
	}
}

func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":   "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 1, appProtocl: grpc}]}\n",
		"wrong case":      "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {Ports: [{port: 1}]}\n",
		"duplicate field": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {type: ClusterIP, type: NodePort}\n",
		"unknown kind":    "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n",
		"two documents":   "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: y}\n",
		"probe field": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n" +
			"      containers: [{name: c, readinessProbe: {grpc: {port: 1, serviceName: x}}}]\n",
	} {
		if _, err := decodeManifest([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := decodeStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: %s/%s", k.APIVersion, k.Kind)
	}
	files := manifestFiles(t)
	resources := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(resources, files) {
		t.Errorf("kustomization.yaml resources = %v, want every manifest: %v", resources, files)
	}
	if k.Namespace == "" {
		t.Error("kustomization.yaml: no namespace")
	}
	m := load(t)
	for _, d := range m.deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			if !slices.ContainsFunc(k.Images, func(i image) bool {
				return i.Name == c.Image && i.NewName != "" && i.NewTag != ""
			}) {
				t.Errorf("%s: image %q is not set by kustomization.yaml's images", d.Name, c.Image)
			}
		}
	}
}

// deployment is one Deployment with its container and the keyward
// configuration it runs with, loaded by the real config package.
type deployment struct {
	*appsv1.Deployment
	c   *corev1.Container
	cfg *config.Config
}

func loadDeployment(t *testing.T, m *manifests, name string) deployment {
	t.Helper()
	d := m.deployments[name]
	if d == nil {
		t.Fatalf("no Deployment %s", name)
	}
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want one", name, len(spec.Containers))
	}
	c := &spec.Containers[0]
	i := slices.Index(c.Args, "-config")
	if len(c.Args) == 0 || c.Args[0] != "serve" || i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("%s: args %q, want serve -config FILE", name, c.Args)
	}
	cfg := loadConfig(t, m, d, c, c.Args[i+1])
	return deployment{Deployment: d, c: c, cfg: cfg}
}

// loadConfig finds the ConfigMap key mounted at path and loads it with
// config.Load, with the container's environment.
func loadConfig(t *testing.T, m *manifests, d *appsv1.Deployment, c *corev1.Container, path string) *config.Config {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		key, ok := strings.CutPrefix(path, vm.MountPath+"/")
		if !ok {
			continue
		}
		i := slices.IndexFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		if i < 0 || d.Spec.Template.Spec.Volumes[i].ConfigMap == nil {
			t.Fatalf("%s: %s is not mounted from a ConfigMap", d.Name, path)
		}
		cmName := d.Spec.Template.Spec.Volumes[i].ConfigMap.Name
		cm := m.configMaps[cmName]
		if cm == nil || cm.Data[key] == "" {
			t.Fatalf("%s: ConfigMap %s has no %s", d.Name, cmName, key)
		}
		file := filepath.Join(t.TempDir(), configKey)
		if err := os.WriteFile(file, []byte(cm.Data[key]), 0o600); err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		cfg, err := config.Load(file, func(k string) string { return env[k] })
		if err != nil {
			t.Fatalf("%s: ConfigMap %s: %v", d.Name, cmName, err)
		}
		return cfg
	}
	t.Fatalf("%s: %s is not mounted", d.Name, path)
	return nil
}

// port returns the container port of that name.
func (d deployment) port(t *testing.T, name string) int32 {
	t.Helper()
	i := slices.IndexFunc(d.c.Ports, func(p corev1.ContainerPort) bool { return p.Name == name })
	if i < 0 {
		t.Fatalf("%s: no container port %s", d.Name, name)
	}
	return d.c.Ports[i].ContainerPort
}

// listenPort is the port of a host:port address.
func listenPort(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, ok := strings.Cut(addr, ":")
	var n int32
	if _, err := fmt.Sscan(p, &n); !ok || err != nil {
		t.Fatalf("%q: no port", addr)
	}
	return n
}

func TestDataPlaneDeployment(t *testing.T) {
	m := load(t)
	d := loadDeployment(t, m, dataPlane)
	if d.cfg.Store.Kind != "vault" {
		t.Errorf("store.kind = %q, want vault", d.cfg.Store.Kind)
	}
	if a := d.cfg.Vault.Auth; a.Method != "kubernetes" || a.Role != "keyward" {
		t.Errorf("vault.auth = %s role %q, want kubernetes role keyward (policy keyward.hcl)", a.Method, a.Role)
	}
	if d.cfg.Management.Listen != "" {
		t.Errorf("management.listen = %q: the data plane has no management API", d.cfg.Management.Listen)
	}
	if len(d.c.Ports) != 1 {
		t.Errorf("container ports %v, want only %s", d.c.Ports, authzPortName)
	}
	if got, want := d.port(t, authzPortName), listenPort(t, d.cfg.Listen); got != want {
		t.Errorf("port %s = %d, listen's port %d", authzPortName, got, want)
	}
	if q := d.c.Resources.Requests[corev1.ResourceMemory]; q.Cmp(resource.MustParse("100Mi")) < 0 {
		t.Errorf("memory request %s: below the ~100 MiB resident under load (README, Performance)", q.String())
	}
	if q := d.c.Resources.Requests[corev1.ResourceCPU]; q.Cmp(resource.MustParse("1")) < 0 {
		t.Errorf("cpu request %s: below the ~1 core at full load (README, Performance)", q.String())
	}
	if r := d.Spec.Replicas; r == nil || *r < 2 {
		t.Error("replicas: want at least 2")
	}
}

func TestManagementDeployment(t *testing.T) {
	m := load(t)
	d := loadDeployment(t, m, management)
	if d.cfg.Store.Kind != "vault" {
		t.Errorf("store.kind = %q, want vault", d.cfg.Store.Kind)
	}
	if a := d.cfg.Vault.Auth; a.Method != "kubernetes" || a.Role != "keyward-management" {
		t.Errorf("vault.auth = %s role %q, want kubernetes role keyward-management", a.Method, a.Role)
	}
	if d.cfg.Management.Listen == "" {
		t.Fatal("management.listen is empty")
	}
	if got, want := d.port(t, mgmtPortName), listenPort(t, d.cfg.Management.Listen); got != want {
		t.Errorf("port %s = %d, management.listen's port %d", mgmtPortName, got, want)
	}
	if d.Spec.Template.Spec.ServiceAccountName == m.deployments[dataPlane].Spec.Template.Spec.ServiceAccountName {
		t.Error("the management pods share the data plane's service account (and so its Vault role)")
	}
}

// TestEveryDeployment checks what both Deployments must do alike: probes,
// grace period, security context, resources, labels.
func TestEveryDeployment(t *testing.T) {
	m := load(t)
	for _, name := range []string{dataPlane, management} {
		t.Run(name, func(t *testing.T) {
			d := loadDeployment(t, m, name)
			checkProbes(t, d)
			checkGracePeriod(t, d)
			checkSecurityContext(t, d)
			checkResources(t, d)
			sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
			if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				t.Errorf("selector %v does not match the pod labels %v", d.Spec.Selector, d.Spec.Template.Labels)
			}
			sa := d.Spec.Template.Spec.ServiceAccountName
			if m.serviceAccounts[sa] == nil {
				t.Errorf("service account %q: not among the manifests", sa)
			}
		})
	}
	// Each selector picks its own pods only.
	for _, a := range []string{dataPlane, management} {
		for _, b := range []string{dataPlane, management} {
			if a == b {
				continue
			}
			sel, _ := metav1.LabelSelectorAsSelector(m.deployments[a].Spec.Selector)
			if sel.Matches(labels.Set(m.deployments[b].Spec.Template.Labels)) {
				t.Errorf("Deployment %s's selector matches %s's pods", a, b)
			}
		}
	}
}

func checkProbes(t *testing.T, d deployment) {
	t.Helper()
	port := listenPort(t, d.cfg.Listen)
	probes := map[string]*corev1.Probe{"startup": d.c.StartupProbe, "readiness": d.c.ReadinessProbe, "liveness": d.c.LivenessProbe}
	want := map[string]string{"startup": authzService, "readiness": authzService, "liveness": ""}
	for kind, p := range probes {
		if p == nil || p.GRPC == nil {
			t.Errorf("%s probe: want a native gRPC probe", kind)
			continue
		}
		if p.GRPC.Port != port {
			t.Errorf("%s probe: port %d, keyward listens on %d", kind, p.GRPC.Port, port)
		}
		if p.GRPC.Service == nil || *p.GRPC.Service != want[kind] {
			t.Errorf("%s probe: service %s, want %q", kind, show(p.GRPC.Service), want[kind])
		}
		if p.TimeoutSeconds < 1 || p.PeriodSeconds < 1 || p.FailureThreshold < 1 {
			t.Errorf("%s probe: timeout, period and failure threshold must be set", kind)
		}
	}
	if s := d.c.StartupProbe; s != nil {
		// Health is NOT_SERVING until the Vault login; a failed login is
		// retried after a back-off of up to loginBackoffCap. The startup
		// probe must allow several attempts, each up to vault.timeout.
		window := time.Duration(s.PeriodSeconds*s.FailureThreshold) * time.Second
		if need := 5 * (d.cfg.Vault.Timeout + loginBackoffCap); window < need {
			t.Errorf("startup probe allows %s, want at least %s: five Vault logins with their back-off", window, need)
		}
	}
}

func checkGracePeriod(t *testing.T, d deployment) {
	t.Helper()
	g := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	need := d.cfg.ShutdownDrain + d.cfg.ShutdownGrace
	if g == nil || time.Duration(*g)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %s: want above shutdown_drain + shutdown_grace = %s", show(g), need)
	}
}

func checkSecurityContext(t *testing.T, d deployment) {
	t.Helper()
	pod := d.Spec.Template.Spec.SecurityContext
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	c := d.c.SecurityContext
	if c == nil {
		t.Fatal("container: no securityContext")
	}
	isTrue := func(p *bool) bool { return p != nil && *p }
	isFalse := func(p *bool) bool { return p != nil && !*p }
	if !isTrue(cmpOr(c.RunAsNonRoot, pod.RunAsNonRoot)) {
		t.Error("runAsNonRoot: want true")
	}
	if u := cmpOr(c.RunAsUser, pod.RunAsUser); u == nil || *u != 65532 {
		t.Errorf("runAsUser %s: want 65532", show(u))
	}
	if !isTrue(c.ReadOnlyRootFilesystem) {
		t.Error("readOnlyRootFilesystem: want true")
	}
	if !isFalse(c.AllowPrivilegeEscalation) {
		t.Error("allowPrivilegeEscalation: want false")
	}
	if isTrue(c.Privileged) {
		t.Error("privileged")
	}
	if c.Capabilities == nil || !slices.Equal(c.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(c.Capabilities.Add) > 0 {
		t.Errorf("capabilities %v: want drop [ALL], add none", c.Capabilities)
	}
	if s := cmpOr(c.SeccompProfile, pod.SeccompProfile); s == nil || s.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile %v: want RuntimeDefault", s)
	}
}

// show formats an optional setting: its value, or "unset".
func show[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprintf("%#v", *p)
}

// cmpOr returns the first non-nil pointer: the container's setting wins
// over the pod's.
func cmpOr[T any](ps ...*T) *T {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

func checkResources(t *testing.T, d deployment) {
	t.Helper()
	r := d.c.Resources
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := r.Requests[name]; !ok || q.IsZero() {
			t.Errorf("no %s request", name)
		}
	}
	req, limit := r.Requests[corev1.ResourceMemory], r.Limits[corev1.ResourceMemory]
	if limit.IsZero() || limit.Cmp(req) < 0 {
		t.Errorf("memory limit %s: want one, at least the request %s", limit.String(), req.String())
	}
}

func TestServices(t *testing.T) {
	m := load(t)
	for name, want := range map[string]struct{ port, protocol string }{
		dataPlane:  {authzPortName, "grpc"},
		management: {mgmtPortName, "http"},
	} {
		s := m.services[name]
		d := loadDeployment(t, m, name)
		if s == nil {
			continue // reported by TestManifestsDecodeStrictly
		}
		sel := labels.SelectorFromSet(s.Spec.Selector)
		if len(s.Spec.Selector) == 0 || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Service %s: selector %v does not match Deployment %s's pods", name, s.Spec.Selector, name)
		}
		for other, od := range m.deployments {
			if other != name && sel.Matches(labels.Set(od.Spec.Template.Labels)) {
				t.Errorf("Service %s: selects Deployment %s's pods too", name, other)
			}
		}
		if len(s.Spec.Ports) != 1 {
			t.Errorf("Service %s: ports %v, want only %s", name, s.Spec.Ports, want.port)
			continue
		}
		p := s.Spec.Ports[0]
		if p.Name != want.port || p.AppProtocol == nil || *p.AppProtocol != want.protocol {
			t.Errorf("Service %s: port %q appProtocol %v, want %q appProtocol %s", name, p.Name, p.AppProtocol, want.port, want.protocol)
		}
		if p.TargetPort != intstr.FromString(want.port) {
			t.Errorf("Service %s: targetPort %s, want the container port named %s", name, p.TargetPort.String(), want.port)
		}
		if p.Port != d.port(t, want.port) {
			t.Errorf("Service %s: port %d, container port %d", name, p.Port, d.port(t, want.port))
		}
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	m := load(t)
	d := m.deployments[dataPlane]
	var found bool
	for name, pdb := range m.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			continue
		}
		found = true
		if pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable == nil {
			t.Errorf("PodDisruptionBudget %s: want maxUnavailable (drains keep working at any replica count)", name)
			continue
		}
		u := pdb.Spec.MaxUnavailable
		if u.Type != intstr.Int || u.IntVal < 1 || u.IntVal >= *d.Spec.Replicas {
			t.Errorf("PodDisruptionBudget %s: maxUnavailable %s, want at least 1, fewer than the %d replicas", name, u.String(), *d.Spec.Replicas)
		}
	}
	if !found {
		t.Error("no PodDisruptionBudget selects the data plane's pods")
	}
}

func TestNetworkPolicies(t *testing.T) {
	m := load(t)
	for name, wantPort := range map[string]string{dataPlane: authzPortName, management: mgmtPortName} {
		d := m.deployments[name]
		var policies []*networkingv1.NetworkPolicy
		for _, np := range m.netpols {
			if sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err == nil && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				policies = append(policies, np)
			}
		}
		if len(policies) != 1 {
			t.Errorf("Deployment %s: %d NetworkPolicies select its pods, want one", name, len(policies))
			continue
		}
		np := policies[0]
		if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
			t.Errorf("NetworkPolicy %s: policyTypes %v, want [Ingress]", np.Name, np.Spec.PolicyTypes)
		}
		if len(np.Spec.Ingress) != 1 {
			t.Errorf("NetworkPolicy %s: %d ingress rules, want one", np.Name, len(np.Spec.Ingress))
			continue
		}
		rule := np.Spec.Ingress[0]
		if len(rule.Ports) != 1 || rule.Ports[0].Port == nil || *rule.Ports[0].Port != intstr.FromString(wantPort) {
			t.Errorf("NetworkPolicy %s: ports %v, want only %s", np.Name, rule.Ports, wantPort)
		}
		if name != dataPlane {
			continue
		}
		// The ext_authz port: only the gateway's pods, each peer naming
		// both a namespace and pod labels (one entry: both must match).
		if len(rule.From) == 0 {
			t.Errorf("NetworkPolicy %s: open to every pod", np.Name)
		}
		for i, peer := range rule.From {
			if peer.IPBlock != nil || peer.NamespaceSelector == nil || peer.PodSelector == nil ||
				len(peer.NamespaceSelector.MatchLabels)+len(peer.NamespaceSelector.MatchExpressions) == 0 ||
				len(peer.PodSelector.MatchLabels)+len(peer.PodSelector.MatchExpressions) == 0 {
				t.Errorf("NetworkPolicy %s: from[%d] %v: want a namespace and pod labels, both non-empty", np.Name, i, peer)
			}
		}
	}
}

// TestREADMEVaultRoles checks that the README's Kubernetes section creates
// the Vault role each Deployment logs in with, bound to its service
// account and namespace, with the policy meant for it.
func TestREADMEVaultRoles(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := load(t)
	ns := kustomizationNamespace(t)
	for name, policy := range map[string]string{dataPlane: "keyward", management: "keyward-management"} {
		d := loadDeployment(t, m, name)
		if _, err := os.Stat(filepath.Join("../../examples/vault", policy+".hcl")); err != nil {
			t.Errorf("policy %s: %v", policy, err)
		}
		role := fmt.Sprintf(`vault write auth/%s/role/%s bound_service_account_names=%s bound_service_account_namespaces=%s policies=%s`,
			d.cfg.Vault.Auth.MountPath, d.cfg.Vault.Auth.Role, d.Spec.Template.Spec.ServiceAccountName, ns, policy)
		if !strings.Contains(string(readme), role) {
			t.Errorf("README lacks %q", role)
		}
		write := fmt.Sprintf("vault policy write %s examples/vault/%s.hcl", policy, policy)
		if !regexp.MustCompile(strings.ReplaceAll(regexp.QuoteMeta(write), " ", `\s+`)).Match(readme) {
			t.Errorf("README lacks %q", write)
		}
	}
}

func kustomizationNamespace(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := decodeStrict(data, &k); err != nil {
		t.Fatal(err)
	}
	return k.Namespace
}
