package authz

import (
	"encoding/json"
	"math/bits"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Reading the model a request names, from its JSON body and its path.
//
// The body scanner is hand-written rather than a json.Decoder: it finds the
// top-level "model" of a body of up to 64 KiB without decoding the rest,
// allocates nothing unless the model or a key is escaped, and validates the
// whole body as strictly as RFC 8259. Strictness is the point: a body that
// keyward reads one way and a lenient provider parser another (NaN, a
// trailing comma, a second "model" past a truncation) would let a forbidden
// model through, so anything that is not one complete, valid JSON object
// leaves the body's model unknown, and policy refuses it.

// maxDepth is the deepest nesting a body may have, the top-level object
// counting as one: encoding/json's limit, so that the two accept the same
// documents.
const maxDepth = 10000

// bodyResult says what scanBody made of a body.
type bodyResult int

const (
	// bodyInvalid: not one complete, valid JSON object, or its last
	// "model" member is not a string. The body's model is unknown.
	bodyInvalid bodyResult = iota
	// bodyNoModel: a valid JSON object without a "model" member.
	bodyNoModel
	// bodyModel: a valid JSON object whose last "model" member is a
	// string.
	bodyModel
)

// modelFromBody returns the string value of the top-level "model" member of
// the JSON object body. Like encoding/json (and Python's json), the last of
// duplicate members wins. ok is false when body is not one complete, valid
// JSON object (truncated, trailing data, not an object) or when that member
// is missing or not a string. Nested "model" keys are ignored.
func modelFromBody(body string) (model string, ok bool) {
	m, r := scanBody(body, nil)
	return m, r == bodyModel
}

// scanBody validates body as one JSON object and returns the value of its
// last top-level "model" member (see modelFromBody). It also calls yield,
// when not nil, with the string value of every top-level member whose key is
// "model" in any letter case, duplicates included, in order: parsers
// disagree on which duplicate wins (most take the last, some the first) and
// Go's struct decoding matches keys without regard to case, so policy must
// allow every one of them. Values of such members that are not strings are
// not yielded: no provider takes them as a model.
func scanBody(body string, yield func(model string)) (model string, r bodyResult) {
	st := nesting{max: maxDepth - 1}
	found, nonString := false, false
	end := members(body, skipSpace(body, 0), func(key string, plain bool, i int) int {
		exact, folded := keyIs(key, plain, "model")
		if !folded || i >= len(body) || body[i] != '"' {
			if exact {
				model, found, nonString = "", false, true
			}
			return skipValue(body, i, &st)
		}
		v, end := stringAt(body, i)
		if end < 0 {
			return -1
		}
		if yield != nil {
			yield(v)
		}
		if exact {
			model, found, nonString = v, true, false
		}
		return end
	})
	switch {
	case end < 0 || skipSpace(body, end) != len(body) || nonString:
		return "", bodyInvalid
	case found:
		return model, bodyModel
	default:
		return "", bodyNoModel
	}
}

// step is one step of a JSON path into a request body: the member key,
// then, with each, every element of the array the member holds.
type step struct {
	key  string
	each bool
}

// scanPath validates body as one JSON object and calls yield with every
// string at path in it: under every member whose key is the step's key in
// any letter case (see keyIs), duplicates included, and with each, under
// every element of its array. ok is false when body is not one valid JSON
// object, or when a value along path is not what path says (not an object,
// not an array, not a string at its end): keyward then cannot tell which
// models the provider reads.
func scanPath(body string, path []step, yield func(string)) (ok bool) {
	end := walk(body, skipSpace(body, 0), path, yield)
	return end >= 0 && skipSpace(body, end) == len(body)
}

// walk is scanPath for the value at s[i]; it returns the index just past
// the value, or -1.
func walk(s string, i int, path []step, yield func(string)) int {
	if len(path) == 0 {
		v, end := stringAt(s, i)
		if end >= 0 {
			yield(v)
		}
		return end
	}
	st := nesting{max: maxDepth - 1}
	return members(s, i, func(key string, plain bool, j int) int {
		if _, folded := keyIs(key, plain, path[0].key); !folded {
			return skipValue(s, j, &st)
		}
		if !path[0].each {
			return walk(s, j, path[1:], yield)
		}
		return elements(s, j, func(k int) int { return walk(s, k, path[1:], yield) })
	})
}

// members calls member for each member of the JSON object that starts at
// s[i], in order, with its raw key (quotes included), whether the key is
// plain (see skipString) and the index of its value; member returns the
// index just past the value, or -1. members returns the index just past
// the object, or -1 when it is not a valid object.
func members(s string, i int, member func(key string, plain bool, value int) int) int {
	return items(s, i, '{', '}', func(start int) int {
		if start >= len(s) || s[start] != '"' {
			return -1
		}
		end, plain := skipString(s, start)
		if end < 0 {
			return -1
		}
		colon := skipSpace(s, end)
		if colon >= len(s) || s[colon] != ':' {
			return -1
		}
		return member(s[start:end], plain, skipSpace(s, colon+1))
	})
}

// elements is members for the JSON array that starts at s[i]: element gets
// the index of each value.
func elements(s string, i int, element func(value int) int) int {
	return items(s, i, '[', ']', element)
}

// items walks the object or array that starts at s[i] with open and ends
// with end, calling item at the start of each of its items (a member or a
// value), which returns the index just past it, or -1. It returns the
// index just past the container, or -1.
func items(s string, i int, open, end byte, item func(i int) int) int {
	if i >= len(s) || s[i] != open {
		return -1
	}
	if i = skipSpace(s, i+1); i < len(s) && s[i] == end {
		return i + 1
	}
	for {
		if i = item(i); i < 0 {
			return -1
		}
		if i = skipSpace(s, i); i >= len(s) {
			return -1
		}
		switch s[i] {
		case ',':
			i = skipSpace(s, i+1)
		case end:
			return i + 1
		default:
			return -1
		}
	}
}

// keyIs reports whether the raw (quoted) key is name, and whether it is
// name in any letter case, by Unicode simple folding as Go's encoding/json
// matches struct fields ("ſession" is "session" to it). plain says the key
// has no escape and no byte above 0x7f.
func keyIs(raw string, plain bool, name string) (exact, folded bool) {
	k := raw[1 : len(raw)-1]
	if !plain {
		// No character takes more than 6 bytes, escaped (\u017f): a
		// longer key needs no decoding.
		if len(k) > len(name)*6 {
			return false, false
		}
		var ok bool
		if k, ok = unquote(raw, false); !ok {
			return false, false
		}
	}
	return k == name, strings.EqualFold(k, name)
}

// stringAt decodes the JSON string at s[i], returning it and the index just
// past it; end is -1 when there is no valid string at i.
func stringAt(s string, i int) (v string, end int) {
	if i >= len(s) || s[i] != '"' {
		return "", -1
	}
	end, plain := skipString(s, i)
	if end < 0 {
		return "", -1
	}
	v, ok := unquote(s[i:end], plain)
	if !ok {
		return "", -1
	}
	return v, end
}

// unquote decodes the raw JSON string (quotes included) that skipString
// accepted. A plain string is a substring of raw, without allocation; one
// with escapes or bytes above 0x7f goes through encoding/json, so that
// invalid UTF-8 turns into U+FFFD exactly as the standard decoder does.
func unquote(raw string, plain bool) (string, bool) {
	inner := raw[1 : len(raw)-1]
	if plain || (strings.IndexByte(inner, '\\') < 0 && utf8.ValidString(inner)) {
		return inner, true
	}
	var v string
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return "", false
	}
	return v, true
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(s string, i int) int {
	for i < len(s) {
		switch s[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// strSafe marks the bytes a JSON string may hold as they are: not a quote,
// not a backslash, not a control character, not above 0x7f.
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// unsafe8 marks the bytes of x, eight bytes of a string, that are not
// strSafe: it is zero when all are safe, else its lowest set bit is the
// high bit of the first unsafe byte. (v-ones)&^v sets a byte's high bit
// when that byte of v is zero (a quote or a backslash, after the XOR); with
// ones*0x20, when it is below 0x20. Borrows may mark bytes after the first
// one wrongly, never before it.
func unsafe8(x uint64) uint64 {
	q, bs := x^(ones*'"'), x^(ones*'\\')
	return ((q-ones)&^q | (bs-ones)&^bs | (x-ones*0x20)&^x | x) & highs
}

// word8 is the eight bytes of s at i, little-endian (one load).
func word8(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// skipString returns the index just past the JSON string that starts with
// the quote at s[i], or -1 when it is not a valid string (an unknown escape,
// a control character, no closing quote). plain reports a string with no
// escape and no byte above 0x7f, which needs no decoding.
func skipString(s string, i int) (end int, plain bool) {
	plain = true
	for j := i + 1; j < len(s); {
		// Runs of plain ASCII, the common case, eight bytes at a time.
		if j+8 <= len(s) {
			m := unsafe8(word8(s, j))
			if m == 0 {
				j += 8
				continue
			}
			j += bits.TrailingZeros64(m) >> 3
		}
		switch c := s[j]; {
		case strSafe[c]:
			j++
		case c == '"':
			return j + 1, plain
		case c == '\\':
			plain = false
			if j+1 >= len(s) {
				return -1, false
			}
			switch s[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(s) || !isHex(s[j+2]) || !isHex(s[j+3]) || !isHex(s[j+4]) || !isHex(s[j+5]) {
					return -1, false
				}
				j += 6
			default:
				return -1, false
			}
		case c < 0x20:
			return -1, false
		default: // above 0x7f: left to unquote to decode
			plain = false
			j++
		}
	}
	return -1, false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// skipNumber returns the index just past the JSON number at s[i], or -1.
func skipNumber(s string, i int) int {
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i >= len(s):
		return -1
	case s[i] == '0':
		i++
	case '1' <= s[i] && s[i] <= '9':
		i = skipDigits(s, i)
	default:
		return -1
	}
	if i < len(s) && s[i] == '.' {
		if j := skipDigits(s, i+1); j > i+1 {
			i = j
		} else {
			return -1
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := skipDigits(s, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func skipDigits(s string, i int) int {
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	return i
}

// nesting is the stack of open containers inside a value, one bit each
// (1: object, 0: array), so that a closing bracket is checked against its
// opener without recursion. The first 256 levels live in the struct;
// only bodies nested deeper allocate.
type nesting struct {
	small [4]uint64
	more  []uint64
	// n is the number of open containers, max the most allowed.
	n, max int
}

// word is the word holding level n's bit.
func (st *nesting) word(n int) *uint64 {
	w := n / 64
	if w < len(st.small) {
		return &st.small[w]
	}
	return &st.more[w-len(st.small)]
}

func (st *nesting) push(object bool) bool {
	if st.n >= st.max {
		return false
	}
	if w := st.n / 64; w >= len(st.small)+len(st.more) {
		st.more = append(st.more, 0)
	}
	w, bit := st.word(st.n), uint64(1)<<uint(st.n%64)
	if object {
		*w |= bit
	} else {
		*w &^= bit
	}
	st.n++
	return true
}

// object reports whether the innermost open container is an object.
func (st *nesting) object() bool {
	n := st.n - 1
	return *st.word(n)&(1<<uint(n%64)) != 0
}

// skipValue returns the index just past the JSON value that starts at s[i]
// (no leading whitespace), or -1 when it is not a valid value. st is empty
// on entry and on a successful return.
func skipValue(s string, i int, st *nesting) int {
	for {
		// A value starts at s[i].
		if i >= len(s) {
			return -1
		}
		if c := s[i]; c == '{' || c == '[' {
			var empty bool
			if i, empty = openContainer(s, i, st); i < 0 {
				return -1
			}
			if !empty {
				continue
			}
		} else if i = skipScalar(s, i); i < 0 {
			return -1
		}
		var done bool
		if i, done = closeValues(s, i, st); i < 0 || done {
			return i
		}
	}
}

// openContainer enters the object or array that starts at s[i]. It returns
// the index of its first value (past the member name in an object), or,
// for an empty one, the index just past it and empty set; -1 when invalid.
func openContainer(s string, i int, st *nesting) (next int, empty bool) {
	c := s[i]
	if !st.push(c == '{') {
		return -1, false
	}
	i = skipSpace(s, i+1)
	if i < len(s) && (s[i] == '}' && c == '{' || s[i] == ']' && c == '[') {
		st.n--
		return i + 1, true
	}
	if c == '{' {
		i = skipMemberName(s, i)
	}
	return i, false
}

// skipScalar returns the index just past the string, literal or number
// that starts at s[i], or -1.
func skipScalar(s string, i int) int {
	switch s[i] {
	case '"':
		i, _ = skipString(s, i)
		return i
	case 't':
		return skipLiteral(s, i, "true")
	case 'f':
		return skipLiteral(s, i, "false")
	case 'n':
		return skipLiteral(s, i, "null")
	}
	return skipNumber(s, i)
}

// closeValues follows a value that ended just before s[i]: it closes the
// containers that end there, and returns the index where the next value
// starts, or, once the outermost one is closed, the index past it and
// done set; -1 when invalid.
func closeValues(s string, i int, st *nesting) (next int, done bool) {
	for st.n > 0 {
		i = skipSpace(s, i)
		if i >= len(s) {
			return -1, false
		}
		object := st.object()
		if c := s[i]; c == '}' && object || c == ']' && !object {
			i++
			st.n--
			continue
		} else if c != ',' {
			return -1, false
		}
		i = skipSpace(s, i+1)
		if object {
			i = skipMemberName(s, i)
		}
		return i, false
	}
	return i, true
}

// skipMemberName skips `"name" :` and the whitespace after it, returning the
// index of the member's value, or -1.
func skipMemberName(s string, i int) int {
	if i >= len(s) || s[i] != '"' {
		return -1
	}
	if i, _ = skipString(s, i); i < 0 {
		return -1
	}
	i = skipSpace(s, i)
	if i >= len(s) || s[i] != ':' {
		return -1
	}
	return skipSpace(s, i+1)
}

func skipLiteral(s string, i int, lit string) int {
	if !strings.HasPrefix(s[i:], lit) {
		return -1
	}
	return i + len(lit)
}

// pathResult says what pathModel made of a path.
type pathResult int

const (
	// pathNoModel: the path names no model.
	pathNoModel pathResult = iota
	// pathHasModel: the path names one model.
	pathHasModel
	// pathUnknown: the path names a model keyward cannot read (a bad
	// percent-escape, an empty name) or names two different ones.
	pathUnknown
)

// pathModel returns the model a request path (query ignored) names, for any
// provider:
//
//   - Gemini and Vertex AI: the segment after "/models/" when it has the
//     form {model}:{method} (/v1beta/models/gemini-1.5-pro:generateContent);
//     the model is the part before the last colon. A segment without a
//     colon (OpenAI's GET /v1/models/{id}) names no model.
//   - Azure OpenAI: the segment after "/deployments/"
//     (/openai/deployments/{deployment}/chat/completions): the deployment
//     stands for the model. Matched anywhere in the path, since a route
//     prefix may replace "/openai" before the request goes upstream.
//
// Percent-escapes in the segment are decoded, as the provider decodes them.
// It labels a request (the audit log, a user's own credential for the
// model); no policy rests on it: a group that restricts models matches the
// path against its provider's endpoints instead (see endpoint.match).
func pathModel(path string) (model string, r pathResult) {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	for _, marker := range [...]string{"/models/", "/deployments/"} {
		rest := path
		for {
			i := strings.Index(rest, marker)
			if i < 0 {
				break
			}
			rest = rest[i+len(marker):]
			seg, _, _ := strings.Cut(rest, "/")
			m, res := segmentModel(seg, marker == "/models/")
			switch {
			case res == pathNoModel:
				continue
			case res == pathUnknown, r == pathHasModel && m != model:
				return "", pathUnknown
			}
			model, r = m, pathHasModel
		}
	}
	return model, r
}

// segmentModel reads one path segment after a marker: {model}:{method}
// when method is set, else the deployment name.
func segmentModel(seg string, method bool) (string, pathResult) {
	if strings.IndexByte(seg, '%') >= 0 {
		var err error
		if seg, err = url.PathUnescape(seg); err != nil {
			return "", pathUnknown
		}
	}
	if method {
		i := strings.LastIndexByte(seg, ':')
		if i < 0 {
			return "", pathNoModel
		}
		seg = seg[:i]
	}
	if seg == "" {
		if method {
			return "", pathUnknown
		}
		return "", pathNoModel
	}
	return seg, pathHasModel
}

// maxLoggedModel bounds the model in an audit event: a body's model is
// client-controlled and may be as long as the body.
const maxLoggedModel = 128

// clipModel is model cut to maxLoggedModel bytes, on a character boundary.
func clipModel(model string) string {
	if len(model) <= maxLoggedModel {
		return model
	}
	i := maxLoggedModel
	for i > 0 && !utf8.RuneStart(model[i]) {
		i--
	}
	return model[:i] + "…"
}
