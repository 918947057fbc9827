package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/keyward/keyward/record"
)

func TestBuiltinEndpointsParse(t *testing.T) {
	e, err := newEndpoints(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []record.Kind{record.KindOpenAI, record.KindAnthropic, record.KindAzure, record.KindGemini} {
		if len(e.table("any", kind)) == 0 {
			t.Errorf("%s: no built-in endpoints", kind)
		}
	}
	if n := len(e.table("any", record.KindCustom)) + len(e.table("any", "")); n != 0 {
		t.Errorf("custom providers and providers without a record have %d endpoints, want none", n)
	}
}

func TestParseEndpoints(t *testing.T) {
	tests := map[string]struct {
		specs []EndpointSpec
		field string // of the *EndpointError; "" for none
		index int
	}{
		"body":          {specs: []EndpointSpec{{"POST", "/v1/chat/completions", "body.model"}}},
		"nested":        {specs: []EndpointSpec{{"POST", "/v1/x", "body.requests[].params.model"}}},
		"path":          {specs: []EndpointSpec{{"POST", "/v1/models/{model}:predict", "path"}}},
		"deployment":    {specs: []EndpointSpec{{"GET", "/d/{model}", "path"}}},
		"none":          {specs: []EndpointSpec{{"POST", "/v1/batches", "none"}}},
		"two methods":   {specs: []EndpointSpec{{"POST", "/v1/x", "none"}, {"GET", "/v1/x", "none"}}},
		"lower method":  {specs: []EndpointSpec{{"post", "/v1/x", "none"}}, field: "method"},
		"no method":     {specs: []EndpointSpec{{"", "/v1/x", "none"}}, field: "method"},
		"relative":      {specs: []EndpointSpec{{"POST", "v1/x", "none"}}, field: "path"},
		"empty segment": {specs: []EndpointSpec{{"POST", "/v1//x", "none"}}, field: "path"},
		"trailing /":    {specs: []EndpointSpec{{"POST", "/v1/x/", "none"}}, field: "path"},
		"escape":        {specs: []EndpointSpec{{"POST", "/v1/a%2Fb", "none"}}, field: "path"},
		"query":         {specs: []EndpointSpec{{"POST", "/v1/x?a=b", "none"}}, field: "path"},
		"dot segment":   {specs: []EndpointSpec{{"POST", "/v1/../x", "none"}}, field: "path"},
		"two models":    {specs: []EndpointSpec{{"POST", "/{model}/{model}", "path"}}, field: "path"},
		"model prefix":  {specs: []EndpointSpec{{"POST", "/x{model}", "path"}}, field: "path"},
		"model suffix":  {specs: []EndpointSpec{{"POST", "/{model}-x", "path"}}, field: "path"},
		"path, no slot": {specs: []EndpointSpec{{"POST", "/v1/x", "path"}}, field: "model"},
		"slot, body":    {specs: []EndpointSpec{{"POST", "/{model}", "body.model"}}, field: "model"},
		"unknown place": {specs: []EndpointSpec{{"POST", "/v1/x", "header"}}, field: "model"},
		"bad step":      {specs: []EndpointSpec{{"POST", "/v1/x", "body.a..b"}}, field: "model"},
		"array last":    {specs: []EndpointSpec{{"POST", "/v1/x", "body.models[]"}}, field: "model"},
		"too deep":      {specs: []EndpointSpec{{"POST", "/v1/x", "body.a.b.c.d.e.f.g.h.i"}}, field: "model"},
		"same twice":    {specs: []EndpointSpec{{"POST", "/v1/x", "none"}, {"POST", "/v1/x", "body.model"}}, field: "path", index: 1},
		"overlap":       {specs: []EndpointSpec{{"POST", "/v1/chat", "none"}, {"POST", "/v1/{model}", "path"}}, field: "path", index: 1},
		"model suffixes": {specs: []EndpointSpec{
			{"POST", "/m/{model}:a", "path"}, {"POST", "/m/{model}:b", "path"}, {"POST", "/m/{model}", "path"},
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := ParseEndpoints(tc.specs)
			var ee *EndpointError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.field == "":
			case !errors.As(err, &ee) || ee.Field != tc.field || ee.Index != tc.index:
				t.Fatalf("error %v, want one for [%d].%s", err, tc.index, tc.field)
			}
		})
	}
}

