package authz

import (
	"net/url"
	"strings"

	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Source is one place a client may put its credential: a request header or
// a query parameter. Header names are lower case, as Envoy sends them.
type Source struct {
	Header string
	Query  string
}

// Validate checks s: exactly one of Header or Query, and a Header that is a
// lower-case header name (see record.ValidHeaderName) and not one of keyward's own
// x-keyward-* headers. A problem is a *field.Error at "header", or at ""
// when the source as a whole is wrong.
func (s Source) Validate() error {
	switch {
	case (s.Header == "") == (s.Query == ""):
		return field.Errorf("", "set exactly one of header or query")
	case s.Header != "" && !record.ValidHeaderName(s.Header):
		return field.Errorf("header", "%q is not a lower-case header name", s.Header)
	case strings.HasPrefix(s.Header, headerPrefix):
		return field.Errorf("header", "%s* headers are keyward's own", headerPrefix)
	}
	return nil
}

// Every place keyward reads a credential from must be a place the answer
// removes it from (headers_to_remove, query_parameters_to_remove), in
// every spelling keyward accepts. Measured with Envoy 1.40: Envoy joins a
// repeated header into one value with commas, and removes every query
// parameter whose raw name is exactly the one named, splitting the query
// on '&' only; it keeps "ke%79=", "KEY=", "key+=", a "key=" after a ';',
// and a header spelled x_api_key. A provider may read any of those as the
// credential. So keyward reads a credential only in the spelling Envoy
// removes, once, and refuses a request that carries one in any other
// spelling, or more than one keyward token (ReasonAmbiguousCredential).

// found is what the client sent: at most one keyward token, and whether it
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
	// ambiguous: a second keyward token, a repeated credential, or one in
	// a spelling that Envoy would not remove.
	ambiguous bool
	// badScheme: a keyward token in Authorization under a scheme other
	// than Bearer, which would otherwise pass as the client's own key.
	badScheme bool
	// foreignIdentity: the client sent an x-keyward-* header that keyward
	// does not overwrite, so the answer must remove it (see responder).
	foreignIdentity bool
	// jwt: a credential place holds a JWT (see looksLikeJWT). It also
	// counts as the client's own key, which it is when keyward is given
	// no JWT issuers.
	jwt bool
}

// findCredentials looks through sources in order. Values are never copied
// or logged.
func findCredentials(sources []Source, headers map[string]string, path string) found {
	f := found{tokenAt: -1, customAt: -1}
	for i, src := range sources {
		if src.Header != "" {
			f.header(i, src.Header, headers[src.Header])
			continue
		}
		switch v, ok, unambiguous := queryCredential(path, src.Query); {
		case !unambiguous:
			f.ambiguous = true
		case ok:
			f.add(i, v)
		}
	}
	f.headerNames(sources, headers)
	return f
}

// header reads the credential header name, whose value is v ("" when
// absent).
func (f *found) header(i int, name, v string) {
	if strings.IndexByte(v, ',') >= 0 {
		// A repeated header, joined by Envoy: no credential holds a
		// comma, and which copy a provider reads is anyone's guess.
		f.ambiguous = true
		return
	}
	if name == "authorization" {
		cred, bearer := authorization(v)
		if !bearer {
			if token.LooksLikeToken(cred) {
				f.badScheme = true
				return
			}
			if !strings.HasPrefix(cred, token.ManagementPrefix) {
				// Another scheme's credential is the client's own,
				// passed on whole.
				cred = v
			}
		}
		v = cred
	}
	f.add(i, v)
}

// add records the credential v found at sources[i].
func (f *found) add(i int, v string) {
	switch {
	case v == "":
	case strings.HasPrefix(v, token.ManagementPrefix):
		f.management = true
	case token.LooksLikeToken(v):
		if f.tokenAt >= 0 {
			// A second token, or the same one twice: the answer removes
			// the place of one only when the client's key goes through.
			f.ambiguous = true
			return
		}
		f.token, f.tokenAt = v, i
	case f.customAt < 0:
		f.customKey, f.customAt = true, i
		f.jwt = f.jwt || looksLikeJWT(v)
	default:
		f.jwt = f.jwt || looksLikeJWT(v)
	}
}

