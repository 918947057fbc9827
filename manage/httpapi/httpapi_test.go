package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/internal/storetest"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// suite is the API's behaviour, run over each store: the file store in
// every test run, the Vault store on an OpenBao dev server in TestVaultAPI.
var suite = map[string]func(t *testing.T, f *fixture){
	"AdminRoutes":           testAdminRoutes,
	"RouteRoles":            testRouteRoles,
	"TokenRoutes":           testTokenRoutes,
	"Rotation":              testRotation,
	"CredentialRoutes":      testCredentialRoutes,
	"IsolationMatrix":       testIsolationMatrix,
	"OnBehalf":              testOnBehalf,
	"ManagementTokenRoutes": testManagementTokenRoutes,
	"DeleteUserTakesAll":    testDeleteUserTakesAll,
	"Authentication":        testAuthentication,
	"OIDCAuthentication":    testOIDCAuthentication,
	"OIDCCallers":           testOIDCCallers,
}

func TestAPIOnFileStore(t *testing.T) {
	for name, test := range suite {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, newFixture(t))
		})
	}
}

// TestVaultAPI runs the whole suite over the Vault store, against a real
// OpenBao dev server.
func TestVaultAPI(t *testing.T) {
	v := storetest.NewVaults(t)
	for name, test := range suite {
		t.Run(name, func(t *testing.T) { test(t, newVaultFixture(t, v)) })
	}
}

func testAdminRoutes(t *testing.T, f *fixture) {
	for _, admin := range []string{"root", BootstrapUser} {
		carol, research := "carol-"+admin, "research-"+admin
		f.run(t, f.creds[admin], []step{
			{"create user", "POST", "/v1/users", map[string]any{"name": carol, "groups": []string{"eng"}}, 201, "", func(t *testing.T, b map[string]any) {
				if b["role"] != "user" {
					t.Fatalf("default role %v", b["role"])
				}
			}},
			{"create user again", "POST", "/v1/users", map[string]any{"name": carol}, 409, codeConflict, nil},
			{"bad user name", "POST", "/v1/users", map[string]any{"name": "no/slash"}, 400, codeInvalidRequest, nil},
			{"reserved user name", "POST", "/v1/users", map[string]any{"name": BootstrapUser}, 400, codeInvalidRequest, nil},
			{"unknown field", "POST", "/v1/users", map[string]any{"name": "dave", "admin": true}, 400, codeInvalidRequest, nil},
			{"list users", "GET", "/v1/users", nil, 200, "", func(t *testing.T, b map[string]any) {
				if !listHas(b, "users", "name", carol) || !listHas(b, "users", "name", "alice") {
					t.Fatalf("users: %v", b)
				}
			}},
			{"get user", "GET", "/v1/users/" + carol, nil, 200, "", nil},
			{"get missing user", "GET", "/v1/users/nobody", nil, 404, codeNotFound, nil},
			{"set user", "PUT", "/v1/users/" + carol, map[string]any{"groups": []string{"eng", "ops"}, "role": "admin", "disabled": true}, 200, "", func(t *testing.T, b map[string]any) {
				if b["role"] != "admin" || b["disabled"] != true || len(b["groups"].([]any)) != 2 {
					t.Fatalf("after PUT: %v", b)
				}
			}},
			{"set bad role", "PUT", "/v1/users/" + carol, map[string]any{"role": "root"}, 400, codeInvalidRequest, nil},
			{"set missing user", "PUT", "/v1/users/nobody", map[string]any{"disabled": true}, 404, codeNotFound, nil},
			{"delete user", "DELETE", "/v1/users/" + carol, nil, 204, "", nil},
			{"delete user again", "DELETE", "/v1/users/" + carol, nil, f.deletedAgain, "", nil},
			{"create group negative rate limit", "POST", "/v1/groups", map[string]any{"name": research, "requests_per_minute": -1}, 400, codeInvalidRequest, nil},
			{"create group", "POST", "/v1/groups", map[string]any{"name": research, "models": []string{"gpt-4o*"}, "requests_per_minute": 30}, 201, "", func(t *testing.T, b map[string]any) {
				if b["requests_per_minute"] != 30.0 {
					t.Fatalf("created: %v", b)
				}
			}},
			{"create group again", "POST", "/v1/groups", map[string]any{"name": research}, 409, codeConflict, nil},
			{"list groups", "GET", "/v1/groups", nil, 200, "", func(t *testing.T, b map[string]any) {
				if !listHas(b, "groups", "name", research) || !listHas(b, "groups", "name", "eng") {
					t.Fatalf("groups: %v", b)
				}
			}},
			{"get group", "GET", "/v1/groups/" + research, nil, 200, "", nil},
			{"set group", "PUT", "/v1/groups/" + research, map[string]any{"disabled": true, "providers": []string{"openai"}, "disable_custom_keys": true}, 200, "", func(t *testing.T, b map[string]any) {
				if b["disabled"] != true || b["disable_custom_keys"] != true || len(b["models"].([]any)) != 1 || b["requests_per_minute"] != 30.0 {
					t.Fatalf("after PUT: %v", b)
				}
			}},
			{"set group rate limit", "PUT", "/v1/groups/" + research, map[string]any{"requests_per_minute": 0}, 200, "", func(t *testing.T, b map[string]any) {
				if b["requests_per_minute"] != 0.0 || b["disabled"] != true {
					t.Fatalf("after PUT: %v", b)
				}
			}},
			{"set group negative rate limit", "PUT", "/v1/groups/" + research, map[string]any{"requests_per_minute": -5}, 400, codeInvalidRequest, nil},
			{"set group rate limit not a number", "PUT", "/v1/groups/" + research, map[string]any{"requests_per_minute": "lots"}, 400, codeInvalidRequest, nil},
			{"set group bad provider", "PUT", "/v1/groups/" + research, map[string]any{"providers": []string{"a b"}}, 400, codeInvalidRequest, nil},
			{"delete group", "DELETE", "/v1/groups/" + research, nil, 204, "", nil},
			{"get deleted group", "GET", "/v1/groups/" + research, nil, 404, codeNotFound, nil},
			{"list providers", "GET", "/v1/providers", nil, 200, "", func(t *testing.T, b map[string]any) {
				want := `{"providers":[{"key_ids":["k1"],"kind":"openai","name":"openai"}]}`
				if got, _ := json.Marshal(b); string(got) != want {
					t.Fatalf("providers: %s, want %s", got, want)
				}
			}},
			{"get provider", "GET", "/v1/providers/openai", nil, 200, "", func(t *testing.T, b map[string]any) {
				if raw, _ := json.Marshal(b); strings.Contains(string(raw), serverKey) || b["kind"] != "openai" {
					t.Fatalf("provider: %s", raw)
				}
			}},
			{"get missing provider", "GET", "/v1/providers/nope", nil, 404, codeNotFound, nil},
		})
	}
}

