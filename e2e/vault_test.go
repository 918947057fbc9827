package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/hashicorp/vault/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/keyward/keyward/envoy/envoytest"
	"github.com/keyward/keyward/internal/fakeprovider"
	"github.com/keyward/keyward/internal/testlog"
	"github.com/keyward/keyward/token"
	"github.com/keyward/keyward/vault/vaulttest"
)

// The Vault store end to end: OpenBao dev servers (vault/vaulttest), the
// keyward binary serving from them with a read-only token or AppRole, its
// CLI writing groups, users and tokens, and Vault's own CLI writing
// provider records. keyward reaches Vault through a counting reverse proxy,
// so tests can tell what keyward costs Vault.

// vaultMount is the KV v2 mount every test uses (keyward's default).
const vaultMount = "keyward"

// vaultEnv is one OpenBao server set up as an operator would: both example
// policies, an admin token for the CLIs, a read-only token for serve, and
// the counting proxy serve talks to.
type vaultEnv struct {
	t          *testing.T
	bao        *vaulttest.Server
	baoBin     string
	dir        string
	proxy      *countingProxy
	cliConfig  string
	adminFile  string
	serveFile  string
	adminToken string
	// secrets collects every credential and key of the test; none may
	// appear in keyward's logs.
	secrets []string
}

func newVaultEnv(t *testing.T) *vaultEnv {
	t.Helper()
	v := &vaultEnv{t: t, bao: vaulttest.Start(t, vaultMount), baoBin: vaulttest.Binary(t), dir: t.TempDir()}
	v.adminFile = filepath.Join(v.dir, "admin-token")
	v.serveFile = filepath.Join(v.dir, "serve-token")
	v.writePolicies()
	v.newAdminToken()
	serveToken := v.bao.Token(t, []string{"keyward"}, 0)
	writeFile(t, v.serveFile, serveToken+"\n")
	v.secrets = append(v.secrets, serveToken, v.bao.RootToken)

	// keyward serve must run with the read-only policy: make sure the token
	// it gets cannot write.
	ro := v.bao.Client(t, serveToken)
	if _, err := ro.KVv2(vaultMount).Put(t.Context(), "groups/probe", map[string]any{"disabled": "false"}); err == nil {
		t.Fatal("the serve token (policy keyward) could write a record")
	}

	v.cliConfig = filepath.Join(v.dir, "cli.yaml")
	writeFile(t, v.cliConfig, fmt.Sprintf("store: {kind: vault}\nvault:\n  address: %s\n  mount: %s\n  auth: {method: token, token_file: %q}\n",
		v.bao.Addr, vaultMount, v.adminFile))
	v.proxy = newCountingProxy(t, v.bao.Addr)
	return v
}

// writePolicies writes the example policies exactly as shipped.
func (v *vaultEnv) writePolicies() {
	v.t.Helper()
	writeExamplePolicies(v.t, v.bao.WritePolicy)
}

// writeExamplePolicies writes the serve and admin policies of
// examples/vault with write.
func writeExamplePolicies(t *testing.T, write func(t testing.TB, name, hcl string)) {
	t.Helper()
	for name, file := range map[string]string{"keyward": "keyward.hcl", "keyward-admin": "keyward-admin.hcl"} {
		hcl, err := os.ReadFile(filepath.Join("..", "examples", "vault", file))
		if err != nil {
			t.Fatal(err)
		}
		write(t, name, string(hcl))
	}
}

// newAdminToken creates a token with the keyward-admin policy for the CLIs
// (again after a restart of the dev server, which forgets tokens).
func (v *vaultEnv) newAdminToken() {
	v.t.Helper()
	v.adminToken = v.bao.Token(v.t, []string{"keyward-admin"}, 0)
	writeFile(v.t, v.adminFile, v.adminToken+"\n")
	v.secrets = append(v.secrets, v.adminToken)
}

// childEnv is the environment of the processes a test starts, without
// the Vault or keyward settings of whoever runs the tests.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "KEYWARD_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// baoPut runs Vault's own CLI as the security team would:
// bao kv put -mount=keyward PATH k=v ...
func (v *vaultEnv) baoPut(path string, fields ...string) {
	v.t.Helper()
	cmd := exec.Command(v.baoBin, append([]string{"kv", "put", "-mount=" + vaultMount, path}, fields...)...)
	cmd.Env = childEnv("VAULT_ADDR="+v.bao.Addr, "VAULT_TOKEN="+v.adminToken)
	if out, err := cmd.CombinedOutput(); err != nil {
		v.t.Fatalf("bao kv put %s: %v\n%s", path, err, out)
	}
}

