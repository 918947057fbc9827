package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/internal/storetest"
	"github.com/keyward/keyward/internal/testlog"
	"github.com/keyward/keyward/internal/testoidc"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/manage/httpapi/oidc"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
	"github.com/keyward/keyward/vault"
)

const (
	adminSecret = "bootstrap-admin-credential-0123456789abcdef"
	// serverKey is the fixture provider's server-held key.
	serverKey = "sk-server-held-fixture-key-0123456789"
)

// fixture is the management API over a real store, served on loopback.
type fixture struct {
	st    manage.Store
	m     *manage.Manager
	url   string
	audit *testlog.Buffer
	// creds are management tokens by user name, plus "bootstrap", and
	// the OIDC JWTs oidcAdmin and oidcAlice.
	creds map[string]string
	// issuer is the OIDC issuer the API trusts; key signs its tokens.
	issuer *testoidc.Issuer
	key    testoidc.Key
	// clock is the server's time, in Unix nanoseconds; tests move it.
	clock atomic.Int64
	// deletedAgain is the status of deleting a deleted user or group: 404
	// on the file store, which cannot tell it from one that never was;
	// 204 on Vault, which announces the deletion again, so that a delete
	// whose announcement failed can be re-run.
	deletedAgain int
}

func (f *fixture) now() time.Time { return time.Unix(0, f.clock.Load()).UTC() }

// advance moves the server's clock.
func (f *fixture) advance(d time.Duration) { f.clock.Add(int64(d)) }

// newFixture serves the API over a file store.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	st := storetest.File(t, func(name string) string {
		if name == "OPENAI_KEY" {
			return serverKey
		}
		return ""
	})
	ctx := context.Background()
	if err := st.PutProvider(ctx, "openai", &filestore.ProviderData{Kind: record.KindOpenAI, Keys: []filestore.KeyData{{ID: "k1", Env: "OPENAI_KEY"}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	f := serveFixture(t, st)
	f.deletedAgain = http.StatusNotFound
	return f
}

// newVaultFixture serves the API over a Vault store on v's OpenBao dev
// server, on a KV v2 mount of its own.
func newVaultFixture(t *testing.T, v *storetest.Vaults) *fixture {
	t.Helper()
	ctx := context.Background()
	st := v.Store(t)
	if _, err := st.KV.Put(ctx, "providers/openai", map[string]any{"kind": "openai", "key_k1": serverKey}); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	f := serveFixture(t, st.Store)
	f.deletedAgain = http.StatusNoContent
	return f
}

var (
	_ manage.Store = (*filestore.Store)(nil)
	_ manage.Store = (*vault.Store)(nil)
)

// serveFixture seeds st with groups eng and ops, users alice (eng), bob
// (eng, ops) and the admin root (ops), gives each a management token, and
// serves the API over it.
func serveFixture(t *testing.T, st manage.Store) *fixture {
	t.Helper()
	ctx := context.Background()
	for _, g := range []string{"eng", "ops"} {
		if err := st.CreateGroup(ctx, &record.Group{Name: g}); err != nil {
			t.Fatal(err)
		}
	}
	users := []*record.User{
		{Name: "alice", Role: record.RoleUser, Groups: []string{"eng"}},
		{Name: "bob", Role: record.RoleUser, Groups: []string{"eng", "ops"}},
		{Name: "root", Role: record.RoleAdmin, Groups: []string{"ops"}},
	}
	f := &fixture{st: st, audit: &testlog.Buffer{}, creds: map[string]string{BootstrapUser: adminSecret}}
	f.clock.Store(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC).UnixNano())
	f.key = testoidc.NewKey(t, "fixture-key", jose.ES256)
	f.issuer = testoidc.New(t, f.key)
	f.creds[oidcAdmin] = f.jwt(t, "sub-root", nil, "admin")
	f.creds[oidcAlice] = f.jwt(t, "sub-alice", map[string]any{"preferred_username": "alice"}, "user")
	verifier, err := oidc.New(oidc.Config{Issuer: f.issuer.URL, Audience: oidcAudience, UserClaim: "preferred_username"}, oidc.Options{Now: f.now})
	if err != nil {
		t.Fatal(err)
	}
	m, err := manage.New(st, manage.Options{Now: f.now})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if _, err := m.CreateUser(ctx, *u); err != nil {
			t.Fatal(err)
		}
		tok, _, err := m.IssueAPIToken(ctx, u.Name)
		if err != nil {
			t.Fatal(err)
		}
		f.creds[u.Name] = tok
	}
	s, err := New(Options{Manager: m, Keys: keysOf(t, st), AdminToken: adminSecret, OIDC: verifier, Logger: slog.New(slog.NewJSONHandler(f.audit, nil))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s) // listens on 127.0.0.1:0
	t.Cleanup(hs.Close)
	f.url = hs.URL
	f.m = m
	return f
}

// The OIDC callers of the fixture, keys of fixture.creds, and the audience
// its issuer's tokens are for.
const (
	oidcAdmin    = "oidc-admin"
	oidcAlice    = "oidc-alice"
	oidcAudience = "keyward-fixture"
)

// jwt is a token of the fixture's issuer for sub with role (none when
// empty), valid from the fixture's time for 1000 hours; extra claims are
// added.
func (f *fixture) jwt(t *testing.T, sub string, extra map[string]any, role string) string {
	t.Helper()
	now := f.now()
	c := map[string]any{"iss": f.issuer.URL, "aud": oidcAudience, "sub": sub, "iat": now.Unix(), "exp": now.Add(1000 * time.Hour).Unix()}
	if role != "" {
		c["keyward_role"] = role
	}
	for k, v := range extra {
		c[k] = v
	}
	return testoidc.Sign(t, f.key, c)
}

// keysOf is a verifier over st's signing keys, as serve keeps one.
func keysOf(t *testing.T, st manage.Store) *token.Verifier {
	t.Helper()
	keys, err := st.SigningKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ring, err := token.NewKeyring(keys)
	if err != nil {
		t.Fatal(err)
	}
	v := &token.Verifier{}
	v.Set(ring)
	return v
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

// must sends a request that must answer want, and returns its body.
func (f *fixture) must(t *testing.T, cred, method, path string, body any, want int) map[string]any {
	t.Helper()
	status, out := f.do(t, cred, method, path, body)
	if status != want {
		t.Fatalf("%s %s: %d %v, want %d", method, path, status, out, want)
	}
	return out
}

func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	code, _ := e["code"].(string)
	if msg, _ := e["message"].(string); code != "" && msg == "" {
		return "(no message)"
	}
	return code
}

func errMessage(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	msg, _ := e["message"].(string)
	return msg
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