// listHas reports whether the list under key has an item whose field is v.
func listHas(b map[string]any, key, field string, v any) bool {
	items, _ := b[key].([]any)
	for _, it := range items {
		if m, _ := it.(map[string]any); m[field] == v {
			return true
		}
	}
	return false
}

// testRouteRoles calls every served route as nobody, as a user and as
// every kind of admin, each with a management token and with an OIDC JWT:
// nobody gets 401, a user gets 403 on admin routes, and everyone else
// gets past authentication and authorization.
func testRouteRoles(t *testing.T, f *fixture) {
	for _, rt := range (&Server{}).routes() {
		path := strings.NewReplacer("{name}", "nobody", "{user}", "nobody", "{id}", strings.Repeat("A", token.IDLen)).Replace(rt.Path)
		for _, who := range []string{"", "alice", "root", BootstrapUser, oidcAlice, oidcAdmin} {
			status, body := f.do(t, f.creds[who], rt.Method, path, map[string]any{})
			var want int
			switch {
			case who == "":
				want = 401
			case rt.Scope == AdminOnly && (who == "alice" || who == oidcAlice):
				want = 403
			}
			switch {
			case want != 0 && status != want:
				t.Errorf("%s %s as %q: %d %v, want %d", rt.Method, path, who, status, body, want)
			case want == 0 && (status == 401 || status == 403 || status == 405 || errCode(body) == codeAdminOnly):
				t.Errorf("%s %s as %q: %d %v, want past authorization", rt.Method, path, who, status, body)
			}
		}
	}
	if u, _ := f.st.User(context.Background(), "alice"); u == nil || u.Role != record.RoleUser {
		t.Fatal("a forbidden request changed the user")
	}
}

