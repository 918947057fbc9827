package record

import (
	"regexp"
	"strings"
	"testing"
)

// namePattern is the rule validName implements, as the regular expression
// it used to be.
var namePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"a": true, "eng": true, "team-a.b_c": true, "0": true, "A9": true,
		strings.Repeat("a", MaxNameLen):   true,
		"":                                false,
		strings.Repeat("a", MaxNameLen+1): false,
		"-a":                              false, ".a": false, "_a": false, "a/b": false, "../a": false,
		"a b": false, "a\n": false, "a\x00": false, "é": false, "a:b": false,
	} {
		if got := validName(name); got != want {
			t.Errorf("validName(%q) = %v, want %v", name, got, want)
		}
		if err := CheckName("user", name); (err == nil) != want {
			t.Errorf("CheckName(%q) = %v", name, err)
		}
	}
}

// FuzzValidName holds validName to the regular expression of the rule.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"", "a", "a-b.c_d", "-a", "a\n", strings.Repeat("z", 63), strings.Repeat("z", 64), "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := validName(name), namePattern.MatchString(name); got != want {
			t.Fatalf("validName(%q) = %v, the pattern says %v", name, got, want)
		}
	})
}
