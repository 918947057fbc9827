package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/keyward/keyward/envoy"
	"github.com/keyward/keyward/internal/freeport"
	"github.com/keyward/keyward/internal/loadrig"
)

// targetEnvoyAddedP99 bounds keyward's added p99 through real Envoy, as a
// multiple of the floor's (issue 13).
const targetEnvoyAddedP99 = 1.2

// envoyModes are the three Envoys: no ext_authz at all, ext_authz to the
// floor, ext_authz to keyward.
var envoyModes = []string{"none", "floor", "keyward"}

// wrkScript drives Envoy with a chat completion per request, each with the
// next of the tokens in the file given after "--", every connection
// starting at its own place; done prints what envoyRun reads.
const wrkScript = `
local tokens = {}
local i = 0
local body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = "Bearer " .. line end
  i = math.random(#tokens)
end
function request()
  i = i % #tokens + 1
  return wrk.format("POST", "/v1/chat/completions",
    {["Authorization"] = tokens[i], ["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  io.write(string.format("KW requests=%d non2xx=%d errors=%d p50=%d p99=%d\n", summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`

// wrkResult is one wrk run's figures; latencies in µs.
type wrkResult struct {
	Requests, Non2xx, Errors int64
	P50, P99                 float64
	RPS                      float64
}

// parseWrk reads the line the script's done prints.
func parseWrk(out string, d time.Duration) (wrkResult, error) {
	for line := range strings.Lines(out) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "KW ")
		if !ok {
			continue
		}
		var r wrkResult
		for f := range strings.FieldsSeq(rest) {
			k, v, _ := strings.Cut(f, "=")
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk output %q: %w", f, err)
			}
			switch k {
			case "requests":
				r.Requests = n
			case "non2xx":
				r.Non2xx = n
			case "errors":
				r.Errors = n
			case "p50":
				r.P50 = float64(n)
			case "p99":
				r.P99 = float64(n)
			}
		}
		r.RPS = float64(r.Requests) / d.Seconds()
		return r, nil
	}
	return wrkResult{}, fmt.Errorf("no result line in wrk's output: %q", out)
}