func testTokenRoutes(t *testing.T, f *fixture) {
	// Both roles manage their own tokens through the same routes.
	for _, who := range []struct{ user, group, other string }{{"alice", "eng", "ops"}, {"root", "ops", "eng"}} {
		cred := f.creds[who.user]
		created := f.must(t, cred, "POST", "/v1/tokens", map[string]any{"group": who.group, "name": "app", "ttl": "720h"}, 201)
		tok, _ := created["token"].(string)
		id, _ := created["id"].(string)
		if !strings.HasPrefix(tok, token.Prefix) || !token.ValidID(id) || created["state"] != "active" || created["expires"] == nil {
			t.Fatalf("create answer: %v", created)
		}
		if want := token.Prefix + "…" + tok[len(tok)-4:]; created["masked"] != want {
			t.Fatalf("masked %q, want %q", created["masked"], want)
		}
		f.run(t, cred, []step{
			{"list", "GET", "/v1/tokens", nil, 200, "", func(t *testing.T, b map[string]any) {
				list := b["tokens"].([]any)
				if len(list) != 1 || list[0].(map[string]any)["id"] != id {
					t.Fatalf("list: %v", b)
				}
				if raw, _ := json.Marshal(b); strings.Contains(string(raw), tok[len(token.Prefix):len(tok)-4]) {
					t.Fatal("list shows the token")
				}
				if list[0].(map[string]any)["masked"] != created["masked"] {
					t.Fatalf("list masks as %v", list[0])
				}
			}},
			{"get", "GET", "/v1/tokens/" + id, nil, 200, "", func(t *testing.T, b map[string]any) {
				if _, ok := b["token"]; ok || b["group"] != who.group || b["name"] != "app" {
					t.Fatalf("get: %v", b)
				}
			}},
			{"group not usable", "POST", "/v1/tokens", map[string]any{"name": "app185", "group": who.other}, 400, codeInvalidRequest, func(t *testing.T, b map[string]any) {
				if !strings.Contains(errMessage(b), "may not use group") {
					t.Fatalf("message %q", errMessage(b))
				}
			}},
			{"group missing", "POST", "/v1/tokens", map[string]any{"name": "app190", "group": "nope"}, 400, codeInvalidRequest, nil},
			{"bad ttl", "POST", "/v1/tokens", map[string]any{"name": "app191", "group": who.group, "ttl": "soon"}, 400, codeInvalidRequest, nil},
			{"zero ttl", "POST", "/v1/tokens", map[string]any{"name": "app192", "group": who.group, "ttl": "0s"}, 400, codeInvalidRequest, nil},
			{"no name", "POST", "/v1/tokens", map[string]any{"group": who.group}, 400, codeInvalidRequest, nil},
			{"name with newline", "POST", "/v1/tokens", map[string]any{"group": who.group, "name": "a\nb"}, 400, codeInvalidRequest, nil},
			{"same name as an active token", "POST", "/v1/tokens", map[string]any{"group": who.group, "name": "app"}, 409, codeConflict, func(t *testing.T, b map[string]any) {
				if !strings.Contains(errMessage(b), id) {
					t.Fatalf("message does not name the token: %q", errMessage(b))
				}
			}},
			{"revoke", "DELETE", "/v1/tokens/" + id, nil, 204, "", nil},
			{"revoke again", "DELETE", "/v1/tokens/" + id, nil, 204, "", nil},
			{"revoked state", "GET", "/v1/tokens/" + id, nil, 200, "", func(t *testing.T, b map[string]any) {
				if b["state"] != "revoked" {
					t.Fatalf("state %v", b["state"])
				}
			}},
			{"rotate revoked", "POST", "/v1/tokens/" + id + "/rotate", nil, 400, codeInvalidRequest, nil},
			{"name free again once revoked", "POST", "/v1/tokens", map[string]any{"group": who.group, "name": "app"}, 201, "", nil},
		})
	}
	// The bootstrap admin has no user record, so no tokens of its own.
	f.run(t, adminSecret, []step{
		{"bootstrap list", "GET", "/v1/tokens", nil, 200, "", func(t *testing.T, b map[string]any) {
			if len(b["tokens"].([]any)) != 0 {
				t.Fatalf("bootstrap tokens: %v", b)
			}
		}},
		{"bootstrap create", "POST", "/v1/tokens", map[string]any{"name": "app210", "group": "eng"}, 400, codeInvalidRequest, nil},
		{"bootstrap credential", "POST", "/v1/credentials", map[string]any{"name": "k", "provider": "openai", "key": "sk-0123456789"}, 400, codeInvalidRequest, nil},
	})
}

// testIsolationMatrix: every action on a token or credential of another
// user, by a user or by an admin not acting on that user's behalf, answers
// exactly as for one that does not exist, changes nothing, and lists show
// only the caller's own.
func testIsolationMatrix(t *testing.T, f *fixture) {
	type owned struct{ token, credential string }
	mine := map[string]owned{}
	for _, u := range []string{"alice", "bob", "root"} {
		tk := f.must(t, f.creds[u], "POST", "/v1/tokens", map[string]any{"group": map[string]string{"alice": "eng", "bob": "eng", "root": "ops"}[u], "name": u + "-app"}, 201)
		cr := f.must(t, f.creds[u], "POST", "/v1/credentials", map[string]any{"name": u + "-key", "provider": "openai", "key": "sk-" + u + "-private-0123456789"}, 201)
		mine[u] = owned{tk["id"].(string), cr["id"].(string)}
	}
	missing := owned{strings.Repeat("A", token.IDLen), record.NewCredentialID()}
	actions := []struct {
		name, method, path string
		body               any
	}{
		{"get token", "GET", "/v1/tokens/%s", nil},
		{"revoke token", "DELETE", "/v1/tokens/%s", nil},
		{"rotate token", "POST", "/v1/tokens/%s/rotate", map[string]any{"grace": "0s"}},
		{"get credential", "GET", "/v1/credentials/%c", nil},
		{"change credential", "PUT", "/v1/credentials/%c", map[string]any{"key": "sk-stolen-0123456789"}},
		{"delete credential", "DELETE", "/v1/credentials/%c", nil},
	}
	fill := func(path string, o owned) string {
		return strings.NewReplacer("%s", o.token, "%c", o.credential).Replace(path)
	}
	for _, c := range []struct{ caller, victim string }{
		{"alice", "bob"}, {"bob", "alice"}, {"alice", "root"}, {"root", "alice"}, {BootstrapUser, "bob"},
	} {
		for _, a := range actions {
			t.Run(c.caller+" "+a.name+" of "+c.victim, func(t *testing.T) {
				cred := f.creds[c.caller]
				s1, b1 := f.do(t, cred, a.method, fill(a.path, mine[c.victim]), a.body)
				s2, b2 := f.do(t, cred, a.method, fill(a.path, missing), a.body)
				if s1 != 404 || errCode(b1) != codeNotFound {
					t.Fatalf("someone else's: %d %v, want 404", s1, b1)
				}
				if s1 != s2 || errMessage(b1) != errMessage(b2) {
					t.Fatalf("someone else's (%d %v) differs from a missing one (%d %v)", s1, b1, s2, b2)
				}
			})
		}
		for _, list := range []struct{ path, key, own string }{{"/v1/tokens", "tokens", mine[c.caller].token}, {"/v1/credentials", "credentials", mine[c.caller].credential}} {
			b := f.must(t, f.creds[c.caller], "GET", list.path, nil, 200)
			for _, it := range b[list.key].([]any) {
				if id := it.(map[string]any)["id"]; id != list.own {
					t.Fatalf("%s lists %s of someone else: %v", c.caller, list.key, id)
				}
			}
		}
	}
	// Nothing was changed by anyone else.
	ctx := context.Background()
	for u, o := range mine {
		tk, err := f.st.Token(ctx, o.token)
		if err != nil || tk.Revoked || tk.ReplacedBy != "" || tk.User != u {
			t.Fatalf("%s's token after the matrix: %+v %v", u, tk, err)
		}
		cr, err := f.st.Credential(ctx, u, o.credential)
		if err != nil || cr.Key != "sk-"+u+"-private-0123456789" {
			t.Fatalf("%s's credential after the matrix: %v %v", u, cr, err)
		}
	}
}

