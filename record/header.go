package record

import "strings"

// ValidHeaderName reports whether h is a header name as Envoy presents it
// to ext_authz and as keyward names them in its configuration: lower-case
// HTTP token characters (RFC 9110 tchar).
func ValidHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.!#$%&'*+^`|~", r)) {
			return false
		}
	}
	return true
}
