package authz

import (
	"fmt"
	"strings"

	"github.com/keyward/keyward/record"
)

// Endpoints: where each model of a request lives.
//
// A group that restricts models may only call endpoints where keyward
// knows where every model of the request lives: the top-level "model" of
// a chat body, the params.model of each request of an Anthropic batch, the
// model segment of a Gemini path, an Azure deployment. Each provider kind
// has a built-in table of such endpoints (builtinEndpoints); custom
// providers have none. The configuration adds entries per provider name
// (Options.Endpoints), which replace the built-in entries they overlap.
// A request for any other endpoint, or one the table marks "none", is
// refused for such a group (endpoint_not_allowed), whatever its model
// header says. Groups without model restrictions never consult a table.

// The context_extensions keys that tell keyward how Envoy rewrites a
// route's path before it reaches the provider (envoy-config sets both):
// the table holds the paths the provider serves, so keyward rewrites the
// path as Envoy will before matching it.
const (
	PathPrefixExtension    = "path_prefix"
	PrefixRewriteExtension = "prefix_rewrite"
)

// EndpointSpec is one endpoint as configuration writes it.
type EndpointSpec struct {
	// Method is the request's HTTP method, e.g. POST.
	Method string
	// Path is the path the provider serves, from its root as the
	// provider receives it (after Envoy's prefix_rewrite): literal
	// segments and at most one model segment, "{model}" alone or followed
	// by a literal suffix that starts with ':' (Gemini's
	// "{model}:generateContent").
	Path string
	// Model says where the request's model lives: "path" (the {model}
	// segment), "body.<json path>" (body.model; body.session.model;
	// body.requests[].params.model, "[]" being every element of an
	// array), or "none": refused for groups that restrict models.
	Model string
}

// EndpointError is a problem in one EndpointSpec: Field is "method",
// "path" or "model".
type EndpointError struct {
	Index int
	Field string
	Msg   string
}

// Error returns "[index].field: message".
func (e *EndpointError) Error() string { return fmt.Sprintf("[%d].%s: %s", e.Index, e.Field, e.Msg) }

// endpoint is a parsed EndpointSpec.
type endpoint struct {
	method string
	// segments of the path; the one with model set is the model segment,
	// its lit the suffix after the model.
	segments []segment
	// where the model lives: in the path, in the body at body, or
	// nowhere keyward reads (none).
	inPath, none bool
	body         []step
}

type segment struct {
	lit   string
	model bool
}

// maxSteps bounds a body location's JSON path.
const maxSteps = 8

