package httpapi

import (
	"encoding/json"
	"strings"
	"testing"
)

func init() {
	suite["IdentityRoutes"] = testIdentityRoutes
}

// testIdentityRoutes manages principal mappings as an admin, binds a
// token to a workload, and checks that both show and are audited.
func testIdentityRoutes(t *testing.T, f *fixture) {
	root := f.creds["root"]
	const principal = "spiffe://cluster.local/ns/payments/*"
	f.run(t, root, []step{
		{"create", "POST", "/v1/identities", map[string]any{"name": "payments", "principal": principal, "user": "alice", "group": "eng"}, 201, "", func(t *testing.T, b map[string]any) {
			if b["principal"] != principal || b["user"] != "alice" || b["group"] != "eng" || b["disabled"] != false {
				t.Fatalf("create: %v", b)
			}
		}},
		{"same principal", "POST", "/v1/identities", map[string]any{"name": "other", "principal": principal, "user": "alice", "group": "eng"}, 409, "", nil},
		{"not a spiffe id", "POST", "/v1/identities", map[string]any{"name": "bad", "principal": "spiffe://cluster.local/ns/../x", "user": "alice", "group": "eng"}, 400, codeInvalidRequest, nil},
		{"group not usable", "POST", "/v1/identities", map[string]any{"name": "x", "principal": "spiffe://cluster.local/ns/x/sa/y", "user": "alice", "group": "ops"}, 400, codeInvalidRequest, nil},
		{"list", "GET", "/v1/identities", nil, 200, "", func(t *testing.T, b map[string]any) {
			if l, _ := b["identities"].([]any); len(l) != 1 {
				t.Fatalf("list: %v", b)
			}
		}},
		{"disable", "PUT", "/v1/identities/payments", map[string]any{"disabled": true}, 200, "", func(t *testing.T, b map[string]any) {
			if b["disabled"] != true || b["principal"] != principal {
				t.Fatalf("disable: %v", b)
			}
		}},
		{"get", "GET", "/v1/identities/payments", nil, 200, "", func(t *testing.T, b map[string]any) {
			if b["disabled"] != true {
				t.Fatalf("get: %v", b)
			}
		}},
		{"delete", "DELETE", "/v1/identities/payments", nil, 204, "", nil},
		{"gone", "GET", "/v1/identities/payments", nil, 404, codeNotFound, nil},
	})
	bound := f.must(t, f.creds["alice"], "POST", "/v1/tokens", map[string]any{"name": "bound", "group": "eng", "principal": "spiffe://cluster.local/ns/ci/sa/runner"}, 201)
	if bound["principal"] != "spiffe://cluster.local/ns/ci/sa/runner" {
		t.Fatalf("bound token: %v", bound)
	}
	list := f.must(t, f.creds["alice"], "GET", "/v1/tokens", nil, 200)
	raw, _ := json.Marshal(list)
	if !strings.Contains(string(raw), `"principal":"spiffe://cluster.local/ns/ci/sa/runner"`) {
		t.Fatalf("token list does not show the binding: %s", raw)
	}
	if status, b := f.do(t, f.creds["alice"], "POST", "/v1/tokens", map[string]any{"name": "bad", "group": "eng", "principal": "https://x/y"}); status != 400 {
		t.Fatalf("bad binding: %d %v", status, b)
	}
	log := f.audit.String()
	for _, want := range []string{`"action":"identity.create","target":"identity/payments","outcome":"ok"`, `"action":"identity.update","target":"identity/payments","outcome":"ok"`, `"action":"identity.delete","target":"identity/payments","outcome":"ok"`} {
		if !strings.Contains(log, want) {
			t.Errorf("audit log lacks %s:\n%s", want, log)
		}
	}
}
