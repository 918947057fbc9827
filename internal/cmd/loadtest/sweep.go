package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/keyward/keyward/internal/loadrig"
)

// The sweep's targets (issue 13): no cliff in the active set, and keyward
// close to the floor at every concurrency.
const (
	targetSweepRatio      = 0.95 // throughput at a larger active set vs the smallest
	targetSweepThroughput = 0.90 // vs the floor
	targetSweepP99        = 1.20 // vs the floor
	targetSweepCPU        = 1.15 // server CPU per check vs the floor's
)

// scenario is one measured phase of the sweep: a server, how many distinct
// tokens the traffic cycles through, and how many callers.
type scenario struct {
	Server  string `json:"server"`
	Sample  int    `json:"sample"`
	Callers int    `json:"callers"`
}

func (s scenario) String() string {
	return fmt.Sprintf("%s/%dk tokens/%d callers", s.Server, s.Sample/1000, s.Callers)
}

// sweepScenarios are keyward at every sample size with the first caller
// count, and keyward and the floor at every caller count over the first
// (smallest) sample.
func sweepScenarios(samples, callers []int) []scenario {
	var out []scenario
	for _, s := range samples {
		out = append(out, scenario{"keyward", s, callers[0]})
	}
	for i, c := range callers {
		out = append(out, scenario{"floor", samples[0], c})
		if i > 0 {
			out = append(out, scenario{"keyward", samples[0], c})
		}
	}
	return out
}

// rotated is round r's order: the scenarios shifted by r, so that no
// scenario always runs first or after the same one on a machine whose
// load drifts.
func rotated(sc []scenario, r int) []scenario {
	r %= len(sc)
	return append(slices.Clone(sc[r:]), sc[:r]...)
}

// phaseResult is one scenario's measured phase in one round.
type phaseResult struct {
	res *result
	// cpu is the server's user+system CPU time over the measured phase.
	cpu time.Duration
	mem loadrig.MemStatus
}

// cpuPer1000 is server CPU milliseconds per 1,000 answers.
func (p *phaseResult) cpuPer1000() float64 {
	n := p.res.hist.count()
	if n == 0 {
		return 0
	}
	return float64(p.cpu) / float64(time.Millisecond) / (float64(n) / 1000)
}

// sweep runs the scenarios o.rounds times, each round in a rotated order,
// and prints its report.
func sweep(ctx context.Context, o *options, progress func(string, ...any), reqs []*authv3.CheckRequest, servers map[string]*server, stdout io.Writer) error {
	scs := sweepScenarios(o.samples, o.callers)
	// Every token of the largest sample once through keyward before
	// anything is measured: the first round must not pay for filling the
	// caches that later rounds find full.
	progress("pre-warm: keyward once through %d tokens", len(reqs))
	l, err := newLoader(servers["keyward"].addr, loadSpec{concurrency: o.callers[0], conns: o.load.conns}, reqs)
	if err != nil {
		return servers["keyward"].Failure(err)
	}
	err = l.once(ctx)
	l.close()
	if err != nil {
		return servers["keyward"].Failure(fmt.Errorf("pre-warm: %w", err))
	}
	runs := map[scenario][]*phaseResult{}
	for r := range o.rounds {
		for i, sc := range rotated(scs, r) {
			srv := servers[sc.Server]
			progress("round %d/%d, run %d/%d: %s", r+1, o.rounds, i+1, len(scs), sc)
			p, err := runScenario(ctx, o, srv, sc, reqs[:sc.Sample])
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted: %w", ctx.Err())
			}
			if err != nil {
				return srv.Failure(err)
			}
			progress("  %.0f checks/s, p50 %s, p99 %s, CPU %.1f ms/1000, RSS %.1f MiB", p.res.throughput(),
				p.res.hist.quantile(0.5).Round(time.Microsecond), p.res.hist.quantile(0.99).Round(time.Microsecond), p.cpuPer1000(), mib(p.mem.RSS))
			runs[sc] = append(runs[sc], p)
		}
	}
	rep := sweepReportOf(o, scs, runs)
	rep.print(stdout)
	if err := rep.failure(); err != nil {
		return err
	}
	if o.strict && !rep.AllPass {
		return loadrig.ErrMissed
	}
	return nil
}

// runScenario measures one scenario: warm-up, then the measured phase with
// the server's CPU read before and after and its memory sampled.
func runScenario(ctx context.Context, o *options, srv *server, sc scenario, reqs []*authv3.CheckRequest) (*phaseResult, error) {
	spec := o.load
	spec.concurrency = sc.Callers
	l, err := newLoader(srv.addr, spec, reqs)
	if err != nil {
		return nil, err
	}
	defer l.close()
	p := &phaseResult{}
	var errs []error
	r, err := l.run(ctx, func() func() {
		cpu0, err0 := loadrig.ReadCPU(srv.PID())
		s := loadrig.SampleMem(ctx, srv.PID(), memSampleInterval)
		return func() {
			cpu1, err1 := loadrig.ReadCPU(srv.PID())
			mem, err2 := s.Stop()
			p.cpu, p.mem = cpu1-cpu0, mem
			errs = append(errs, err0, err1, err2)
		}
	})
	if err != nil {
		return nil, err
	}
	select {
	case <-srv.Exited():
		return nil, errors.New("exited during the load")
	default:
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("reading /proc: %w", err)
	}
	p.res = r
	return p, nil
}