// parseEndpoint parses spec; index only labels the error.
func parseEndpoint(index int, spec EndpointSpec) (endpoint, error) {
	bad := func(field, format string, args ...any) (endpoint, error) {
		return endpoint{}, &EndpointError{Index: index, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	e := endpoint{method: spec.Method}
	if spec.Method == "" || strings.TrimFunc(spec.Method, func(r rune) bool { return 'A' <= r && r <= 'Z' }) != "" {
		return bad("method", "%q is not an upper-case HTTP method", spec.Method)
	}
	segs, err := parsePattern(spec.Path)
	if err != nil {
		return bad("path", "%q: %v", spec.Path, err)
	}
	e.segments = segs
	hasModel := false
	for _, s := range segs {
		hasModel = hasModel || s.model
	}
	switch loc, ok := strings.CutPrefix(spec.Model, "body."); {
	case spec.Model == "none":
		e.none = true
	case spec.Model == "path":
		e.inPath = true
	case ok:
		if e.body, err = parseJSONPath(loc); err != nil {
			return bad("model", "%q: %v", spec.Model, err)
		}
	default:
		return bad("model", "%q is not path, none or body.<json path>", spec.Model)
	}
	if hasModel != e.inPath {
		return bad("model", "%q: the model is \"path\" exactly when the path has a {model} segment", spec.Model)
	}
	return e, nil
}

// parsePattern parses an EndpointSpec.Path.
func parsePattern(p string) ([]segment, error) {
	rest, ok := strings.CutPrefix(p, "/")
	if !ok {
		return nil, fmt.Errorf("must start with /")
	}
	var segs []segment
	models := 0
	for _, s := range strings.Split(rest, "/") {
		suffix, isModel := strings.CutPrefix(s, "{model}")
		switch {
		case isModel && suffix != "" && (suffix[0] != ':' || !plainSegment(suffix[1:])):
			return nil, fmt.Errorf("{model} may only be followed by ':' and a literal")
		case !isModel && !plainSegment(s):
			return nil, fmt.Errorf("segment %q: want letters, digits and - . _ ~ : @ only", s)
		case s == "." || s == "..":
			return nil, fmt.Errorf("dot segments are not paths a provider serves")
		}
		if isModel {
			models++
			s = suffix
		}
		segs = append(segs, segment{lit: s, model: isModel})
	}
	if models > 1 {
		return nil, fmt.Errorf("at most one {model} segment")
	}
	return segs, nil
}

// plainSegment reports whether s is a non-empty literal path segment that
// needs no escaping and that every server reads the same way.
func plainSegment(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if !modelByte(s[i]) && s[i] != '~' && s[i] != ':' {
			return false
		}
	}
	return true
}

// parseJSONPath parses "key.key[].key": member keys of letters, digits,
// '_' and '-', "[]" after one meaning every element of its array.
func parseJSONPath(p string) ([]step, error) {
	parts := strings.Split(p, ".")
	if len(parts) > maxSteps {
		return nil, fmt.Errorf("at most %d steps", maxSteps)
	}
	steps := make([]step, len(parts))
	for i, part := range parts {
		key, each := strings.CutSuffix(part, "[]")
		if key == "" || strings.TrimFunc(key, jsonKeyRune) != "" {
			return nil, fmt.Errorf("step %q: want a key of letters, digits, _ and -, and [] after it for every element of an array", part)
		}
		steps[i] = step{key: key, each: each}
	}
	if steps[len(steps)-1].each {
		return nil, fmt.Errorf("the last step is the model, not an array")
	}
	return steps, nil
}

func jsonKeyRune(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '-'
}

// modelByte marks the bytes a model name in a path may hold: letters,
// digits and - . _ @ (Vertex AI's claude-3-5-sonnet@20240620). Anything
// else (an escape, ';', ':') a server might read another way.
func modelByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '@'
}

// pathMatch says how a path compares with an endpoint's pattern.
type pathMatch int

const (
	// noMatch: the path is not the endpoint's.
	noMatch pathMatch = iota
	// matched: it is; a model segment holds a readable model.
	matched
	// badModel: it is but for the model segment, which holds no model
	// keyward can read unambiguously (empty, escaped, odd characters).
	badModel
)

// match compares the upstream path head+tail (see upstreamPath) with e's
// pattern, returning the model of its model segment. It does not allocate.
func (e *endpoint) match(head, tail string) (model string, m pathMatch) {
	i, m := 0, matched
	for n, part := range [2]string{head, tail} {
		if n == 1 && strings.HasSuffix(part, "/") {
			return "", noMatch // a trailing slash: another path
		}
		for part != "" {
			var seg string
			seg, part, _ = strings.Cut(part, "/")
			if i >= len(e.segments) {
				return "", noMatch
			}
			s := e.segments[i]
			i++
			switch name, ok := strings.CutSuffix(seg, s.lit); {
			case !s.model:
				if seg != s.lit {
					return "", noMatch
				}
			case !ok:
				return "", noMatch
			case !validModel(name):
				m = badModel
			default:
				model = name
			}
		}
	}
	if i != len(e.segments) {
		return "", noMatch
	}
	return model, m
}

