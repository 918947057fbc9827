package authz

import (
	"net/url"
	"strings"

	"github.com/keyward/keyward/token"
)

// Source is one place a client may put its credential: a request header or
// a query parameter. Header names are lower case, as Envoy sends them.
type Source struct {
	Header string
	Query  string
}

// found is what the client sent: at most one keyward token and whether it
// also sent something else (its own provider key). Indexes point into the
// configured sources; -1 means absent.
type found struct {
	token     string
	tokenAt   int
	customKey bool
	customAt  int
	// management: the client sent a management token, which must never
	// reach a provider.
	management bool
}

// findCredentials looks through sources in order. The first value with the
// keyward prefix is the token; the first other value is a custom provider
// key. Values are never copied or logged.
func findCredentials(sources []Source, headers map[string]string, path string) found {
	f := found{tokenAt: -1, customAt: -1}
	for i, src := range sources {
		var v string
		var ok bool
		if src.Header != "" {
			v, ok = headers[src.Header]
			if ok && src.Header == "authorization" {
				v, ok = bearer(v)
			}
		} else {
			v, ok = queryParam(path, src.Query)
		}
		if !ok || v == "" {
			continue
		}
		switch {
		case strings.HasPrefix(v, token.ManagementPrefix):
			f.management = true
		case token.LooksLikeToken(v):
			if f.tokenAt < 0 {
				f.token, f.tokenAt = v, i
			}
		case f.customAt < 0:
			f.customKey, f.customAt = true, i
		}
	}
	return f
}

// bearer returns the credential of an "Authorization: Bearer x" value. Any
// other scheme is returned whole: it is not a keyward token, so it counts
// as a client's own credential.
func bearer(v string) (string, bool) {
	const scheme = "bearer"
	v = strings.TrimSpace(v)
	if len(v) >= len(scheme) && strings.EqualFold(v[:len(scheme)], scheme) &&
		(len(v) == len(scheme) || v[len(scheme)] == ' ') {
		return strings.TrimSpace(v[len(scheme):]), true
	}
	return v, true
}

// queryParam returns the first value of the query parameter name in path
// (Envoy's :path, which carries the query string). It allocates only when
// the value is percent-encoded.
func queryParam(path, name string) (string, bool) {
	_, query, ok := strings.Cut(path, "?")
	if !ok {
		return "", false
	}
	query, _, _ = strings.Cut(query, "#")
	for query != "" {
		var pair string
		pair, query, _ = strings.Cut(query, "&")
		k, v, _ := strings.Cut(pair, "=")
		if k != name {
			if !strings.ContainsAny(k, "%+") {
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != name {
				continue
			}
		}
		if strings.ContainsAny(v, "%+") {
			uv, err := url.QueryUnescape(v)
			if err != nil {
				// A value that does not decode is still a credential
				// the client meant to send: never a keyward token,
				// since tokens need no escaping.
				return v, true
			}
			return uv, true
		}
		return v, true
	}
	return "", false
}
