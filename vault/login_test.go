package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyward/keyward/internal/testlog"
	"github.com/keyward/keyward/vault/vaulttest"
)

// writeFile writes content to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestNewAuthMethodErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	blank := writeFile(t, dir, "blank", " \n")
	secretEnv := map[string]string{envSecretID: "sid-s3cret"}
	tokenEnv := map[string]string{envToken: "hvs.s3cret"}

	tests := map[string]struct {
		cfg  AuthConfig
		env  map[string]string
		want string
	}{
		"unknown method":          {AuthConfig{Method: "ldap"}, tokenEnv, `vault.auth.method: "ldap" is not token, approle or kubernetes`},
		"token: none":             {AuthConfig{}, nil, "vault.auth.token_file: no token: set token_file or $VAULT_TOKEN"},
		"token: file missing":     {AuthConfig{TokenFile: missing}, tokenEnv, "vault.auth.token_file: open " + missing},
		"token: file blank":       {AuthConfig{Method: "token", TokenFile: blank}, nil, "vault.auth.token_file: " + blank + " is empty"},
		"token: role_id set":      {AuthConfig{RoleID: "rid-s3cret"}, tokenEnv, "vault.auth.role_id: not used by method token"},
		"token: mount_path set":   {AuthConfig{MountPath: "approle"}, tokenEnv, "vault.auth.mount_path: not used by method token"},
		"approle: no role id":     {AuthConfig{Method: "approle"}, secretEnv, "vault.auth.role_id: missing: set role_id or role_id_file"},
		"approle: role id file":   {AuthConfig{Method: "approle", RoleIDFile: missing}, secretEnv, "vault.auth.role_id_file: open " + missing},
		"approle: no secret id":   {AuthConfig{Method: "approle", RoleID: "rid-s3cret"}, nil, "vault.auth.secret_id_file: missing: set secret_id_file or $VAULT_APPROLE_SECRET_ID"},
		"approle: secret id file": {AuthConfig{Method: "approle", RoleID: "rid-s3cret", SecretIDFile: blank}, nil, "vault.auth.secret_id_file: " + blank + " is empty"},
		"approle: token_file set": {AuthConfig{Method: "approle", RoleID: "rid-s3cret", TokenFile: blank}, secretEnv, "vault.auth.token_file: not used by method approle"},
		"approle: role set":       {AuthConfig{Method: "approle", RoleID: "rid-s3cret", Role: "r"}, secretEnv, "vault.auth.role: not used by method approle"},
		"kubernetes: no role":     {AuthConfig{Method: "kubernetes", JWTFile: blank}, nil, "vault.auth.role: missing"},
		"kubernetes: jwt missing": {AuthConfig{Method: "kubernetes", Role: "r", JWTFile: missing}, nil, "vault.auth.jwt_file: open " + missing},
		"kubernetes: jwt blank":   {AuthConfig{Method: "kubernetes", Role: "r", JWTFile: blank}, nil, "vault.auth.jwt_file: " + blank + " is empty"},
		"kubernetes: secret file": {AuthConfig{Method: "kubernetes", Role: "r", SecretIDFile: blank}, nil, "vault.auth.secret_id_file: not used by method kubernetes"},
	}
	if _, err := os.Stat(defaultJWTFile); err != nil { // not inside a pod
		tests["kubernetes: default jwt"] = struct {
			cfg  AuthConfig
			env  map[string]string
			want string
		}{AuthConfig{Method: "kubernetes", Role: "r"}, nil, "vault.auth.jwt_file: open " + defaultJWTFile}
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m, err := newAuthMethod(tc.cfg, envOf(tc.env))
			if err == nil {
				t.Fatalf("newAuthMethod = %v, want error %q", m, tc.want)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %q, want prefix %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error %q carries a secret", err)
			}
		})
	}
}

// fakeVault stands in for Vault's login and lookup-self endpoints and
// records what it was sent.
type fakeVault struct {
	mu     sync.Mutex
	method string
	path   string
	xToken string
	body   map[string]any
}

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.method, f.path, f.xToken, f.body = r.Method, r.URL.Path, r.Header.Get("X-Vault-Token"), nil
	_ = json.Unmarshal(b, &f.body)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/v1/auth/token/lookup-self":
		io.WriteString(w, `{"data":{"ttl":120,"renewable":true,"accessor":"acc","policies":["default"]}}`)
	case strings.HasSuffix(r.URL.Path, "/login"):
		io.WriteString(w, `{"auth":{"client_token":"hvs.issued","accessor":"acc","lease_duration":60,"renewable":true}}`)
	default:
		http.NotFound(w, r)
	}
}

