package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keyward/keyward/token"
	"github.com/keyward/keyward/vault/vaulttest"
)

// Propagation across a Raft failover. A replica polls the change marker
// every failoverPoll, so a change reaches it within one poll plus a read
// of the record: the 2s required is eight polls. Each time is measured
// from the moment the CLI command that made the change returned (its
// write was acknowledged by the active node then) to the first answer
// that shows the change; the answer is timed when it arrives, so a check
// slowed by a busy machine can only make a figure larger, never hide a
// late change. A replica that read stale records served them until its
// cache TTL ran out (30s), or for as long as its node was cut off.
const (
	failoverTarget = 2 * time.Second
	failoverPoll   = 250 * time.Millisecond
	// failoverGuard bounds each wait for something that must happen: a
	// hang guard, not a measure, and long enough to see a stale cache
	// entry (30s) run out.
	failoverGuard = time.Minute
)

// TestVaultRaftFailover runs two keyward replicas on a real three-node
// OpenBao Raft cluster (standbys answering reads, as OpenBao ships them),
// each listing the nodes from a different one, and kills the leader with
// SIGKILL. After the election, a token created, a token revoked and a
// group deleted with keyward's CLI must reach every replica within
// failoverTarget of the command's success; no replica may ever refuse a
// valid token (401 or 403) nor allow a revoked one again; the killed node
// comes back and nothing changes.
func TestVaultRaftFailover(t *testing.T) {
	c := vaulttest.StartCluster(t, 3, vaultMount)
	v := newClusterEnv(t, c)
	root := c.Active(t).Client(t, c.RootToken)
	if _, err := root.KVv2(vaultMount).Put(t.Context(), "providers/openai", map[string]any{"kind": "openai", "key_a": v.providerKey("a")}); err != nil {
		t.Fatal(err)
	}
	v.kw("group", "add", "eng")
	v.kw("group", "add", "gdel")
	v.kw("user", "add", "alice", "-groups", "eng,gdel")
	tokKeep, tokRev, tokDel := v.token("alice", "eng"), v.token("alice", "eng"), v.token("alice", "gdel")

	var replicas []*replica
	for i := range 2 {
		// Each replica lists every node, starting from a different one.
		addrs := append(slices.Clone(c.Addrs()[i:]), c.Addrs()[:i]...)
		r := v.startReplica(fmt.Sprintf("r%d", i+1), replicaOptions{
			vault: "addresses: [" + strings.Join(addrs, ", ") + "]",
			poll:  failoverPoll,
		})
		replicas = append(replicas, r)
	}
	for _, r := range replicas {
		r.waitHealth(healthpb.HealthCheckResponse_SERVING, failoverGuard)
	}
	ctx, stopProbes := context.WithCancel(t.Context())
	var probing sync.WaitGroup
	probes := map[string][]*probe{}
	for name, tok := range map[string]string{"keep": tokKeep, "revoke": tokRev, "group": tokDel} {
		probes[name] = startProbes(ctx, &probing, replicas, tok)
	}
	for _, ps := range probes {
		waitEach(t, ps, time.Time{}, "200")
	}

	leader := c.Active(t)
	killed := time.Now()
	leader.Kill()
	elected := c.Active(t)
	t.Logf("failover: killed leader %s; %s active after %v", leader.Name, elected.Name, time.Since(killed).Round(time.Millisecond))

	created := v.kwUntilOK(tokenCreate("alice", "eng")...)
	tokNew := strings.TrimSpace(created.out)
	if !strings.HasPrefix(tokNew, token.Prefix) {
		t.Fatalf("token create printed %q", tokNew)
	}
	v.secrets = append(v.secrets, tokNew)
	probes["new"] = startProbes(ctx, &probing, replicas, tokNew)
	measure(t, "token created after the failover, allowed", probes["new"], created.at, "200")
	for _, r := range replicas {
		// Each replica logs when its poll finds the new active node.
		// Until then it sends nothing: a token it has not cached (the
		// new one, if the CLI got there first) gets 503
		// store_unavailable (fail static), never 401.
		at := waitLogged(t, r, killed, "vault reachable again", "vault active node changed")
		t.Logf("failover: keyward %s used the new active node %v after the kill (poll_interval %v)", r.name, at.Sub(killed).Round(time.Millisecond), failoverPoll)
	}

	revoked := v.kwUntilOK("token", "revoke", tokRev[3:19])
	measure(t, "token revoked, denied", probes["revoke"], revoked.at, "401 token_revoked")
	deleted := v.kwUntilOK("group", "delete", "gdel")
	measure(t, "group deleted, its token denied", probes["group"], deleted.at, "403 group_deleted")

	c.Restart(t, leader)
	back := time.Now()
	for name, want := range map[string]string{"keep": "200", "new": "200", "revoke": "401 token_revoked", "group": "403 group_deleted"} {
		waitEach(t, probes[name], back, want) // answered since the restart, as before it
	}
	stopProbes()
	probing.Wait()
	v.stopAll(replicas...)
	report(t, probes, "keep", "new")
	checkNeverRefused(t, "a token valid throughout", probes["keep"], time.Time{})
	checkNeverRefused(t, "the token created after the failover", probes["new"], time.Time{})
	checkNeverAllowedAgain(t, probes["revoke"], "401 token_revoked")
	checkNeverAllowedAgain(t, probes["group"], "403 group_deleted")
}

