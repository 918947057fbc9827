package record

import (
	"strings"
	"unicode/utf8"
)

// maskShown is how many characters MaskKey shows at each end.
const maskShown = 4

// MaskKey returns key as reads show it: the first 4 and last 4 characters
// with one '*' for each character between, all '*' when the key has 8
// characters or fewer (showing 8 of 8 would show it whole), and "" for an
// empty key. Characters are runes, so a multi-byte character is never cut
// in half. Bytes that are not UTF-8 count as one character each and, if
// shown, are shown as they are.
func MaskKey(key string) string {
	n := utf8.RuneCountInString(key)
	if n <= 2*maskShown {
		return strings.Repeat("*", n)
	}
	// Byte offsets of the end of the first 4 runes and the start of the
	// last 4, found decoding forwards so that they agree with the count.
	head, tail, i := 0, 0, 0
	for off := range key {
		switch i {
		case maskShown:
			head = off
		case n - maskShown:
			tail = off
		}
		i++
	}
	return key[:head] + strings.Repeat("*", n-2*maskShown) + key[tail:]
}
