package loadrig

import (
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		stat string
		want time.Duration
		ok   bool
	}{
		// utime 250 and stime 50 ticks: 3s.
		"plain":                  {"4242 (keyward) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 100 0 0", 3 * time.Second, true},
		"name with ) and spaces": {"7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 0 0", 30 * time.Millisecond, true},
		"truncated":              {"7 (x) R 1 7", 0, false},
		"no name":                {"7 x R", 0, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := parseStatCPU(c.stat)
			if (err == nil) != c.ok || got != c.want {
				t.Fatalf("parseStatCPU = %v, %v; want %v, ok %v", got, err, c.want, c.ok)
			}
		})
	}
}