func testRotation(t *testing.T, f *fixture) {
	alice := f.creds["alice"]
	created := f.must(t, alice, "POST", "/v1/tokens", map[string]any{"group": "eng", "name": "ci", "ttl": "720h"}, 201)
	oldID := created["id"].(string)

	rot := f.must(t, alice, "POST", "/v1/tokens/"+oldID+"/rotate", map[string]any{"grace": "1h"}, 201)
	newTok, _ := rot["token"].(string)
	newID, _ := rot["id"].(string)
	if !strings.HasPrefix(newTok, token.Prefix) || newID == oldID || rot["replaces"] != oldID || rot["name"] != "ci" || rot["group"] != "eng" {
		t.Fatalf("rotation answer: %v", rot)
	}
	wantOldEnd := f.now().Add(time.Hour)
	if got, _ := time.Parse(time.RFC3339Nano, rot["old_expires"].(string)); !got.Equal(wantOldEnd) {
		t.Fatalf("old_expires %v, want %v", rot["old_expires"], wantOldEnd)
	}
	// The new token inherits the old one's lifetime, from now.
	if got, _ := time.Parse(time.RFC3339Nano, rot["expires"].(string)); !got.Equal(f.now().Add(720 * time.Hour)) {
		t.Fatalf("new token expires %v", rot["expires"])
	}
	old := f.must(t, alice, "GET", "/v1/tokens/"+oldID, nil, 200)
	if old["state"] != "rotating" || old["replaced_by"] != newID {
		t.Fatalf("old token during grace: %v", old)
	}
	f.run(t, alice, []step{
		{"rotate again", "POST", "/v1/tokens/" + oldID + "/rotate", nil, 400, codeInvalidRequest, func(t *testing.T, b map[string]any) {
			if !strings.Contains(errMessage(b), newID) {
				t.Fatalf("message does not name the replacement: %q", errMessage(b))
			}
		}},
		{"grace too long", "POST", "/v1/tokens/" + newID + "/rotate", map[string]any{"grace": "9000h"}, 400, codeInvalidRequest, nil},
		{"grace negative", "POST", "/v1/tokens/" + newID + "/rotate", map[string]any{"grace": "-1h"}, 400, codeInvalidRequest, nil},
		{"grace unknown field", "POST", "/v1/tokens/" + newID + "/rotate", map[string]any{"grace_period": "1h"}, 400, codeInvalidRequest, nil},
	})

	// The decision sees the same: the old token works during the grace
	// period and is refused after it; the new one works throughout.
	check := func(id string, at time.Time) (bool, string) {
		tk, err := f.st.Token(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return !tk.Revoked && !tk.Expired(at), tk.State(at)
	}
	if ok, state := check(oldID, f.now().Add(59*time.Minute)); !ok || state != "rotating" {
		t.Fatalf("old token within grace: usable %v, state %s", ok, state)
	}
	f.advance(time.Hour)
	if ok, _ := check(oldID, f.now()); ok {
		t.Fatal("old token usable after its grace period")
	}
	if ok, _ := check(newID, f.now()); !ok {
		t.Fatal("new token unusable")
	}
	if b := f.must(t, alice, "GET", "/v1/tokens/"+oldID, nil, 200); b["state"] != "rotated" {
		t.Fatalf("old token after grace: %v", b)
	}

	// Without a grace in the request, the server's default applies; a
	// zero grace stops the old token at once.
	third := f.must(t, alice, "POST", "/v1/tokens/"+newID+"/rotate", nil, 201)
	if got, _ := time.Parse(time.RFC3339Nano, third["old_expires"].(string)); !got.Equal(f.now().Add(manage.DefaultRotationGrace)) {
		t.Fatalf("default grace: old_expires %v", third["old_expires"])
	}
	fourth := f.must(t, alice, "POST", "/v1/tokens/"+third["id"].(string)+"/rotate", map[string]any{"grace": "0s"}, 201)
	if ok, _ := check(third["id"].(string), f.now()); ok || fourth["old_expires"] == nil {
		t.Fatal("zero grace left the old token usable")
	}

	// A user who lost the group cannot rotate into it.
	bobTok := f.must(t, f.creds["bob"], "POST", "/v1/tokens", map[string]any{"name": "app349", "group": "ops"}, 201)
	f.must(t, adminSecret, "PUT", "/v1/users/bob", map[string]any{"groups": []string{"eng"}}, 200)
	if b := f.must(t, f.creds["bob"], "POST", "/v1/tokens/"+bobTok["id"].(string)+"/rotate", nil, 400); !strings.Contains(errMessage(b), "may not use group") {
		t.Fatalf("rotation into a group no longer allowed: %v", b)
	}
}

func testCredentialRoutes(t *testing.T, f *fixture) {
	const key = "sk-alice-own-key-abcdefgh12345678"
	alice := f.creds["alice"]
	created := f.must(t, alice, "POST", "/v1/credentials", map[string]any{
		"name": "personal", "provider": "openai", "model": "gpt-4o", "base_url": "https://api.openai.com/v1",
		"key": key, "extra": map[string]any{"organization": "org-1"},
	}, 201)
	id, _ := created["id"].(string)
	if created["key_masked"] != "sk-a*************************5678" || created["model"] != "gpt-4o" || created["extra"].(map[string]any)["organization"] != "org-1" {
		t.Fatalf("create answer: %v", created)
	}
	noKey := func(t *testing.T, b map[string]any) {
		if raw, _ := json.Marshal(b); strings.Contains(string(raw), key) || strings.Contains(string(raw), key[4:len(key)-4]) {
			t.Fatalf("the key is in the answer: %s", raw)
		}
	}
	noKey(t, created)
	f.run(t, alice, []step{
		{"list", "GET", "/v1/credentials", nil, 200, "", func(t *testing.T, b map[string]any) {
			noKey(t, b)
			if !listHas(b, "credentials", "id", id) || len(b["credentials"].([]any)) != 1 {
				t.Fatalf("list: %v", b)
			}
		}},
		{"get", "GET", "/v1/credentials/" + id, nil, 200, "", noKey},
		{"rename, keep key", "PUT", "/v1/credentials/" + id, map[string]any{"name": "renamed", "model": ""}, 200, "", func(t *testing.T, b map[string]any) {
			noKey(t, b)
			if b["name"] != "renamed" || b["model"] != "" || b["key_masked"] != created["key_masked"] {
				t.Fatalf("after PUT: %v", b)
			}
		}},
		{"short key", "PUT", "/v1/credentials/" + id, map[string]any{"key": "12345678"}, 200, "", func(t *testing.T, b map[string]any) {
			if b["key_masked"] != "********" {
				t.Fatalf("8-character key masked as %v", b["key_masked"])
			}
		}},
		{"nine characters", "PUT", "/v1/credentials/" + id, map[string]any{"key": "123456789"}, 200, "", func(t *testing.T, b map[string]any) {
			if b["key_masked"] != "1234*6789" {
				t.Fatalf("9-character key masked as %v", b["key_masked"])
			}
		}},
		{"empty key", "PUT", "/v1/credentials/" + id, map[string]any{"key": ""}, 200, "", func(t *testing.T, b map[string]any) {
			if b["key_masked"] != "" {
				t.Fatalf("empty key masked as %v", b["key_masked"])
			}
		}},
		{"unknown provider", "POST", "/v1/credentials", map[string]any{"name": "x", "provider": "nope", "key": key}, 400, codeInvalidRequest, func(t *testing.T, b map[string]any) {
			if !strings.Contains(errMessage(b), "provider") {
				t.Fatalf("message %q", errMessage(b))
			}
		}},
		{"duplicate name", "POST", "/v1/credentials", map[string]any{"name": "renamed", "provider": "openai", "key": key}, 409, codeConflict, nil},
		{"bad base url", "POST", "/v1/credentials", map[string]any{"name": "y", "provider": "openai", "key": key, "base_url": "https://u:" + key + "@example.com"}, 400, codeInvalidRequest, func(t *testing.T, b map[string]any) {
			if msg := errMessage(b); !strings.Contains(msg, "base_url") || strings.Contains(msg, key) {
				t.Fatalf("message %q", msg)
			}
		}},
		{"key with newline", "POST", "/v1/credentials", map[string]any{"name": "z", "provider": "openai", "key": key + "\nx-evil: 1"}, 400, codeInvalidRequest, func(t *testing.T, b map[string]any) {
			if msg := errMessage(b); !strings.Contains(msg, "key") || strings.Contains(msg, key) {
				t.Fatalf("message %q", msg)
			}
		}},
		{"extra not an object", "POST", "/v1/credentials", map[string]any{"name": "w", "provider": "openai", "extra": []int{1}}, 400, codeInvalidRequest, nil},
		{"unknown field", "POST", "/v1/credentials", map[string]any{"name": "v", "provider": "openai", "secret": key}, 400, codeInvalidRequest, nil},
		{"delete", "DELETE", "/v1/credentials/" + id, nil, 204, "", nil},
		{"delete again", "DELETE", "/v1/credentials/" + id, nil, 404, codeNotFound, nil},
		{"get deleted", "GET", "/v1/credentials/" + id, nil, 404, codeNotFound, nil},
		{"id not an id", "GET", "/v1/credentials/..%2f..%2fsecret", nil, 404, codeNotFound, nil},
	})
	if strings.Contains(f.audit.String(), key) {
		t.Fatal("the audit log has the key")
	}
}

// testOnBehalf: an admin acts on a user's tokens and credentials with
// ?user=, and the audit log records both; nobody else can.
func testOnBehalf(t *testing.T, f *fixture) {
	for _, admin := range []string{"root", BootstrapUser} {
		cred := f.creds[admin]
		tk := f.must(t, cred, "POST", "/v1/tokens?user=alice", map[string]any{"group": "eng", "name": "by-" + admin}, 201)
		if stored, err := f.st.Token(context.Background(), tk["id"].(string)); err != nil || stored.User != "alice" {
			t.Fatalf("token made on alice's behalf: %+v %v", stored, err)
		}
		if !listHas(f.must(t, f.creds["alice"], "GET", "/v1/tokens", nil, 200), "tokens", "id", tk["id"]) {
			t.Fatal("alice does not see the token made for her")
		}
		if listHas(f.must(t, cred, "GET", "/v1/tokens", nil, 200), "tokens", "id", tk["id"]) {
			t.Fatal("the admin's own list shows alice's token")
		}
		cr := f.must(t, cred, "POST", "/v1/credentials?user=alice", map[string]any{"name": "by-" + admin, "provider": "openai", "key": "sk-on-behalf-0123456789"}, 201)
		f.must(t, cred, "GET", "/v1/credentials/"+cr["id"].(string)+"?user=alice", nil, 200)
		f.must(t, cred, "DELETE", "/v1/tokens/"+tk["id"].(string)+"?user=alice", nil, 204)
		me := f.must(t, cred, "GET", "/v1/me?user=alice", nil, 200)
		if me["name"] != "alice" || me["actor"] != admin {
			t.Fatalf("me on behalf: %v", me)
		}
	}
	f.run(t, f.creds["bob"], []step{
		{"user on behalf of another", "GET", "/v1/tokens?user=alice", nil, 403, codeAdminOnly, nil},
		{"user on behalf of nobody", "GET", "/v1/tokens?user=nobody", nil, 403, codeAdminOnly, nil},
		{"user on behalf of self", "GET", "/v1/tokens?user=bob", nil, 200, "", nil},
	})
	f.run(t, f.creds["root"], []step{
		{"on behalf of nobody", "GET", "/v1/tokens?user=nobody", nil, 404, codeNotFound, nil},
		{"on behalf on an admin route", "GET", "/v1/users?user=alice", nil, 400, codeInvalidRequest, nil},
	})

	events := auditEvents(t, f)
	var created, revoked int
	for _, e := range events {
		if e["on_behalf_of"] == "alice" && e["outcome"] == "ok" {
			switch e["action"] {
			case "token.create":
				created++
			case "token.revoke":
				revoked++
			}
			if e["who"] != "root" && e["who"] != BootstrapUser {
				t.Fatalf("on-behalf event without the admin: %v", e)
			}
		}
	}
	if created != 2 || revoked != 2 {
		t.Fatalf("on-behalf events: %d created, %d revoked, want 2 and 2:\n%s", created, revoked, f.audit.String())
	}
}

func auditEvents(t *testing.T, f *fixture) []map[string]any {
	t.Helper()
	var events []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(f.audit.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line is not JSON: %q", line)
		}
		events = append(events, e)
	}
	return events
}