// envoyLoad runs the Envoy comparison: three Envoys in front of one
// loopback upstream, driven in turn by wrk over the sampled tokens, rounds
// in rotated order, and prints keyward's added p99 against the floor's.
func envoyLoad(ctx context.Context, o *options, progress func(string, ...any), dir string, tokens []string, servers map[string]*server, stdout io.Writer) error {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return fmt.Errorf("wrk: %w (scripts/setup.sh installs it)", err)
	}
	envoyBin, err := filepath.Abs(o.envoy)
	if err != nil {
		return err
	}
	script := filepath.Join(dir, "tokens.lua")
	tokFile := filepath.Join(dir, "tokens.txt")
	if err := os.WriteFile(script, []byte(wrkScript), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(tokFile, []byte(strings.Join(tokens, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	upstream, err := startUpstream()
	if err != nil {
		return err
	}
	defer upstream.Close()

	listen := map[string]string{}
	for _, mode := range envoyModes {
		addr, c, err := startEnvoy(ctx, envoyBin, dir, mode, servers, upstream.Addr().String())
		if c != nil {
			defer c.Stop(stopGrace)
		}
		if err != nil {
			return err
		}
		listen[mode] = addr
	}
	run := func(mode string, d time.Duration) (wrkResult, error) {
		// wrk takes whole seconds.
		d = max(d.Round(time.Second), time.Second)
		cmd := exec.CommandContext(ctx, wrk, "-t1", fmt.Sprintf("-c%d", o.callers[0]), fmt.Sprintf("-d%ds", int(d.Seconds())),
			"--timeout", "2s", "-s", script, "http://"+listen[mode], "--", tokFile)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return wrkResult{}, fmt.Errorf("wrk against %s: %w: %s", mode, err, out)
		}
		r, err := parseWrk(string(out), d)
		if err == nil && (r.Non2xx > 0 || r.Errors > 0) {
			err = fmt.Errorf("wrk against %s: %d answers not 2xx, %d errors of %d", mode, r.Non2xx, r.Errors, r.Requests)
		}
		return r, err
	}
	for _, mode := range envoyModes {
		if _, err := run(mode, o.load.warmup); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	res := map[string][]wrkResult{}
	for r := range o.rounds {
		order := append(slices.Clone(envoyModes[r%3:]), envoyModes[:r%3]...)
		for _, mode := range order {
			w, err := run(mode, o.load.duration)
			if err != nil {
				return err
			}
			progress("round %d/%d: envoy with %s: %.0f req/s, p50 %.0fµs, p99 %.0fµs", r+1, o.rounds, mode, w.RPS, w.P50, w.P99)
			res[mode] = append(res[mode], w)
		}
	}
	rep := envoyReportOf(o, len(tokens), res)
	rep.print(stdout)
	if o.strict && !rep.Pass {
		return loadrig.ErrMissed
	}
	return nil
}

// envoyReport is what the Envoy comparison found.
type envoyReport struct {
	Tokens  int                    `json:"tokens"`
	Callers int                    `json:"callers"`
	Rounds  int                    `json:"rounds"`
	Load    string                 `json:"loadavg"`
	Runs    map[string][]wrkResult `json:"runs"`
	// AddedP99 are each round's keyward p99 minus none's over floor's
	// minus none's, for the spread. Ratio is the same of each mode's
	// median p99 over the rounds: one slow round of Envoy alone (its p99
	// above the others') cannot turn it upside down as it can a round's.
	AddedP99 []float64 `json:"added_p99_ratio_rounds"`
	Ratio    float64   `json:"added_p99_ratio"`
	// P50Ratio is the same of the median p50s: no target, but steadier
	// than the p99s on a shared machine.
	P50Ratio float64 `json:"added_p50_ratio"`
	Target   float64 `json:"target"`
	// Inconclusive: the floor added nothing to Envoy's own p99 (noise
	// swamped it), so the ratio means nothing; it does not pass.
	Inconclusive bool `json:"inconclusive"`
	Pass         bool `json:"pass"`
}

func envoyReportOf(o *options, tokens int, res map[string][]wrkResult) *envoyReport {
	rep := &envoyReport{Tokens: tokens, Callers: o.callers[0], Rounds: o.rounds, Runs: res, Target: targetEnvoyAddedP99, Load: loadAvg()}
	for i := range o.rounds {
		none := res["none"][i].P99
		rep.AddedP99 = append(rep.AddedP99, ratio(res["keyward"][i].P99-none, res["floor"][i].P99-none))
	}
	med := func(mode string, q func(wrkResult) float64) float64 {
		var v []float64
		for _, x := range res[mode] {
			v = append(v, q(x))
		}
		return median(v)
	}
	added := func(q func(wrkResult) float64) (float64, bool) {
		none, floor := med("none", q), med("floor", q)
		return ratio(med("keyward", q)-none, floor-none), floor > none
	}
	var ok bool
	rep.Ratio, ok = added(func(w wrkResult) float64 { return w.P99 })
	rep.P50Ratio, _ = added(func(w wrkResult) float64 { return w.P50 })
	rep.Inconclusive = !ok
	rep.Pass = ok && rep.Ratio <= targetEnvoyAddedP99
	return rep
}

func (r *envoyReport) print(w io.Writer) {
	fmt.Fprintf(w, "\nkeyward through real Envoy: wrk, %d connections, over %d distinct tokens; %d rounds in rotated order; load average %s\n\n",
		r.Callers, r.Tokens, r.Rounds, r.Load)
	fmt.Fprintf(w, "%-18s %10s %9s %9s   %s\n", "envoy ext_authz to", "req/s", "p50 µs", "p99 µs", "rounds p99 µs")
	for _, mode := range envoyModes {
		var rps, p50, p99 []float64
		for _, x := range r.Runs[mode] {
			rps, p50, p99 = append(rps, x.RPS), append(p50, x.P50), append(p99, x.P99)
		}
		fmt.Fprintf(w, "%-18s %10.0f %9.0f %9.0f   %s\n", mode, median(rps), median(p50), median(p99), formatRuns(p99))
	}
	v := verdict(r.Pass)
	if r.Inconclusive {
		v = "MISS (inconclusive: the floor's p99 is not above Envoy's own)"
	}
	fmt.Fprintf(w, "\nadded p99 (keyward - none) / (floor - none), of the median p99s   %.3f   target <= %.2f   %s   rounds %s\n",
		r.Ratio, r.Target, v, formatRatios(r.AddedP99))
	fmt.Fprintf(w, "added p50 (keyward - none) / (floor - none), of the median p50s   %.3f\n", r.P50Ratio)
	line, err := json.Marshal(r)
	if err != nil {
		line = fmt.Appendf(nil, `{"error":%q}`, err.Error())
	}
	fmt.Fprintf(w, "%s\n", line)
}

func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(raw))[:3], " ")
}