// A configured entry replaces the built-in ones it overlaps, adds to the
// rest, and applies to its provider only.
func TestConfiguredEndpoints(t *testing.T) {
	e, err := newEndpoints(map[string][]EndpointSpec{
		"vllm":   {{"POST", "/v1/chat/completions", "none"}, {"POST", "/v1/score", "body.model"}},
		"vertex": {{"POST", "/v1/projects/p/locations/l/publishers/google/models/{model}:generateContent", "path"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	find := func(provider string, kind record.Kind, path string) (string, bool) {
		ep, model, m := find(e.table(provider, kind), "POST", "", path)
		return model, m == matched && !ep.none
	}
	for _, tc := range []struct {
		provider string
		kind     record.Kind
		path     string
		want     bool
		model    string
	}{
		{"vllm", record.KindOpenAI, "v1/chat/completions", false, ""},
		{"vllm", record.KindOpenAI, "v1/score", true, ""},
		{"vllm", record.KindOpenAI, "v1/embeddings", true, ""},
		{"vllm", record.KindCustom, "v1/score", true, ""},
		{"vllm", "", "v1/score", true, ""},
		{"openai", record.KindOpenAI, "v1/chat/completions", true, ""},
		{"openai", record.KindOpenAI, "v1/score", false, ""},
		{"vertex", record.KindGemini, "v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash:generateContent", true, "gemini-2.0-flash"},
		{"vertex", record.KindGemini, "v1beta/models/gemini-2.0-flash:generateContent", true, "gemini-2.0-flash"},
	} {
		if model, ok := find(tc.provider, tc.kind, tc.path); ok != tc.want || model != tc.model {
			t.Errorf("%s (%s) %s: %q, %v; want %q, %v", tc.provider, tc.kind, tc.path, model, ok, tc.model, tc.want)
		}
	}
}

func TestUpstreamPath(t *testing.T) {
	ext := func(prefix, rewrite string) map[string]string {
		return map[string]string{PathPrefixExtension: prefix, PrefixRewriteExtension: rewrite}
	}
	tests := map[string]struct {
		path       string
		ext        map[string]string
		head, tail string
		ok         bool
	}{
		"no rewrite":          {"/v1/chat?x=1", nil, "", "v1/chat", true},
		"strip the prefix":    {"/openai/v1/chat?x=1", ext("/openai/", "/"), "", "v1/chat", true},
		"rewrite":             {"/azure/deployments/d/chat", ext("/azure/", "/openai/"), "openai/", "deployments/d/chat", true},
		"outside the prefix":  {"/other/v1/chat", ext("/openai/", "/"), "", "", false},
		"prefix alone":        {"/openai/v1", map[string]string{PathPrefixExtension: "/openai/"}, "", "", false},
		"rewrite without /":   {"/openai/v1", ext("/openai/", "/v1"), "", "", false},
		"prefix without /":    {"/openai/v1", ext("/openai", "/"), "", "", false},
		"not a path":          {"*", nil, "", "", false},
		"query only":          {"?key=x", nil, "", "", false},
		"prefix in the query": {"/x?/openai/", ext("/openai/", "/"), "", "", false},
	}
	for name, tc := range tests {
		head, tail, ok := upstreamPath(&Request{Path: tc.path, ContextExtensions: tc.ext})
		if head != tc.head || tail != tc.tail || ok != tc.ok {
			t.Errorf("%s: %q, %q, %v; want %q, %q, %v", name, head, tail, ok, tc.head, tc.tail, tc.ok)
		}
	}
}

func FuzzParseEndpoints(f *testing.F) {
	f.Add("POST", "/v1/models/{model}:generateContent", "path", "POST", "/v1/chat", "body.requests[].params.model")
	f.Add("GET", "/{model}", "path", "GET", "/x", "none")
	f.Add("POST", "//", "body.", "", "/{model}{model}", "body.[]")
	f.Fuzz(func(t *testing.T, m1, p1, l1, m2, p2, l2 string) {
		specs := []EndpointSpec{{m1, p1, l1}, {m2, p2, l2}}
		table, err := parseEndpoints(specs)
		var ee *EndpointError
		switch {
		case err != nil && !errors.As(err, &ee):
			t.Fatalf("error %v is not an *EndpointError", err)
		case err != nil:
			return
		}
		// What parses matches exactly the paths it describes, and the
		// two entries never match the same request.
		for i, e := range table {
			path := strings.ReplaceAll(specs[i].Path, "{model}", "m-1")
			model, m := e.match("", path[1:])
			if m != matched || e.inPath != (model == "m-1") {
				t.Fatalf("%q does not match its own path %q: %q, %v", specs[i].Path, path, model, m)
			}
			other := &table[1-i]
			if _, m := other.match("", path[1:]); m != noMatch && other.method == e.method {
				t.Fatalf("%q and %q both match %s %q", specs[0].Path, specs[1].Path, e.method, path)
			}
		}
	})
}

// FuzzEndpointMatch: a path matches an endpoint only as its literal
// pattern with a plain model in the model's slot: anything else (escapes,
// odd characters, other case, extra or empty segments, a trailing slash)
// does not match, or leaves the model unreadable.
func FuzzEndpointMatch(f *testing.F) {
	table, err := newEndpoints(nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"v1beta/models/gemini-1.5-flash:generateContent", "openai/deployments/gpt-4o/chat/completions", "v1/chat/completions",
		"v1beta/models/a%2Fb:generateContent", "v1beta/Models/x:generateContent", "openai/deployments/x;y/embeddings", "v1/chat/completions/"} {
		f.Add("", s)
		f.Add("openai/", strings.TrimPrefix(s, "openai/"))
	}
	f.Fuzz(func(t *testing.T, head, tail string) {
		if head != "" && !strings.HasSuffix(head, "/") {
			head += "/" // as upstreamPath gives it
		}
		for _, kind := range []record.Kind{record.KindOpenAI, record.KindAnthropic, record.KindAzure, record.KindGemini} {
			e, model, m := find(table.table("p", kind), "POST", head, tail)
			if m != matched {
				continue
			}
			var rebuilt []string
			for _, s := range e.segments {
				if s.model {
					rebuilt = append(rebuilt, model+s.lit)
				} else {
					rebuilt = append(rebuilt, s.lit)
				}
			}
			if strings.Join(rebuilt, "/") != head+tail || e.inPath != (model != "") || e.inPath && !validModel(model) {
				t.Fatalf("%s: %q + %q matched as %q with the model %q", kind, head, tail, rebuilt, model)
			}
		}
	})
}

// FuzzScanPath: scanPath yields exactly the strings encoding/json finds at
// the path, matching keys as it matches struct fields (case-insensitive),
// duplicates and order kept, and says ok exactly when the body is one valid
// object whose values along the path have the path's types.
func FuzzScanPath(f *testing.F) {
	for _, seed := range []string{
		`{"requests":[{"params":{"model":"a"}},{"Params":{"model":"b"},"params":{"MODEL":"c"}}]}`,
		`{"session":{"model":"x"},"session":{"model":"y"}}`, `{"ſession":{"model":"x"}}`,
		`{"requests":{"params":{"model":"a"}}}`, `{"requests":[1]}`, `{"requests":[]}`, `{}`, `[]`, `{"requests":[{"params":{"model":1}}]}`,
	} {
		f.Add([]byte(seed), true)
		f.Add([]byte(seed), false)
	}
	f.Fuzz(func(t *testing.T, body []byte, batch bool) {
		path := []step{{key: "session"}, {key: "model"}}
		if batch {
			path = []step{{key: "requests", each: true}, {key: "params"}, {key: "model"}}
		}
		var got []string
		ok := scanPath(string(body), path, func(m string) { got = append(got, m) })
		want, wantOK := jsonAtPath(body, path)
		if ok != wantOK || ok && !slices.Equal(got, want) {
			t.Fatalf("scanPath = %q, %v; encoding/json finds %q, %v", got, ok, want, wantOK)
		}
	})
}

// jsonAtPath is scanPath done with encoding/json's tokenizer, which keeps
// duplicate keys and their order.
func jsonAtPath(body []byte, path []step) ([]string, bool) {
	if !json.Valid(body) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var out []string
	if !tokensAtPath(dec, path, &out) {
		return nil, false
	}
	_, err := dec.Token()
	return out, err == io.EOF
}

func tokensAtPath(dec *json.Decoder, path []step, out *[]string) bool {
	tok, err := dec.Token()
	if err != nil {
		return false
	}
	if len(path) == 0 {
		s, ok := tok.(string)
		*out = append(*out, s)
		return ok
	}
	if tok != json.Delim('{') {
		return false
	}
	for dec.More() {
		key, _ := dec.Token()
		if !strings.EqualFold(key.(string), path[0].key) {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return false
			}
			continue
		}
		if !path[0].each {
			if !tokensAtPath(dec, path[1:], out) {
				return false
			}
			continue
		}
		if open, err := dec.Token(); err != nil || open != json.Delim('[') {
			return false
		}
		for dec.More() {
			if !tokensAtPath(dec, path[1:], out) {
				return false
			}
		}
		if _, err := dec.Token(); err != nil {
			return false
		}
	}
	_, err = dec.Token()
	return err == nil
}
