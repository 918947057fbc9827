package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keyward/keyward/envoy/envoytest"
	"github.com/keyward/keyward/internal/fakeprovider"
)

// TestVaultHang: OpenBao hangs (SIGSTOP: connections are accepted and never
// answered, unlike a dead server's refusals) for about 3 s while clients
// send requests with cached tokens through the real Envoy to keyward, with
// cache.ttl 1s so that every cached record expires during the stall. At
// least 99% of the requests go through on last-known-good records, and
// every refusal is keyward's own answer (its JSON body and
// x-keyward-reason), never Envoy's bare 503 after its authz timeout; a
// token never seen before is refused with keyward's 503 store_unavailable.
func TestVaultHang(t *testing.T) {
	envoytest.Binary(t) // skips (or fails in CI) before any set-up when Envoy is missing
	v := newVaultEnv(t)
	v.baoPut("providers/openai", "kind=openai", "key_a="+v.providerKey("a"))
	v.kw("group", "add", "eng")
	v.kw("user", "add", "alice", "-groups", "eng")
	tokens := make([]string, 8)
	for i := range tokens {
		tokens[i] = v.token("alice", "eng")
	}
	fresh := v.token("alice", "eng") // never used before the stall

	prov := fakeprovider.New()
	upstream := httptest.NewServer(prov)
	t.Cleanup(upstream.Close)
	listen, admin, metrics := envoytest.FreeAddr(t), envoytest.FreeAddr(t), envoytest.FreeAddr(t)
	r := v.startReplica("hang", replicaOptions{ttl: time.Second, extra: fmt.Sprintf(
		"routes:\n  - {provider: openai, path_prefix: /openai/, upstream: %s}\nenvoy:\n  listen: %s\n  admin: %s\nmetrics: {listen: %s}\n",
		upstream.URL, listen, admin, metrics)})
	r.waitHealth(healthpb.HealthCheckResponse_SERVING, 20*time.Second)
	bootstrap, err := exec.Command(cliBin, "envoy-config", "-config", r.config).Output()
	if err != nil {
		t.Fatalf("envoy-config: %v", err)
	}
	envoytest.Start(t, bootstrap, admin)

	load := newHangLoad("http://"+listen+"/openai/v1/chat/completions", tokens)
	for _, tok := range tokens { // every token's records cached
		if a := load.send(tok); a.status != http.StatusOK {
			t.Fatalf("warm-up through Envoy: %v", a)
		}
	}
	load.start(8)
	t.Cleanup(load.stop) // before keyward and Envoy stop, should the test end early
	waitFor(t, 30*time.Second, func() bool { return load.phases[hangBefore].sent.Load() >= 50 })

	stale := func() map[string]float64 { return staleServes(t, "http://"+metrics+"/metrics") }
	staleBefore := stale()
	load.phase.Store(hangDuring)
	v.bao.Pause(t)
	paused := time.Now()
	// The stall lasts about 3 s, and at least until every kind of record
	// has expired in the cache and been served stale.
	waitFor(t, 60*time.Second, func() bool {
		if time.Since(paused) < 3*time.Second {
			return false
		}
		now := stale()
		for kind, n := range now {
			if n <= staleBefore[kind] {
				return false
			}
		}
		return len(now) == len(hangKinds)
	})
	// A token keyward has never seen: nothing to fall back on, so
	// keyward's own refusal, by the check's deadline.
	if a := load.send(fresh); a.status != http.StatusServiceUnavailable || !a.keywards() || a.code != "store_unavailable" {
		t.Errorf("a token never seen, during the stall: %v, want keyward's 503 store_unavailable", a)
	} else {
		t.Logf("hang: a token never seen before, during the stall: keyward's 503 store_unavailable after %v", a.took.Round(time.Millisecond))
	}
	stall := time.Since(paused)
	v.bao.Resume(t)
	resumed := time.Now()
	load.phase.Store(hangAfter)
	// keyward reads Vault again, and the load goes on a while after.
	waitFor(t, 30*time.Second, func() bool {
		return v.proxy.answeredSince(resumed, "/data/tokens/", http.StatusOK) && load.phases[hangAfter].sent.Load() >= 50
	})
	load.stop()

	t.Logf("hang: Vault stopped (SIGSTOP) for %v with cache.ttl 1s; stale serves during the stall by kind: %v",
		stall.Round(time.Millisecond), diffCounts(stale(), staleBefore))
	load.check(t)
	v.stopAll(r)
}

// The phases of TestVaultHang's load, by when a request was sent.
const (
	hangBefore = iota
	hangDuring
	hangAfter
)

// hangKinds are the record caches, as the metrics name them.
var hangKinds = []string{"token", "user", "group", "provider", "private_keys"}

// staleServes scrapes keyward's metrics for the stale serves of each kind
// of record.
func staleServes(t *testing.T, url string) map[string]float64 {
	t.Helper()
	_, body := get(t, url)
	samples := parseSamples(t, body)
	out := map[string]float64{}
	for _, kind := range hangKinds {
		if n, ok := samples[`keyward_cache_requests_total{kind="`+kind+`",result="stale"}`]; ok {
			out[kind] = n
		}
	}
	return out
}