// newClusterEnv sets a cluster up as newVaultEnv sets up a dev server: the
// example policies, an admin token for the CLI, a read-only token for
// serve, a CLI configuration that lists every node.
func newClusterEnv(t *testing.T, c *vaulttest.Cluster) *vaultEnv {
	t.Helper()
	v := &vaultEnv{t: t, baoBin: vaulttest.Binary(t), dir: t.TempDir()}
	writeExamplePolicies(t, c.WritePolicy)
	v.adminFile, v.serveFile = filepath.Join(v.dir, "admin-token"), filepath.Join(v.dir, "serve-token")
	v.adminToken = c.Token(t, []string{"keyward-admin"}, 0)
	serveToken := c.Token(t, []string{"keyward"}, 0)
	writeFile(t, v.adminFile, v.adminToken+"\n")
	writeFile(t, v.serveFile, serveToken+"\n")
	v.secrets = append(v.secrets, v.adminToken, serveToken, c.RootToken)
	v.cliConfig = filepath.Join(v.dir, "cli.yaml")
	writeFile(t, v.cliConfig, fmt.Sprintf("store: {kind: vault}\nvault:\n  addresses: [%s]\n  mount: %s\n  auth: {method: token, token_file: %q}\n",
		strings.Join(c.Addrs(), ", "), vaultMount, v.adminFile))
	return v
}

// cliRun is a successful CLI command: its output and when it returned.
type cliRun struct {
	out string
	at  time.Time
}

