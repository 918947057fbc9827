package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Targets keyward is held to, relative to the floor.
const (
	targetThroughputRatio = 0.85
	targetP99Ratio        = 1.25
	targetRSSBytes        = 100 << 20
)

// figures are one server's measured numbers.
type figures struct {
	ChecksPerSec float64           `json:"checks_per_sec"`
	P50Us        float64           `json:"p50_us"`
	P99Us        float64           `json:"p99_us"`
	P999Us       float64           `json:"p999_us"`
	MeanUs       float64           `json:"mean_us"`
	MaxUs        float64           `json:"max_us"`
	Answers      uint64            `json:"answers"`
	Allowed      uint64            `json:"allowed"`
	Denied       uint64            `json:"denied"`
	Errors       uint64            `json:"errors"`
	DenyReasons  map[string]uint64 `json:"deny_reasons,omitempty"`
	ErrorSamples []string          `json:"error_samples,omitempty"`
}

func figuresOf(r *result) figures {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return figures{
		ChecksPerSec: r.throughput(),
		P50Us:        us(r.hist.quantile(0.5)),
		P99Us:        us(r.hist.quantile(0.99)),
		P999Us:       us(r.hist.quantile(0.999)),
		MeanUs:       us(r.hist.mean()),
		MaxUs:        us(time.Duration(r.hist.max)),
		Answers:      r.hist.count(),
		Allowed:      r.allowed,
		Denied:       r.denied,
		Errors:       r.errors,
		DenyReasons:  r.denyReasons,
		ErrorSamples: r.errSamples,
	}
}

// report is everything a run found; it is printed as a table and as one
// JSON line.
type report struct {
	Tokens      int     `json:"tokens"`
	Groups      int     `json:"groups"`
	Users       int     `json:"users"`
	StoreBytes  int64   `json:"store_bytes"`
	Sample      int     `json:"sample"`
	Concurrency int     `json:"concurrency"`
	Conns       int     `json:"conns"`
	WarmupS     float64 `json:"warmup_s"`
	DurationS   float64 `json:"duration_s"`
	CPUs        int     `json:"cpus"`
	// Order lists the measured runs. Floor and Keyward merge each
	// server's runs, whose own throughputs are in FloorRuns and
	// KeywardRuns.
	Order       []string  `json:"order"`
	Floor       figures   `json:"floor"`
	FloorRuns   []float64 `json:"floor_runs_checks_per_sec"`
	Keyward     figures   `json:"keyward"`
	KeywardRuns []float64 `json:"keyward_runs_checks_per_sec"`

	ThroughputRatio float64 `json:"throughput_ratio"`
	P99Ratio        float64 `json:"p99_ratio"`
	MaxRSSBytes     uint64  `json:"keyward_max_rss_bytes"`
	HWMBytes        uint64  `json:"keyward_hwm_bytes"`
	IdleRSSBytes    uint64  `json:"keyward_idle_rss_bytes"`
	StartS          float64 `json:"keyward_start_s"`

	Targets struct {
		ThroughputRatioMin float64 `json:"throughput_ratio_min"`
		P99RatioMax        float64 `json:"p99_ratio_max"`
		RSSBytesMax        uint64  `json:"rss_bytes_max"`
	} `json:"targets"`
	Pass struct {
		Throughput bool `json:"throughput"`
		P99        bool `json:"p99"`
		RSS        bool `json:"rss"`
	} `json:"pass"`
	AllPass bool `json:"all_pass"`
}

func (m *measurement) report() *report {
	o := m.opts
	r := &report{
		Tokens: o.fixture.Tokens, Groups: o.fixture.Groups, Users: o.fixture.Users,
		StoreBytes: m.fix.StoreBytes, Sample: o.sample,
		Concurrency: o.load.concurrency, Conns: o.load.conns,
		WarmupS: o.load.warmup.Seconds(), DurationS: o.load.duration.Seconds(),
		CPUs: runtime.NumCPU(), Order: m.order,
		MaxRSSBytes: m.kwMem.RSS, HWMBytes: m.kwMem.HWM, IdleRSSBytes: m.idle.RSS,
		StartS: m.startup.Seconds(),
	}
	r.Floor, r.FloorRuns = merged(m.runs["floor"])
	r.Keyward, r.KeywardRuns = merged(m.runs["keyward"])
	r.ThroughputRatio = ratio(r.Keyward.ChecksPerSec, r.Floor.ChecksPerSec)
	r.P99Ratio = ratio(r.Keyward.P99Us, r.Floor.P99Us)

	r.Targets.ThroughputRatioMin = targetThroughputRatio
	r.Targets.P99RatioMax = targetP99Ratio
	r.Targets.RSSBytesMax = targetRSSBytes
	r.Pass.Throughput = r.ThroughputRatio >= targetThroughputRatio
	r.Pass.P99 = r.P99Ratio <= targetP99Ratio
	r.Pass.RSS = r.MaxRSSBytes <= targetRSSBytes
	r.AllPass = r.Pass.Throughput && r.Pass.P99 && r.Pass.RSS
	return r
}