func diffCounts(now, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, n := range now {
		out[k] = n - before[k]
	}
	return out
}

// answeredSince reports whether Vault has answered a request whose path
// holds part with status, since from.
func (p *countingProxy) answeredSince(from time.Time, part string, status int) bool {
	for _, q := range p.between(from, time.Now().Add(time.Second)) {
		if strings.Contains(q.what, part) && q.status == status {
			return true
		}
	}
	return false
}

// hangAnswer is what one request through Envoy got.
type hangAnswer struct {
	status int
	reason string // x-keyward-reason
	code   string // the JSON body's error.code
	err    error
	took   time.Duration
}

// keywards reports whether a refusal is keyward's own answer.
func (a hangAnswer) keywards() bool { return a.reason != "" && a.reason == a.code }

func (a hangAnswer) String() string {
	if a.err != nil {
		return "error: " + a.err.Error()
	}
	return fmt.Sprintf("%d reason=%q code=%q", a.status, a.reason, a.code)
}

// hangTally counts the answers of one phase.
type hangTally struct {
	sent, ok, refused, bare, errs atomic.Int64
	slowest                       atomic.Int64 // nanoseconds
}

// hangLoad sends requests with cached tokens through Envoy from several
// workers and counts the answers by phase.
type hangLoad struct {
	url    string
	tokens []string
	client *http.Client
	phase  atomic.Int32
	phases [3]hangTally

	mu     sync.Mutex
	denied map[string]int // refusals seen, by phase and answer, for the log

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newHangLoad(url string, tokens []string) *hangLoad {
	return &hangLoad{
		url:    url,
		tokens: tokens,
		// The timeout is a hang guard: Envoy answers within its authz
		// timeout.
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		denied: map[string]int{},
	}
}

// send makes one request with tok through Envoy.
func (l *hangLoad) send(tok string) hangAnswer {
	req, err := http.NewRequest(http.MethodPost, l.url, strings.NewReader(chatBody))
	if err != nil {
		return hangAnswer{err: err}
	}
	req.Header.Set("authorization", "Bearer "+tok)
	req.Header.Set("content-type", "application/json")
	start := time.Now()
	resp, err := l.client.Do(req)
	if err != nil {
		return hangAnswer{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return hangAnswer{
		status: resp.StatusCode,
		reason: resp.Header.Get("x-keyward-reason"),
		code:   response{body: body}.errorCode(),
		err:    err,
		took:   time.Since(start),
	}
}

// start runs n workers until stop.
func (l *hangLoad) start(n int) {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for w := range n {
		l.wg.Go(func() {
			for i := w; ctx.Err() == nil; i++ {
				p := l.phase.Load()
				l.count(p, l.send(l.tokens[i%len(l.tokens)]))
			}
		})
	}
}

// stop ends the load and waits for the workers; it is safe to call twice.
func (l *hangLoad) stop() {
	if l.cancel != nil {
		l.cancel()
	}
	l.wg.Wait()
	l.client.CloseIdleConnections()
}

func (l *hangLoad) count(phase int32, a hangAnswer) {
	c := &l.phases[phase]
	c.sent.Add(1)
	for took := int64(a.took); ; {
		old := c.slowest.Load()
		if took <= old || c.slowest.CompareAndSwap(old, took) {
			break
		}
	}
	switch {
	case a.err != nil:
		c.errs.Add(1)
	case a.status == http.StatusOK:
		c.ok.Add(1)
		return
	case a.keywards():
		c.refused.Add(1)
	default:
		c.bare.Add(1)
	}
	l.mu.Lock()
	l.denied[fmt.Sprintf("phase %d: %v", phase, a)]++
	l.mu.Unlock()
}

// check logs the counts and wants, in every phase, at least 99% of the
// requests through and every refusal keyward's own.
func (l *hangLoad) check(t *testing.T) {
	t.Helper()
	names := []string{"before", "during", "after"}
	for p := range l.phases {
		c := &l.phases[p]
		t.Logf("hang: %-6s the stall: %d sent, %d allowed, %d refused by keyward, %d refused without keyward's answer, %d errors; slowest %v",
			names[p], c.sent.Load(), c.ok.Load(), c.refused.Load(), c.bare.Load(), c.errs.Load(), time.Duration(c.slowest.Load()).Round(time.Millisecond))
	}
	l.mu.Lock()
	for _, k := range slices.Sorted(maps.Keys(l.denied)) {
		t.Logf("  refused: %s (%d times)", k, l.denied[k])
	}
	l.mu.Unlock()
	for p := range l.phases {
		c := &l.phases[p]
		sent := c.sent.Load()
		if sent == 0 {
			t.Errorf("no requests %s the stall", names[p])
			continue
		}
		if share := float64(c.ok.Load()) / float64(sent); share < 0.99 {
			t.Errorf("%s the stall: %.2f%% of %d requests with cached tokens allowed, want at least 99%%", names[p], 100*share, sent)
		}
		if n := c.bare.Load() + c.errs.Load(); n > 0 {
			t.Errorf("%s the stall: %d answers were not keyward's (Envoy's bare 503 or a failed request), want none", names[p], n)
		}
	}
}
