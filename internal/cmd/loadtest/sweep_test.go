package main

import (
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/loadrig"
)

func TestSweepScenarios(t *testing.T) {
	t.Parallel()
	got := sweepScenarios([]int{10, 30}, []int{32, 4})
	want := []scenario{{"keyward", 10, 32}, {"keyward", 30, 32}, {"floor", 10, 32}, {"floor", 10, 4}, {"keyward", 10, 4}}
	if !slices.Equal(got, want) {
		t.Fatalf("scenarios %v, want %v", got, want)
	}
	for r := range len(got) {
		rot := rotated(got, r)
		if rot[0] != got[r] || len(rot) != len(got) {
			t.Fatalf("round %d starts with %v, want %v", r, rot[0], got[r])
		}
	}
}

func TestParseWrk(t *testing.T) {
	t.Parallel()
	out := "Running 1s test @ http://127.0.0.1:1\n  1 threads and 4 connections\nKW requests=2000 non2xx=3 errors=1 p50=250 p99=1200\n"
	r, err := parseWrk(out, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r != (wrkResult{Requests: 2000, Non2xx: 3, Errors: 1, P50: 250, P99: 1200, RPS: 1000}) {
		t.Fatalf("parseWrk = %+v", r)
	}
	if _, err := parseWrk("no line", time.Second); err == nil {
		t.Fatal("no error without the result line")
	}
}

func TestUpstreamSees(t *testing.T) {
	t.Parallel()
	identity := map[string]string{"X-Keyward-User": "u", "X-Keyward-Group": "g", "X-Keyward-Token-Id": "t"}
	cases := map[string]struct {
		path    string
		headers map[string]string
		want    bool
	}{
		"keyward complete":    {"/keyward/chat/completions", map[string]string{"Authorization": "Bearer " + loadrig.ProviderKey, "X-Keyward-User": "u", "X-Keyward-Group": "g", "X-Keyward-Token-Id": "t"}, true},
		"keyward no identity": {"/keyward/chat/completions", map[string]string{"Authorization": "Bearer " + loadrig.ProviderKey}, false},
		"keyward token left":  {"/keyward/chat/completions", identity, false},
		"floor key":           {"/floor/chat/completions", map[string]string{"Authorization": "Bearer " + loadrig.ProviderKey}, true},
		"floor no key":        {"/floor/chat/completions", nil, false},
		"none":                {"/none/chat/completions", nil, true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("POST", c.path, nil)
			for k, v := range c.headers {
				r.Header.Set(k, v)
			}
			if got := upstreamSees(r); got != c.want {
				t.Fatalf("upstreamSees = %v, want %v", got, c.want)
			}
		})
	}
}

func TestEnvoyReport(t *testing.T) {
	t.Parallel()
	run := func(p50, p99 float64) []wrkResult { return []wrkResult{{P50: p50, P99: p99}} }
	o := &options{rounds: 1, callers: []int{32}}
	cases := map[string]struct {
		res          map[string][]wrkResult
		ratio        float64
		pass, inconc bool
	}{
		"within":       {map[string][]wrkResult{"none": run(100, 1000), "floor": run(200, 2000), "keyward": run(210, 2100)}, 1.1, true, false},
		"over":         {map[string][]wrkResult{"none": run(100, 1000), "floor": run(200, 2000), "keyward": run(300, 2500)}, 1.5, false, false},
		"floor faster": {map[string][]wrkResult{"none": run(100, 3000), "floor": run(200, 2000), "keyward": run(300, 2500)}, 0.5, false, true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := envoyReportOf(o, 10, c.res)
			if r.Pass != c.pass || r.Inconclusive != c.inconc || r.Ratio != c.ratio {
				t.Fatalf("ratio %v pass %v inconclusive %v; want %v %v %v", r.Ratio, r.Pass, r.Inconclusive, c.ratio, c.pass, c.inconc)
			}
		})
	}
}
