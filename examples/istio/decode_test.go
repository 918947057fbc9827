package istio

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1 "istio.io/api/networking/v1"
	securityv1 "istio.io/api/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// istioKinds maps apiVersion/kind of an Istio resource to the istio.io/api
// message its spec is decoded into. istio.io/api's own JSON decoders (and
// so istio.io/client-go's types) accept unknown fields; protojson, used
// here, refuses them, as istiod's and the API server's validation do.
var istioKinds = map[string]func() proto.Message{
	"networking.istio.io/v1/ServiceEntry":    func() proto.Message { return new(networkingv1.ServiceEntry) },
	"networking.istio.io/v1/Gateway":         func() proto.Message { return new(networkingv1.Gateway) },
	"networking.istio.io/v1/VirtualService":  func() proto.Message { return new(networkingv1.VirtualService) },
	"networking.istio.io/v1/DestinationRule": func() proto.Message { return new(networkingv1.DestinationRule) },
	"security.istio.io/v1/AuthorizationPolicy": func() proto.Message {
		return new(securityv1.AuthorizationPolicy)
	},
}

// kubeKinds maps apiVersion/kind of the other resources to their Go API
// type, decoded as the API server's strict field validation does.
var kubeKinds = map[string]func() any{
	"v1/Namespace":                         func() any { return new(corev1.Namespace) },
	"gateway.networking.k8s.io/v1/Gateway": func() any { return new(gatewayv1.Gateway) },
}

// object is one decoded YAML document.
type object struct {
	file string
	metav1.TypeMeta
	meta metav1.ObjectMeta
	// spec is the Istio resource's spec, or the whole Kubernetes object.
	spec any
}

func (o object) String() string {
	return fmt.Sprintf("%s: %s %s/%s", o.file, o.Kind, o.meta.Namespace, o.meta.Name)
}

// istioEnvelope is an Istio resource around its spec. Status is left out:
// a resource to apply has none.
type istioEnvelope struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            json.RawMessage   `json:"spec"`
}

// strictJSON turns one YAML document into JSON, refusing duplicate keys.
func strictJSON(doc []byte) ([]byte, error) {
	return yaml.YAMLToJSONStrict(doc)
}

// unmarshalStrict decodes JSON into v refusing unknown, duplicate and
// wrongly cased fields.
func unmarshalStrict(js []byte, v any) error {
	strict, err := sigsjson.UnmarshalStrict(js, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// decodeDocument decodes one YAML document into its API type.
func decodeDocument(doc []byte) (object, error) {
	js, err := strictJSON(doc)
	if err != nil {
		return object{}, err
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return object{}, err
	}
	key := tm.APIVersion + "/" + tm.Kind
	if newSpec, ok := istioKinds[key]; ok {
		var env istioEnvelope
		if err := unmarshalStrict(js, &env); err != nil {
			return object{}, err
		}
		spec := newSpec()
		if err := protojson.Unmarshal(env.Spec, spec); err != nil {
			return object{}, fmt.Errorf("%s spec: %w", tm.Kind, err)
		}
		return object{TypeMeta: tm, meta: env.Metadata, spec: spec}, nil
	}
	if newObj, ok := kubeKinds[key]; ok {
		obj := newObj()
		if err := unmarshalStrict(js, obj); err != nil {
			return object{}, err
		}
		return object{TypeMeta: tm, meta: *objectMeta(obj), spec: obj}, nil
	}
	return object{}, fmt.Errorf("kind %s: not one this test knows", key)
}

func objectMeta(obj any) *metav1.ObjectMeta {
	return obj.(interface{ GetObjectMeta() metav1.Object }).GetObjectMeta().(*metav1.ObjectMeta)
}

// docSeparator splits a YAML stream into documents.
var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// documents splits a YAML file into its documents, leaving out those that
// hold only comments.
func documents(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range docSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
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

// decodeFolder decodes every document of every YAML file in dir.
func decodeFolder(dir string) ([]object, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no YAML files", dir)
	}
	var objs []object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for i, doc := range documents(data) {
			o, err := decodeDocument(doc)
			if err != nil {
				return nil, fmt.Errorf("%s, document %d: %w", f, i+1, err)
			}
			o.file = f
			objs = append(objs, o)
		}
	}
	return objs, nil
}

// meshValues is meshconfig.yaml: Helm values for istiod holding the mesh
// configuration.
type meshValues struct {
	MeshConfig json.RawMessage `json:"meshConfig"`
}

// decodeMeshConfig decodes meshconfig.yaml strictly: the values file has
// meshConfig only, and meshConfig is an istio.io/api MeshConfig.
func decodeMeshConfig(data []byte) (*meshv1alpha1.MeshConfig, error) {
	js, err := strictJSON(data)
	if err != nil {
		return nil, err
	}
	var v meshValues
	if err := unmarshalStrict(js, &v); err != nil {
		return nil, err
	}
	if len(v.MeshConfig) == 0 {
		return nil, errors.New("no meshConfig")
	}
	mc := new(meshv1alpha1.MeshConfig)
	if err := protojson.Unmarshal(v.MeshConfig, mc); err != nil {
		return nil, fmt.Errorf("meshConfig: %w", err)
	}
	return mc, nil
}
