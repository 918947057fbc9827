package e2e

import (
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keyward/keyward/envoy/envoytest"
	"github.com/keyward/keyward/internal/promtext"
	"github.com/keyward/keyward/token"
)

// TestMetrics runs keyward serve with metrics.listen, sends allowed and
// denied requests through Envoy and management requests, and scrapes
// /metrics over HTTP: the counters add up, and no token, key or user name
// appears anywhere in the scrape.
func TestMetrics(t *testing.T) {
	admin := "admin-" + rand.Text() + rand.Text()
	mgmtAddr, metricsAddr := envoytest.FreeAddr(t), envoytest.FreeAddr(t)
	s := newStack(t, stackOptions{
		env:   []string{"KEYWARD_ADMIN_TOKEN=" + admin},
		extra: "management: {listen: " + mgmtAddr + "}\nmetrics: {listen: " + metricsAddr + "}\n",
	})
	if !strings.Contains(s.logs.String(), `"metrics":"`+metricsAddr+`"`) {
		t.Errorf("the serving log line does not give the metrics address:\n%s", s.logs.String())
	}
	tok := s.token("alice", "eng")
	forged := tok[:len(tok)-8] + "AAAAAAAA"
	const customKey = "sk-client-own-key-5e8d0c"

	chat := func(headers map[string]string) response {
		t.Helper()
		return s.do("POST", "/openai/v1/chat/completions", headers, chatBody)
	}
	for range 3 {
		if r := chat(map[string]string{"authorization": "Bearer " + tok}); r.status != 200 {
			t.Fatalf("allowed call: %d %s", r.status, r.body)
		}
	}
	if r := chat(map[string]string{"authorization": "Bearer " + customKey}); r.status != 200 {
		t.Fatalf("custom key: %d %s", r.status, r.body)
	}
	for range 2 {
		if r := chat(nil); r.errorCode() != "missing_credential" {
			t.Fatalf("no credential: %d %s", r.status, r.body)
		}
		if r := chat(map[string]string{"authorization": "Bearer " + forged}); r.errorCode() != "invalid_token" {
			t.Fatalf("forged token: %d %s", r.status, r.body)
		}
	}
	call := mgmtCaller(t, "http://"+mgmtAddr)
	if code, out := call("GET", "/v1/users/alice", admin, nil); code != 200 {
		t.Fatalf("GET /v1/users/alice: %d %v", code, out)
	}
	if code, _ := call("GET", "/v1/users", "not-a-credential", nil); code != 401 {
		t.Fatalf("GET /v1/users without a credential: %d", code)
	}
	if code, _ := call("GET", "/v1/alice/secrets", admin, nil); code != 404 {
		t.Fatalf("GET an unknown route: %d", code)
	}

	if status, body := get(t, "http://"+metricsAddr+"/healthz"); status != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz: %d %q", status, body)
	}
	status, body := get(t, "http://"+metricsAddr+"/metrics")
	if status != 200 {
		t.Fatalf("/metrics: %d %s", status, body)
	}
	got := parseSamples(t, body)
	atLeast := map[string]float64{
		// s.token's own checks come on top of these.
		`keyward_checks_total{key_source="server",outcome="allowed",reason="allowed"}`:            3,
		`keyward_checks_total{key_source="client",outcome="allowed",reason="allowed_custom_key"}`: 1,
		`keyward_checks_total{key_source="",outcome="denied",reason="missing_credential"}`:        2,
		`keyward_checks_total{key_source="",outcome="denied",reason="invalid_token"}`:             2,
		`keyward_check_duration_seconds_count{outcome="allowed"}`:                                 4,
		`keyward_check_duration_seconds_count{outcome="denied"}`:                                  4,
		`keyward_management_requests_total{route="GET /v1/users/{name}",status="200"}`:            1,
		`keyward_management_requests_total{route="GET /v1/users",status="401"}`:                   1,
		`keyward_management_requests_total{route="unmatched",status="404"}`:                       1,
	}
	for series, min := range atLeast {
		if v, ok := got[series]; !ok || v < min {
			t.Errorf("%s = %v (present: %v), want at least %v", series, v, ok, min)
		}
	}
	// The file store's tokens, users, groups, providers and users' own
	// keys are read from its memory, with no cache to count (TestVaultHang
	// reads the Vault store's cache series).
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "keyward_cache_requests_total") && !strings.Contains(line, `kind="identities"`) {
			t.Errorf("a record cache series on the file store: %s", line)
		}
	}
	for _, series := range []string{`keyward_store_errors_total{store="file"}`} {
		if v, ok := got[series]; !ok || v != 0 {
			t.Errorf("%s = %v (present: %v), want 0", series, v, ok)
		}
	}
	if !strings.Contains(body, `keyward_build_info{go_version="go`) {
		t.Error("no keyward_build_info in the scrape")
	}

	// Secrets and names are nowhere in the scrape; the token id is part
	// of the token, right after its prefix.
	assertNoSecrets(t, "/metrics", body, tok, forged, tok[len(token.Prefix):len(token.Prefix)+token.IDLen],
		customKey, admin, openaiKey, anthropicKey, geminiKey, azureKey, "alice")
	for line := range strings.Lines(body) {
		if strings.Contains(line, "keyward_") && (strings.Contains(line, "eng") || strings.Contains(line, "/v1/alice")) {
			t.Errorf("a keyward series names the group or the raw path: %s", line)
		}
	}

	// The metrics server stops with the rest on SIGTERM.
	if err := s.stopKeyward(); err != nil {
		t.Errorf("keyward did not stop cleanly: %v", err)
	}
	if resp, err := http.Get("http://" + metricsAddr + "/metrics"); err == nil {
		resp.Body.Close()
		t.Error("/metrics still answers after keyward stopped")
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// parseSamples reads the samples of a Prometheus text exposition, by
// series as written.
func parseSamples(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out, err := promtext.Samples(body, "")
	if err != nil {
		t.Fatal(err)
	}
	return out
}
