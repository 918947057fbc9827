package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/keyward/keyward/envoy/envoytest"
	"github.com/keyward/keyward/internal/testoidc"
)

// mgmtCaller returns a function that calls the management API at base
// and returns the status and decoded JSON body.
func mgmtCaller(t *testing.T, base string) func(method, path, bearer string, body any) (int, map[string]any) {
	return func(method, path, bearer string, body any) (int, map[string]any) {
		t.Helper()
		var in io.Reader
		if body != nil {
			raw, _ := json.Marshal(body)
			in = bytes.NewReader(raw)
		}
		req, _ := http.NewRequest(method, base+path, in)
		req.Header.Set("authorization", "Bearer "+bearer)
		req.Header.Set("content-type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out) // 204 has no body
		return resp.StatusCode, out
	}
}

// TestManagementAPIToLLM: an admin creates a user through the management
// API, the user gets a management token, creates an LLM token through the
// API and calls an LLM through real Envoy with it. The two kinds of token
// never stand in for each other.
func TestManagementAPIToLLM(t *testing.T) {
	admin := "admin-" + rand.Text() + rand.Text()
	mgmtAddr := envoytest.FreeAddr(t)
	s := newStack(t, stackOptions{
		env:   []string{"KEYWARD_ADMIN_TOKEN=" + admin},
		extra: "management: {listen: " + mgmtAddr + "}\n",
	})
	call := mgmtCaller(t, "http://"+mgmtAddr)
	if code, out := call("POST", "/v1/users", admin, map[string]any{"name": "bob", "role": "user", "groups": []string{"eng"}}); code != 201 && code != 200 {
		t.Fatalf("admin creates bob: %d %v", code, out)
	}
	mtok := strings.TrimSpace(s.kw("mgmt-token", "create", "-user", "bob"))
	if !strings.HasPrefix(mtok, "kwm_") {
		t.Fatalf("management token %q", mtok[:4])
	}
	// Minted by another process: serve's file store sees it within its
	// poll interval.
	waitFor(t, 2e9, func() bool { code, _ := call("GET", "/v1/tokens", mtok, nil); return code == 200 })
	code, out := call("POST", "/v1/tokens", mtok, map[string]any{"group": "eng", "name": "laptop"})
	llm, _ := out["token"].(string)
	if code != 201 && code != 200 || !strings.HasPrefix(llm, "kw_") {
		t.Fatalf("bob creates a token: %d %v", code, out)
	}
	if code, out := call("POST", "/v1/tokens", mtok, map[string]any{"group": "ops", "name": "x"}); code != 400 {
		t.Fatalf("token for a group bob may not use: %d %v", code, out)
	}

	// The file store makes the new token usable within its poll interval.
	waitFor(t, 2e9, func() bool {
		return s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + llm}, chatBody).status == 200
	})
	client := openai.NewClient(option.WithBaseURL(s.envoyURL+"/openai/v1/"), option.WithAPIKey(llm), option.WithMaxRetries(0))
	if _, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}); err != nil {
		t.Fatalf("bob calls the LLM with the token from the API: %v", err)
	}
	if req, _ := s.provider.Last(); req.Header.Get("authorization") != "Bearer "+openaiKey || req.Header.Get("x-keyward-user") != "bob" {
		t.Fatalf("provider saw user %q", req.Header.Get("x-keyward-user"))
	}

	// keyward api, the CLI, as its own process: bob rotates his token with
	// no grace period; the new one works through Envoy, the old one stops.
	api := exec.Command(cliBin, "api", "-url", "http://"+mgmtAddr, "tokens", "rotate", out["id"].(string), "-grace", "0s")
	api.Env = append(os.Environ(), "KEYWARD_MGMT_TOKEN="+mtok)
	var apiOut, apiErr bytes.Buffer
	api.Stdout, api.Stderr = &apiOut, &apiErr
	if err := api.Run(); err != nil {
		t.Fatalf("keyward api tokens rotate: %v: %s", err, apiErr.String())
	}
	var rotated struct{ Token, Replaces string }
	if err := json.Unmarshal(apiOut.Bytes(), &rotated); err != nil || !strings.HasPrefix(rotated.Token, "kw_") || rotated.Replaces != out["id"] {
		t.Fatalf("keyward api tokens rotate printed %d bytes: %v", apiOut.Len(), err)
	}
	oldLLM := llm
	llm = rotated.Token
	waitFor(t, 2e9, func() bool {
		return s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + llm}, chatBody).status == 200
	})
	// The rotation writes the new token, then the old one: serve may load
	// the first write a poll interval before the second.
	waitFor(t, 2e9, func() bool {
		r := s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + oldLLM}, chatBody)
		return r.status == 401 && r.errorCode() == "token_expired"
	})

	// Neither token stands in for the other.
	if r := s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + mtok}, chatBody); r.status != 401 || r.errorCode() != "management_token" {
		t.Fatalf("management token on the LLM route: %d %s", r.status, r.body)
	}
	if code, _ := call("GET", "/v1/tokens", llm, nil); code != 401 {
		t.Fatalf("LLM token on the management API: %d", code)
	}
	if n := len(s.provider.Requests()); n < 3 {
		t.Fatalf("the provider got %d requests, want at least the 3 allowed ones", n)
	}

	// The admin deletes bob through the API: his token, warm in every
	// cache, stops within 2 s.
	if r := s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + llm}, chatBody); r.status != 200 {
		t.Fatalf("bob's token before the deletion: %d %s", r.status, r.body)
	}
	if code, out := call("DELETE", "/v1/users/bob", admin, nil); code != 204 {
		t.Fatalf("admin deletes bob: %d %v", code, out)
	}
	took := waitFor(t, 2e9, func() bool {
		r := s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + llm}, chatBody)
		// The user record goes (user_deleted) with the token (invalid_token).
		return (r.status == 403 && r.errorCode() == "user_deleted") || (r.status == 401 && r.errorCode() == "invalid_token")
	})
	t.Logf("user deleted through the API (file store): token refused after %v", took.Round(time.Millisecond))
	s.stopKeyward()
	assertNoSecrets(t, "keyward's log", s.logs.String(), admin, mtok, llm, oldLLM, openaiKey)
}