// kw runs keyward's CLI against Vault with the admin token and returns its
// stdout.
func (v *vaultEnv) kw(args ...string) string {
	v.t.Helper()
	cmd := exec.Command(cliBin, append(args, "-config", v.cliConfig)...)
	cmd.Env = childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		v.t.Fatalf("keyward %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// token creates a token with keyward's CLI.
func (v *vaultEnv) token(user, group string) string {
	v.t.Helper()
	tok := strings.TrimSpace(v.kw(tokenCreate(user, group)...))
	if !strings.HasPrefix(tok, token.Prefix) {
		v.t.Fatalf("token create printed %q", tok)
	}
	v.secrets = append(v.secrets, tok)
	return tok
}

// providerKey returns a fresh fake provider key, remembered as a secret.
func (v *vaultEnv) providerKey(name string) string {
	k := "sk-vault-" + name + "-" + rand.Text()
	v.secrets = append(v.secrets, k)
	return k
}

// fixedAppRole creates (or re-creates after a restart) the AppRole role
// with the keyward policy and the given role id and secret id, so that
// keyward's configured credentials work again on a fresh dev server.
func (v *vaultEnv) fixedAppRole(role, roleID, secretID string, ttl time.Duration) {
	v.t.Helper()
	v.bao.AppRole(v.t, role, []string{"keyward"}, ttl, 0)
	root := v.bao.Client(v.t, v.bao.RootToken)
	ctx := v.t.Context()
	if _, err := root.Logical().WriteWithContext(ctx, "auth/approle/role/"+role+"/role-id", map[string]any{"role_id": roleID}); err != nil {
		v.t.Fatalf("set role id: %v", err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/approle/role/"+role+"/custom-secret-id", map[string]any{"secret_id": secretID}); err != nil {
		v.t.Fatalf("set secret id: %v", err)
	}
}

// snapshot reads every record under the mount, to write the same records
// (token hashes, signing key, change marker) into a restarted dev server.
func (v *vaultEnv) snapshot() map[string]map[string]any {
	v.t.Helper()
	root := v.bao.Client(v.t, v.bao.RootToken)
	ctx := v.t.Context()
	out := map[string]map[string]any{}
	var walk func(dir string)
	walk = func(dir string) {
		sec, err := root.Logical().ListWithContext(ctx, vaultMount+"/metadata/"+dir)
		if err != nil {
			v.t.Fatalf("list %s: %v", dir, err)
		}
		if sec == nil {
			return
		}
		keys, _ := sec.Data["keys"].([]any)
		for _, k := range keys {
			name, _ := k.(string)
			if strings.HasSuffix(name, "/") {
				walk(dir + name)
				continue
			}
			rec, err := root.KVv2(vaultMount).Get(ctx, dir+name)
			if err != nil {
				v.t.Fatalf("read %s: %v", dir+name, err)
			}
			out[dir+name] = rec.Data
		}
	}
	walk("")
	return out
}

// reseed brings a restarted (empty) dev server back to the state of snap:
// policies, an admin token, the records, and last the AppRole credentials,
// so that keyward can log in only once everything is in place.
func (v *vaultEnv) reseed(snap map[string]map[string]any, role, roleID, secretID string, ttl time.Duration) {
	v.t.Helper()
	v.writePolicies()
	v.newAdminToken()
	kv := v.bao.Client(v.t, v.bao.RootToken).KVv2(vaultMount)
	for path, data := range snap {
		if _, err := kv.Put(v.t.Context(), path, data); err != nil {
			v.t.Fatalf("restore %s: %v", path, err)
		}
	}
	v.fixedAppRole(role, roleID, secretID, ttl)
}

// seedGroups writes groups g<from>..g<to-1> straight through Vault's API
// with 16 writers: fast, and the poller never hears of them.
func (v *vaultEnv) seedGroups(from, to int) {
	v.t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.AgentAddress = v.bao.Addr, ""
	// One kept-alive connection per writer: the pooled default keeps
	// fewer, and reconnecting costs more than the write.
	if tr, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		tr.MaxIdleConnsPerHost = 16
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		v.t.Fatal(err)
	}
	c.SetToken(v.adminToken)
	kv := c.KVv2(vaultMount)
	names := make(chan string)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for name := range names {
				if _, err := kv.Put(context.Background(), "groups/"+name, map[string]any{"disabled": false}); err != nil {
					errs <- fmt.Errorf("write group %s: %w", name, err)
					return
				}
			}
		})
	}
	func() {
		defer close(names)
		for i := from; i < to; i++ {
			select {
			case names <- groupName(i):
			case err := <-errs:
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		v.t.Fatal(err)
	}
}

func groupName(i int) string { return fmt.Sprintf("g%05d", i) }

// replicaOptions configures one keyward serve process.
type replicaOptions struct {
	auth     string        // vault.auth as a YAML flow mapping; default the read-only token
	poll     time.Duration // vault.poll_interval; default 1s
	ttl      time.Duration // cache.ttl; default keyward's 30s
	maxStale time.Duration // vault.max_stale; default keyward's 10m
	extra    string        // more YAML: routes, envoy
	env      []string      // more environment, e.g. KEYWARD_ADMIN_TOKEN=...
	vault    string        // where Vault is, as a YAML line under vault:; default address: the counting proxy
}

// replica is a keyward serve process on the Vault store.
type replica struct {
	t      *testing.T
	name   string
	addr   string
	config string
	logs   *testlog.Buffer
	cmd    *exec.Cmd
	exited chan error
	authz  authv3.AuthorizationClient
	health healthpb.HealthClient

	stopped bool // stop was called; stopErr is its result
	stopErr error
}

// startReplica starts keyward serve on a fresh config that points at the
// counting proxy. It does not wait for readiness: see waitHealth.
func (v *vaultEnv) startReplica(name string, o replicaOptions) *replica {
	t := v.t
	t.Helper()
	if o.auth == "" {
		o.auth = fmt.Sprintf("{method: token, token_file: %q}", v.serveFile)
	}
	if o.poll == 0 {
		o.poll = time.Second
	}
	if o.vault == "" {
		o.vault = "address: " + v.proxy.URL
	}
	addr, config := envoytest.FreeAddr(t), filepath.Join(v.dir, name+".yaml")
	maxStale := ""
	if o.maxStale > 0 {
		maxStale = fmt.Sprintf("  max_stale: %s\n", o.maxStale)
	}
	cacheTTL := ""
	if o.ttl > 0 {
		cacheTTL = fmt.Sprintf("cache: {ttl: %s}\n", o.ttl)
	}
	writeFile(t, config, fmt.Sprintf(`listen: %s
log_level: info
shutdown_grace: 5s
shutdown_drain: 0s
store: {kind: vault}
vault:
  %s
  mount: %s
  auth: %s
  poll_interval: %s
%s%s%s`, addr, o.vault, vaultMount, o.auth, o.poll, maxStale, cacheTTL, o.extra))
	return launchReplica(t, name, addr, config, childEnv(o.env...))
}

// launchReplica starts keyward serve on config, whose listen is addr, with
// env as its environment. It does not wait for readiness (see waitHealth),
// and stops the process when the test ends unless the test did.
func launchReplica(t *testing.T, name, addr, config string, env []string) *replica {
	t.Helper()
	r := &replica{t: t, name: name, addr: addr, logs: &testlog.Buffer{}, config: config}
	r.cmd = exec.Command(keywardBin, "serve", "-config", r.config)
	r.cmd.Env = env
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.exited = make(chan error, 1)
	go func() { r.exited <- r.cmd.Wait() }() // ends with the process, which cleanup stops
	conn, err := grpc.NewClient(r.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r.authz, r.health = authv3.NewAuthorizationClient(conn), healthpb.NewHealthClient(conn)
	t.Cleanup(func() {
		conn.Close()
		if !r.stopped {
			if err := r.stop(); err != nil {
				t.Errorf("keyward %s: %v", name, err)
			}
		}
		if t.Failed() {
			logs := r.logs.String()
			if len(logs) > 20000 {
				logs = "...\n" + logs[len(logs)-20000:]
			}
			t.Logf("keyward %s log:\n%s", name, logs)
		}
	})
	return r
}

// healthStatus asks keyward's gRPC health service.
func (r *replica) healthStatus() (healthpb.HealthCheckResponse_ServingStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := r.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, err
	}
	return resp.Status, nil
}

// waitHealth waits until health reports want, and returns how long it took.
func (r *replica) waitHealth(want healthpb.HealthCheckResponse_ServingStatus, limit time.Duration) time.Duration {
	r.t.Helper()
	start := time.Now()
	for {
		got, err := r.healthStatus()
		if err == nil && got == want {
			return time.Since(start)
		}
		select {
		case err := <-r.exited:
			r.exited <- err
			r.t.Fatalf("keyward %s exited: %v\n%s", r.name, err, r.logs.String())
		default:
		}
		if time.Since(start) > limit {
			r.t.Fatalf("keyward %s: health %v (%v) after %v, want %v", r.name, got, err, limit, want)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// stop sends SIGTERM and reports anything but a clean, prompt exit (an
// earlier crash included). Later calls return the first call's result.
func (r *replica) stop() error {
	if !r.stopped {
		r.stopped = true
		r.stopErr = r.terminate()
	}
	return r.stopErr
}

func (r *replica) terminate() error {
	_ = r.cmd.Process.Signal(syscall.SIGTERM) // fails only if it already exited, which exited reports
	select {
	case err := <-r.exited:
		r.exited <- err
		if err != nil {
			return fmt.Errorf("exit after SIGTERM: %w", err)
		}
		if !strings.Contains(r.logs.String(), `"msg":"stopped"`) {
			return errors.New(`exited without logging "stopped"`)
		}
		return nil
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		return errors.New("did not stop within 10s of SIGTERM")
	}
}

// verdict is keyward's answer to one check: 200 for allowed, else the
// denial's HTTP status and reason code.
type verdict struct {
	status int
	code   string
	resp   *authv3.CheckResponse
}

func checkRequest(tok string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: http.MethodPost, Path: "/v1/chat/completions", Host: "api.openai.com",
			Headers: map[string]string{"authorization": "Bearer " + tok},
		}},
		ContextExtensions: map[string]string{"provider": "openai"},
	}}
}

