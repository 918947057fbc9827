package record

import (
	"strings"
	"testing"
)

func TestValidatePrincipal(t *testing.T) {
	tests := map[string]struct {
		p           string
		exact, glob bool // valid as an exact ID, as a pattern
	}{
		"workload":            {"spiffe://cluster.local/ns/payments/sa/api", true, true},
		"namespace prefix":    {"spiffe://cluster.local/ns/payments/*", false, true},
		"trust domain prefix": {"spiffe://cluster.local/*", false, true},
		"one segment":         {"spiffe://td/w", true, true},
		"segment chars":       {"spiffe://td-1.example_x/A.b-c_9", true, true},
		"other scheme":        {"https://cluster.local/ns/a", false, false},
		"upper-case scheme":   {"SPIFFE://cluster.local/ns/a", false, false},
		"upper-case domain":   {"spiffe://Cluster.local/ns/a", false, false},
		"port":                {"spiffe://cluster.local:8443/ns/a", false, false},
		"user info":           {"spiffe://u@cluster.local/ns/a", false, false},
		"no trust domain":     {"spiffe:///ns/a", false, false},
		"no path":             {"spiffe://cluster.local", false, false},
		"root path":           {"spiffe://cluster.local/", false, false},
		"trailing slash":      {"spiffe://cluster.local/ns/a/", false, false},
		"empty segment":       {"spiffe://cluster.local/ns//a", false, false},
		"dot":                 {"spiffe://cluster.local/ns/./a", false, false},
		"dot dot":             {"spiffe://cluster.local/ns/../a", false, false},
		"query":               {"spiffe://cluster.local/ns/a?x=1", false, false},
		"fragment":            {"spiffe://cluster.local/ns/a#x", false, false},
		"escape":              {"spiffe://cluster.local/ns/%2e%2e/a", false, false},
		"star inside":         {"spiffe://cluster.local/*/a", false, false},
		"star in segment":     {"spiffe://cluster.local/ns/pay*", false, false},
		"space":               {"spiffe://cluster.local/ns/a b", false, false},
		"too long":            {"spiffe://td/" + strings.Repeat("a", MaxPrincipal), false, false},
		"empty":               {"", false, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if err := ValidatePrincipal(tc.p, false); (err == nil) != tc.exact {
				t.Errorf("exact: %v", err)
			}
			err := ValidatePrincipal(tc.p, true)
			if (err == nil) != tc.glob {
				t.Errorf("pattern: %v", err)
			}
			if err != nil && len(tc.p) > 12 && strings.Contains(err.Error(), tc.p) {
				t.Errorf("error quotes the principal: %v", err)
			}
		})
	}
}

func TestIdentitiesLookup(t *testing.T) {
	x := NewIdentities([]*Identity{
		{Name: "td", Principal: "spiffe://td/*"},
		{Name: "ns", Principal: "spiffe://td/ns/pay/*"},
		{Name: "sa", Principal: "spiffe://td/ns/pay/sa/api"},
		{Name: "b-dup", Principal: "spiffe://td/ns/dup"},
		{Name: "a-dup", Principal: "spiffe://td/ns/dup"},
		{Name: "other", Principal: "spiffe://other/ns/x"},
	})
	tests := map[string]string{
		"spiffe://td/ns/pay/sa/api":     "sa",
		"spiffe://td/ns/pay/sa/api/x":   "ns",
		"spiffe://td/ns/pay/sa/batch":   "ns",
		"spiffe://td/ns/payx/sa/batch":  "td",
		"spiffe://td/ns/dup":            "a-dup",
		"spiffe://td/x":                 "td",
		"spiffe://other/ns/x":           "other",
		"spiffe://other/ns/y":           "",
		"spiffe://tdx/ns/pay/sa/api":    "",
		"spiffe://td/ns/pay/../../x":    "",
		"spiffe://td/ns/pay/":           "",
		"":                              "",
		"not a spiffe id":               "",
		"spiffe://td/ns/pay/sa/api?q=1": "",
	}
	for p, want := range tests {
		got := ""
		if id := x.Lookup(p); id != nil {
			got = id.Name
		}
		if got != want {
			t.Errorf("Lookup(%q) = %q, want %q", p, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { x.Lookup("spiffe://td/ns/pay/sa/batch/deep/er") }); n != 0 {
		t.Errorf("Lookup allocates %v times", n)
	}
	var none *Identities
	if none.Lookup("spiffe://td/x") != nil || none.Len() != 0 {
		t.Error("nil index matched")
	}
}

func TestMatchPrincipal(t *testing.T) {
	for _, tc := range []struct {
		pattern, p string
		want       bool
	}{
		{"spiffe://td/ns/a/*", "spiffe://td/ns/a/sa/x", true},
		{"spiffe://td/ns/a/*", "spiffe://td/ns/ab/sa/x", false},
		{"spiffe://td/ns/a/*", "spiffe://td/ns/a/../b", false},
		{"spiffe://td/ns/a/sa/x", "spiffe://td/ns/a/sa/x", true},
		{"spiffe://td/ns/a/sa/x", "spiffe://td/ns/a/sa/x/y", false},
		{"spiffe://td/ns/a/sa/x", "", false},
	} {
		if got := MatchPrincipal(tc.pattern, tc.p); got != tc.want {
			t.Errorf("MatchPrincipal(%q, %q) = %v", tc.pattern, tc.p, got)
		}
	}
}
