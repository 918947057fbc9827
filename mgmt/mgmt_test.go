package mgmt

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

const adminSecret = "bootstrap-admin-credential-0123456789abcdef"

// lockedBuffer collects the audit log from the server's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type fixture struct {
	st    *memStore
	url   string
	audit *lockedBuffer
	// creds are management tokens by user name, plus "bootstrap".
	creds map[string]string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	st := newMemStore()
	for _, g := range []string{"eng", "ops"} {
		_ = st.PutGroup(ctx, &record.Group{Name: g})
	}
	users := []*record.User{
		{Name: "alice", Role: record.RoleUser, Groups: []string{"eng"}},
		{Name: "bob", Role: record.RoleUser, Groups: []string{"eng", "ops"}},
		{Name: "root", Role: record.RoleAdmin, Groups: []string{"ops"}},
	}
	f := &fixture{st: st, audit: &lockedBuffer{}, creds: map[string]string{BootstrapUser: adminSecret}}
	for _, u := range users {
		_ = st.PutUser(ctx, u)
		tok, _, err := IssueAPIToken(ctx, st, u.Name, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		f.creds[u.Name] = tok
	}
	s, err := New(Options{Store: st, AdminToken: adminSecret, Logger: slog.New(slog.NewJSONHandler(f.audit, nil))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s) // listens on 127.0.0.1:0
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f
}

// do sends one request with cred as bearer (none when empty) and returns
// the status and the decoded JSON body.
func (f *fixture) do(t *testing.T, cred, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", method, path, raw)
		}
		if resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s %s: content-type %q", method, path, resp.Header.Get("Content-Type"))
		}
	}
	return resp.StatusCode, out
}

func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	code, _ := e["code"].(string)
	if msg, _ := e["message"].(string); code != "" && msg == "" {
		return "(no message)"
	}
	return code
}

type step struct {
	name     string
	method   string
	path     string
	body     any
	want     int
	wantCode string
	check    func(t *testing.T, body map[string]any)
}

func (f *fixture) run(t *testing.T, cred string, steps []step) {
	t.Helper()
	for _, s := range steps {
		status, body := f.do(t, cred, s.method, s.path, s.body)
		if status != s.want {
			t.Fatalf("%s: %s %s: status %d, want %d (%v)", s.name, s.method, s.path, status, s.want, body)
		}
		if s.wantCode != "" && errCode(body) != s.wantCode {
			t.Fatalf("%s: code %q, want %q", s.name, errCode(body), s.wantCode)
		}
		if s.check != nil {
			s.check(t, body)
		}
	}
}

