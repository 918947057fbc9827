package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/keyward/keyward/internal/testoidc"
)

// jwtIssuer is the iss of the test's JWTs; Envoy knows its keys from a
// local JWKS file the test writes.
const jwtIssuer = "https://idp.e2e.test"

// TestJWTIdentity runs JWTs signed by the test through real Envoy, whose
// jwt_authn (from keyward envoy-config) verifies them against a local
// JWKS and passes the payload to keyward: the official SDKs with the JWT
// as their api_key get the mapped group's key at the provider and the JWT
// never reaches it; an expired JWT, one of another issuer and one signed
// by a key Envoy does not trust are refused by keyward (jwt_invalid: the
// filter lets every request through to keyward, whose tokens travel in
// the same headers); a valid JWT whose claims do not map is refused
// (jwt_not_mapped); a keyward token goes through the same Envoy.
func TestJWTIdentity(t *testing.T) {
	key := testoidc.NewKey(t, "k1", jose.ES256)
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	writeFile(t, jwks, string(testoidc.JWKS(key)))
	s := newStack(t, stackOptions{
		env:   []string{"KEYWARD_DISABLE_CUSTOM_KEYS=false"},
		extra: "jwt:\n  - {issuer: '" + jwtIssuer + "', audiences: [llm-gateway], local_jwks: " + jwks + "}\n",
	})
	s.kw("group", "add", "research")
	s.kw("user", "add", "dana", "-groups", "research,eng")
	now := time.Now()
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{
			"iss": jwtIssuer, "sub": "dana", "aud": "llm-gateway",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "groups": []string{"staff", "research"},
		}
		if mod != nil {
			mod(c)
		}
		return c
	}
	valid := testoidc.Sign(t, key, claims(nil))
	secrets := []string{openaiKey, anthropicKey, valid}
	// The file store is polled: wait until keyward knows dana.
	waitFor(t, 10*time.Second, func() bool {
		return s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + valid}, chatBody).status == 200
	})

	// The JWT, whole or its signature, never reaches the provider.
	s.sdkAsIdentity(t, valid, "dana", "research", nil, valid, strings.Split(valid, ".")[2])

	forger := testoidc.NewKey(t, "k1", jose.ES256)
	for name, tc := range map[string]struct {
		jwt    string
		status int
		code   string
	}{
		"expired":           {testoidc.Sign(t, key, claims(func(c map[string]any) { c["exp"] = now.Add(-time.Hour).Unix() })), 401, "jwt_invalid"},
		"wrong issuer":      {testoidc.Sign(t, key, claims(func(c map[string]any) { c["iss"] = "https://evil.e2e.test" })), 401, "jwt_invalid"},
		"wrong audience":    {testoidc.Sign(t, key, claims(func(c map[string]any) { c["aud"] = "other" })), 401, "jwt_invalid"},
		"untrusted key":     {testoidc.Sign(t, forger, claims(nil)), 401, "jwt_invalid"},
		"user not in store": {testoidc.Sign(t, key, claims(func(c map[string]any) { c["sub"] = "mallory" })), 403, "jwt_not_mapped"},
		"group not allowed": {testoidc.Sign(t, key, claims(func(c map[string]any) { c["groups"] = []string{"admins"} })), 403, "jwt_not_mapped"},
		"two usable groups": {testoidc.Sign(t, key, claims(func(c map[string]any) { c["groups"] = []string{"eng", "research"} })), 403, "jwt_not_mapped"},
	} {
		t.Run(name, func(t *testing.T) {
			secrets = append(secrets, tc.jwt)
			s.provider.Reset()
			for _, mode := range []string{"openai", "anthropic"} {
				r := s.pythonSDK(t, mode, tc.jwt)
				if r.OK || r.Status != tc.status || r.Code != tc.code {
					t.Errorf("%s: %+v, want %d %s", mode, r, tc.status, tc.code)
				}
			}
			if _, ok := s.provider.Last(); ok {
				t.Error("a refused JWT reached the provider")
			}
		})
	}

	t.Run("keyward token through the same Envoy", func(t *testing.T) {
		tok := s.token("alice", "eng")
		secrets = append(secrets, tok)
		r := s.pythonSDK(t, "openai", tok)
		if !r.OK {
			t.Fatalf("keyward token: %+v", r)
		}
		if req, _ := s.provider.Last(); req.Header.Get("x-keyward-user") != "alice" || req.Header.Get("authorization") != "Bearer "+openaiKey {
			t.Errorf("keyward token went out as %v", req.Header)
		}
	})

	t.Run("user disabled then removed from the group", func(t *testing.T) {
		s.kw("user", "set", "dana", "-disabled")
		waitFor(t, 2*time.Second, func() bool {
			return s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + valid}, chatBody).errorCode() == "user_disabled"
		})
		s.kw("user", "set", "dana", "-disabled=false", "-groups", "eng")
		waitFor(t, 2*time.Second, func() bool {
			return s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + valid}, chatBody).errorCode() == "jwt_not_mapped"
		})
	})

	assertNoSecrets(t, "keyward's log", s.logs.String(), secrets...)
	assertNoSecrets(t, "Envoy's log", s.envoy.Log(), secrets...)
}