// sweepRow is one scenario's figures over every round.
type sweepRow struct {
	scenario
	figures
	// Runs are each round's throughput.
	Runs []float64 `json:"runs_checks_per_sec"`
	// CPUPer1000Ms is server CPU ms per 1,000 answers, over every round.
	CPUPer1000Ms float64 `json:"cpu_ms_per_1000"`
	MaxRSSBytes  uint64  `json:"max_rss_bytes"`
	HWMBytes     uint64  `json:"hwm_bytes"`
}

// sweepRatio is a comparison with its target.
type sweepRatio struct {
	Name string `json:"name"`
	// Value is the median of the rounds' paired ratios (Rounds); a p99
	// or p50 ratio is that of the merged histograms.
	Value  float64   `json:"value"`
	Rounds []float64 `json:"rounds,omitempty"`
	// Max: the target is an upper bound; else a lower one. A zero Target
	// is a figure with no target.
	Target float64 `json:"target,omitempty"`
	Max    bool    `json:"max,omitempty"`
	Pass   bool    `json:"pass"`
}

// sweepReport is everything a sweep found.
type sweepReport struct {
	// Store is where keyward's records are: file, or vault (an OpenBao
	// dev server).
	Store       string       `json:"store"`
	Tokens      int          `json:"tokens"`
	Rounds      int          `json:"rounds"`
	WarmupS     float64      `json:"warmup_s"`
	DurationS   float64      `json:"duration_s"`
	Load        string       `json:"loadavg"`
	Rows        []sweepRow   `json:"rows"`
	Ratios      []sweepRatio `json:"ratios"`
	MaxRSSBytes uint64       `json:"keyward_max_rss_bytes"`
	AllPass     bool         `json:"all_pass"`
}