// check asks keyward over gRPC, as Envoy would.
func (r *replica) check(tok string) (verdict, error) { return r.ask(checkRequest(tok)) }

// ask sends req to keyward over gRPC.
func (r *replica) ask(req *authv3.CheckRequest) (verdict, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.authz.Check(ctx, req)
	if err != nil {
		return verdict{}, err
	}
	if resp.GetStatus().GetCode() == 0 {
		return verdict{status: http.StatusOK, resp: resp}, nil
	}
	d := resp.GetDeniedResponse()
	return verdict{status: int(d.GetStatus().GetCode()), code: response{body: []byte(d.GetBody())}.errorCode(), resp: resp}, nil
}

func (vd verdict) String() string {
	if vd.status == http.StatusOK {
		return "200"
	}
	return fmt.Sprintf("%d %s", vd.status, vd.code)
}

// mustCheck checks once and wants the given answer.
func (r *replica) mustCheck(tok string, status int, code string) verdict {
	r.t.Helper()
	vd, err := r.check(tok)
	if err != nil {
		r.t.Fatalf("keyward %s: check: %v", r.name, err)
	}
	if vd.status != status || vd.code != code {
		r.t.Fatalf("keyward %s: %v, want %d %s", r.name, vd, status, code)
	}
	return vd
}

// untilAll checks tok against every replica until each answers status and
// code, and returns when the last one first did (the zero time, with the
// test failed, if one did not within limit).
func untilAll(t *testing.T, replicas []*replica, tok string, status int, code string, limit time.Duration) time.Time {
	t.Helper()
	return untilAllAsk(t, replicas, checkRequest(tok), status, code, limit)
}