func testManagementTokenRoutes(t *testing.T, f *fixture) {
	issued := f.must(t, f.creds["root"], "POST", "/v1/users/alice/management-tokens", nil, 201)
	tok, _ := issued["token"].(string)
	id, _ := issued["id"].(string)
	if !strings.HasPrefix(tok, token.ManagementPrefix) || issued["user"] != "alice" {
		t.Fatalf("issued: %v", issued)
	}
	if me := f.must(t, tok, "GET", "/v1/me", nil, 200); me["name"] != "alice" || me["role"] != "user" {
		t.Fatalf("me: %v", me)
	}
	f.run(t, adminSecret, []step{
		{"for a missing user", "POST", "/v1/users/nobody/management-tokens", nil, 404, codeNotFound, nil},
		{"revoke under another user", "DELETE", "/v1/users/bob/management-tokens/" + id, nil, 404, codeNotFound, nil},
		{"revoke", "DELETE", "/v1/users/alice/management-tokens/" + id, nil, 204, "", nil},
		{"revoke again", "DELETE", "/v1/users/alice/management-tokens/" + id, nil, 204, "", nil},
	})
	if status, b := f.do(t, tok, "GET", "/v1/me", nil); status != 401 || errCode(b) != codeTokenRevoked {
		t.Fatalf("revoked management token: %d %v", status, b)
	}
	if status, _ := f.do(t, f.creds["alice"], "GET", "/v1/me", nil); status != 200 {
		t.Fatal("revoking one management token revoked another")
	}
}