func TestAdminRoutes(t *testing.T) {
	for _, admin := range []string{"root", BootstrapUser} {
		t.Run(admin, func(t *testing.T) {
			f := newFixture(t)
			f.run(t, f.creds[admin], []step{
				{"create user", "POST", "/v1/users", map[string]any{"name": "carol", "groups": []string{"eng"}}, 201, "", func(t *testing.T, b map[string]any) {
					if b["role"] != "user" {
						t.Fatalf("default role %v", b["role"])
					}
				}},
				{"create user again", "POST", "/v1/users", map[string]any{"name": "carol"}, 409, codeConflict, nil},
				{"bad user name", "POST", "/v1/users", map[string]any{"name": "no/slash"}, 400, codeInvalidRequest, nil},
				{"unknown field", "POST", "/v1/users", map[string]any{"name": "dave", "admin": true}, 400, codeInvalidRequest, nil},
				{"list users", "GET", "/v1/users", nil, 200, "", func(t *testing.T, b map[string]any) {
					if n := len(b["users"].([]any)); n != 4 {
						t.Fatalf("%d users, want 4", n)
					}
				}},
				{"get user", "GET", "/v1/users/carol", nil, 200, "", nil},
				{"get missing user", "GET", "/v1/users/nobody", nil, 404, codeNotFound, nil},
				{"set user", "PUT", "/v1/users/carol", map[string]any{"groups": []string{"eng", "ops"}, "role": "admin", "disabled": true}, 200, "", func(t *testing.T, b map[string]any) {
					if b["role"] != "admin" || b["disabled"] != true || len(b["groups"].([]any)) != 2 {
						t.Fatalf("after PUT: %v", b)
					}
				}},
				{"set bad role", "PUT", "/v1/users/carol", map[string]any{"role": "root"}, 400, codeInvalidRequest, nil},
				{"set missing user", "PUT", "/v1/users/nobody", map[string]any{"disabled": true}, 404, codeNotFound, nil},
				{"delete user", "DELETE", "/v1/users/carol", nil, 204, "", nil},
				{"delete user again", "DELETE", "/v1/users/carol", nil, 404, codeNotFound, nil},
				{"create group", "POST", "/v1/groups", map[string]any{"name": "research", "models": []string{"gpt-4o*"}}, 201, "", nil},
				{"create group again", "POST", "/v1/groups", map[string]any{"name": "research"}, 409, codeConflict, nil},
				{"list groups", "GET", "/v1/groups", nil, 200, "", func(t *testing.T, b map[string]any) {
					if n := len(b["groups"].([]any)); n != 3 {
						t.Fatalf("%d groups, want 3", n)
					}
				}},
				{"get group", "GET", "/v1/groups/research", nil, 200, "", nil},
				{"set group", "PUT", "/v1/groups/research", map[string]any{"disabled": true, "providers": []string{"openai"}, "disable_custom_keys": true}, 200, "", func(t *testing.T, b map[string]any) {
					if b["disabled"] != true || b["disable_custom_keys"] != true || len(b["models"].([]any)) != 1 {
						t.Fatalf("after PUT: %v", b)
					}
				}},
				{"set group bad provider", "PUT", "/v1/groups/research", map[string]any{"providers": []string{"a b"}}, 400, codeInvalidRequest, nil},
				{"delete group", "DELETE", "/v1/groups/research", nil, 204, "", nil},
				{"get deleted group", "GET", "/v1/groups/research", nil, 404, codeNotFound, nil},
			})
		})
	}
}

func TestUserGetsForbiddenOnAdminRoutes(t *testing.T) {
	f := newFixture(t)
	for _, rt := range (&Server{}).routes() {
		if !rt.admin {
			continue
		}
		path := strings.NewReplacer("{name}", "alice").Replace(rt.path)
		status, body := f.do(t, f.creds["alice"], rt.method, path, map[string]any{})
		if status != 403 || errCode(body) != codeAdminOnly {
			t.Errorf("%s %s as user: %d %v, want 403 admin_only", rt.method, path, status, body)
		}
	}
	if u, _ := f.st.User(context.Background(), "alice"); u == nil || u.Role != record.RoleUser {
		t.Fatal("a forbidden request changed the user")
	}
}