// untilAllAsk is untilAll for any check request.
func untilAllAsk(t *testing.T, replicas []*replica, req *authv3.CheckRequest, status int, code string, limit time.Duration) time.Time {
	t.Helper()
	start := time.Now()
	times := make([]time.Time, len(replicas))
	lasts := make([]string, len(replicas))
	var wg sync.WaitGroup
	for i, r := range replicas {
		wg.Go(func() {
			for time.Since(start) <= limit {
				vd, err := r.ask(req)
				if err == nil && vd.status == status && vd.code == code {
					times[i] = time.Now()
					return
				}
				lasts[i] = fmt.Sprint(vd, err)
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	var last time.Time
	for i, at := range times {
		if at.IsZero() {
			t.Errorf("keyward %s: after %v still %s, want %d %s", replicas[i].name, limit, lasts[i], status, code)
			return time.Time{}
		}
		if at.After(last) {
			last = at
		}
	}
	return last
}

// stopAll stops replicas and checks their logs for secrets.
func (v *vaultEnv) stopAll(replicas ...*replica) {
	v.t.Helper()
	for _, r := range replicas {
		if err := r.stop(); err != nil {
			v.t.Errorf("keyward %s: %v", r.name, err)
		}
		assertNoSecrets(v.t, "keyward "+r.name+"'s log", r.logs.String(), v.secrets...)
	}
}

// TestVaultPropagation runs two replicas on one Vault, one logged in with a
// token and one with AppRole, and measures how fast a change made with
// keyward's CLI reaches both, then a change made directly in Vault.
func TestVaultPropagation(t *testing.T) {
	v := newVaultEnv(t)
	v.baoPut("providers/openai", "kind=openai", "key_a="+v.providerKey("a"))
	for _, g := range []string{"eng", "gdel", "gdis", "gdirect"} {
		v.kw("group", "add", g)
	}
	v.kw("user", "add", "alice", "-groups", "eng,gdel,gdis,gdirect")
	v.kw("user", "add", "bob", "-groups", "eng")
	tokDel, tokDis, tokRev, tokBob, tokDirect := v.token("alice", "gdel"), v.token("alice", "gdis"), v.token("alice", "eng"), v.token("bob", "eng"), v.token("alice", "gdirect")

	roleID, secretID := v.bao.AppRole(t, "keyward-serve", []string{"keyward"}, 0, 0)
	secretFile := filepath.Join(v.dir, "secret-id")
	writeFile(t, secretFile, secretID+"\n")
	v.secrets = append(v.secrets, secretID)
	approle := fmt.Sprintf("{method: approle, role_id: %q, secret_id_file: %q}", roleID, secretFile)

	// Default cache TTL (30s): only the change marker can propagate a
	// change within 2 s.
	a := v.startReplica("a-token", replicaOptions{})
	b := v.startReplica("b-approle", replicaOptions{auth: approle})
	a.waitHealth(healthpb.HealthCheckResponse_SERVING, 20*time.Second)
	b.waitHealth(healthpb.HealthCheckResponse_SERVING, 20*time.Second)
	both := []*replica{a, b}
	for _, tok := range []string{tokDel, tokDis, tokRev, tokBob, tokDirect} {
		untilAll(t, both, tok, 200, "", 2*time.Second)
	}

	tests := []struct {
		name   string
		cli    []string
		tok    string
		status int
		code   string
	}{
		{"group deleted", []string{"group", "delete", "gdel"}, tokDel, 403, "group_deleted"},
		{"group disabled", []string{"group", "set", "gdis", "-disabled"}, tokDis, 403, "group_disabled"},
		{"token revoked", []string{"token", "revoke", tokRev[3:19]}, tokRev, 401, "token_revoked"},
		{"user disabled", []string{"user", "set", "bob", "-disabled"}, tokBob, 403, "user_disabled"},
	}
	for _, tc := range tests {
		// Measured from the write's success (the command's return): the
		// command's own start (a process, a Vault login) is not
		// propagation.
		v.kw(tc.cli...)
		start := time.Now()
		at := untilAll(t, both, tc.tok, tc.status, tc.code, 3*time.Second)
		if at.IsZero() {
			continue
		}
		took := at.Sub(start)
		t.Logf("propagation, %-14s (keyward %s): both replicas deny %s %v after the CLI command returned",
			tc.name, strings.Join(tc.cli[:2], " "), tc.code, took.Round(time.Millisecond))
		if took > 2*time.Second {
			t.Errorf("%s: took %v, want at most 2s", tc.name, took)
		}
	}
	// The other tokens are untouched.
	a.mustCheck(tokDirect, 200, "")
	b.mustCheck(tokDirect, 200, "")
	v.stopAll(a, b)

	// A change made directly in Vault, past keyward's marker, takes effect
	// when the cached record's TTL runs out: 3s here.
	const ttl = 3 * time.Second
	a = v.startReplica("a-token-ttl3s", replicaOptions{ttl: ttl})
	b = v.startReplica("b-approle-ttl3s", replicaOptions{auth: approle, ttl: ttl})
	a.waitHealth(healthpb.HealthCheckResponse_SERVING, 20*time.Second)
	b.waitHealth(healthpb.HealthCheckResponse_SERVING, 20*time.Second)
	both = []*replica{a, b}
	untilAll(t, both, tokDirect, 200, "", 2*time.Second)
	start := time.Now()
	v.baoPut("groups/gdirect", "disabled=true")
	if at := untilAll(t, both, tokDirect, 403, "group_disabled", 8*time.Second); !at.IsZero() {
		took := at.Sub(start)
		t.Logf("propagation, group disabled directly in Vault (bao kv put, not through keyward): both replicas deny %v after; cache.ttl %v + poll 1s here (with the default cache.ttl of 30s it takes up to 30s)",
			took.Round(time.Millisecond), ttl)
		if took > ttl+2*time.Second {
			t.Errorf("direct change took %v, want at most %v", took, ttl+2*time.Second)
		}
	}
	v.stopAll(a, b)
}

// TestVaultIdleTraffic counts what an idle replica costs Vault with 10 and
// with 10,000 groups: the same few requests per poll interval.
func TestVaultIdleTraffic(t *testing.T) {
	v := newVaultEnv(t)
	v.baoPut("providers/openai", "kind=openai", "key_a="+v.providerKey("a"))
	v.seedGroups(0, 10)
	v.kw("user", "add", "alice", "-groups", groupName(0))
	tok := v.token("alice", groupName(0))

	const poll = time.Second
	idle := func(label string) float64 {
		t.Helper()
		r := v.startReplica("idle-"+label, replicaOptions{poll: poll})
		r.waitHealth(healthpb.HealthCheckResponse_SERVING, 20*time.Second)
		r.mustCheck(tok, 200, "") // puts the provider in the poll set
		time.Sleep(1200 * time.Millisecond)
		// Start the window half a poll interval after a poll, so that it
		// holds exactly 10 polls whatever their phase.
		from := v.proxy.lastAt().Add(poll / 2)
		const window = 10 * time.Second
		time.Sleep(time.Until(from.Add(window + 200*time.Millisecond)))
		reqs := v.proxy.between(from, from.Add(window))
		perMin := float64(len(reqs)) * float64(time.Minute) / float64(window)
		t.Logf("idle, %s groups: %d Vault requests in %v = %.0f/min: %v", label, len(reqs), window, perMin, countPaths(reqs))
		v.stopAll(r)
		return perMin
	}
	small := idle("10")

	start := time.Now()
	v.seedGroups(10, 10_000)
	sec, err := v.bao.Client(t, v.adminToken).Logical().ListWithContext(t.Context(), vaultMount+"/metadata/groups/")
	if err != nil || sec == nil {
		t.Fatalf("list groups: %v", err)
	}
	if n := len(sec.Data["keys"].([]any)); n != 10_000 {
		t.Fatalf("%d groups in Vault, want 10000", n)
	}
	t.Logf("seeded 9,990 more groups with 16 writers in %v", time.Since(start).Round(time.Millisecond))
	large := idle("10,000")

	t.Logf("idle Vault requests/min: 10 groups = %.0f, 10,000 groups = %.0f (poll_interval %v, 1 provider in use)", small, large, poll)
	ceiling := 2 * (float64(time.Minute) / float64(poll)) * (1 + 1)
	for _, got := range []float64{small, large} {
		if got > ceiling {
			t.Errorf("idle replica: %.0f Vault requests/min, want at most %.0f", got, ceiling)
		}
		if got < float64(time.Minute)/float64(poll) {
			t.Errorf("idle replica: %.0f Vault requests/min, fewer than one marker read per poll interval: is the poller running?", got)
		}
	}
	if d := large - small; d > 2 || d < -2 {
		t.Errorf("idle requests/min grew with the number of groups: %.0f with 10, %.0f with 10,000", small, large)
	}
}

// TestVaultForgedTokensNoVaultRequests sends 1,000 forged, random and
// truncated tokens: all are refused offline, with no request to Vault.
func TestVaultForgedTokensNoVaultRequests(t *testing.T) {
	v := newVaultEnv(t)
	v.baoPut("providers/openai", "kind=openai", "key_a="+v.providerKey("a"))
	v.kw("group", "add", "eng")
	v.kw("user", "add", "alice", "-groups", "eng")
	tok := v.token("alice", "eng")
	fresh := v.token("alice", "eng")

	r := v.startReplica("quiet", replicaOptions{poll: time.Hour})
	r.waitHealth(healthpb.HealthCheckResponse_SERVING, 20*time.Second)
	v.proxy.waitQuiet(t, 700*time.Millisecond, 10*time.Second)

	forged := forgedTokens(t, tok, 1000)
	before := v.proxy.count()
	codes := map[string]int{}
	for _, f := range forged {
		vd, err := r.check(f)
		if err != nil {
			t.Fatalf("check: %v", err)
		}
		if vd.status != 401 {
			t.Fatalf("forged token: %v, want 401", vd)
		}
		codes[vd.code]++
	}
	sent := v.proxy.count() - before
	t.Logf("forged tokens: %d checks, answers %v, Vault requests during the phase: %d", len(forged), codes, sent)
	if sent != 0 {
		t.Errorf("forged tokens caused %d Vault requests: %v", sent, countPaths(v.proxy.since(before)))
	}

	// A valid token never seen before costs exactly its records' reads.
	before = v.proxy.count()
	r.mustCheck(fresh, 200, "")
	got := countPaths(v.proxy.since(before))
	want := map[string]int{}
	for _, p := range []string{"tokens/" + fresh[3:19], "users/alice", "groups/eng", "providers/openai"} {
		want["GET /v1/"+vaultMount+"/data/"+p]++
	}
	// Whether alice has credentials of her own (the group allows them).
	want["GET /v1/"+vaultMount+"/metadata/users/alice/credentials?list=true"]++
	t.Logf("a valid, never seen token: Vault requests %v", got)
	if !maps.Equal(got, want) {
		t.Errorf("a valid never-seen token caused %v, want exactly %v", got, want)
	}
	before = v.proxy.count()
	r.mustCheck(fresh, 200, "")
	if n := v.proxy.count() - before; n != 0 {
		t.Errorf("a cached token caused %d Vault requests", n)
	}
	v.stopAll(r)
}

// forgedTokens returns n tokens keyward must refuse without a lookup:
// random ones of the right shape, real with one character changed,
// truncated, and well-formed ones signed by another key.
func forgedTokens(t *testing.T, real string, n int) []string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	var out []string
	raw := make([]byte, 48)
	for i := range n * 4 / 10 {
		rand.Read(raw)
		if i%2 == 0 {
			// Version 1 and the store's signing key id: only the tag is wrong.
			raw[12], raw[13] = 1, 1
		}
		out = append(out, token.Prefix+base64.RawURLEncoding.EncodeToString(raw))
	}
	body := real[len(token.Prefix):]
	for i := range n * 3 / 10 {
		pos := i % len(body)
		b := []byte(body)
		b[pos] = alphabet[(strings.IndexByte(alphabet, b[pos])+1+i/len(body))%len(alphabet)]
		out = append(out, token.Prefix+string(b))
	}
	for i := range n * 2 / 10 {
		out = append(out, real[:len(token.Prefix)+i%(len(real)-len(token.Prefix))])
	}
	for i := len(out); i < n; i++ {
		key, err := token.NewSigningKey(uint8(1 + i%2)) // the store's key id, and another
		if err != nil {
			t.Fatal(err)
		}
		ring, err := token.NewKeyring([]token.SigningKey{key})
		if err != nil {
			t.Fatal(err)
		}
		m, err := ring.Mint()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Token)
	}
	return out
}

// TestVaultRotation rotates the provider key with Vault's CLI while
// requests flow through the real Envoy to a fake provider.
func TestVaultRotation(t *testing.T) {
	envoytest.Binary(t) // skips (or fails in CI) before any set-up when Envoy is missing
	v := newVaultEnv(t)
	keyA, keyB, keyC := v.providerKey("a"), v.providerKey("b"), v.providerKey("c")
	v.baoPut("providers/openai", "kind=openai", "key_a="+keyA)
	v.kw("group", "add", "eng")
	v.kw("user", "add", "alice", "-groups", "eng")
	tok := v.token("alice", "eng")

	prov := fakeprovider.New()
	upstream := httptest.NewServer(prov)
	t.Cleanup(upstream.Close)
	listen, admin := envoytest.FreeAddr(t), envoytest.FreeAddr(t)
	r := v.startReplica("rotation", replicaOptions{poll: time.Second, extra: fmt.Sprintf(
		"routes:\n  - {provider: openai, path_prefix: /openai/, upstream: %s}\nenvoy:\n  listen: %s\n  admin: %s\n", upstream.URL, listen, admin)})
	r.waitHealth(healthpb.HealthCheckResponse_SERVING, 20*time.Second)
	bootstrap, err := exec.Command(cliBin, "envoy-config", "-config", r.config).Output()
	if err != nil {
		t.Fatalf("envoy-config: %v", err)
	}
	envoytest.Start(t, bootstrap, admin)

	// send makes one request through Envoy and returns the Authorization
	// header the provider received.
	send := func() string {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+listen+"/openai/v1/chat/completions", strings.NewReader(chatBody))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("authorization", "Bearer "+tok)
		req.Header.Set("content-type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("through Envoy: %d %s", resp.StatusCode, body)
		}
		last, ok := prov.Last()
		if !ok {
			t.Fatal("the provider received nothing")
		}
		return last.Header.Get("authorization")
	}
	for range 5 {
		if got := send(); got != "Bearer "+keyA {
			t.Fatalf("before rotation the provider saw %q, want key_a", redact(got, v.secrets))
		}
	}

	// Replace the record: key_b only.
	v.baoPut("providers/openai", "kind=openai", "key_b="+keyB)
	start := time.Now() // the write succeeded
	for send() != "Bearer "+keyB {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the provider never saw key_b")
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("rotation: the provider sees key_b %v after `bao kv put` returned (vault.poll_interval 1s)", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("rotation took %v, want at most 2s", took)
	}
	for i := range 50 {
		if got := send(); got != "Bearer "+keyB {
			t.Fatalf("request %d after rotation carried %q, want key_b", i, redact(got, v.secrets))
		}
	}

	// Two keys: requests are spread across them.
	v.baoPut("providers/openai", "kind=openai", "key_b="+keyB, "key_c="+keyC)
	waitFor(t, 3*time.Second, func() bool { return send() == "Bearer "+keyC })
	seen := map[string]int{}
	for range 20 {
		seen[redact(send(), v.secrets)]++
	}
	t.Logf("two keys: 20 requests carried %v", seen)
	if seen["Bearer <key b>"] < 5 || seen["Bearer <key c>"] < 5 || len(seen) != 2 {
		t.Errorf("20 requests with key_b and key_c: %v, want each at least 5 times and nothing else", seen)
	}
	var ids []string
	for range 4 {
		vd := r.mustCheck(tok, 200, "")
		meta := vd.resp.GetDynamicMetadata()
		id := meta.GetFields()["key_id"].GetStringValue()
		ids = append(ids, id)
		if id != "b" && id != "c" {
			t.Errorf("dynamic metadata key_id %q, want b or c", id)
		}
		js, err := protojson.Marshal(meta)
		if err != nil {
			t.Fatal(err)
		}
		assertNoSecrets(t, "dynamic metadata", string(js), keyA, keyB, keyC, tok)
	}
	t.Logf("two keys: key_id in the dynamic metadata of 4 direct checks: %v (no key value in it)", ids)
	v.stopAll(r)
}

// redact names the test's keys instead of showing them.
func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		if strings.HasPrefix(sec, "sk-vault-") {
			name := strings.SplitN(strings.TrimPrefix(sec, "sk-vault-"), "-", 2)[0]
			s = strings.ReplaceAll(s, sec, "<key "+name+">")
		}
	}
	return s
}