// testDeleteUserTakesAll: deleting a user takes their tokens, credentials
// and management tokens with them.
func testDeleteUserTakesAll(t *testing.T, f *fixture) {
	tk := f.must(t, f.creds["bob"], "POST", "/v1/tokens", map[string]any{"name": "app523", "group": "ops"}, 201)
	cr := f.must(t, f.creds["bob"], "POST", "/v1/credentials", map[string]any{"name": "k", "provider": "openai", "key": "sk-bob-0123456789"}, 201)
	f.must(t, adminSecret, "DELETE", "/v1/users/bob", nil, 204)
	ctx := context.Background()
	if _, err := f.st.Token(ctx, tk["id"].(string)); !errors.Is(err, record.ErrNotFound) {
		t.Fatalf("token of a deleted user: %v", err)
	}
	if _, err := f.st.Credential(ctx, "bob", cr["id"].(string)); !errors.Is(err, record.ErrNotFound) {
		t.Fatalf("credential of a deleted user: %v", err)
	}
	if status, _ := f.do(t, f.creds["bob"], "GET", "/v1/me", nil); status != 401 {
		t.Fatalf("management token of a deleted user: %d", status)
	}
	// A new user of the same name inherits nothing.
	f.must(t, adminSecret, "POST", "/v1/users", map[string]any{"name": "bob", "groups": []string{"ops"}}, 201)
	if b := f.must(t, adminSecret, "GET", "/v1/credentials?user=bob", nil, 200); len(b["credentials"].([]any)) != 0 {
		t.Fatalf("new bob inherits credentials: %v", b)
	}
}