// validModel reports whether a path's model segment holds a name keyward
// reads as every server does: modelBytes only, starting with a letter or
// digit.
func validModel(name string) bool {
	if name == "" || name[0] == '.' || name[0] == '-' || name[0] == '_' || name[0] == '@' {
		return false
	}
	for i := range len(name) {
		if !modelByte(name[i]) {
			return false
		}
	}
	return true
}

// overlaps reports whether some request could match both e and o.
func (e *endpoint) overlaps(o *endpoint) bool {
	if e.method != o.method || len(e.segments) != len(o.segments) {
		return false
	}
	for i, a := range e.segments {
		b := o.segments[i]
		switch {
		case a.model && b.model:
			// A model never holds ':', with which every suffix starts.
			if a.lit != b.lit {
				return false
			}
		case a.model || b.model:
			if b.model {
				a, b = b, a
			}
			// The model slot takes any segment with its suffix: a
			// readable model matches, anything else matches as
			// badModel, which is a match all the same (refused in
			// groups that restrict models, served elsewhere).
			if !strings.HasSuffix(b.lit, a.lit) {
				return false
			}
		case a.lit != b.lit:
			return false
		}
	}
	return true
}

// endpoints are the endpoint tables: built in per provider kind, and per
// provider name where the configuration adds to them. Immutable once
// built.
type endpoints struct {
	kinds map[record.Kind][]endpoint
	// providers holds, for each configured provider name, its table for
	// each kind with built-in endpoints, and under "" the configured
	// entries alone (for other kinds, and a provider without a record).
	providers map[string]map[record.Kind][]endpoint
}

// newEndpoints builds the tables from the built-in ones and extra, by
// provider name.
func newEndpoints(extra map[string][]EndpointSpec) (*endpoints, error) {
	e := &endpoints{kinds: map[record.Kind][]endpoint{}, providers: map[string]map[record.Kind][]endpoint{}}
	for kind, specs := range builtinEndpoints() {
		table, err := parseEndpoints(specs)
		if err != nil {
			return nil, fmt.Errorf("built-in %s endpoints%w", kind, err)
		}
		e.kinds[kind] = table
	}
	for provider, specs := range extra {
		table, err := parseEndpoints(specs)
		if err != nil {
			return nil, fmt.Errorf("endpoints of %s%w", provider, err)
		}
		byKind := map[record.Kind][]endpoint{"": table}
		for kind, builtin := range e.kinds {
			byKind[kind] = merge(table, builtin)
		}
		e.providers[provider] = byKind
	}
	return e, nil
}

// ParseEndpoints checks specs as one provider's configured endpoints: each
// well formed, no two that one request could match. The error is an
// *EndpointError.
func ParseEndpoints(specs []EndpointSpec) error {
	_, err := parseEndpoints(specs)
	return err
}

func parseEndpoints(specs []EndpointSpec) ([]endpoint, error) {
	table := make([]endpoint, 0, len(specs))
	for i, spec := range specs {
		e, err := parseEndpoint(i, spec)
		if err != nil {
			return nil, err
		}
		for j := range table {
			if table[j].overlaps(&e) {
				return nil, &EndpointError{Index: i, Field: "path", Msg: fmt.Sprintf("%s %s overlaps [%d] %s", spec.Method, spec.Path, j, specs[j].Path)}
			}
		}
		table = append(table, e)
	}
	return table, nil
}

// merge is table, then the entries of builtin that overlap none of it: a
// configured entry replaces the built-in ones a request could match both.
func merge(table, builtin []endpoint) []endpoint {
	out := append([]endpoint(nil), table...)
	for i := range builtin {
		replaced := false
		for j := range table {
			replaced = replaced || table[j].overlaps(&builtin[i])
		}
		if !replaced {
			out = append(out, builtin[i])
		}
	}
	return out
}

// table is the endpoint table of provider, whose record is of kind ("" for
// a provider without a record).
func (e *endpoints) table(provider string, kind record.Kind) []endpoint {
	byKind, ok := e.providers[provider]
	if !ok {
		return e.kinds[kind]
	}
	if table, ok := byKind[kind]; ok {
		return table
	}
	return byKind[""] // a kind without built-in endpoints

}

