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

// perRecord is r's net start-up time per 10^5 records, in seconds.
func (rep *report) perRecord(r *result) float64 {
	return rep.net(r).Seconds() / (float64(r.records()) / 1e5)
}

// linearity returns the per-record time ratio of run i to the run ten
// times smaller, if there is one.
func (rep *report) linearity(i int) (float64, *result, bool) {
	for _, prev := range rep.runs[:i] {
		if prev.tokens*10 == rep.runs[i].tokens && rep.perRecord(prev) > 0 {
			return rep.perRecord(rep.runs[i]) / rep.perRecord(prev), prev, true
		}
	}
	return 0, nil, false
}

func ratio(peak, steady uint64) float64 { return float64(peak) / float64(steady) }

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func (rep *report) print(w io.Writer) {
	fmt.Fprintf(w, "keyward start-up on file stores (%s/%s, %d CPUs; baseline: a 1-token store serves after %.2f s)\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), rep.base.start.Seconds())
	fmt.Fprintf(w, "%9s %7s %7s %9s %7s %7s %7s %6s %11s %6s %9s %10s %7s\n",
		"tokens", "groups", "users", "records", "MiB", "load s", "net s", "cpu s", "s/10^5 rec", "x prev", "peak MiB", "steady MiB", "peak/st")
	for i, r := range rep.runs {
		lin := "-"
		if x, _, ok := rep.linearity(i); ok {
			lin = fmt.Sprintf("%.2f", x)
		}
		fmt.Fprintf(w, "%9d %7d %7d %9d %7.1f %7.2f %7.2f %6.2f %11.3f %6s %9.0f %10.0f %7.2f\n",
			r.tokens, r.groups, r.users, r.records(), mib(uint64(r.storeBytes)), r.start.Seconds(), rep.net(r).Seconds(),
			r.cpu.Seconds(), rep.perRecord(r), lin, mib(r.peak), mib(r.steady), ratio(r.peak, r.steady))
	}
	fmt.Fprintln(w, "(load s: exec to health SERVING on envoy.service.auth.v3.Authorization; net s: less the baseline;")
	fmt.Fprintln(w, " cpu s: keyward's CPU time (user+system) by then, which a busy machine does not stretch;")
	fmt.Fprintln(w, " x prev: s/10^5 records over the same at the size 10x smaller; peak: VmHWM once serving;")
	fmt.Fprintln(w, " steady: VmRSS after the Check calls, settled)")
	for _, l := range rep.verdicts() {
		fmt.Fprintln(w, l.String())
	}
}

// line is one target's verdict.
type line struct {
	pass bool
	text string
}

func (l line) String() string { return verdict(l.pass) + "  " + l.text }

func (rep *report) verdicts() []line {
	var out []line
	largest := rep.runs[len(rep.runs)-1]
	start := fmt.Sprintf("serving within %s of start at %d tokens: %.2f s at %d tokens", targetStart, targetTokens, largest.start.Seconds(), largest.tokens)
	if largest.tokens < targetTokens {
		start += fmt.Sprintf(" (the target's size was not run: -sizes ...,%d)", targetTokens)
	}
	out = append(out, line{largest.start <= targetStart, start})
	for _, r := range rep.runs {
		out = append(out, line{ratio(r.peak, r.steady) <= targetPeakRatio, fmt.Sprintf("peak memory at most %.0fx steady at %d tokens: %.0f / %.0f MiB = %.2f",
			targetPeakRatio, r.tokens, mib(r.peak), mib(r.steady), ratio(r.peak, r.steady))})
	}
	for i, r := range rep.runs {
		if x, prev, ok := rep.linearity(i); ok {
			out = append(out, line{x <= targetLinear, fmt.Sprintf("linear load: net time per record at %d tokens at most %.1fx that at %d: %.2fx",
				r.tokens, targetLinear, prev.tokens, x)})
		}
	}
	return out
}

func (rep *report) pass() bool {
	for _, l := range rep.verdicts() {
		if !l.pass {
			return false
		}
	}
	return true
}