func testAuthentication(t *testing.T, f *fixture) {
	created := f.must(t, f.creds["alice"], "POST", "/v1/tokens", map[string]any{"name": "app544", "group": "eng"}, 201)
	llmToken := created["token"].(string)
	mgmtToken := f.creds["alice"]
	swapped := token.ManagementPrefix + llmToken[len(token.Prefix):]

	// A management token is not an LLM token: the LLM keyring refuses it.
	keys, _ := f.st.SigningKeys(context.Background())
	ring, _ := token.NewKeyring(keys)
	if _, _, err := ring.Verify(mgmtToken); err == nil {
		t.Fatal("a management token verifies as an LLM token")
	}
	if _, _, err := ring.Verify(llmToken); err != nil {
		t.Fatalf("LLM token: %v", err)
	}

	// Revoked, disabled and deleted cases get their own users.
	ctx := context.Background()
	yes := true
	for _, name := range []string{"eve", "mallory", "gone"} {
		if _, err := f.m.CreateUser(ctx, record.User{Name: name, Role: record.RoleAdmin}); err != nil {
			t.Fatal(err)
		}
	}
	revoked, rec, _ := f.m.IssueAPIToken(ctx, "eve")
	disabled, _, _ := f.m.IssueAPIToken(ctx, "mallory")
	deleted, _, _ := f.m.IssueAPIToken(ctx, "gone")
	for name, err := range map[string]error{
		"revoke":  f.m.RevokeAPIToken(ctx, "eve", rec.ID),
		"disable": func() error { _, err := f.m.UpdateUser(ctx, "mallory", manage.UserPatch{Disabled: &yes}); return err }(),
		"delete":  f.m.DeleteUser(ctx, "gone"),
	} {
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	other, _ := token.NewKeyring([]token.SigningKey{{ID: 1, Secret: bytes.Repeat([]byte{9}, token.KeySize)}})
	forged, _ := other.Management().Mint()

	for name, c := range map[string]struct {
		cred       string
		want       int
		wantCode   string
		authHeader string
	}{
		"none":                      {"", 401, codeMissingCredential, ""},
		"basic auth":                {"", 401, codeMissingCredential, "Basic YWxpY2U6eA=="},
		"llm token":                 {llmToken, 401, codeInvalidToken, ""},
		"llm token, prefix swapped": {swapped, 401, codeInvalidToken, ""},
		"truncated":                 {mgmtToken[:len(mgmtToken)-1], 401, codeMalformedToken, ""},
		"forged":                    {forged.Token, 401, codeInvalidToken, ""},
		"revoked":                   {revoked, 401, codeTokenRevoked, ""},
		"user disabled":             {disabled, 403, codeUserDisabled, ""},
		"user deleted":              {deleted, 401, codeInvalidToken, ""},
		"wrong bootstrap":           {adminSecret + "x", 401, codeInvalidToken, ""},
		"management token":          {mgmtToken, 200, "", ""},
		"bootstrap":                 {adminSecret, 200, "", ""},
	} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", f.url+"/v1/tokens", nil)
			switch {
			case c.authHeader != "":
				req.Header.Set("Authorization", c.authHeader)
			case c.cred != "":
				req.Header.Set("Authorization", "Bearer "+c.cred)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != c.want || (c.wantCode != "" && errCode(body) != c.wantCode) {
				t.Fatalf("status %d %v, want %d %s", resp.StatusCode, body, c.want, c.wantCode)
			}
			if c.want == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
			if c.cred != "" && strings.Contains(errMessage(body), c.cred) {
				t.Fatal("error echoes the credential")
			}
		})
	}
}