// find returns the endpoint of table that a method request to the upstream
// path head+tail is for, and the model its path names.
func find(table []endpoint, method, head, tail string) (*endpoint, string, pathMatch) {
	for i := range table {
		if table[i].method != method {
			continue
		}
		if model, m := table[i].match(head, tail); m != noMatch {
			return &table[i], model, m
		}
	}
	return nil, "", noMatch
}

// upstreamPath is the path (query cut) the provider will receive, as a
// head and a tail not joined, to spare an allocation: the route's
// prefix_rewrite without its leading '/' and the path after the route's
// prefix; or "" and the path without its leading '/' for a route that does
// not rewrite. ok is false when the path is not under the route's prefix,
// or the extensions are not a prefix and a rewrite that both end in '/'.
func upstreamPath(req *Request) (head, tail string, ok bool) {
	path, _, _ := strings.Cut(req.Path, "?")
	prefix, hasPrefix := req.ContextExtensions[PathPrefixExtension]
	rewrite, hasRewrite := req.ContextExtensions[PrefixRewriteExtension]
	if !hasPrefix && !hasRewrite {
		prefix, rewrite = "/", "/"
	}
	if !strings.HasSuffix(prefix, "/") || !strings.HasPrefix(rewrite, "/") || !strings.HasSuffix(rewrite, "/") || !strings.HasPrefix(path, prefix) {
		return "", "", false
	}
	return rewrite[1:], path[len(prefix):], true
}

// builtinEndpoints are the endpoints of each provider kind whose models
// keyward knows where to find. Left out on purpose, and so refused for
// groups that restrict models: OpenAI's batches (the models are in an
// uploaded file), multipart uploads (audio transcriptions, image edits:
// keyward reads JSON bodies only), the Assistants API (the model may come
// from a stored assistant); Anthropic's legacy completions; Gemini's
// countTokens and batchEmbedContents (models nested in the body as
// "models/…"), its tuned models, files and ephemeral auth tokens. Each is
// one configuration entry away for an operator who wants it.
func builtinEndpoints() map[record.Kind][]EndpointSpec {
	body := func(path string) EndpointSpec { return EndpointSpec{Method: "POST", Path: path, Model: "body.model"} }
	inPath := func(path string) EndpointSpec { return EndpointSpec{Method: "POST", Path: path, Model: "path"} }
	openai := []EndpointSpec{
		body("/v1/chat/completions"), body("/v1/completions"), body("/v1/embeddings"), body("/v1/responses"),
		body("/v1/moderations"), body("/v1/images/generations"), body("/v1/audio/speech"), body("/v1/realtime/sessions"),
		{Method: "POST", Path: "/v1/realtime/client_secrets", Model: "body.session.model"},
	}
	var gemini []EndpointSpec
	for _, version := range []string{"v1", "v1beta"} {
		for _, method := range []string{"generateContent", "streamGenerateContent", "embedContent"} {
			gemini = append(gemini, inPath("/"+version+"/models/{model}:"+method))
		}
	}
	gemini = append(gemini, body("/v1beta/openai/chat/completions"), body("/v1beta/openai/embeddings"))
	var azure []EndpointSpec
	for _, op := range []string{"chat/completions", "completions", "embeddings", "images/generations", "audio/speech"} {
		azure = append(azure, inPath("/openai/deployments/{model}/"+op))
	}
	azure = append(azure, body("/openai/v1/chat/completions"), body("/openai/v1/responses"), body("/openai/v1/embeddings"))
	return map[record.Kind][]EndpointSpec{
		record.KindOpenAI: openai,
		record.KindAnthropic: {
			body("/v1/messages"), body("/v1/messages/count_tokens"),
			{Method: "POST", Path: "/v1/messages/batches", Model: "body.requests[].params.model"},
		},
		record.KindGemini: gemini,
		record.KindAzure:  azure,
	}
}
