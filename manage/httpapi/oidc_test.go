package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/keyward/keyward/internal/testoidc"
	"github.com/keyward/keyward/record"
)

// testOIDCAuthentication: JWTs of the configured issuer authenticate;
// every token that is not genuine, current and for this audience answers
// exactly as a bad management token does; genuine ones without a role or
// a known, enabled user get a 403 that says so.
func testOIDCAuthentication(t *testing.T, f *fixture) {
	ctx := context.Background()
	if _, err := f.m.CreateUser(ctx, record.User{Name: "dora", Role: record.RoleUser, Disabled: true}); err != nil {
		t.Fatal(err)
	}
	now := f.now()
	claims := func(edit func(c map[string]any)) map[string]any {
		c := map[string]any{"iss": f.issuer.URL, "aud": []string{oidcAudience}, "sub": "sub-alice", "preferred_username": "alice",
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "keyward_role": "user"}
		if edit != nil {
			edit(c)
		}
		return c
	}
	set := func(k string, v any) func(map[string]any) { return func(c map[string]any) { c[k] = v } }
	sign := func(edit func(map[string]any)) string { return testoidc.Sign(t, f.key, claims(edit)) }
	forger := testoidc.NewKey(t, f.key.ID, jose.ES256)

	// The answer every invalid token gets, whichever check failed.
	mtok := f.creds["alice"]
	_, invalid := f.do(t, mtok[:len(mtok)-8]+"AAAAAAAA", "GET", "/v1/tokens", nil)
	if errCode(invalid) != codeInvalidToken {
		t.Fatalf("reference: %v", invalid)
	}
	var sent []string
	for name, c := range map[string]struct {
		cred     string
		want     int
		wantCode string
	}{
		"user":                        {sign(nil), 200, ""},
		"admin":                       {sign(set("keyward_role", "admin")), 200, ""},
		"admin, no user record":       {sign(func(c map[string]any) { c["keyward_role"], c["preferred_username"] = "admin", "nobody" }), 200, ""},
		"expired":                     {sign(set("exp", now.Add(-time.Minute).Unix())), 401, codeTokenExpired},
		"not yet valid beyond skew":   {sign(set("nbf", now.Add(time.Minute).Unix())), 401, codeInvalidToken},
		"wrong issuer":                {sign(set("iss", "https://elsewhere.example.com")), 401, codeInvalidToken},
		"wrong audience":              {sign(set("aud", "another-app")), 401, codeInvalidToken},
		"wrong key, issuer's kid":     {testoidc.Sign(t, forger, claims(nil)), 401, codeInvalidToken},
		"unknown kid":                 {testoidc.Sign(t, testoidc.NewKey(t, "unknown", jose.ES256), claims(nil)), 401, codeInvalidToken},
		"alg none":                    {testoidc.Unsigned(t, f.key.ID, claims(set("keyward_role", "admin"))), 401, codeInvalidToken},
		"HS256 with the public key":   {testoidc.HMACWithPublicKey(t, f.key, claims(set("keyward_role", "admin"))), 401, codeInvalidToken},
		"missing role claim":          {sign(func(c map[string]any) { delete(c, "keyward_role") }), 403, codeNoRole},
		"unknown role":                {sign(set("keyward_role", "superuser")), 403, codeNoRole},
		"user naming an unknown user": {sign(set("preferred_username", "nobody")), 403, codeUnknownUser},
		"user without a user claim":   {sign(func(c map[string]any) { delete(c, "preferred_username") }), 403, codeUnknownUser},
		"user naming the bootstrap":   {sign(set("preferred_username", BootstrapUser)), 403, codeUnknownUser},
		"user naming a bad name":      {sign(set("preferred_username", "../alice")), 403, codeUnknownUser},
		"user disabled":               {sign(set("preferred_username", "dora")), 403, codeUserDisabled},
	} {
		sent = append(sent, strings.Split(c.cred, ".")[2])
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", f.url+"/v1/tokens", nil)
			req.Header.Set("Authorization", "Bearer "+c.cred)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != c.want || errCode(body) != c.wantCode {
				t.Fatalf("status %d %v, want %d %s", resp.StatusCode, body, c.want, c.wantCode)
			}
			if c.want == 401 && resp.Header.Get("WWW-Authenticate") != `Bearer realm="keyward-management"` {
				t.Fatalf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
			}
			if c.wantCode == codeInvalidToken && errMessage(body) != errMessage(invalid) {
				t.Fatalf("message %q differs from a bad management token's %q", errMessage(body), errMessage(invalid))
			}
			if raw, _ := json.Marshal(body); strings.Contains(string(raw), c.cred) || strings.Contains(string(raw), strings.Split(c.cred, ".")[2]) {
				t.Fatal("the answer echoes the token")
			}
		})
	}
	// The audit log names genuine tokens' subjects and the failed check,
	// never a token.
	log := f.audit.String()
	for _, want := range []string{`"reason":"unknown_user","detail":"no user nobody"`, `"who":"oidc:` + strings.TrimPrefix(f.issuer.URL, "http://") + `:sub-alice"`, `aud does not hold the audience`} {
		if !strings.Contains(log, want) {
			t.Errorf("audit log lacks %s:\n%s", want, log)
		}
	}
	for _, sig := range sent {
		if strings.Contains(log, sig) {
			t.Fatal("the audit log holds a JWT")
		}
	}
}