func sweepReportOf(o *options, scs []scenario, runs map[scenario][]*phaseResult) *sweepReport {
	rep := &sweepReport{Store: storeKind(o), Tokens: o.fixture.Tokens, Rounds: o.rounds, WarmupS: o.load.warmup.Seconds(), DurationS: o.load.duration.Seconds(), AllPass: true}
	if raw, err := os.ReadFile("/proc/loadavg"); err == nil {
		rep.Load = strings.Join(strings.Fields(string(raw))[:3], " ")
	}
	rows := map[scenario]*sweepRow{}
	for _, sc := range scs {
		all := &result{}
		row := &sweepRow{scenario: sc}
		var cpu time.Duration
		for _, p := range runs[sc] {
			all.merge(p.res)
			row.Runs = append(row.Runs, p.res.throughput())
			cpu += p.cpu
			row.MaxRSSBytes = max(row.MaxRSSBytes, p.mem.RSS)
			row.HWMBytes = max(row.HWMBytes, p.mem.HWM)
		}
		row.figures = figuresOf(all)
		row.CPUPer1000Ms = (&phaseResult{res: all, cpu: cpu}).cpuPer1000()
		if sc.Server == "keyward" {
			rep.MaxRSSBytes = max(rep.MaxRSSBytes, row.MaxRSSBytes)
		}
		rows[sc] = row
		rep.Rows = append(rep.Rows, *row)
	}
	add := func(name string, v float64, rounds []float64, target float64, isMax bool) {
		pass := target == 0 || (isMax && v <= target) || (!isMax && v >= target)
		rep.Ratios = append(rep.Ratios, sweepRatio{Name: name, Value: v, Rounds: rounds, Target: target, Max: isMax, Pass: pass})
		rep.AllPass = rep.AllPass && pass
	}
	paired := func(a, b scenario, f func(*phaseResult) float64) (float64, []float64) {
		var rs []float64
		for i := range min(len(runs[a]), len(runs[b])) {
			rs = append(rs, ratio(f(runs[a][i]), f(runs[b][i])))
		}
		return median(rs), rs
	}
	tput := func(p *phaseResult) float64 { return p.res.throughput() }
	base := scenario{"keyward", o.samples[0], o.callers[0]}
	for _, s := range o.samples[1:] {
		sc := scenario{"keyward", s, o.callers[0]}
		v, rs := paired(sc, base, tput)
		add(fmt.Sprintf("keyward %dk/%dk tokens throughput", s/1000, base.Sample/1000), v, rs, targetSweepRatio, false)
		add(fmt.Sprintf("keyward %dk/%dk tokens p50", s/1000, base.Sample/1000), ratio(rows[sc].P50Us, rows[base].P50Us), nil, 0, false)
		add(fmt.Sprintf("keyward %dk/%dk tokens CPU per check", s/1000, base.Sample/1000), ratio(rows[sc].CPUPer1000Ms, rows[base].CPUPer1000Ms), nil, 0, false)
	}
	for _, c := range o.callers {
		kw, fl := scenario{"keyward", o.samples[0], c}, scenario{"floor", o.samples[0], c}
		v, rs := paired(kw, fl, tput)
		add(fmt.Sprintf("keyward/floor throughput at %d callers", c), v, rs, targetSweepThroughput, false)
		add(fmt.Sprintf("keyward/floor p99 at %d callers", c), ratio(rows[kw].P99Us, rows[fl].P99Us), nil, targetSweepP99, true)
		add(fmt.Sprintf("keyward/floor CPU per check at %d callers", c), ratio(rows[kw].CPUPer1000Ms, rows[fl].CPUPer1000Ms), nil, targetSweepCPU, true)
	}
	rssPass := rep.MaxRSSBytes <= targetRSSBytes
	rep.Ratios = append(rep.Ratios, sweepRatio{Name: "keyward max VmRSS under load (MiB)", Value: mib(rep.MaxRSSBytes), Target: targetRSSBytes >> 20, Max: true, Pass: rssPass})
	rep.AllPass = rep.AllPass && rssPass
	return rep
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// storeKind is the Store of a report: vault with -vault, else file.
func storeKind(o *options) string {
	if o.vault != "" {
		return "vault"
	}
	return "file"
}

func (r *sweepReport) print(w io.Writer) {
	fmt.Fprintf(w, "\nkeyward sweep: %d tokens in the %s store; %d rounds, each scenario warm-up %gs, measured %gs, rounds in rotated order; load average %s\n\n",
		r.Tokens, r.Store, r.Rounds, r.WarmupS, r.DurationS, r.Load)
	fmt.Fprintf(w, "%-8s %7s %7s %10s %9s %9s %10s %9s %9s %7s  %s\n", "server", "tokens", "callers", "checks/s", "p50 µs", "p99 µs", "CPU ms/1k", "RSS MiB", "HWM MiB", "denied", "rounds checks/s")
	for _, row := range r.Rows {
		rss, hwm := "-", "-"
		if row.Server == "keyward" {
			rss, hwm = fmt.Sprintf("%.1f", mib(row.MaxRSSBytes)), fmt.Sprintf("%.1f", mib(row.HWMBytes))
		}
		fmt.Fprintf(w, "%-8s %7d %7d %10.0f %9.1f %9.1f %10.2f %9s %9s %7d  %s\n", row.Server, row.Sample, row.Callers,
			row.ChecksPerSec, row.P50Us, row.P99Us, row.CPUPer1000Ms, rss, hwm, row.Denied, formatRuns(row.Runs))
	}
	fmt.Fprintln(w)
	for _, q := range r.Ratios {
		target, v := "", "    "
		if q.Target != 0 {
			op := ">="
			if q.Max {
				op = "<="
			}
			target, v = fmt.Sprintf("target %s %.2f", op, q.Target), verdict(q.Pass)
		}
		rounds := ""
		if len(q.Rounds) > 0 {
			rounds = "   rounds " + formatRatios(q.Rounds)
		}
		fmt.Fprintf(w, "%-48s %7.3f   %-16s %s%s\n", q.Name, q.Value, target, v, rounds)
	}
	if r.AllPass {
		fmt.Fprintln(w, "result: PASS (all targets met)")
	} else {
		fmt.Fprintln(w, "result: MISS (see the targets above)")
	}
	line, err := json.Marshal(r)
	if err != nil {
		line = fmt.Appendf(nil, `{"error":%q}`, err.Error())
	}
	fmt.Fprintf(w, "%s\n", line)
}

func formatRatios(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.3f", x)
	}
	return strings.Join(parts, ", ")
}

// failure reports any failed call or denial: every token sent is valid.
// Only store_unavailable is a figure rather than a failure: a check
// refused because its store lookups outlasted the check deadline, which a
// starved shared machine can cause (it is in the table's denied column).
func (r *sweepReport) failure() error {
	var errs []error
	for _, row := range r.Rows {
		if row.Denied > row.DenyReasons["store_unavailable"] {
			errs = append(errs, fmt.Errorf("%s denied %d of %d checks with valid tokens; reasons (error.code): %s",
				row.scenario, row.Denied, row.Answers, formatCounts(row.DenyReasons)))
		}
		if row.Errors > 0 {
			errs = append(errs, fmt.Errorf("%s: %d calls failed; first errors: %s", row.scenario, row.Errors, strings.Join(row.ErrorSamples, "; ")))
		}
	}
	return errors.Join(errs...)
}

// parseInts reads a comma-separated list of positive integers.
func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}
