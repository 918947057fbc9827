package mgmt

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/internal/testlog"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/vault"
	"github.com/keyward/keyward/vault/vaulttest"
)

const (
	adminSecret = "bootstrap-admin-credential-0123456789abcdef"
	// serverKey is the fixture provider's server-held key.
	serverKey = "sk-server-held-fixture-key-0123456789"
)

// fixture is the management API over a real store, served on loopback.
type fixture struct {
	st    Store
	url   string
	audit *testlog.Buffer
	// creds are management tokens by user name, plus "bootstrap".
	creds map[string]string
	// clock is the server's time, in Unix nanoseconds; tests move it.
	clock atomic.Int64
}

func (f *fixture) now() time.Time { return time.Unix(0, f.clock.Load()).UTC() }

// advance moves the server's clock.
func (f *fixture) advance(d time.Duration) { f.clock.Add(int64(d)) }

// newFixture serves the API over a file store.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	// No file yet: a first run. (An empty file is a lost store file.)
	path := filepath.Join(dir, "store.yaml")
	getenv := func(name string) string {
		if name == "OPENAI_KEY" {
			return serverKey
		}
		return ""
	}
	st, err := filestore.Open(filestore.Options{Path: path, Getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.PutProvider(ctx, "openai", &filestore.ProviderData{Kind: record.KindOpenAI, Keys: []filestore.KeyData{{ID: "k1", Env: "OPENAI_KEY"}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	return serveFixture(t, st)
}

// vaultFixtures serves the API over Vault stores on one OpenBao dev
// server, each on a KV v2 mount of its own.
type vaultFixtures struct {
	srv  *vaulttest.Server
	root *api.Client
	n    atomic.Int32
}

func newVaultFixtures(t *testing.T) *vaultFixtures {
	srv := vaulttest.Start(t, "")
	return &vaultFixtures{srv: srv, root: srv.Client(t, srv.RootToken)}
}

func (v *vaultFixtures) fixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	mount := "kw" + string(rune('a'+v.n.Add(1)))
	if err := v.root.Sys().MountWithContext(ctx, mount, &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		t.Fatal(err)
	}
	// A fresh KV v2 mount answers "upgrading" for a moment.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := v.root.KVv2(mount).Put(ctx, "providers/openai", map[string]any{"kind": "openai", "key_k1": serverKey}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("mount %s: %v", mount, err)
		}
	}
	file := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(file, []byte(v.srv.RootToken), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := vault.New(vault.Config{Address: v.srv.Addr, Mount: mount, Auth: vault.AuthConfig{Method: "token", TokenFile: file}}, slog.New(slog.DiscardHandler), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	if err := st.Start(sctx); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	return serveFixture(t, st)
}

// signingStore is a Store that can make its first signing key.
type signingStore interface {
	Store
	EnsureSigningKey(ctx context.Context) error
}

var (
	_ signingStore = (*filestore.Store)(nil)
	_ signingStore = (*vault.Store)(nil)
)

// serveFixture seeds st with groups eng and ops, users alice (eng), bob
// (eng, ops) and the admin root (ops), gives each a management token, and
// serves the API over it.
func serveFixture(t *testing.T, st Store) *fixture {
	t.Helper()
	ctx := context.Background()
	for _, g := range []string{"eng", "ops"} {
		if err := st.PutGroup(ctx, &record.Group{Name: g}); err != nil {
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
	for _, u := range users {
		if err := st.PutUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		tok, _, err := IssueAPIToken(ctx, st, u.Name, f.now())
		if err != nil {
			t.Fatal(err)
		}
		f.creds[u.Name] = tok
	}
	s, err := New(Options{Store: st, AdminToken: adminSecret, Logger: slog.New(slog.NewJSONHandler(f.audit, nil)), Now: f.now})
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
