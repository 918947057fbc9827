package main

import (
	"fmt"
	"io"
	"runtime"
	"time"
)

// Targets (issue 13).
const (
	// targetStart is how soon keyward must serve a store of
	// targetTokens tokens.
	targetStart  = 30 * time.Second
	targetTokens = 1_000_000
	// targetPeakRatio bounds peak over steady resident memory.
	targetPeakRatio = 2.0
	// targetLinear bounds the time per record at a size over that at the
	// size ten times smaller.
	targetLinear = 1.5
)

// report is every measured run and the baseline.
type report struct {
	// base is the start-up with an almost empty store: the process's own
	// cost, taken off every run's time to compare the time per record.
	base *result
	runs []*result
}

// net is r's start-up time beyond the baseline's.
func (rep *report) net(r *result) time.Duration { return max(r.start-rep.base.start, 0) }

// netCPU is r's start-up CPU time beyond the baseline's.
func (rep *report) netCPU(r *result) time.Duration { return max(r.cpu-rep.base.cpu, 0) }

// per10e5 is d per 10^5 of r's records, in seconds.
func per10e5(d time.Duration, r *result) float64 { return d.Seconds() / (float64(r.records()) / 1e5) }

// linearity returns how much more time per record run i took than the
// run ten times smaller, if there is one: in wall time and in CPU time.
func (rep *report) linearity(i int) (wall, cpu float64, prev *result, ok bool) {
	r := rep.runs[i]
	for _, p := range rep.runs[:i] {
		if p.tokens*10 == r.tokens && rep.net(p) > 0 && rep.netCPU(p) > 0 {
			return per10e5(rep.net(r), r) / per10e5(rep.net(p), p), per10e5(rep.netCPU(r), r) / per10e5(rep.netCPU(p), p), p, true
		}
	}
	return 0, 0, nil, false
}

func ratio(peak, steady uint64) float64 { return float64(peak) / float64(steady) }

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func (rep *report) print(w io.Writer) {
	fmt.Fprintf(w, "keyward start-up on file stores (%s/%s, %d CPUs; baseline: a 1-token store serves after %.2f s, %.2f s CPU)\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), rep.base.start.Seconds(), rep.base.cpu.Seconds())
	fmt.Fprintf(w, "%9s %7s %7s %9s %6s %7s %6s %9s %6s %9s %6s %8s %8s %7s\n",
		"tokens", "groups", "users", "records", "MiB", "load s", "cpu s", "s/1e5rec", "x prev", "cpu/1e5", "x prev", "peak MiB", "steady", "peak/st")
	for i, r := range rep.runs {
		linWall, linCPU := "-", "-"
		if wall, cpu, _, ok := rep.linearity(i); ok {
			linWall, linCPU = fmt.Sprintf("%.2f", wall), fmt.Sprintf("%.2f", cpu)
		}
		fmt.Fprintf(w, "%9d %7d %7d %9d %6.1f %7.2f %6.2f %9.3f %6s %9.3f %6s %8.0f %8.0f %7.2f\n",
			r.tokens, r.groups, r.users, r.records(), mib(uint64(r.storeBytes)), r.start.Seconds(), r.cpu.Seconds(),
			per10e5(rep.net(r), r), linWall, per10e5(rep.netCPU(r), r), linCPU, mib(r.peak), mib(r.steady), ratio(r.peak, r.steady))
	}
	fmt.Fprintln(w, "(load s: exec to gRPC health SERVING on envoy.service.auth.v3.Authorization; cpu s: keyward's CPU time")
	fmt.Fprintln(w, " by then, user+system, all threads; s/1e5rec and cpu/1e5: each less the baseline's, per 10^5 records;")
	fmt.Fprintln(w, " x prev: that over the same at the size 10x smaller; peak: VmHWM once serving; steady MiB: VmRSS")
	fmt.Fprintln(w, " after the Check calls, settled)")
	for _, l := range rep.verdicts() {
		fmt.Fprintln(w, l.String())
	}
}

// line is one target's verdict; a target whose size was not run has
// none.
type line struct {
	pass, skipped bool
	text          string
}

func (l line) String() string {
	if l.skipped {
		return "----  " + l.text
	}
	return verdict(l.pass) + "  " + l.text
}

func (rep *report) verdicts() []line {
	var out []line
	largest := rep.runs[len(rep.runs)-1]
	if largest.tokens < targetTokens {
		out = append(out, line{skipped: true, text: fmt.Sprintf("serving within %s at %d tokens: not run (largest %d; -sizes ...,%d)",
			targetStart, targetTokens, largest.tokens, targetTokens)})
	} else {
		out = append(out, line{pass: largest.start <= targetStart, text: fmt.Sprintf("serving within %s at %d tokens: %.2f s at %d tokens",
			targetStart, targetTokens, largest.start.Seconds(), largest.tokens)})
	}
	for _, r := range rep.runs {
		out = append(out, line{pass: ratio(r.peak, r.steady) <= targetPeakRatio, text: fmt.Sprintf("peak memory at most %.0fx steady at %d tokens: %.0f / %.0f MiB = %.2f",
			targetPeakRatio, r.tokens, mib(r.peak), mib(r.steady), ratio(r.peak, r.steady))})
	}
	for i, r := range rep.runs {
		// CPU time: on a machine shared with other work, wall time per
		// record says as much about the neighbours as about the load.
		if wall, cpu, prev, ok := rep.linearity(i); ok {
			out = append(out, line{pass: cpu <= targetLinear, text: fmt.Sprintf("linear load: CPU time per record at %d tokens at most %.1fx that at %d (net of the baseline): %.2fx (wall time: %.2fx)",
				r.tokens, targetLinear, prev.tokens, cpu, wall)})
		}
	}
	return out
}

func (rep *report) pass() bool {
	for _, l := range rep.verdicts() {
		if !l.pass && !l.skipped {
			return false
		}
	}
	return true
}