func TestNew(t *testing.T) {
	st, err := filestore.Open(filestore.Options{Path: filepath.Join(t.TempDir(), "store.yaml"), Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	m, err := manage.New(st, manage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys := &token.Verifier{}
	if _, err := New(Options{Manager: m, Keys: keys, AdminToken: "short"}); err == nil || strings.Contains(err.Error(), "short") {
		t.Fatalf("short admin token: %v", err)
	}
	if _, err := New(Options{Keys: keys}); err == nil {
		t.Fatal("no manager accepted")
	}
	if _, err := New(Options{Manager: m}); err == nil {
		t.Fatal("no keys accepted")
	}
	// Without a bootstrap credential, nothing but management tokens works.
	s, err := New(Options{Manager: m, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/v1/users", nil)
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	s.ServeHTTP(rec, req)
	if rec.Code != 401 {
		t.Fatalf("bootstrap credential without configuration: %d", rec.Code)
	}
}

func TestUnroutedAnswersJSON(t *testing.T) {
	f := newFixture(t)
	if status, body := f.do(t, adminSecret, "GET", "/v1/nothing", nil); status != 404 || errCode(body) != codeNotFound {
		t.Fatalf("unknown route: %d %v", status, body)
	}
	if status, body := f.do(t, adminSecret, "PATCH", "/v1/users/alice", nil); status != 405 || errCode(body) != codeMethodNotAllowed {
		t.Fatalf("wrong method: %d %v", status, body)
	}
}

func TestAuditLog(t *testing.T) {
	f := newFixture(t)
	created := f.must(t, f.creds["alice"], "POST", "/v1/tokens", map[string]any{"name": "app663", "group": "eng"}, 201)
	llmToken := created["token"].(string)
	id := created["id"].(string)
	f.do(t, f.creds["alice"], "DELETE", "/v1/tokens/"+id, nil)
	f.do(t, f.creds["alice"], "POST", "/v1/tokens", map[string]any{"name": "app667", "group": "ops"})
	f.do(t, f.creds["alice"], "DELETE", "/v1/tokens/"+f.creds["bob"], nil) // a secret pasted into the path
	f.do(t, adminSecret, "POST", "/v1/users", map[string]any{"name": "carol"})
	f.do(t, f.creds["root"], "PUT", "/v1/groups/eng", map[string]any{"disabled": true})
	f.do(t, f.creds["alice"], "DELETE", "/v1/users/bob", nil)
	f.do(t, llmToken, "GET", "/v1/tokens", nil)
	cr := f.must(t, f.creds["root"], "POST", "/v1/credentials?user=alice", map[string]any{"name": "k", "provider": "openai", "key": "sk-audited-0123456789"}, 201)

	type event struct {
		Msg, Who, Action, Target, Outcome, Reason string
		OnBehalfOf                                string `json:"on_behalf_of"`
	}
	var events []event
	for _, line := range strings.Split(strings.TrimSpace(f.audit.String()), "\n") {
		var e event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line is not JSON: %q", line)
		}
		events = append(events, e)
	}
	want := []event{
		{"management", "alice", "token.create", "token/" + id, "ok", "", ""},
		{"management", "alice", "token.revoke", "token/" + id, "ok", "", ""},
		{"management", "alice", "token.create", "group/ops", "invalid", codeInvalidRequest, ""},
		{"management", "alice", "token.revoke", "token/(invalid name)", "not_found", codeNotFound, ""},
		{"management", BootstrapUser, "user.create", "user/carol", "ok", "", ""},
		{"management", "root", "group.update", "group/eng", "ok", "", ""},
		{"management", "alice", "authorize", "DELETE /v1/users/{name}", "denied", codeAdminOnly, ""},
		{"management", "", "authenticate", "GET /v1/tokens", "denied", codeInvalidToken, ""},
		{"management", "root", "credential.create", "credential/" + cr["id"].(string), "ok", "", "alice"},
	}
	if len(events) != len(want) {
		t.Fatalf("audit events:\n%s", f.audit.String())
	}
	for i := range want {
		if events[i] != want[i] {
			t.Errorf("event %d: %+v, want %+v", i, events[i], want[i])
		}
	}
	log := f.audit.String()
	for name, secret := range map[string]string{"llm token": llmToken, "admin credential": adminSecret, "alice": f.creds["alice"], "bob": f.creds["bob"], "root": f.creds["root"], "credential key": "sk-audited-0123456789"} {
		if strings.Contains(log, secret) {
			t.Errorf("audit log contains the %s", name)
		}
	}
}

func TestAdminToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "admin")
	if err := os.WriteFile(file, []byte("  "+adminSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		env     map[string]string
		want    string
		wantErr string
	}{
		"none":     {env: nil},
		"variable": {env: map[string]string{AdminTokenEnv: adminSecret}, want: adminSecret},
		"file":     {env: map[string]string{AdminTokenFileEnv: file}, want: adminSecret},
		"both":     {env: map[string]string{AdminTokenEnv: adminSecret, AdminTokenFileEnv: file}, wantErr: "not both"},
		"missing":  {env: map[string]string{AdminTokenFileEnv: filepath.Join(dir, "nope")}, wantErr: AdminTokenFileEnv},
		"empty":    {env: map[string]string{AdminTokenFileEnv: empty}, wantErr: "is empty"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := AdminToken(func(k string) string { return c.env[k] })
			if got != c.want || (err == nil) != (c.wantErr == "") || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("AdminToken = %q, %v; want %q, error with %q", got, err, c.want, c.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), adminSecret) {
				t.Fatal("the error shows the credential")
			}
		})
	}
}

// TestForgedManagementTokensCostNoVaultRead: management tokens are verified
// offline with the serving keyring, so forged and random ones never reach
// Vault (before, every one cost a read of the signing keys).
func TestForgedManagementTokensCostNoVaultRead(t *testing.T) {
	f := newVaultFixture(t, storetest.NewVaults(t))
	counter, ok := f.st.(interface{ Requests() uint64 })
	if !ok {
		t.Fatalf("%T counts no requests", f.st)
	}
	other, err := token.NewKeyring([]token.SigningKey{{ID: 1, Secret: bytes.Repeat([]byte{7}, token.KeySize)}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	before := counter.Requests()
	for i := range n {
		forged, err := other.Management().Mint()
		if err != nil {
			t.Fatal(err)
		}
		cred := forged.Token
		if i%2 == 1 { // a well-formed token with a random tag
			cred = cred[:len(cred)-8] + "AAAAAAAA"
		}
		if status, body := f.do(t, cred, "GET", "/v1/tokens", nil); status != 401 || errCode(body) != codeInvalidToken {
			t.Fatalf("forged management token: %d %v", status, body)
		}
	}
	if reads := counter.Requests() - before; reads != 0 {
		t.Fatalf("%d forged management tokens cost %d Vault requests, want 0", n, reads)
	}
	t.Logf("%d forged management tokens: 0 Vault requests", n)
}