// headerNames looks at every header name once: for x-keyward-* headers the
// answer must remove, and for a credential header spelled with '_' for
// '-', which Envoy passes on by default and some servers (CGI, WSGI) read
// as the header itself.
func (f *found) headerNames(sources []Source, headers map[string]string) {
	for name := range headers {
		switch {
		case isForeignIdentityHeader(name):
			f.foreignIdentity = true
		case strings.IndexByte(name, '_') >= 0 && underscored(name, sources):
			f.ambiguous = true
		}
	}
}

// underscored reports whether name is a credential header of sources with
// one or more '-' written as '_'.
func underscored(name string, sources []Source) bool {
	for _, s := range sources {
		if len(s.Header) != len(name) {
			continue
		}
		same := true
		for i := 0; i < len(name) && same; i++ {
			same = name[i] == s.Header[i] || name[i] == '_' && s.Header[i] == '-'
		}
		if same {
			return true
		}
	}
	return false
}

// authorization splits an Authorization value into its credential and
// whether its scheme is Bearer (RFC 6750 §2.1, in any letter case, spaces
// or tabs after it). For another scheme the credential is what follows
// the scheme; for a value without one, the whole value.
func authorization(v string) (cred string, bearer bool) {
	v = strings.TrimSpace(v)
	i := strings.IndexAny(v, " \t")
	if i < 0 {
		if isBearer(v) {
			return "", true // "Bearer" and nothing after it
		}
		return v, false
	}
	return strings.TrimLeft(v[i:], " \t"), isBearer(v[:i])
}

func isBearer(scheme string) bool { return strings.EqualFold(scheme, "bearer") }

// queryCredential returns the value of the query parameter name in path
// (Envoy's :path, which carries the query string), percent-decoded. ok
// says it is there; unambiguous is false when the query carries name in a
// spelling that Envoy would not remove — percent-escaped, '+' or space
// padded, in other letter case, after a ';' — or more than once. It
// allocates only when the value is percent-encoded.
func queryCredential(path, name string) (value string, ok, unambiguous bool) {
	_, query, _ := strings.Cut(path, "?")
	for query != "" {
		var pair string
		pair, query, _ = strings.Cut(query, "&")
		for rest, more := pair, true; more; {
			var part string
			part, rest, more = strings.Cut(rest, ";")
			k, v, _ := strings.Cut(part, "=")
			if !spells(k, name) {
				continue
			}
			if k != name || len(part) != len(pair) || ok {
				return "", false, false
			}
			value, ok = queryValue(v), true
		}
	}
	return value, ok, true
}

// queryValue decodes a query parameter value. A value that does not decode
// is still a credential the client meant to send: never a keyward token,
// since tokens need no escaping.
func queryValue(v string) string {
	if !strings.ContainsAny(v, "%+") {
		return v
	}
	if uv, err := url.QueryUnescape(v); err == nil {
		return uv
	}
	return v
}

// spells reports whether the raw query parameter name k, percent-decoded
// with '+' as a space, is name in any letter case, give or take spaces
// around it: a spelling some server may read as name. It does not
// allocate.
func spells(k, name string) bool {
	j := 0 // bytes of name matched so far
	for i := 0; i < len(k); {
		c, n := decodedByte(k, i)
		i += n
		switch {
		case c == ' ' && (j == 0 || j == len(name)):
		case j < len(name) && lower(c) == lower(name[j]):
			j++
		default:
			return false
		}
	}
	return j == len(name)
}

// decodedByte is the byte of the query text s at i after decoding, and how
// many bytes of s it took: a valid %XX escape is one byte, '+' a space.
func decodedByte(s string, i int) (byte, int) {
	switch {
	case s[i] == '+':
		return ' ', 1
	case s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
		return unhex(s[i+1])<<4 | unhex(s[i+2]), 3
	}
	return s[i], 1
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
