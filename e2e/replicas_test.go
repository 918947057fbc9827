package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/time/rate"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keyward/keyward/envoy"
	"github.com/keyward/keyward/envoy/envoytest"
	"github.com/keyward/keyward/internal/fakeprovider"
)

// The load is bounded in rate and count: a few thousand requests per
// scenario on loopback, gentle enough for a shared 2-core machine.
const (
	loadRate    = 250 // requests per second, over all workers
	loadWorkers = 8
	loadMax     = 15000 // per scenario, whatever happens
	// replicaDrain is each replica's shutdown_drain: shorter than
	// keyward's default (5s) to keep the test short, still longer than
	// Envoy's health check (every second) needs to see NOT_SERVING.
	replicaDrain = 3 * time.Second
	// authzTimeout is Envoy's timeout on a check, generous so that a
	// slow, busy machine running keyward with the race detector fails no
	// check by being slow: the test is about replicas going away.
	authzTimeout = 5 * time.Second
	// eventLimit bounds every wait for an event (a replica out of or back
	// in rotation, a process exit, a number of requests sent); it only
	// turns a hang into a failure.
	eventLimit = 60 * time.Second
)

// replicaSet is two keyward replicas on one file store behind one Envoy
// whose bootstrap envoy-config generated with both addresses.
type replicaSet struct {
	t        *testing.T
	dir      string
	upstream string
	configs  [2]string
	addrs    [2]string
	replicas [2]*replica
	env      []string
	envoy    *envoytest.Envoy
	envoyURL string
}

func newReplicaSet(t *testing.T) *replicaSet {
	t.Helper()
	envoytest.Binary(t)
	rs := &replicaSet{t: t, dir: t.TempDir(), env: childEnv("OPENAI_KEY=" + openaiKey)}
	upstream := httptest.NewServer(fakeprovider.New())
	t.Cleanup(upstream.Close)
	rs.upstream = upstream.URL
	listen, admin := envoytest.FreeAddr(t), envoytest.FreeAddr(t)
	rs.envoyURL = "http://" + listen
	for i := range rs.addrs {
		rs.addrs[i] = envoytest.FreeAddr(t)
		rs.configs[i] = rs.writeConfig(fmt.Sprintf("replica-%d.yaml", i), rs.addrs[i], listen, admin)
	}
	rs.kw("provider", "set", "openai", "-kind", "openai", "-key", "main=OPENAI_KEY")
	rs.kw("group", "add", "eng")
	rs.kw("user", "add", "alice", "-groups", "eng")
	for i := range rs.replicas {
		rs.start(i)
	}
	rs.envoy = envoytest.Start(t, []byte(rs.bootstrap(rs.configs[0])), admin)
	for i := range rs.replicas {
		rs.waitEnvoy(rs.envoy, i, true)
	}
	return rs
}

// writeConfig writes a keyward config in the set's directory (so every
// replica reads the same store.yaml) and returns its path.
func (rs *replicaSet) writeConfig(name, listen, envoyListen, envoyAdmin string) string {
	path := filepath.Join(rs.dir, name)
	writeFile(rs.t, path, fmt.Sprintf(`listen: %s
log_level: info
store: {file: store.yaml, poll_interval: 200ms}
shutdown_grace: 5s
shutdown_drain: %s
routes:
  - {provider: openai, path_prefix: /openai/, upstream: %s}
envoy: {listen: %s, admin: %s, authz_timeout: %s}
`, listen, replicaDrain, rs.upstream, envoyListen, envoyAdmin, authzTimeout))
	return path
}

// bootstrap is the Envoy bootstrap envoy-config generates from config
// for both replicas.
func (rs *replicaSet) bootstrap(config string) string {
	return rs.kwConfig(config, "envoy-config", "-authz-address", rs.addrs[0], "-authz-address", rs.addrs[1])
}

// kw runs a CLI command on the shared store.
func (rs *replicaSet) kw(args ...string) string {
	rs.t.Helper()
	return rs.kwConfig(rs.configs[0], args...)
}