// TestVaultFailStatic runs keyward (AppRole) through a Vault that is down
// at start, then stops under load, then comes back empty and is re-seeded.
func TestVaultFailStatic(t *testing.T) {
	v := newVaultEnv(t)
	v.baoPut("providers/openai", "kind=openai", "key_a="+v.providerKey("a"))
	v.kw("group", "add", "eng")
	v.kw("group", "add", "ops")
	v.kw("user", "add", "alice", "-groups", "eng,ops")
	tokens := make([]string, 20)
	for i := range tokens {
		tokens[i] = v.token("alice", "eng")
	}
	fresh, tokOps := v.token("alice", "eng"), v.token("alice", "ops")

	const role, appRoleTTL = "keyward-serve", time.Hour
	roleID, secretID := "keyward-serve-"+rand.Text(), rand.Text()
	v.secrets = append(v.secrets, secretID)
	v.fixedAppRole(role, roleID, secretID, appRoleTTL)
	secretFile := filepath.Join(v.dir, "secret-id")
	writeFile(t, secretFile, secretID+"\n")
	snap := v.snapshot()

	// a) keyward starts while Vault is down.
	v.bao.Stop()
	metrics := envoytest.FreeAddr(t)
	r := v.startReplica("static", replicaOptions{
		auth:     fmt.Sprintf("{method: approle, role_id: %q, secret_id_file: %q}", roleID, secretFile),
		ttl:      2 * time.Second,
		maxStale: 10 * time.Minute,
		extra:    fmt.Sprintf("metrics: {listen: %s}\n", metrics),
	})
	r.waitHealth(healthpb.HealthCheckResponse_NOT_SERVING, 20*time.Second)
	r.mustCheck(tokens[0], 503, "store_unavailable")
	time.Sleep(500 * time.Millisecond)
	if st, err := r.healthStatus(); err != nil || st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health with Vault down: %v %v, want NOT_SERVING", st, err)
	}
	start := time.Now()
	v.bao.Restart(t)
	v.reseed(snap, role, roleID, secretID, appRoleTTL)
	r.waitHealth(healthpb.HealthCheckResponse_SERVING, 10*time.Second)
	t.Logf("fail static, start with Vault down: NOT_SERVING and 503 store_unavailable; SERVING %v after Vault was restarted (restart + re-seed took part of that)",
		time.Since(start).Round(time.Millisecond))
	for _, tok := range append(slices.Clone(tokens), tokOps) {
		r.mustCheck(tok, 200, "")
	}

	// b) 8 checkers on 20 cached tokens while Vault goes away for ~6s.
	const (
		before = iota
		during
		after
	)
	var phase atomic.Int32
	type tally struct{ allowed, denied, errs atomic.Int64 }
	var counts [3]tally
	var other sync.Map // denial answers seen, for the log
	ctx, stopLoad := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i++ {
				p := phase.Load()
				vd, err := r.check(tokens[i%len(tokens)])
				switch {
				case err != nil:
					counts[p].errs.Add(1)
				case vd.status == 200:
					counts[p].allowed.Add(1)
				default:
					counts[p].denied.Add(1)
					other.Store(fmt.Sprintf("phase %d: %v", p, vd), true)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopLoad()
			wg.Wait()
		}
	}
	t.Cleanup(stop) // before keyward stops, should the test end early
	time.Sleep(time.Second)
	snap = v.snapshot()
	staleBefore := staleServes(t, "http://"+metrics+"/metrics")
	phase.Store(during)
	v.bao.Stop()
	outage := time.Now()
	time.Sleep(3 * time.Second) // past the 2s TTL: the stale path serves
	r.mustCheck(fresh, 503, "store_unavailable")
	time.Sleep(3 * time.Second)
	restarted := time.Now()
	v.bao.Restart(t)
	v.reseed(snap, role, roleID, secretID, appRoleTTL)
	phase.Store(after)
	outageLen := time.Since(outage)
	reseeded := time.Since(restarted)

	// The stale path was really taken: records past their TTL could not
	// be refreshed during the outage (keyward sends nothing while it knows
	// no active node) and were served from the cache, as its metrics count.
	stale := diffCounts(staleServes(t, "http://"+metrics+"/metrics"), staleBefore)
	t.Logf("fail static: stale serves by kind during and after the outage: %v", stale)
	for _, kind := range []string{"token", "user", "group"} {
		if stale[kind] == 0 {
			t.Errorf("no %s record was served stale during the outage: the stale path was not exercised", kind)
		}
	}

	// c) keyward resyncs with the restarted Vault without a restart of its
	// own (its token died with the dev server: it must log in again), and
	// a change made then reaches it within 2s.
	marker := "GET /v1/" + vaultMount + "/data/system/changes"
	if resynced := v.proxy.waitAnswered(restarted, marker, http.StatusOK, 10*time.Second); resynced.IsZero() {
		t.Errorf("keyward did not read the change marker successfully within 10s of Vault's restart (re-seeded after %v): did it log in again? Vault's answers to it since, by status: %v",
			reseeded.Round(time.Millisecond), countStatuses(v.proxy.between(restarted, time.Now())))
	} else {
		t.Logf("fail static: keyward read the change marker again %v after Vault was restarted (restart + re-seed took %v)",
			resynced.Sub(restarted).Round(time.Millisecond), reseeded.Round(time.Millisecond))
	}
	time.Sleep(300 * time.Millisecond) // the poll that read the marker drops the caches
	r.mustCheck(tokOps, 200, "")       // its records cached again, from the new Vault
	v.kw("group", "set", "ops", "-disabled")
	start = time.Now() // the write succeeded
	if at := untilAll(t, []*replica{r}, tokOps, 403, "group_disabled", 4*time.Second); !at.IsZero() {
		took := at.Sub(start)
		t.Logf("fail static, after Vault came back: group disabled with the CLI, denied %v after the command returned", took.Round(time.Millisecond))
		if took > 2*time.Second {
			t.Errorf("change after Vault came back took %v, want at most 2s", took)
		}
	}
	time.Sleep(time.Second)
	stop()

	names := []string{"before", "during", "after"}
	for p := range counts {
		c := &counts[p]
		t.Logf("fail static, load %-6s the outage: %d allowed, %d denied, %d errors", names[p], c.allowed.Load(), c.denied.Load(), c.errs.Load())
	}
	t.Logf("fail static: Vault down (stopped, restarted, re-seeded) for %v; cache.ttl 2s, max_stale 10m", outageLen.Round(time.Millisecond))
	other.Range(func(k, _ any) bool { t.Logf("  denial seen: %v", k); return true })
	for p := range counts {
		c := &counts[p]
		total := c.allowed.Load() + c.denied.Load() + c.errs.Load()
		if total == 0 {
			t.Errorf("no checks %s the outage", names[p])
			continue
		}
		if share := float64(c.allowed.Load()) / float64(total); share < 0.99 {
			t.Errorf("%s the outage: %.2f%% of checks with cached tokens allowed, want at least 99%%", names[p], 100*share)
		}
	}
	v.stopAll(r)
}

