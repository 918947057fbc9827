package istio

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	apiextensions "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// crdFiles are the CustomResourceDefinitions the API server checks the
// example's custom resources against, in the modules go.mod pins: Istio's
// (every Istio kind) and the Gateway API's Gateway (the waypoint).
var crdFiles = map[string]string{
	"istio.io/api":            "kubernetes/customresourcedefinitions.gen.yaml",
	"sigs.k8s.io/gateway-api": "config/crd/standard/gateway.networking.k8s.io_gateways.yaml",
}

// crd is one served version of a CustomResourceDefinition, ready to
// validate objects as the API server does on create.
type crd struct {
	structural *structuralschema.Structural
	schema     validation.SchemaValidator
	cel        *cel.Validator
}

// loadCRDs reads crdFiles from the module cache and returns their served
// versions by apiVersion/kind.
func loadCRDs(t *testing.T) map[string]*crd {
	t.Helper()
	crds := map[string]*crd{}
	for mod, file := range crdFiles {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", mod).Output()
		if err != nil {
			t.Fatalf("go list -m %s: %v", mod, err)
		}
		data, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), file))
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range documents(data) {
			var def apiextensionsv1.CustomResourceDefinition
			if err := yaml.Unmarshal(doc, &def); err != nil {
				t.Fatalf("%s %s: %v", mod, file, err)
			}
			for _, v := range def.Spec.Versions {
				if !v.Served || v.Schema == nil {
					continue
				}
				c, err := newCRD(v.Schema.OpenAPIV3Schema)
				if err != nil {
					t.Fatalf("%s %s: %v", def.Name, v.Name, err)
				}
				crds[def.Spec.Group+"/"+v.Name+"/"+def.Spec.Names.Kind] = c
			}
		}
	}
	return crds
}

func newCRD(s *apiextensionsv1.JSONSchemaProps) (*crd, error) {
	var internal apiextensions.JSONSchemaProps
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(s, &internal, nil); err != nil {
		return nil, err
	}
	structural, err := structuralschema.NewStructural(&internal)
	if err != nil {
		return nil, err
	}
	validator, _, err := validation.NewSchemaValidator(&internal)
	if err != nil {
		return nil, err
	}
	return &crd{structural: structural, schema: validator, cel: cel.NewValidator(structural, true, celconfig.PerCallLimit)}, nil
}

// validate checks one custom resource, given as YAML, as the API server
// does on create with strict field validation: fields the schema does not
// know, the OpenAPI schema, and its CEL rules (x-kubernetes-validations).
func (c *crd) validate(doc []byte) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	// As the API server decodes: whole numbers become int64, which the
	// CEL rules on ports expect.
	var obj map[string]any
	if err := utiljson.Unmarshal(js, &obj); err != nil {
		return err
	}
	var problems []string
	pruned := pruning.PruneWithOptions(obj, c.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, p := range pruned {
		problems = append(problems, "unknown field "+p)
	}
	for _, e := range validation.ValidateCustomResource(nil, obj, c.schema) {
		problems = append(problems, e.Error())
	}
	errs, _ := c.cel.Validate(context.Background(), nil, c.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	for _, e := range errs {
		problems = append(problems, e.Error())
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

// TestCustomResourcesPassTheirCRDs validates every custom resource of the
// example against its CRD, as `kubectl apply` to a cluster with Istio and
// the Gateway API would.
func TestCustomResourcesPassTheirCRDs(t *testing.T) {
	crds := loadCRDs(t)
	for _, mode := range modes {
		files, _ := filepath.Glob(filepath.Join(mode, "*.yaml"))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for i, doc := range documents(data) {
				o, err := decodeDocument(doc)
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				if o.Kind == "Namespace" {
					continue // a built-in kind, decoded strictly by decodeDocument
				}
				c := crds[o.APIVersion+"/"+o.Kind]
				if c == nil {
					t.Errorf("%s, document %d: no CRD for %s %s", f, i+1, o.APIVersion, o.Kind)
					continue
				}
				if err := c.validate(doc); err != nil {
					t.Errorf("%s, document %d (%s %s): %v", f, i+1, o.Kind, o.meta.Name, err)
				}
			}
		}
	}
}

// TestCRDValidationRefusesMistakes shows the CRD check catches what the
// types alone do not: the schema's limits and its CEL rules.
func TestCRDValidationRefusesMistakes(t *testing.T) {
	crds := loadCRDs(t)
	tests := map[string]struct{ kind, doc string }{
		"selector and targetRefs": {"security.istio.io/v1/AuthorizationPolicy",
			"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\n" +
				"spec: {action: CUSTOM, provider: {name: keyward}, selector: {matchLabels: {a: b}}, targetRefs: [{group: g, kind: Gateway, name: w}], rules: [{}]}\n"},
		"misspelt field": {"networking.istio.io/v1/DestinationRule",
			"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x}\nspec: {host: a, trafficPolicy: {tls: {mode: SIMPLE, snii: a}}}\n"},
		"port out of range": {"networking.istio.io/v1/ServiceEntry",
			"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x}\nspec: {hosts: [a.example], ports: [{number: 70000, name: http, protocol: HTTP}]}\n"},
		"waypoint without listeners": {"gateway.networking.k8s.io/v1/Gateway",
			"apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: x}\nspec: {gatewayClassName: istio-waypoint, listeners: []}\n"},
	}
	for name, tc := range tests {
		c := crds[tc.kind]
		if c == nil {
			t.Fatalf("no CRD for %s", tc.kind)
		}
		if err := c.validate([]byte(tc.doc)); err == nil {
			t.Errorf("%s: valid", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
