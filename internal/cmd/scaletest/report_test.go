package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func fakeRun(tokens int, start, cpu time.Duration, peak, steady uint64) *result {
	return &result{size: size{tokens, tokens / 10, tokens / 10}, start: start, cpu: cpu, peak: peak << 20, steady: steady << 20}
}

func TestVerdicts(t *testing.T) {
	t.Parallel()
	base := fakeRun(1, 100*time.Millisecond, 10*time.Millisecond, 20, 20)
	tests := map[string]struct {
		runs []*result
		pass bool
		want []string // lines of the output
	}{
		"all met": {
			runs: []*result{fakeRun(100_000, 1100*time.Millisecond, 1010*time.Millisecond, 90, 60), fakeRun(1_000_000, 12*time.Second, 12010*time.Millisecond, 700, 400)},
			pass: true,
			want: []string{"PASS  serving within 30s at 1000000 tokens: 12.00 s", "PASS  peak memory at most 2x steady at 1000000 tokens: 700 / 400 MiB = 1.75",
				"PASS  linear load: CPU time per record at 1000000 tokens at most 1.5x that at 100000 (net of the baseline): 1.20x (wall time: 1.19x)"},
		},
		"slow, heavy and superlinear": {
			runs: []*result{fakeRun(100_000, 1100*time.Millisecond, 1010*time.Millisecond, 90, 60), fakeRun(1_000_000, 40*time.Second, 20010*time.Millisecond, 900, 400)},
			want: []string{"MISS  serving within 30s", "MISS  peak memory at most 2x steady at 1000000 tokens", "MISS  linear load: CPU time per record at 1000000 tokens", ": 2.00x (wall time: 3.99x)"},
		},
		"target size not run": {
			runs: []*result{fakeRun(10_000, 200*time.Millisecond, 110*time.Millisecond, 30, 30), fakeRun(100_000, 1100*time.Millisecond, 1010*time.Millisecond, 90, 60)},
			pass: true,
			want: []string{"----  serving within 30s at 1000000 tokens: not run", "PASS  linear load: CPU time per record at 100000 tokens at most 1.5x that at 10000"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rep := &report{base: base, runs: tc.runs}
			var out bytes.Buffer
			rep.print(&out)
			if rep.pass() != tc.pass {
				t.Errorf("pass() = %v, want %v", rep.pass(), tc.pass)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestParseOptions(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{},                                    // no -keyward
		{"-keyward", "k", "-sizes", "100,10"}, // not ascending
		{"-keyward", "k", "-sizes", "5"},      // too small
		{"-keyward", "k", "extra"},
	} {
		if _, err := parseOptions(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseOptions(%q) succeeded, want an error", args)
		}
	}
	o, err := parseOptions([]string{"-keyward", "k", "-sizes", "10000, 100000"}, &bytes.Buffer{})
	if err != nil || len(o.sizes) != 2 || o.sizes[1] != 100_000 {
		t.Fatalf("parseOptions = %+v, %v", o, err)
	}
}