// countingProxy is a reverse proxy in front of OpenBao that records every
// request keyward sends. While OpenBao is stopped it drops connections, as
// an unreachable Vault would.
type countingProxy struct {
	URL string

	mu   sync.Mutex
	reqs []proxied
}

type proxied struct {
	at     time.Time // when the answer was sent (or the connection dropped)
	what   string    // method and path, e.g. "GET /v1/keyward/data/system/changes"
	status int       // Vault's status; 0 when the proxy dropped the connection
}

// statusWriter remembers the status the proxy answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func newCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ErrorHandler = func(http.ResponseWriter, *http.Request, error) { panic(http.ErrAbortHandler) }
	p := &countingProxy{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		what := r.Method + " " + r.URL.Path
		if r.URL.RawQuery != "" {
			what += "?" + r.URL.RawQuery
		}
		sw := &statusWriter{ResponseWriter: w}
		defer func() { // also when the error handler drops the connection
			p.mu.Lock()
			p.reqs = append(p.reqs, proxied{at: time.Now(), what: what, status: sw.status})
			p.mu.Unlock()
		}()
		rp.ServeHTTP(sw, r)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *countingProxy) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.reqs)
}

func (p *countingProxy) since(n int) []proxied {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.reqs[n:])
}

func (p *countingProxy) lastAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.reqs) == 0 {
		return time.Now()
	}
	return p.reqs[len(p.reqs)-1].at
}