// kwUntilOK runs keyward's CLI until it succeeds (it fails while the
// cluster has no leader) and says when it did.
func (v *vaultEnv) kwUntilOK(args ...string) cliRun {
	v.t.Helper()
	deadline := time.Now().Add(failoverGuard)
	for attempt := 1; ; attempt++ {
		cmd := exec.Command(cliBin, append(args, "-config", v.cliConfig)...)
		cmd.Env = childEnv()
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err == nil {
			if attempt > 1 {
				v.t.Logf("keyward %s: succeeded at attempt %d", args[0]+" "+args[1], attempt)
			}
			return cliRun{out: stdout.String(), at: time.Now()}
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("keyward %s: still failing after %v: %v: %s", strings.Join(args, " "), failoverGuard, err, stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// answer is one check's outcome: a verdict ("200", "401 token_revoked")
// or a transport error.
type answer struct {
	at      time.Time
	verdict string
}

// probeEvery is how often a probe checks: fine enough to time a change
// against failoverTarget, light enough for a busy 2-core machine.
const probeEvery = 50 * time.Millisecond

// probe checks one token against one replica every probeEvery until its
// context ends, keeping every answer.
type probe struct {
	r   *replica
	mu  sync.Mutex
	all []answer
}

// startProbes starts one probe per replica for tok.
func startProbes(ctx context.Context, wg *sync.WaitGroup, replicas []*replica, tok string) []*probe {
	out := make([]*probe, len(replicas))
	for i, r := range replicas {
		p := &probe{r: r}
		out[i] = p
		wg.Go(func() {
			tick := time.NewTicker(probeEvery)
			defer tick.Stop()
			for {
				vd, err := r.check(tok)
				a := answer{at: time.Now(), verdict: vd.String()}
				if err != nil {
					a.verdict = "error"
				}
				p.mu.Lock()
				p.all = append(p.all, a)
				p.mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	return out
}

// answers returns a copy of the answers so far.
func (p *probe) answers() []answer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.all)
}

// first returns when the probe first answered want at or after since.
func (p *probe) first(since time.Time, want string) (time.Time, bool) {
	for _, a := range p.answers() {
		if !a.at.Before(since) && a.verdict == want {
			return a.at, true
		}
	}
	return time.Time{}, false
}

// waitEach waits until every probe has answered want since since, and
// returns when each first did (the zero time, with the test failed, for a
// replica that did not within failoverGuard).
func waitEach(t *testing.T, probes []*probe, since time.Time, want string) []time.Time {
	t.Helper()
	out := make([]time.Time, len(probes))
	deadline := time.Now().Add(failoverGuard)
	for i, p := range probes {
		for {
			at, ok := p.first(since, want)
			if ok {
				out[i] = at
				break
			}
			if time.Now().After(deadline) {
				a := p.answers()
				var last []string
				for _, x := range a[max(0, len(a)-3):] {
					last = append(last, x.verdict)
				}
				t.Errorf("keyward %s: no %s within %v; last answers %v", p.r.name, want, failoverGuard, last)
				break
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	return out
}

// measure waits until every replica answers want after a command that
// returned at done, logs how long each took, and fails beyond
// failoverTarget.
func measure(t *testing.T, what string, probes []*probe, done time.Time, want string) {
	t.Helper()
	var took []string
	for i, at := range waitEach(t, probes, done, want) {
		if at.IsZero() {
			took = append(took, probes[i].r.name+" never")
			continue
		}
		d := max(at.Sub(done), 0)
		took = append(took, fmt.Sprintf("%s %v", probes[i].r.name, d.Round(time.Millisecond)))
		if d > failoverTarget {
			t.Errorf("%s: keyward %s took %v after the command returned, want at most %v", what, probes[i].r.name, d, failoverTarget)
		}
	}
	t.Logf("failover propagation, %s (%s), after the command returned: %s", what, want, strings.Join(took, ", "))
}

// checkNeverRefused fails if a probe ever answered 401 or 403 at or after
// since: a 503 while no node is active is fail static, a refusal is wrong.
func checkNeverRefused(t *testing.T, what string, probes []*probe, since time.Time) {
	t.Helper()
	for _, p := range probes {
		for _, a := range p.answers() {
			if !a.at.Before(since) && (strings.HasPrefix(a.verdict, "401") || strings.HasPrefix(a.verdict, "403")) {
				t.Errorf("%s: keyward %s refused it: %s at %s", what, p.r.name, a.verdict, a.at.Format(time.StampMilli))
				break
			}
		}
	}
}

// checkNeverAllowedAgain fails if a probe answered 200 after it first
// answered denied: a replica that read a stale record would.
func checkNeverAllowedAgain(t *testing.T, probes []*probe, denied string) {
	t.Helper()
	for _, p := range probes {
		seen := false
		for _, a := range p.answers() {
			seen = seen || a.verdict == denied
			if seen && a.verdict == "200" {
				t.Errorf("keyward %s allowed again, at %s, a token it had denied (%s)", p.r.name, a.at.Format(time.StampMilli), denied)
				break
			}
		}
	}
}

// report logs how often each replica gave each answer, per token, and
// how many checks were tried and failed: for a valid token, any answer
// but 200; for a revoked one (or a deleted group's), a 200 after a denial.
func report(t *testing.T, probes map[string][]*probe, valid ...string) {
	t.Helper()
	tried, failed := 0, 0
	for _, name := range slices.Sorted(maps.Keys(probes)) {
		var parts []string
		for _, p := range probes[name] {
			counts := map[string]int{}
			denied, logged := false, 0
			for _, a := range p.answers() {
				counts[a.verdict]++
				tried++
				switch {
				case slices.Contains(valid, name):
					if a.verdict != "200" {
						failed++
						if logged++; logged <= 5 {
							t.Logf("failover checks, token %q: keyward %s answered %s at %s", name, p.r.name, a.verdict, a.at.Format(time.StampMilli))
						}
					}
				case a.verdict == "200":
					if denied {
						failed++
					}
				default:
					denied = true
				}
			}
			parts = append(parts, fmt.Sprintf("%s %v", p.r.name, counts))
		}
		t.Logf("failover checks, token %q: %s", name, strings.Join(parts, "; "))
	}
	t.Logf("failover checks: %d tried, %d failed (valid tokens %v: any answer but 200; others: 200 after a denial)", tried, failed, valid)
}

// waitLogged waits until r has logged one of msgs at or after since, and
// returns the time in that log line.
func waitLogged(t *testing.T, r *replica, since time.Time, msgs ...string) time.Time {
	t.Helper()
	deadline := time.Now().Add(failoverGuard)
	for {
		for line := range strings.Lines(r.logs.String()) {
			var entry struct {
				Time time.Time `json:"time"`
				Msg  string    `json:"msg"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && slices.Contains(msgs, entry.Msg) && !entry.Time.Before(since) {
				return entry.Time
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("keyward %s: logged none of %q within %v", r.name, msgs, failoverGuard)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