func (rs *replicaSet) kwConfig(config string, args ...string) string {
	rs.t.Helper()
	cmd := exec.Command(cliBin, append(args, "-config", config)...)
	cmd.Env = rs.env
	out, err := cmd.Output()
	if err != nil {
		rs.t.Fatalf("keyward %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// start starts replica i and waits until it is SERVING.
func (rs *replicaSet) start(i int) {
	rs.t.Helper()
	rs.replicas[i] = launchReplica(rs.t, fmt.Sprintf("replica-%d", i), rs.addrs[i], rs.configs[i], rs.env)
	rs.replicas[i].waitHealth(healthpb.HealthCheckResponse_SERVING, eventLimit)
}

// inRotation reports whether Envoy's health check has replica i healthy;
// known is false when Envoy's admin could not say.
func (rs *replicaSet) inRotation(e *envoytest.Envoy, i int) (healthy, known bool) {
	flags, err := e.HostHealth(context.Background(), envoy.AuthzCluster, rs.addrs[i])
	if err != nil || flags == "" {
		return false, false
	}
	return flags == "healthy", true
}

// waitEnvoy waits until Envoy's health check has replica i healthy or
// not, and returns how long that took.
func (rs *replicaSet) waitEnvoy(e *envoytest.Envoy, i int, healthy bool) time.Duration {
	rs.t.Helper()
	return waitFor(rs.t, eventLimit, func() bool {
		got, known := rs.inRotation(e, i)
		return known && got == healthy
	})
}

// terminate sends replica i SIGTERM and waits both for Envoy to take it
// out of rotation and for its clean exit; it returns how long after the
// signal each happened.
func (rs *replicaSet) terminate(i int) (outOfRotation, exited time.Duration) {
	rs.t.Helper()
	r := rs.replicas[i]
	start := time.Now()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		rs.t.Fatalf("replica %d: SIGTERM: %v", i, err)
	}
	for outOfRotation == 0 || exited == 0 {
		if outOfRotation == 0 {
			if healthy, known := rs.inRotation(rs.envoy, i); known && !healthy {
				outOfRotation = time.Since(start)
			}
		}
		if exited == 0 {
			select {
			case err := <-r.exited:
				r.exited <- err
				exited = time.Since(start)
			default:
			}
		}
		if time.Since(start) > eventLimit {
			rs.t.Fatalf("replica %d, %v after SIGTERM: out of Envoy's rotation after %v, exited after %v (0: not yet)", i, eventLimit, outOfRotation, exited)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := r.stop(); err != nil { // it has exited: stop reports how
		rs.t.Fatalf("replica %d: %v", i, err)
	}
	return outOfRotation, exited
}

// kill sends replica i SIGKILL and waits until it is gone.
func (rs *replicaSet) kill(i int) {
	rs.t.Helper()
	r := rs.replicas[i]
	r.stopped = true
	_ = r.cmd.Process.Kill()
	err := <-r.exited
	r.exited <- err
}

// retries is how many checks Envoy has retried on another replica.
func retries(e *envoytest.Envoy) uint64 {
	n, _ := e.Counter(context.Background(), "cluster.keyward.upstream_rq_retry")
	return n
}

// load sends allowed requests through Envoy from loadWorkers workers at
// loadRate until stopped or loadMax are sent, and counts what failed.
type load struct {
	sent, failed atomic.Int64
	mu           sync.Mutex
	reasons      map[string]int
	stop         context.CancelFunc
	wg           sync.WaitGroup
}

func startLoad(t *testing.T, url, tok string) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{reasons: map[string]int{}, stop: cancel}
	limit := rate.NewLimiter(loadRate, loadWorkers)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: loadWorkers}}
	t.Cleanup(client.CloseIdleConnections)
	t.Cleanup(l.finishQuietly)
	for range loadWorkers {
		l.wg.Go(func() {
			for limit.Wait(ctx) == nil && l.sent.Add(1) <= loadMax {
				if reason := send(client, url, tok); reason != "" {
					l.failed.Add(1)
					l.mu.Lock()
					l.reasons[reason]++
					l.mu.Unlock()
				}
			}
		})
	}
	return l
}

// send makes one request and returns why it failed, "" when it did not.
func send(client *http.Client, url, tok string) string {
	req, err := http.NewRequest(http.MethodPost, url+"/openai/v1/chat/completions", strings.NewReader(chatBody))
	if err != nil {
		return err.Error()
	}
	req.Header.Set("authorization", "Bearer "+tok)
	req.Header.Set("content-type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "transport: " + err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("%d %s", resp.StatusCode, body)
	}
	return ""
}

// waitSent waits until the load has sent n requests in all.
func (l *load) waitSent(t *testing.T, n int64) {
	t.Helper()
	if n > loadMax {
		t.Fatalf("waiting for %d requests, but the load stops at %d", n, loadMax)
	}
	waitFor(t, eventLimit, func() bool { return l.sent.Load() >= n })
}

// finish stops the load and returns what was sent and what failed.
func (l *load) finish() (sent, failed int64, reasons map[string]int) {
	l.finishQuietly()
	l.mu.Lock()
	defer l.mu.Unlock()
	return min(l.sent.Load(), loadMax), l.failed.Load(), l.reasons
}

func (l *load) finishQuietly() {
	l.stop()
	l.wg.Wait()
}

// wantNoFailures fails the test when a request failed, with Envoy's
// statistics of the keyward cluster and the ext_authz filter.
func (rs *replicaSet) wantNoFailures(scenario string, sent, failed int64, reasons map[string]int) {
	rs.t.Helper()
	if failed == 0 {
		return
	}
	stats, err := rs.envoy.Stats(context.Background(), `cluster\.keyward\.|ext_authz`)
	rs.t.Errorf("%s: %d of %d requests failed: %v\nEnvoy's statistics (%v):\n%s", scenario, failed, sent, reasons, err, stats)
}

// withoutFailover is bootstrap without the keyward cluster's health check
// and without the retry policy of the ext_authz grpc_service: the
// bootstrap envoy-config generated before several replicas were
// supported.
func withoutFailover(t *testing.T, bootstrap string) string {
	t.Helper()
	var b map[string]any
	if err := yaml.Unmarshal([]byte(bootstrap), &b); err != nil {
		t.Fatal(err)
	}
	found := 0
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, k := range []string{"health_checks", "retry_policy"} {
				if _, ok := v[k]; ok {
					delete(v, k)
					found++
				}
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(b)
	if found != 2 {
		t.Fatalf("bootstrap: removed %d of health_checks and retry_policy, want both once:\n%s", found, bootstrap)
	}
	out, err := yaml.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestReplicasLoseNothing: two keyward replicas behind one real Envoy on
// the bootstrap envoy-config generates for both. Under load, a rolling
// restart (SIGTERM one, wait until it is back in rotation, then the
// other) and a SIGKILL of one replica fail no request: Envoy's gRPC
// health check takes a draining replica out of rotation before it stops,
// and a check a replica could not answer is retried on the other. The
// same SIGKILL through an Envoy whose bootstrap lacks the health check
// and the retry fails requests, which shows the load can see a loss.
//
// Every wait is for an event (Envoy's view of a host, a process exit, a
// number of requests sent), never for a stretch of time.
func TestReplicasLoseNothing(t *testing.T) {
	start := time.Now()
	rs := newReplicaSet(t)
	tok := strings.TrimSpace(rs.kw(tokenCreate("alice", "eng")...))
	// The token is on disk; wait until both replicas have read it.
	for _, r := range rs.replicas {
		waitFor(t, eventLimit, func() bool { vd, err := r.check(tok); return err == nil && vd.status == http.StatusOK })
	}
	// Until the keyward cluster has carried a request, Envoy checks the
	// replicas every no_traffic_interval (5s), not every interval (1s);
	// a replica is rescheduled at 1s only by its first check after that
	// request. Send one, then wait for 8 more checks: had one replica
	// had none of them, the other would have had 8, 1s apart, and the
	// first replica's check, due within 5s of the request, would have
	// come before the 7th. From here on both are checked every second,
	// as in production, so a drained replica leaves rotation before it
	// stops answering (were it later, the retry would still cover it).
	waitFor(t, eventLimit, func() bool { return send(http.DefaultClient, rs.envoyURL, tok) == "" })
	checks := func() uint64 {
		n, _ := rs.envoy.Counter(context.Background(), "cluster.keyward.health_check.attempt")
		return n
	}
	warm := checks() + 8
	waitFor(t, eventLimit, func() bool { return checks() >= warm })
	t.Logf("setup: 2 replicas and Envoy up, health checks every second, after %v", time.Since(start).Round(100*time.Millisecond))

	// Rolling restart.
	l := startLoad(t, rs.envoyURL, tok)
	l.waitSent(t, 200) // under way
	before := retries(rs.envoy)
	for i := range rs.replicas {
		out, exit := rs.terminate(i)
		launched := time.Now()
		rs.start(i)
		serving := time.Since(launched)
		back := serving + rs.waitEnvoy(rs.envoy, i, true)
		t.Logf("rolling restart, replica %d: out of Envoy's rotation %v after SIGTERM, exited after %v (shutdown_drain %v); restarted, SERVING after %v, back in rotation after %v",
			i, out.Round(10*time.Millisecond), exit.Round(10*time.Millisecond), replicaDrain, serving.Round(10*time.Millisecond), back.Round(10*time.Millisecond))
	}
	mark := l.sent.Load()
	l.waitSent(t, mark+200) // both restarted replicas serve
	sent, failed, reasons := l.finish()
	t.Logf("rolling restart of 2 replicas under load: %d requests sent, %d failed; Envoy retried %d checks on the other replica", sent, failed, retries(rs.envoy)-before)
	rs.wantNoFailures("rolling restart", sent, failed, reasons)

	// SIGKILL of one replica.
	l = startLoad(t, rs.envoyURL, tok)
	l.waitSent(t, 200)
	before = retries(rs.envoy)
	rs.kill(0)
	out := rs.waitEnvoy(rs.envoy, 0, false)
	mark = l.sent.Load()
	l.waitSent(t, mark+500) // the survivor alone
	sent, failed, reasons = l.finish()
	t.Logf("SIGKILL of 1 of 2 replicas under load: %d requests sent, %d failed; Envoy took the dead replica out of rotation after %v and retried %d checks on the other",
		sent, failed, out.Round(10*time.Millisecond), retries(rs.envoy)-before)
	rs.wantNoFailures("SIGKILL", sent, failed, reasons)

	// Control: the same SIGKILL through an Envoy without the health check
	// and the retry fails requests.
	rs.start(0)
	listen, admin := envoytest.FreeAddr(t), envoytest.FreeAddr(t)
	plain := envoytest.Start(t, []byte(withoutFailover(t, rs.bootstrap(rs.writeConfig("control.yaml", rs.addrs[0], listen, admin)))), admin)
	l = startLoad(t, "http://"+listen, tok)
	l.waitSent(t, 200)
	if n := l.failed.Load(); n != 0 {
		t.Fatalf("control: %d requests failed with both replicas up", n)
	}
	rs.kill(0)
	mark = l.sent.Load()
	l.waitSent(t, mark+200)
	sent, failed, _ = l.finish()
	t.Logf("control, SIGKILL without health check and retry: %d requests sent, %d failed (Envoy retried %d)", sent, failed, retries(plain))
	if failed == 0 {
		t.Errorf("control: no request failed when a replica died behind an Envoy without health check or retry; the load cannot see a loss")
	}

	for _, r := range rs.replicas {
		assertNoSecrets(t, "keyward "+r.name+"'s log", r.logs.String(), tok, openaiKey)
	}
	t.Logf("total %v", time.Since(start).Round(100*time.Millisecond))
}