// TestManagementAPIWithOIDC: keyward serve trusts a test OIDC issuer (over
// TLS, its CA from management.oidc.ca_file). An admin JWT creates a group
// and a management token; a user JWT, mapped to the keyward user alice by
// its preferred_username claim, creates an LLM token that works through
// real Envoy and lists it, through the API and through `keyward api`.
// Management tokens keep working; a forged JWT is refused; the audit log
// names the subjects and holds no token.
func TestManagementAPIWithOIDC(t *testing.T) {
	key := testoidc.NewKey(t, "e2e-key", jose.ES256)
	iss := testoidc.NewTLS(t, key)
	caFile := iss.CAFile(t, t.TempDir())
	mgmtAddr := envoytest.FreeAddr(t)
	s := newStack(t, stackOptions{extra: fmt.Sprintf(`management:
  listen: %s
  oidc:
    issuer: %s
    audience: keyward-e2e
    ca_file: %s
    user_claim: preferred_username
`, mgmtAddr, iss.URL, caFile)})
	call := mgmtCaller(t, "http://"+mgmtAddr)
	jwt := func(sub, user, role string) string {
		now := time.Now()
		return testoidc.Sign(t, key, map[string]any{"iss": iss.URL, "aud": "keyward-e2e", "sub": sub, "preferred_username": user,
			"keyward_role": role, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	}
	adminJWT, aliceJWT := jwt("sub-admin-1", "", "admin"), jwt("sub-alice-1", "alice", "user")

	if code, out := call("POST", "/v1/groups", adminJWT, map[string]any{"name": "research"}); code != 201 {
		t.Fatalf("admin JWT creates a group: %d %v", code, out)
	}
	code, out := call("POST", "/v1/users/alice/management-tokens", adminJWT, nil)
	mtok, _ := out["token"].(string)
	if code != 201 || !strings.HasPrefix(mtok, "kwm_") {
		t.Fatalf("admin JWT issues a management token: %d", code)
	}
	if code, out := call("GET", "/v1/users", aliceJWT, nil); code != 403 || out["error"].(map[string]any)["code"] != "admin_only" {
		t.Fatalf("user JWT on an admin route: %d %v", code, out)
	}
	code, out = call("POST", "/v1/tokens", aliceJWT, map[string]any{"group": "eng", "name": "from-sso"})
	llm, _ := out["token"].(string)
	if code != 201 || !strings.HasPrefix(llm, "kw_") {
		t.Fatalf("user JWT creates a token: %d", code)
	}
	id := out["id"].(string)
	waitFor(t, 2e9, func() bool {
		return s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + llm}, chatBody).status == 200
	})
	if req, _ := s.provider.Last(); req.Header.Get("x-keyward-user") != "alice" {
		t.Fatalf("provider saw user %q", req.Header.Get("x-keyward-user"))
	}
	// The management token of the same user sees the same token.
	if code, out := call("GET", "/v1/tokens", mtok, nil); code != 200 || !strings.Contains(fmt.Sprint(out), id) {
		t.Fatalf("kwm_ token lists alice's tokens: %d %v", code, out)
	}
	// keyward api takes the JWT from $KEYWARD_MGMT_TOKEN as it takes a
	// management token.
	api := exec.Command(cliBin, "api", "-url", "http://"+mgmtAddr, "tokens", "list")
	api.Env = append(os.Environ(), "KEYWARD_MGMT_TOKEN="+aliceJWT)
	var apiOut, apiErr bytes.Buffer
	api.Stdout, api.Stderr = &apiOut, &apiErr
	if err := api.Run(); err != nil || !strings.Contains(apiOut.String(), id) {
		t.Fatalf("keyward api tokens list with a JWT: %v: %s", err, apiErr.String())
	}
	forgedKey := testoidc.NewKey(t, "e2e-key", jose.ES256)
	forged := testoidc.Sign(t, forgedKey, map[string]any{"iss": iss.URL, "aud": "keyward-e2e", "sub": "x", "keyward_role": "admin", "exp": time.Now().Add(time.Hour).Unix()})
	if code, _ := call("GET", "/v1/users", forged, nil); code != 401 {
		t.Fatalf("forged JWT: %d", code)
	}
	if code, _ := call("GET", "/v1/users", jwt("sub-admin-1", "", "admin")+"x", nil); code != 401 {
		t.Fatalf("tampered JWT: %d", code)
	}

	s.stopKeyward()
	logs := s.logs.String()
	host := strings.TrimPrefix(iss.URL, "https://")
	for _, want := range []string{`"who":"oidc:` + host + `:sub-admin-1","action":"group.create"`, `"who":"oidc:` + host + `:sub-alice-1","action":"token.create"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("keyward's log lacks %s", want)
		}
	}
	sig := func(tok string) string { return tok[strings.LastIndex(tok, ".")+1:] }
	assertNoSecrets(t, "keyward's log", logs, sig(adminJWT), sig(aliceJWT), sig(forged), mtok, llm, openaiKey)
	assertNoSecrets(t, "keyward api's output", apiOut.String()+apiErr.String(), sig(aliceJWT), llm)
	t.Logf("issuer asked for its keys %d times, its discovery document %d times", iss.JWKSRequests(), iss.DiscoveryRequests())
}