// startUpstream serves 200 with a small JSON body to everything, on
// loopback: the provider stand-in behind every Envoy.
func startUpstream() (net.Listener, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	body := []byte(`{"id":"chatcmpl-load","object":"chat.completion","choices":[]}`)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if !upstreamSees(r) {
			// wrk counts it: the run fails.
			http.Error(w, "not what keyward should have sent", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})}
	go func() { _ = srv.Serve(lis) }()
	return lis, nil
}

// upstreamSees reports whether r is what its Envoy should forward: behind
// keyward (the upstream path /keyward/...), the provider key in place of
// the token and the identity headers; behind the floor, the key.
func upstreamSees(r *http.Request) bool {
	key := r.Header.Get("Authorization") == "Bearer "+loadrig.ProviderKey
	switch {
	case strings.HasPrefix(r.URL.Path, "/keyward/"):
		return key && r.Header.Get("X-Keyward-User") != "" && r.Header.Get("X-Keyward-Group") != "" && r.Header.Get("X-Keyward-Token-Id") != ""
	case strings.HasPrefix(r.URL.Path, "/floor/"):
		return key
	}
	return true
}

// startEnvoy starts an Envoy on `keyward envoy-config`'s bootstrap for the
// fixture's route, with ext_authz to mode's server, or without the
// ext_authz filter for "none", and returns its listener's address once it
// answers.
func startEnvoy(ctx context.Context, bin, dir, mode string, servers map[string]*server, upstream string) (string, *loadrig.Child, error) {
	listen, err := freeport.Addr(1) // Envoy is given its port: it prints none it picked
	if err != nil {
		return "", nil, err
	}
	authzAddr := servers["floor"].addr
	if mode == "keyward" {
		authzAddr = servers["keyward"].addr
	}
	b, err := envoy.Bootstrap(envoy.Options{
		ListenAddress: listen,
		AuthzAddress:  authzAddr,
		Routes:        []envoy.Route{{Provider: loadrig.ProviderName, PathPrefix: "/v1/", Upstream: "http://" + upstream + "/" + mode}},
	})
	if err != nil {
		return "", nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	if mode == "none" {
		if err := dropExtAuthz(b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig()); err != nil {
			return "", nil, err
		}
	}
	raw, err := envoy.MarshalYAML(b)
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, "envoy-"+mode+".yaml")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return "", nil, err
	}
	c, err := loadrig.StartChild("envoy-"+mode, bin, []string{"-c", path, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"}, os.Environ())
	if err != nil {
		return "", nil, err
	}
	if err := waitHTTP(ctx, c, "http://"+listen+"/"); err != nil {
		return "", c, c.Failure(err)
	}
	return listen, c, nil
}

// dropExtAuthz removes the ext_authz filter from the HTTP connection
// manager in hcm, and its per-route settings.
func dropExtAuthz(hcm *anypb.Any) error {
	var m hcmv3.HttpConnectionManager
	if err := hcm.UnmarshalTo(&m); err != nil {
		return fmt.Errorf("envoy bootstrap: %w", err)
	}
	m.HttpFilters = slices.DeleteFunc(m.HttpFilters, func(f *hcmv3.HttpFilter) bool { return f.GetName() == envoy.ExtAuthzFilter })
	for _, vh := range m.GetRouteConfig().GetVirtualHosts() {
		delete(vh.TypedPerFilterConfig, envoy.ExtAuthzFilter)
		for _, r := range vh.GetRoutes() {
			delete(r.TypedPerFilterConfig, envoy.ExtAuthzFilter)
		}
	}
	return hcm.MarshalFrom(&m)
}

// waitHTTP waits until url answers at all (any status), or the child exits.
func waitHTTP(ctx context.Context, c *loadrig.Child, url string) error {
	ctx, cancel := context.WithTimeout(ctx, floorStartTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-c.Exited():
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("not answering at %s: %w", url, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