func TestLoginRequests(t *testing.T) {
	dir := t.TempDir()
	tokenFile := writeFile(t, dir, "token", "hvs.from-file\n")
	jwtFile := writeFile(t, dir, "jwt", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrZXl3YXJkIn0.c2ln\n")
	roleIDFile := writeFile(t, dir, "role-id", " rid-from-file \n")
	secretIDFile := writeFile(t, dir, "secret-id", "sid-from-file\n")

	tests := map[string]struct {
		cfg        AuthConfig
		env        map[string]string
		wantMethod string
		wantPath   string
		wantXToken string            // the token the request carried
		wantBody   map[string]string // nil: no body expected
		wantToken  string            // the client's token after login
		wantTTL    int
	}{
		"token from file": {
			cfg:        AuthConfig{TokenFile: tokenFile},
			env:        map[string]string{envToken: "hvs.from-env"}, // the file wins
			wantMethod: http.MethodGet, wantPath: "/v1/auth/token/lookup-self",
			wantXToken: "hvs.from-file", wantToken: "hvs.from-file", wantTTL: 120,
		},
		"token from env": {
			cfg:        AuthConfig{Method: "token"},
			env:        map[string]string{envToken: "hvs.from-env"},
			wantMethod: http.MethodGet, wantPath: "/v1/auth/token/lookup-self",
			wantXToken: "hvs.from-env", wantToken: "hvs.from-env", wantTTL: 120,
		},
		"approle, secret id from env": {
			cfg:        AuthConfig{Method: "approle", RoleID: "rid"},
			env:        map[string]string{envSecretID: "sid-from-env"},
			wantMethod: http.MethodPut, wantPath: "/v1/auth/approle/login",
			wantBody:  map[string]string{"role_id": "rid", "secret_id": "sid-from-env"},
			wantToken: "hvs.issued", wantTTL: 60,
		},
		"approle, files and mount": {
			cfg:        AuthConfig{Method: "approle", MountPath: "/apps/", RoleIDFile: roleIDFile, SecretIDFile: secretIDFile},
			env:        map[string]string{envSecretID: "sid-from-env"}, // the file wins
			wantMethod: http.MethodPut, wantPath: "/v1/auth/apps/login",
			wantBody:  map[string]string{"role_id": "rid-from-file", "secret_id": "sid-from-file"},
			wantToken: "hvs.issued", wantTTL: 60,
		},
		"kubernetes": {
			cfg:        AuthConfig{Method: "kubernetes", MountPath: "k8s-prod", Role: "keyward", JWTFile: jwtFile},
			wantMethod: http.MethodPut, wantPath: "/v1/auth/k8s-prod/login",
			wantBody:  map[string]string{"role": "keyward", "jwt": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrZXl3YXJkIn0.c2ln"},
			wantToken: "hvs.issued", wantTTL: 60,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			fake := &fakeVault{}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			cfg := api.DefaultConfig()
			cfg.Address = srv.URL
			cfg.MaxRetries = 0
			client, err := api.NewClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			client.SetToken("")

			method, err := newAuthMethod(tc.cfg, envOf(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			secret, err := client.Auth().Login(t.Context(), method)
			if err != nil {
				t.Fatal(err)
			}
			fake.mu.Lock()
			defer fake.mu.Unlock()
			if fake.method != tc.wantMethod || fake.path != tc.wantPath {
				t.Errorf("request %s %s, want %s %s", fake.method, fake.path, tc.wantMethod, tc.wantPath)
			}
			if fake.xToken != tc.wantXToken {
				t.Errorf("request token %q, want %q", fake.xToken, tc.wantXToken)
			}
			if len(fake.body) != len(tc.wantBody) {
				t.Errorf("request body %v, want %v", fake.body, tc.wantBody)
			}
			for k, v := range tc.wantBody {
				if fake.body[k] != v {
					t.Errorf("request body %s = %v, want %q", k, fake.body[k], v)
				}
			}
			if got := client.Token(); got != tc.wantToken {
				t.Errorf("client token %q, want %q", got, tc.wantToken)
			}
			if !secret.Auth.Renewable || secret.Auth.LeaseDuration != tc.wantTTL || secret.Auth.ClientToken != tc.wantToken {
				t.Errorf("secret auth %+v, want renewable, ttl %d, token %q", secret.Auth, tc.wantTTL, tc.wantToken)
			}
		})
	}
}

func TestLoginReadsFilesAgain(t *testing.T) {
	fake := &fakeVault{}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	client, err := api.NewClient(&api.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	jwt := writeFile(t, t.TempDir(), "jwt", "first")
	method, err := newAuthMethod(AuthConfig{Method: "kubernetes", Role: "r", JWTFile: jwt}, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Dir(jwt), "jwt", "rotated") // as the kubelet does
	if _, err := client.Auth().Login(t.Context(), method); err != nil {
		t.Fatal(err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if fake.body["jwt"] != "rotated" {
		t.Fatalf("login sent jwt %v, want the rotated one", fake.body["jwt"])
	}
}

// fakeMethod fails its first fails logins, then hands out tokens that never
// expire: fake-<call>. Each call is reported on calls.
type fakeMethod struct {
	mu    sync.Mutex
	fails int
	n     int
	calls chan int
}

func (m *fakeMethod) Login(context.Context, *api.Client) (*api.Secret, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n++
	m.calls <- m.n
	if m.n <= m.fails {
		return nil, errors.New("vault is down")
	}
	return &api.Secret{Auth: &api.SecretAuth{ClientToken: fmt.Sprintf("fake-%d", m.n)}}, nil
}

func testLogger(buf *testlog.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// hangGuard bounds every wait of these tests for an event that must come:
// a hang guard only, far above anything a busy machine needs, never a
// measure of speed.
const hangGuard = 2 * time.Minute

// receive returns the next value from ch, failing the test if none comes
// within hangGuard.
func receive[V any](t *testing.T, ch <-chan V, what string) V {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hangGuard):
		t.Fatalf("no %s within %v", what, hangGuard)
		var zero V
		return zero
	}
}

// waitFor polls cond every 10ms until it holds, failing the test after
// hangGuard: for state a real Vault changes on its own schedule.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, hangGuard)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeClock stands still: each After is reported on asked and fires when
// the test sends on fire.
type fakeClock struct {
	now   time.Time
	asked chan time.Duration
	fire  chan time.Time
}

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.asked <- d
	return c.fire
}

// TestKeeperBacksOffAndRelogs drives the keeper's loop by events, without
// Vault and without waiting on the wall clock: relogin ends the first
// token's watch, the keeper waits minInterval, two logins fail with
// backoff, the third succeeds; a second relogin brings a fourth.
func TestKeeperBacksOffAndRelogs(t *testing.T) {
	client, err := api.NewClient(&api.Config{Address: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	var logs testlog.Buffer
	method := &fakeMethod{fails: 2, calls: make(chan int, 10)}
	k := newTokenKeeper(client, method, testLogger(&logs))
	clk := &fakeClock{now: time.Unix(1e9, 0), asked: make(chan time.Duration, 10), fire: make(chan time.Time)}
	k.clock = clk
	var backoffs []int // written by the keeper's goroutine, read after receives
	k.backoff = func(n int) time.Duration {
		backoffs = append(backoffs, n)
		return time.Duration(n) * time.Hour // never waited for: the clock decides
	}
	watched := make(chan string, 10)
	renew := k.watch
	k.watch = func(ctx context.Context, s *api.Secret) {
		watched <- s.Auth.ClientToken
		renew(ctx, s) // a token without TTL: waits for relogin or ctx
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.run(ctx, &api.Secret{Auth: &api.SecretAuth{ClientToken: "first"}})
	}()
	defer func() { cancel(); <-done }()

	steps := []struct {
		wantWait time.Duration // the wait the keeper asks for before the login
		wantCall int
	}{
		{time.Second, 1}, // minInterval since the first token's login
		{time.Hour, 2},   // backoff after one failure
		{2 * time.Hour, 3},
	}
	if got := receive(t, watched, "watch of the first token"); got != "first" {
		t.Fatalf("watching %q, want first", got)
	}
	k.relogin()
	for _, st := range steps {
		if got := receive(t, clk.asked, "wait"); got != st.wantWait {
			t.Fatalf("keeper waits %v before login %d, want %v", got, st.wantCall, st.wantWait)
		}
		clk.fire <- clk.now
		if got := receive(t, method.calls, "login"); got != st.wantCall {
			t.Fatalf("login call %d, want %d", got, st.wantCall)
		}
	}
	if got := receive(t, watched, "watch of the new token"); got != "fake-3" || client.Token() != "fake-3" {
		t.Fatalf("watching %q with client token %q, want fake-3", got, client.Token())
	}
	if k.Logins() != 1 || !slices.Equal(backoffs, []int{1, 2}) {
		t.Fatalf("logins %d, backoffs %v; want 1, [1 2]", k.Logins(), backoffs)
	}

	k.relogin()
	if got := receive(t, clk.asked, "wait"); got != time.Second {
		t.Fatalf("keeper waits %v before the requested login, want minInterval 1s", got)
	}
	clk.fire <- clk.now
	receive(t, method.calls, "login")
	if got := receive(t, watched, "watch of the requested token"); got != "fake-4" || client.Token() != "fake-4" {
		t.Fatalf("watching %q with client token %q, want fake-4", got, client.Token())
	}
	cancel()
	<-done
	if k.Logins() != 2 {
		t.Errorf("logins %d, want 2", k.Logins())
	}
	if s := logs.String(); !strings.Contains(s, "vault login failed") || !strings.Contains(s, `msg="vault login" method=*vault.fakeMethod`) {
		t.Errorf("logs lack the failed and successful logins:\n%s", s)
	}
}

func TestLoginBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second, 6: 30 * time.Second, 100: 30 * time.Second} {
		for range 20 {
			if got := loginBackoff(n); got < want/2 || got > want {
				t.Fatalf("loginBackoff(%d) = %v, want within [%v, %v]", n, got, want/2, want)
			}
		}
	}
}

// TestKeeperTokenFile renews a short-lived token read from a file and, when
// it reaches its explicit max TTL, logs in again with the token the file
// holds by then (as Vault Agent would have rotated it).
func TestKeeperTokenFile(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t, "")
	first := s.TokenWith(t, &api.TokenCreateRequest{TTL: "2s", ExplicitMaxTTL: "5s", Renewable: new(true)})
	second := s.Token(t, nil, time.Minute) // must outlive the first
	file := writeFile(t, t.TempDir(), "token", first+"\n")

	method, err := newAuthMethod(AuthConfig{TokenFile: file}, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	k, client, secret, logs := loggedIn(ctx, t, s, method)
	if !secret.Auth.Renewable || secret.Auth.LeaseDuration < 1 || secret.Auth.LeaseDuration > 2 {
		t.Fatalf("login secret: renewable %v, ttl %ds; want renewable, 1-2s", secret.Auth.Renewable, secret.Auth.LeaseDuration)
	}
	start := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); k.run(ctx, secret) }()
	defer func() { cancel(); <-done }()

	writeFile(t, filepath.Dir(file), "token", second)
	waitFor(t, "login with the rotated token", func() bool { return client.Token() == second })
	relogin := time.Since(start)
	renewedFirst := k.Renewals()
	if _, err := client.Auth().Token().LookupSelfWithContext(ctx); err != nil {
		t.Fatalf("lookup-self with the kept token: %v", err)
	}
	cancel()
	<-done
	t.Logf("token: %d renewals of the first token, re-login after %v, %d logins, %d renewals in %v",
		renewedFirst, relogin.Round(time.Millisecond), k.Logins(), k.Renewals(), time.Since(start).Round(time.Millisecond))
	if renewedFirst < 1 || k.Logins() != 2 {
		t.Errorf("renewals of the first token %d, logins %d; want >= 1 and 2", renewedFirst, k.Logins())
	}
	checkLogs(t, logs.String(), first, second)
}

// checkLogs asserts the keeper logged its logins and renewals and none of
// the secrets.
func checkLogs(t *testing.T, logs string, secrets ...string) {
	t.Helper()
	for _, want := range []string{`msg="vault login"`, `msg="vault token renewed"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("logs carry a secret:\n%s", logs)
		}
	}
}

// TestKeeperAppRole logs in with AppRole (token TTL 2s, max TTL 6s) and
// reads a record every 200ms until the keeper has renewed three times and
// logged in again at the max TTL. How long reads failed around a re-login
// is reported, not asserted: it measures the machine as much as the
// keeper.
func TestKeeperAppRole(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t, "keyward")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if _, err := s.Client(t, s.RootToken).KVv2("keyward").Put(ctx, "groups/x", map[string]any{"disabled": "false"}); err != nil {
		t.Fatal(err)
	}
	s.WritePolicy(t, "keyward-read", `path "keyward/data/*" { capabilities = ["read"] }`)
	roleID, secretID := s.AppRole(t, "keyward", []string{"keyward-read"}, 2*time.Second, 6*time.Second)
	secretIDFile := writeFile(t, t.TempDir(), "secret-id", secretID+"\n")

	method, err := newAuthMethod(AuthConfig{Method: "approle", RoleID: roleID, SecretIDFile: secretIDFile}, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	k, client, secret, logs := loggedIn(ctx, t, s, method)
	done := make(chan struct{})
	go func() { defer close(done); k.run(ctx, secret) }()
	defer func() { cancel(); <-done }()

	tokens := map[string]bool{client.Token(): true}
	var reads, failed int
	var longest time.Duration
	var failingSince time.Time
	read := func() bool {
		tokens[client.Token()] = true
		got, err := client.KVv2("keyward").Get(ctx, "groups/x")
		reads++
		if err == nil && got.Data["disabled"] == "false" {
			failingSince = time.Time{}
			return true
		}
		failed++
		if failingSince.IsZero() {
			failingSince = time.Now()
		}
		longest = max(longest, time.Since(failingSince))
		return false
	}
	start := time.Now()
	waitFor(t, "three renewals and a re-login at the max TTL", func() bool {
		read()
		time.Sleep(200 * time.Millisecond)
		return k.Renewals() >= 3 && k.Logins() >= 2
	})
	waitFor(t, "a read with the kept token", read)
	cancel()
	<-done
	t.Logf("approle: %d renewals, %d logins (%d tokens) in %v; %d reads, %d failed, longest failure %v",
		k.Renewals(), k.Logins(), len(tokens), time.Since(start).Round(time.Millisecond), reads, failed, longest)
	secrets := []string{roleID, secretID}
	for tok := range tokens {
		secrets = append(secrets, tok)
	}
	checkLogs(t, logs.String(), secrets...)
	if failed > 0 {
		t.Logf("keeper log:\n%s", logs.String())
	}
}

// TestKeeperReloginAfterRevoke revokes the keeper's token behind its back:
// the next renewal is refused with 403 and the keeper logs in again at once
// instead of waiting for the old lease to run out.
func TestKeeperReloginAfterRevoke(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t, "")
	roleID, secretID := s.AppRole(t, "keyward", nil, 3*time.Second, time.Minute)
	method, err := newAuthMethod(AuthConfig{Method: "approle", RoleID: roleID},
		envOf(map[string]string{envSecretID: secretID}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	k, client, secret, logs := loggedIn(ctx, t, s, method)
	done := make(chan struct{})
	go func() { defer close(done); k.run(ctx, secret) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "first renewal", func() bool { return k.Renewals() >= 1 })
	revoked := client.Token()
	if err := s.Client(t, s.RootToken).Auth().Token().RevokeTreeWithContext(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "login after the revocation", func() bool { return k.Logins() == 2 })
	t.Logf("revoked: logged in again after %v", time.Since(start).Round(time.Millisecond))
	if client.Token() == revoked {
		t.Fatal("client still holds the revoked token")
	}
	if _, err := client.Auth().Token().LookupSelfWithContext(ctx); err != nil {
		t.Fatalf("lookup-self with the new token: %v", err)
	}
	if !strings.Contains(logs.String(), "vault token refused on renewal") {
		t.Errorf("logs lack the refused renewal:\n%s", logs.String())
	}
}

// loggedIn logs in once with method against s and returns the keeper, its
// client, the login secret and the keeper's log.
func loggedIn(ctx context.Context, t *testing.T, s *vaulttest.Server, method api.AuthMethod) (*tokenKeeper, *api.Client, *api.Secret, *testlog.Buffer) {
	t.Helper()
	client := s.Client(t, "")
	logs := &testlog.Buffer{}
	k := newTokenKeeper(client, method, testLogger(logs))
	secret, err := k.login(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return k, client, secret, logs
}
