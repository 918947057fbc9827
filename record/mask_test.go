package record

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMaskKey(t *testing.T) {
	for name, tc := range map[string]struct{ key, want string }{
		"empty":               {"", ""},
		"1":                   {"a", "*"},
		"7":                   {"abcdefg", "*******"},
		"8":                   {"abcdefgh", "********"},
		"9":                   {"abcdefghi", "abcd*fghi"},
		"15":                  {"sk-abcd12345678", "sk-a*******5678"},
		"exactly 12":          {"abcdefghijkl", "abcd****ijkl"},
		"openai style":        {"sk-proj-0123456789abcdef", "sk-p****************cdef"},
		"multi-byte 8":        {"ключключ", "********"},
		"multi-byte 9":        {"ключ1ключ", "ключ*ключ"},
		"multi-byte middle":   {"abcdéééééwxyz", "abcd*****wxyz"},
		"emoji ends":          {"🔑🔑🔑🔑secret🔒🔒🔒🔒", "🔑🔑🔑🔑******🔒🔒🔒🔒"},
		"invalid utf-8 short": {"\xff\xfe\xfd", "***"},
		"invalid utf-8 9":     {"\xffbcdefghi", "\xffbcd*fghi"},
		"stars":               {"*********", "*********"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := MaskKey(tc.key); got != tc.want {
				t.Errorf("MaskKey(%q) = %q, want %q", tc.key, got, tc.want)
			}
		})
	}
}

// FuzzMaskKey checks MaskKey's promises on any input: the mask has the
// key's length in characters, shows at most the first and last 4 of them,
// and every hidden character is a '*'.
func FuzzMaskKey(f *testing.F) {
	for _, s := range []string{"", "a", "abcdefgh", "abcdefghi", "sk-proj-0123456789abcdef", "ключключ1", "🔑🔑🔑🔑secret🔒🔒🔒🔒", "\xffbcdefghi\xe2\x82", "********x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		mask := MaskKey(key)
		n := utf8.RuneCountInString(key)
		if got := utf8.RuneCountInString(mask); got != n {
			t.Fatalf("MaskKey(%q) = %q: %d characters, want %d", key, mask, got, n)
		}
		if key == "" {
			if mask != "" {
				t.Fatalf("MaskKey(\"\") = %q", mask)
			}
			return
		}
		if n <= 8 {
			if mask != strings.Repeat("*", n) {
				t.Fatalf("MaskKey(%q) = %q, want all '*'", key, mask)
			}
			return
		}
		keyRunes, maskRunes := splitRunes(key), splitRunes(mask)
		head, middle, tail := strings.Join(keyRunes[:4], ""), strings.Join(keyRunes[4:n-4], ""), strings.Join(keyRunes[n-4:], "")
		if !strings.HasPrefix(mask, head) || !strings.HasSuffix(mask, tail) {
			t.Fatalf("MaskKey(%q) = %q does not show the first and last 4 characters", key, mask)
		}
		for i, r := range maskRunes[4 : n-4] {
			if r != "*" {
				t.Fatalf("MaskKey(%q) = %q shows hidden character %d", key, mask, i+4)
			}
		}
		// A hidden part without '*' longer than the shown ends can only
		// appear in the mask, character for character, if the mask leaked
		// it. (As bytes it may: "\x9f\x92\x92\xf0\x9f" sits inside the
		// shown "💒🔒".)
		if hidden := keyRunes[4 : n-4]; len(hidden) > 4 && !strings.Contains(middle, "*") && containsRun(maskRunes, hidden) {
			t.Fatalf("MaskKey(%q) = %q contains the hidden %q", key, mask, middle)
		}
	})
}

// containsRun reports whether run occurs in s, character for character.
func containsRun(s, run []string) bool {
	for i := 0; i+len(run) <= len(s); i++ {
		if slices.Equal(s[i:i+len(run)], run) {
			return true
		}
	}
	return false
}

// splitRunes splits s into its characters as range decodes them, keeping
// bytes that are not UTF-8 as they are.
func splitRunes(s string) []string {
	var out []string
	prev := -1
	for i := range s {
		if prev >= 0 {
			out = append(out, s[prev:i])
		}
		prev = i
	}
	if prev >= 0 {
		out = append(out, s[prev:])
	}
	return out
}