func TestTokenRoutes(t *testing.T) {
	// Both roles manage their own tokens through the same routes.
	for _, who := range []struct{ user, group, other string }{{"alice", "eng", "ops"}, {"root", "ops", "eng"}} {
		t.Run(who.user, func(t *testing.T) {
			f := newFixture(t)
			cred := f.creds[who.user]
			status, created := f.do(t, cred, "POST", "/v1/tokens", map[string]any{"group": who.group, "name": "app", "ttl": "720h"})
			if status != 201 {
				t.Fatalf("create: %d %v", status, created)
			}
			tok, _ := created["token"].(string)
			id, _ := created["id"].(string)
			if !strings.HasPrefix(tok, token.Prefix) || !token.ValidID(id) || created["state"] != "active" || created["expires"] == nil {
				t.Fatalf("create answer: %v", created)
			}
			masked, _ := created["masked"].(string)
			if strings.Contains(masked, tok) || !strings.HasPrefix(masked, token.Prefix) {
				t.Fatalf("masked %q", masked)
			}
			f.run(t, cred, []step{
				{"list", "GET", "/v1/tokens", nil, 200, "", func(t *testing.T, b map[string]any) {
					list := b["tokens"].([]any)
					if len(list) != 1 || list[0].(map[string]any)["id"] != id {
						t.Fatalf("list: %v", b)
					}
					if _, ok := list[0].(map[string]any)["token"]; ok {
						t.Fatal("list shows the token")
					}
				}},
				{"get", "GET", "/v1/tokens/" + id, nil, 200, "", func(t *testing.T, b map[string]any) {
					if _, ok := b["token"]; ok || b["group"] != who.group || b["name"] != "app" {
						t.Fatalf("get: %v", b)
					}
				}},
				{"group not usable", "POST", "/v1/tokens", map[string]any{"group": who.other}, 400, codeInvalidRequest, func(t *testing.T, b map[string]any) {
					if msg := b["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "may not use group") {
						t.Fatalf("message %q", msg)
					}
				}},
				{"group missing", "POST", "/v1/tokens", map[string]any{"group": "nope"}, 400, codeInvalidRequest, nil},
				{"bad ttl", "POST", "/v1/tokens", map[string]any{"group": who.group, "ttl": "soon"}, 400, codeInvalidRequest, nil},
				{"revoke", "DELETE", "/v1/tokens/" + id, nil, 204, "", nil},
				{"revoke again", "DELETE", "/v1/tokens/" + id, nil, 204, "", nil},
				{"revoked state", "GET", "/v1/tokens/" + id, nil, 200, "", func(t *testing.T, b map[string]any) {
					if b["state"] != "revoked" {
						t.Fatalf("state %v", b["state"])
					}
				}},
			})
		})
	}
}

func TestBootstrapAdminHasNoTokens(t *testing.T) {
	f := newFixture(t)
	f.run(t, adminSecret, []step{
		{"list", "GET", "/v1/tokens", nil, 200, "", func(t *testing.T, b map[string]any) {
			if len(b["tokens"].([]any)) != 0 {
				t.Fatalf("bootstrap tokens: %v", b)
			}
		}},
		{"create", "POST", "/v1/tokens", map[string]any{"group": "eng"}, 400, codeInvalidRequest, nil},
	})
}

// TestTokenIsolation: nobody but the owner can see or revoke a token, and a
// token of someone else answers exactly like a token that does not exist.
func TestTokenIsolation(t *testing.T) {
	f := newFixture(t)
	_, created := f.do(t, f.creds["alice"], "POST", "/v1/tokens", map[string]any{"group": "eng", "name": "alice-app"})
	aliceID := created["id"].(string)
	_, created = f.do(t, f.creds["bob"], "POST", "/v1/tokens", map[string]any{"group": "eng", "name": "bob-app"})
	bobID := created["id"].(string)
	missing := strings.Repeat("A", token.IDLen)

	for _, c := range []struct{ caller, victimID, ownID string }{
		{"bob", aliceID, bobID},
		{"alice", bobID, aliceID},
		{"root", aliceID, ""},
		{BootstrapUser, bobID, ""},
	} {
		t.Run(c.caller, func(t *testing.T) {
			cred := f.creds[c.caller]
			_, list := f.do(t, cred, "GET", "/v1/tokens", nil)
			for _, tk := range list["tokens"].([]any) {
				if id := tk.(map[string]any)["id"]; id != c.ownID {
					t.Fatalf("list shows %v", id)
				}
			}
			for _, m := range []string{"GET", "DELETE"} {
				s1, b1 := f.do(t, cred, m, "/v1/tokens/"+c.victimID, nil)
				s2, b2 := f.do(t, cred, m, "/v1/tokens/"+missing, nil)
				if s1 != 404 || errCode(b1) != codeNotFound {
					t.Fatalf("%s someone else's token: %d %v, want 404", m, s1, b1)
				}
				if s1 != s2 || b1["error"].(map[string]any)["message"] != b2["error"].(map[string]any)["message"] {
					t.Fatalf("%s: someone else's token (%d %v) differs from a missing one (%d %v)", m, s1, b1, s2, b2)
				}
			}
		})
	}
	for _, id := range []string{aliceID, bobID} {
		if tk, _ := f.st.Token(context.Background(), id); tk == nil || tk.Revoked {
			t.Fatalf("token %s was revoked by someone else", id)
		}
	}
}

