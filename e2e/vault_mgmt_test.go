package e2e

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keyward/keyward/envoy/envoytest"
	"github.com/keyward/keyward/internal/fakeprovider"
)

// TestVaultManagementAPI: keyward serve on the Vault store with the
// management policy (examples/vault/keyward-management.hcl) serves the
// management API. The bootstrap admin sets up a group and a user and
// issues the user's management token; the user creates, uses and rotates
// an LLM token through real Envoy, and stores a private credential that
// their requests then go out with; deleting the group denies the token.
// Every record lives in OpenBao, and the policy cannot touch provider keys
// or signing keys.
func TestVaultManagementAPI(t *testing.T) {
	envoytest.Binary(t)
	v := newVaultEnv(t)
	hcl, err := os.ReadFile(filepath.Join("..", "examples", "vault", "keyward-management.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	v.bao.WritePolicy(t, "keyward-management", string(hcl))
	mgmtVaultToken := v.bao.Token(t, []string{"keyward-management"}, 0)
	tokenFile := filepath.Join(v.dir, "management-token")
	writeFile(t, tokenFile, mgmtVaultToken+"\n")
	v.secrets = append(v.secrets, mgmtVaultToken)

	serverKey, ownKey := v.providerKey("server"), v.providerKey("alice-own")
	v.baoPut("providers/openai", "kind=openai", "key_k1="+serverKey)
	// The operator's one-time bootstrap with the admin policy: a first
	// admin and their management token, which also makes the signing key
	// (the management policy may not write signing keys).
	v.kw("user", "add", "ops", "-role", "admin")
	opsToken := strings.TrimSpace(v.kw("mgmt-token", "create", "-user", "ops"))
	v.secrets = append(v.secrets, opsToken)

	// The management policy cannot write provider keys or signing keys.
	kv := v.bao.Client(t, mgmtVaultToken).KVv2(vaultMount)
	for _, path := range []string{"providers/openai", "system/signing-keys"} {
		if _, err := kv.Put(t.Context(), path, map[string]any{"key_x": "stolen"}); err == nil {
			t.Fatalf("the management policy wrote %s", path)
		}
	}

	prov := fakeprovider.New()
	upstream := httptest.NewServer(prov)
	t.Cleanup(upstream.Close)
	listen, envoyAdmin, mgmtAddr := envoytest.FreeAddr(t), envoytest.FreeAddr(t), envoytest.FreeAddr(t)
	admin := "admin-" + rand.Text() + rand.Text()
	v.secrets = append(v.secrets, admin, ownKey)
	adminFile := filepath.Join(v.dir, "bootstrap-admin")
	writeFile(t, adminFile, admin+"\n")
	r := v.startReplica("management", replicaOptions{
		auth: fmt.Sprintf("{method: token, token_file: %q}", tokenFile),
		// The bootstrap credential as Vault Agent or a Kubernetes secret
		// would hand it over: in a file.
		env: []string{"KEYWARD_ADMIN_TOKEN_FILE=" + adminFile},
		extra: fmt.Sprintf("routes:\n  - {provider: openai, path_prefix: /openai/, upstream: %s}\nenvoy:\n  listen: %s\n  admin: %s\nmanagement: {listen: %s, rotation_grace: 1h}\n",
			upstream.URL, listen, envoyAdmin, mgmtAddr),
	})
	r.waitHealth(healthpb.HealthCheckResponse_SERVING, 20*time.Second)
	bootstrap, err := exec.Command(cliBin, "envoy-config", "-config", r.config).Output()
	if err != nil {
		t.Fatalf("envoy-config: %v", err)
	}
	envoytest.Start(t, bootstrap, envoyAdmin)

	call := mgmtCaller(t, "http://"+mgmtAddr)
	must := func(want int, method, path, bearer string, body any) map[string]any {
		t.Helper()
		code, out := call(method, path, bearer, body)
		if code != want {
			t.Fatalf("%s %s: %d %v, want %d", method, path, code, out, want)
		}
		return out
	}
	// send makes one LLM request through Envoy with tok and returns the
	// status and the Authorization header the provider received.
	send := func(tok string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+listen+"/openai/v1/chat/completions", strings.NewReader(chatBody))
		req.Header.Set("authorization", "Bearer "+tok)
		req.Header.Set("content-type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return resp.StatusCode, ""
		}
		last, _ := prov.Last()
		return 200, last.Header.Get("authorization")
	}

	if me := must(200, "GET", "/v1/me", opsToken, nil); me["role"] != "admin" {
		t.Fatalf("the CLI-made admin token: %v", me)
	}
	must(201, "POST", "/v1/groups", admin, map[string]any{"name": "eng", "providers": []string{"openai"}})
	must(201, "POST", "/v1/users", admin, map[string]any{"name": "alice", "groups": []string{"eng"}})
	mtok := must(201, "POST", "/v1/users/alice/management-tokens", admin, nil)["token"].(string)
	if p := must(200, "GET", "/v1/providers/openai", admin, nil); fmt.Sprint(p["key_ids"]) != "[k1]" {
		t.Fatalf("provider as admins see it: %v", p)
	}
	created := must(201, "POST", "/v1/tokens", mtok, map[string]any{"group": "eng", "name": "laptop"})
	oldTok, oldID := created["token"].(string), created["id"].(string)
	v.secrets = append(v.secrets, mtok, oldTok)
	if code, auth := send(oldTok); code != 200 || auth != "Bearer "+serverKey {
		t.Fatalf("token from the API through Envoy: %d, provider saw %q", code, redact(auth, v.secrets))
	}

	// Rotation: both tokens work during the grace period; then only the new.
	rotated := time.Now() // no later than the server's clock at rotation
	rot := must(201, "POST", "/v1/tokens/"+oldID+"/rotate", mtok, map[string]any{"grace": "3s"})
	newTok := rot["token"].(string)
	v.secrets = append(v.secrets, newTok)
	for _, tok := range []string{newTok, oldTok} {
		if code, _ := send(tok); code != 200 {
			t.Fatalf("during the grace period: %d", code)
		}
	}
	waitFor(t, 6*time.Second, func() bool { code, _ := send(oldTok); return code == 401 })
	if since := time.Since(rotated); since < 3*time.Second {
		t.Fatalf("the old token stopped %v after rotation, before its 3s grace", since)
	}
	t.Logf("old token refused %v after a rotation with 3s grace", time.Since(rotated).Round(10*time.Millisecond))
	if code, _ := send(newTok); code != 200 {
		t.Fatalf("new token after the grace period: %d", code)
	}

	// A private credential: alice's requests go out on her own key.
	cred := must(201, "POST", "/v1/credentials", mtok, map[string]any{"name": "own", "provider": "openai", "key": ownKey})
	if strings.Contains(fmt.Sprint(cred), ownKey) {
		t.Fatal("the credential's answer shows its key")
	}
	waitFor(t, 5*time.Second, func() bool { _, auth := send(newTok); return auth == "Bearer "+ownKey })

	// Deleting the group through the API denies the token within 2 s.
	must(204, "DELETE", "/v1/groups/eng", admin, nil)
	took := waitFor(t, 2*time.Second, func() bool { code, _ := send(newTok); return code == 403 })
	t.Logf("group deleted through the API: denied after %v", took.Round(10*time.Millisecond))

	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	assertNoSecrets(t, "keyward's log", r.logs.String(), v.secrets...)
}
