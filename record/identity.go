package record

import (
	"fmt"
	"strings"
	"time"
)

// Identity maps a mesh identity — a SPIFFE ID that Envoy verified from the
// peer's certificate (attributes.source.principal) — to a keyward user and
// group, so that a workload calls without a keyward token. A request
// without a token whose principal an enabled mapping matches is decided as
// the mapping's user in its group, with every check a token gets.
type Identity struct {
	// Name identifies the mapping (ValidateName rules): listings, audit
	// and metadata show it where a token would show its id.
	Name string
	// Principal is the SPIFFE ID matched: exact ("spiffe://td/ns/a/sa/b"),
	// or a prefix whose last segment is "*" ("spiffe://td/ns/a/*"), which
	// matches every ID below it. See ValidatePrincipal.
	Principal string
	User      string
	Group     string
	// Disabled mappings refuse their principal; they still win over a
	// shorter prefix, so disabling one never widens what another grants.
	Disabled bool
	Created  time.Time
	Updated  time.Time
}

// MaxPrincipal bounds a SPIFFE ID, in bytes, as the SPIFFE standard does.
const MaxPrincipal = 2048

const spiffeScheme = "spiffe://"

// ValidatePrincipal checks a principal pattern: a SPIFFE ID
// "spiffe://<trust domain>/<path>" with a lower-case trust domain of
// letters, digits, '.', '-' and '_', path segments of letters, digits,
// '.', '-' and '_' that are neither empty, "." nor "..", and nothing else
// (no port, user info, query, fragment or escapes). With prefix, the last
// segment may be "*", matching every ID below the segments before it;
// "*" appears nowhere else.
func ValidatePrincipal(p string, prefix bool) error {
	if err := checkPrincipal(p, prefix); err != "" {
		// Not quoted: a secret pasted into the wrong field stays out
		// of errors and logs.
		return fmt.Errorf("principal: %s", err)
	}
	return nil
}

// checkPrincipal is ValidatePrincipal without the formatting: it does not
// allocate, so that the decision can check a request's principal.
func checkPrincipal(p string, prefix bool) string {
	if len(p) > MaxPrincipal {
		return "longer than 2048 bytes"
	}
	rest, ok := strings.CutPrefix(p, spiffeScheme)
	if !ok {
		return `must start with "spiffe://"`
	}
	td, path, ok := strings.Cut(rest, "/")
	if td == "" {
		return "must name a trust domain"
	}
	for i := 0; i < len(td); i++ {
		if c := td[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return "trust domain: only lower-case letters, digits, '.', '-' and '_'"
		}
	}
	if !ok || path == "" {
		return "must have a path (spiffe://<trust domain>/<path>)"
	}
	for path != "" {
		var seg string
		seg, path, ok = strings.Cut(path, "/")
		switch {
		case seg == "*" && prefix && !ok:
			return ""
		case seg == "*":
			return `"*" only as the whole last segment of a prefix`
		case seg == "" || seg == "." || seg == "..":
			return `path segments must not be empty, "." or ".."`
		case ok && path == "":
			return "must not end in '/'"
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
				return "path: only letters, digits, '.', '-' and '_' in segments"
			}
		}
	}
	return ""
}

// IsPrincipalPrefix reports whether the valid pattern p is a prefix
// ("…/*") rather than an exact SPIFFE ID.
func IsPrincipalPrefix(p string) bool { return strings.HasSuffix(p, "/*") }

// MatchPrincipal reports whether the valid pattern matches principal, a
// SPIFFE ID Envoy verified: equal, or below a prefix pattern. A principal
// that is not a valid SPIFFE ID matches nothing. It does not allocate.
func MatchPrincipal(pattern, principal string) bool {
	if checkPrincipal(principal, false) != "" {
		return false
	}
	if base, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(principal, base)
	}
	return pattern == principal
}

// Identities indexes mappings for the decision: the exact ones by
// principal, the prefixes by their text before the "*". A lookup costs one
// map probe per path segment and allocates nothing. It is immutable.
type Identities struct {
	exact  map[string]*Identity
	prefix map[string]*Identity
}

// NewIdentities indexes ids. Of two mappings with the same principal (the
// stores refuse them, but a hand-edited store file may hold them), the one
// first by name wins, so that every replica picks the same.
func NewIdentities(ids []*Identity) *Identities {
	x := &Identities{exact: map[string]*Identity{}, prefix: map[string]*Identity{}}
	for _, id := range ids {
		m, key := x.exact, id.Principal
		if base, ok := strings.CutSuffix(id.Principal, "*"); ok {
			m, key = x.prefix, base
		}
		if old, ok := m[key]; !ok || id.Name < old.Name {
			m[key] = id
		}
	}
	return x
}

// Len is the number of mappings indexed.
func (x *Identities) Len() int {
	if x == nil {
		return 0
	}
	return len(x.exact) + len(x.prefix)
}

// Lookup returns the mapping of principal: the exact one, else the one of
// the longest matching prefix; nil when none matches or principal is not
// a valid SPIFFE ID. Disabled mappings are returned too (the caller
// refuses them).
func (x *Identities) Lookup(principal string) *Identity {
	if x == nil || principal == "" || checkPrincipal(principal, false) != "" {
		return nil
	}
	if id, ok := x.exact[principal]; ok {
		return id
	}
	if len(x.prefix) == 0 {
		return nil
	}
	// Longest first: each '/' after the trust domain ends a candidate.
	for i := len(principal) - 1; i >= len(spiffeScheme); i-- {
		if principal[i] != '/' {
			continue
		}
		if id, ok := x.prefix[principal[:i+1]]; ok {
			return id
		}
	}
	return nil
}