// merged returns the figures of runs taken together, and each run's
// throughput.
func merged(runs []*result) (figures, []float64) {
	all := &result{}
	perRun := make([]float64, len(runs))
	for i, r := range runs {
		all.merge(r)
		perRun[i] = r.throughput()
	}
	return figuresOf(all), perRun
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// print writes the human-readable report, then the JSON line.
func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\nkeyward load test: %d tokens over %d groups and %d users (store %.1f MiB, keyward ready after %.1fs); %d sampled tokens;\n",
		r.Tokens, r.Groups, r.Users, mib(uint64(r.StoreBytes)), r.StartS, r.Sample)
	fmt.Fprintf(w, "%d workers over %d gRPC conn(s); warm-up %gs, measured %gs per run; %d CPUs shared by load and server\n",
		r.Concurrency, r.Conns, r.WarmupS, r.DurationS, r.CPUs)
	fmt.Fprintf(w, "order: %s; each row merges that server's runs (floor %s, keyward %s checks/s)\n\n",
		strings.Join(r.Order, " → "), formatRuns(r.FloorRuns), formatRuns(r.KeywardRuns))

	fmt.Fprintf(w, "%-8s %10s %10s %10s %10s %9s %8s %7s\n", "server", "checks/s", "p50 µs", "p99 µs", "p99.9 µs", "answers", "denied", "errors")
	for _, row := range []struct {
		name string
		f    figures
	}{{"floor", r.Floor}, {"keyward", r.Keyward}} {
		fmt.Fprintf(w, "%-8s %10.0f %10.1f %10.1f %10.1f %9d %8d %7d\n",
			row.name, row.f.ChecksPerSec, row.f.P50Us, row.f.P99Us, row.f.P999Us, row.f.Answers, row.f.Denied, row.f.Errors)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "keyward/floor throughput  %.3f   target >= %.2f   %s\n", r.ThroughputRatio, targetThroughputRatio, verdict(r.Pass.Throughput))
	fmt.Fprintf(w, "keyward/floor p99         %.3f   target <= %.2f   %s\n", r.P99Ratio, targetP99Ratio, verdict(r.Pass.P99))
	fmt.Fprintf(w, "keyward max VmRSS         %.1f MiB during load (VmHWM %.1f MiB, %.1f MiB idle before load; store %.1f MiB)   target <= %d MiB   %s\n",
		mib(r.MaxRSSBytes), mib(r.HWMBytes), mib(r.IdleRSSBytes), mib(uint64(r.StoreBytes)), targetRSSBytes>>20, verdict(r.Pass.RSS))
	if r.AllPass {
		fmt.Fprintln(w, "result: PASS (all targets met)")
	} else {
		fmt.Fprintln(w, "result: MISS (see the targets above)")
	}
	line, err := json.Marshal(r)
	if err != nil { // only plain numbers and strings: cannot fail
		line = fmt.Appendf(nil, `{"error":%q}`, err.Error())
	}
	fmt.Fprintf(w, "%s\n", line)
}

// failure reports what makes the run invalid: any failed call, and any
// denial (every token sent is valid).
func (r *report) failure() error {
	var errs []error
	for _, s := range []struct {
		name string
		f    figures
	}{{"floor", r.Floor}, {"keyward", r.Keyward}} {
		if s.f.Denied > 0 {
			errs = append(errs, fmt.Errorf("%s denied %d of %d checks with valid tokens; reasons (error.code): %s",
				s.name, s.f.Denied, s.f.Answers, formatCounts(s.f.DenyReasons)))
		}
		if s.f.Errors > 0 {
			errs = append(errs, fmt.Errorf("%s: %d calls failed; first errors: %s",
				s.name, s.f.Errors, strings.Join(s.f.ErrorSamples, "; ")))
		}
	}
	return errors.Join(errs...)
}

func formatRuns(runs []float64) string {
	parts := make([]string, len(runs))
	for i, t := range runs {
		parts[i] = fmt.Sprintf("%.0f", t)
	}
	return strings.Join(parts, ", ")
}

// formatCounts lists counts largest first.
func formatCounts(m map[string]uint64) string {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		if m[a] != m[b] {
			return int(m[b]) - int(m[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