// between returns the requests received in [from, to).
func (p *countingProxy) between(from, to time.Time) []proxied {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []proxied
	for _, r := range p.reqs {
		if !r.at.Before(from) && r.at.Before(to) {
			out = append(out, r)
		}
	}
	return out
}

// waitAnswered waits until Vault has answered what (method and path) with
// status, after from, and returns when; the zero time if not within limit.
func (p *countingProxy) waitAnswered(from time.Time, what string, status int, limit time.Duration) time.Time {
	for start := time.Now(); time.Since(start) <= limit; time.Sleep(20 * time.Millisecond) {
		for _, r := range p.between(from, time.Now().Add(time.Second)) {
			if r.what == what && r.status == status {
				return r.at
			}
		}
	}
	return time.Time{}
}

// waitQuiet waits until no request has come for d.
func (p *countingProxy) waitQuiet(t *testing.T, d, limit time.Duration) {
	t.Helper()
	start := time.Now()
	for time.Since(p.lastAt()) < d {
		if time.Since(start) > limit {
			t.Fatalf("keyward kept sending Vault requests for %v", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countStatuses counts requests by Vault's status (0: connection dropped).
func countStatuses(reqs []proxied) map[int]int {
	out := map[int]int{}
	for _, r := range reqs {
		out[r.status]++
	}
	return out
}

func countPaths(reqs []proxied) map[string]int {
	out := map[string]int{}
	for _, r := range reqs {
		out[r.what]++
	}
	return out
}

// TestVaultServeAcrossRenewals: keyward serve on an AppRole token of 2 s TTL
// and 6 s max TTL keeps serving for 14 s — several renewals and at least
// two logins after the first — and every read it makes of Vault in that
// time succeeds (fail-static must not be what carries it).
func TestVaultServeAcrossRenewals(t *testing.T) {
	v := newVaultEnv(t)
	v.baoPut("providers/openai", "kind=openai", "key_a="+v.providerKey("a"))
	v.kw("group", "add", "eng")
	v.kw("user", "add", "alice", "-groups", "eng")
	tok := v.token("alice", "eng")
	roleID, secretID := v.bao.AppRole(t, "short", []string{"keyward"}, 2*time.Second, 6*time.Second)
	v.secrets = append(v.secrets, secretID)
	secretFile := filepath.Join(v.dir, "short-secret-id")
	writeFile(t, secretFile, secretID+"\n")
	// A cache TTL of 0.5 s: records are read from Vault again and again,
	// with whichever Vault token keyward holds at that moment.
	r := v.startReplica("short", replicaOptions{
		auth: fmt.Sprintf("{method: approle, role_id: %q, secret_id_file: %q}", roleID, secretFile),
		poll: 200 * time.Millisecond,
		ttl:  500 * time.Millisecond,
	})
	r.waitHealth(healthpb.HealthCheckResponse_SERVING, 20*time.Second)
	from := time.Now()
	checks, failed := 0, 0
	for time.Since(from) < 14*time.Second {
		vd, err := r.check(tok)
		checks++
		if err != nil || vd.status != 200 {
			failed++
			t.Errorf("check %d at %v: %v %v", checks, time.Since(from).Round(time.Millisecond), vd, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	reads, refused := 0, 0
	for _, p := range v.proxy.between(from, time.Now()) {
		if strings.Contains(p.what, "/v1/keyward/") {
			reads++
			// A list of an empty folder (a user without credentials of
			// their own) is OpenBao's 404: an answer, not a refusal.
			emptyList := p.status == http.StatusNotFound && strings.Contains(p.what, "?list=true")
			if p.status != http.StatusOK && !emptyList {
				refused++
				t.Errorf("Vault answered %d to %s", p.status, p.what)
			}
		}
	}
	logins := strings.Count(r.logs.String(), `"msg":"vault login"`)
	t.Logf("14 s on a 2 s/6 s AppRole token: %d checks, %d failed; %d Vault reads, %d refused; %d logins", checks, failed, reads, refused, logins)
	if logins < 3 {
		t.Errorf("%d logins in 14 s with a 6 s max TTL: keyward did not log in again", logins)
	}
	if reads < 20 {
		t.Errorf("only %d Vault reads: the cache TTL did not make keyward read with its current token", reads)
	}
	v.stopAll(r)
}
