package httpapi

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestOpenAPIMatchesRoutes checks that every served route is documented and
// every documented route is served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	raw, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("parse openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q, want 3.x", doc.OpenAPI)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" || method == "summary" || method == "description" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	var served []string
	for _, rt := range (&Server{}).routes() {
		served = append(served, rt.Method+" "+rt.Path)
	}
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("served but not documented: %s", r)
		}
	}
	for _, r := range documented {
		if !slices.Contains(served, r) {
			t.Errorf("documented but not served: %s", r)
		}
	}
	if len(served) == 0 {
		t.Fatal("no routes")
	}
}

// TestOpenAPISchemasMatchWire checks that each documented object has
// exactly the fields its Go wire type sends or accepts.
func TestOpenAPISchemasMatchWire(t *testing.T) {
	raw, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any `yaml:"properties"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{
		"User": userJSON{}, "UserPatch": userPatch{}, "Group": groupJSON{}, "GroupPatch": groupPatch{},
		"TokenRequest": tokenRequest{}, "Token": tokenJSON{}, "RotateRequest": rotateRequest{},
		"CredentialRequest": credentialRequest{}, "Credential": credentialJSON{},
		"Provider": providerJSON{}, "ManagementToken": apiTokenJSON{}, "Me": meJSON{},
		"Identity": identityJSON{}, "IdentityPatch": identityPatch{},
	} {
		var documented []string
		for p := range doc.Components.Schemas[name].Properties {
			documented = append(documented, p)
		}
		slices.Sort(documented)
		if wire := jsonFields(reflect.TypeOf(v)); !slices.Equal(documented, wire) {
			t.Errorf("schema %s: documented %v, wire %v", name, documented, wire)
		}
	}
}

// jsonFields lists a struct's JSON field names, sorted.
func jsonFields(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case f.Anonymous:
			out = append(out, jsonFields(f.Type)...)
		case name != "" && name != "-":
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