// testOIDCCallers: an OIDC user acts as their keyward user on their own
// records; an OIDC admin manages; the audit names both by issuer and
// subject; /v1/me says who.
func testOIDCCallers(t *testing.T, f *fixture) {
	who := func(sub string) string { return "oidc:" + strings.TrimPrefix(f.issuer.URL, "http://") + ":" + sub }
	me := f.must(t, f.creds[oidcAlice], "GET", "/v1/me", nil, 200)
	if me["name"] != "alice" || me["role"] != "user" || me["actor"] != who("sub-alice") {
		t.Fatalf("me as the OIDC user: %v", me)
	}
	if me := f.must(t, f.creds[oidcAdmin], "GET", "/v1/me", nil, 200); me["name"] != BootstrapUser || me["role"] != "admin" || me["actor"] != who("sub-root") {
		t.Fatalf("me as the OIDC admin: %v", me)
	}
	// A user-role token for a user the store makes admin is a user.
	rootAsUser := f.jwt(t, "sub-root2", map[string]any{"preferred_username": "root"}, "user")
	if me := f.must(t, rootAsUser, "GET", "/v1/me", nil, 200); me["role"] != "user" {
		t.Fatalf("user-role token of an admin: %v", me)
	}
	f.must(t, rootAsUser, "GET", "/v1/users", nil, 403)

	tk := f.must(t, f.creds[oidcAlice], "POST", "/v1/tokens", map[string]any{"group": "eng", "name": "from-sso"}, 201)
	if !listHas(f.must(t, f.creds["alice"], "GET", "/v1/tokens", nil, 200), "tokens", "id", tk["id"]) {
		t.Fatal("alice's management token does not see the token her OIDC token made")
	}
	f.must(t, f.creds[oidcAlice], "GET", "/v1/tokens?user=bob", nil, 403)
	f.must(t, f.creds[oidcAdmin], "POST", "/v1/groups", map[string]any{"name": "sso-made"}, 201)
	f.must(t, f.creds[oidcAdmin], "DELETE", "/v1/tokens/"+tk["id"].(string)+"?user=alice", nil, 204)

	type event struct {
		Who, Action, Outcome string
		AsUser               string `json:"as_user"`
		OnBehalfOf           string `json:"on_behalf_of"`
	}
	var got []event
	for _, e := range auditEvents(t, f) {
		raw, _ := json.Marshal(e)
		var ev event
		_ = json.Unmarshal(raw, &ev)
		if ev.Outcome == "ok" {
			got = append(got, ev)
		}
	}
	want := []event{
		{who("sub-alice"), "token.create", "ok", "alice", ""},
		{who("sub-root"), "group.create", "ok", "", ""},
		{who("sub-root"), "token.revoke", "ok", "", "alice"},
	}
	if len(got) != len(want) {
		t.Fatalf("audit events %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, tok := range []string{f.creds[oidcAlice], f.creds[oidcAdmin], rootAsUser} {
		if strings.Contains(f.audit.String(), strings.Split(tok, ".")[2]) {
			t.Fatal("the audit log holds a JWT")
		}
	}
}

// TestForgedJWTsCostNoIssuerRequests: forged JWTs with random key ids
// make the API ask the issuer for its keys at most once per interval —
// here, with the clock still, not once after the first load — and cost
// no store read either.
func TestForgedJWTsCostNoIssuerRequests(t *testing.T) {
	f := newFixture(t)
	f.must(t, f.creds[oidcAdmin], "GET", "/v1/users", nil, 200)
	if n := f.issuer.JWKSRequests(); n != 1 {
		t.Fatalf("%d key set requests for the first token", n)
	}
	const n = 200
	for range n {
		k := testoidc.Key{ID: rand.Text(), Alg: jose.ES256, Signer: f.key.Signer}
		forged := testoidc.Sign(t, k, map[string]any{"iss": f.issuer.URL, "aud": oidcAudience, "sub": "x", "exp": f.now().Add(time.Hour).Unix(), "keyward_role": "admin"})
		if status, body := f.do(t, forged, "GET", "/v1/users", nil); status != 401 || errCode(body) != codeInvalidToken {
			t.Fatalf("forged JWT: %d %v", status, body)
		}
	}
	if got := f.issuer.JWKSRequests(); got != 1 {
		t.Fatalf("%d forged JWTs cost %d key set requests, want 0", n, got-1)
	}
	t.Logf("%d forged JWTs with random key ids: 0 key set requests", n)
}

// TestManagementTokensWorkWithTheIssuerDown: with the issuer unreachable,
// JWTs get 503 issuer_unavailable and management tokens work as ever.
func TestManagementTokensWorkWithTheIssuerDown(t *testing.T) {
	f := newFixture(t)
	f.issuer.Close()
	if status, body := f.do(t, f.creds[oidcAdmin], "GET", "/v1/users", nil); status != 503 || errCode(body) != codeIssuerUnavailable {
		t.Fatalf("JWT with the issuer down: %d %v", status, body)
	}
	for _, who := range []string{"root", "alice", BootstrapUser} {
		f.must(t, f.creds[who], "GET", "/v1/me", nil, 200)
	}
}