func TestCredentials(t *testing.T) {
	f := newFixture(t)
	_, created := f.do(t, f.creds["alice"], "POST", "/v1/tokens", map[string]any{"group": "eng"})
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

	// Revoked and disabled cases get their own users.
	ctx := context.Background()
	_ = f.st.PutUser(ctx, &record.User{Name: "eve", Role: record.RoleAdmin})
	revoked, rec, _ := IssueAPIToken(ctx, f.st, "eve", time.Now())
	rec.Revoked = true
	_ = f.st.PutAPIToken(ctx, rec)
	_ = f.st.PutUser(ctx, &record.User{Name: "mallory", Role: record.RoleAdmin})
	disabled, _, _ := IssueAPIToken(ctx, f.st, "mallory", time.Now())
	_ = f.st.PutUser(ctx, &record.User{Name: "mallory", Role: record.RoleAdmin, Disabled: true})
	_ = f.st.PutUser(ctx, &record.User{Name: "gone", Role: record.RoleAdmin})
	deleted, _, _ := IssueAPIToken(ctx, f.st, "gone", time.Now())
	_ = f.st.DeleteUser(ctx, "gone")
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
			if e, ok := body["error"].(map[string]any); ok && c.cred != "" && strings.Contains(e["message"].(string), c.cred) {
				t.Fatal("error echoes the credential")
			}
		})
	}
}

func TestNewAdminToken(t *testing.T) {
	st := newMemStore()
	if _, err := New(Options{Store: st, AdminToken: "short"}); err == nil || strings.Contains(err.Error(), "short") {
		t.Fatalf("short admin token: %v", err)
	}
	if _, err := New(Options{}); err == nil {
		t.Fatal("no store accepted")
	}
	// Without a bootstrap credential, nothing but management tokens works.
	s, err := New(Options{Store: st})
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
	_, created := f.do(t, f.creds["alice"], "POST", "/v1/tokens", map[string]any{"group": "eng"})
	llmToken := created["token"].(string)
	f.do(t, f.creds["alice"], "DELETE", "/v1/tokens/"+created["id"].(string), nil)
	f.do(t, f.creds["alice"], "POST", "/v1/tokens", map[string]any{"group": "ops"})
	f.do(t, f.creds["alice"], "DELETE", "/v1/tokens/"+f.creds["bob"], nil) // a secret pasted into the path
	f.do(t, adminSecret, "POST", "/v1/users", map[string]any{"name": "carol"})
	f.do(t, f.creds["root"], "PUT", "/v1/groups/eng", map[string]any{"disabled": true})
	f.do(t, f.creds["alice"], "DELETE", "/v1/users/bob", nil)
	f.do(t, llmToken, "GET", "/v1/tokens", nil)

	type event struct {
		Msg, Who, Action, Target, Outcome, Reason string
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
		{"management", "alice", "token.create", "token/" + created["id"].(string), "ok", ""},
		{"management", "alice", "token.revoke", "token/" + created["id"].(string), "ok", ""},
		{"management", "alice", "token.create", "group/ops", "invalid", codeInvalidRequest},
		{"management", "alice", "token.revoke", "token/(invalid name)", "not_found", codeNotFound},
		{"management", BootstrapUser, "user.create", "user/carol", "ok", ""},
		{"management", "root", "group.update", "group/eng", "ok", ""},
		{"management", "alice", "authorize", "DELETE /v1/users/{name}", "denied", codeAdminOnly},
		{"management", "", "authenticate", "GET /v1/tokens", "denied", codeInvalidToken},
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
	for name, secret := range map[string]string{"llm token": llmToken, "admin credential": adminSecret, "alice": f.creds["alice"], "bob": f.creds["bob"], "root": f.creds["root"]} {
		if strings.Contains(log, secret) {
			t.Errorf("audit log contains the %s", name)
		}
	}
}
