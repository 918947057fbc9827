package authz

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// chatBody is a chat completion body of about size bytes, shaped as the
// Python SDK sends it: messages first, the model after them, so that the
// scanner has to cross the whole conversation.
func chatBody(size int, model string) string {
	var b strings.Builder
	b.WriteString(`{"messages":[{"role":"system","content":"You are a helpful assistant.\nAnswer briefly; quote with \"double quotes\"."}`)
	line := `,{"role":"user","content":"Summarise the report: revenue grew 12% (Q3), costs fell \u2014 see table 4.\n"},{"role":"assistant","content":[{"type":"text","text":"Revenue up, costs down.","model":"decoy"}]}`
	for b.Len()+len(line) < size-120 {
		b.WriteString(line)
	}
	b.WriteString(`],"model":"` + model + `","temperature":0.7,"max_tokens":256,"stream":false,"metadata":{"model":"nested"}}`)
	return b.String()
}

func TestModelFromBody(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	tests := map[string]struct {
		body string
		want string
		ok   bool
	}{
		"simple":                  {`{"model":"gpt-4o"}`, "gpt-4o", true},
		"whitespace":              {" \t\r\n{ \"model\" :\n\"gpt-4o\" , \"n\" : 1 }\n ", "gpt-4o", true},
		"after other members":     {`{"messages":[{"role":"user","content":"hi"}],"stream":true,"n":-1.5e+3,"x":null,"y":false,"model":"o3"}`, "o3", true},
		"escaped value":           {`{"model":"gpt\u002d4o"}`, "gpt-4o", true},
		"escaped key":             {`{"mod\u0065l":"gpt-4o"}`, "gpt-4o", true},
		"escaped slash":           {`{"model":"org\/m"}`, "org/m", true},
		"unicode value":           {`{"model":"modèle-ü"}`, "modèle-ü", true},
		"surrogate pair":          {`{"model":"m\ud83d\ude00"}`, "m😀", true},
		"invalid utf-8 value":     {"{\"model\":\"gpt\xff\"}", "gpt\uFFFD", true},
		"empty model":             {`{"model":""}`, "", true},
		"nested object ignored":   {`{"metadata":{"model":"gpt-4o"},"model":"o3"}`, "o3", true},
		"nested only":             {`{"metadata":{"model":"gpt-4o"}}`, "", false},
		"in array ignored":        {`{"messages":[{"model":"gpt-4o"},"model"],"model":"o3"}`, "o3", true},
		"key as a value ignored":  {`{"a":"model","b":["model","x"]}`, "", false},
		"duplicate: last wins":    {`{"model":"gpt-4o-mini","model":"gpt-4o"}`, "gpt-4o", true},
		"string after non-string": {`{"model":1,"model":"gpt-4o"}`, "gpt-4o", true},
		"other case ignored":      {`{"Model":"gpt-4o","model":"o3"}`, "o3", true},
		"other case only":         {`{"MODEL":"gpt-4o"}`, "", false},
		"empty object":            {`{}`, "", false},
		"deepest allowed":         {`{"a":` + deep(maxDepth-1) + `,"model":"m"}`, "m", true},
		"huge body, model last":   {chatBody(64<<10, "gpt-4o-mini"), "gpt-4o-mini", true},
		"huge body, model first":  {`{"model":"o3",` + chatBody(64<<10, "o3")[1:], "o3", true},
		"model not a string":      {`{"model":42}`, "", false},
		"model null":              {`{"model":null}`, "", false},
		"model an object":         {`{"model":{"name":"gpt-4o"}}`, "", false},
		"last model not a string": {`{"model":"gpt-4o","model":["o3"]}`, "", false},
		"too deep":                {`{"a":` + deep(maxDepth) + `,"model":"m"}`, "", false},
		"array":                   {`[{"model":"gpt-4o"}]`, "", false},
		"string":                  {`"model"`, "", false},
		"null":                    {`null`, "", false},
		"empty":                   {``, "", false},
		"blank":                   {"  \n", "", false},
		"truncated in value":      {`{"model":"gpt-4`, "", false},
		"truncated after value":   {`{"model":"gpt-4o"`, "", false},
		"truncated later":         {`{"model":"gpt-4o","messages":[{"role":"us`, "", false},
		"truncated escape":        {`{"model":"gpt\u00`, "", false},
		"trailing data":           {`{"model":"gpt-4o"}{"model":"o3"}`, "", false},
		"trailing comma":          {`{"model":"gpt-4o",}`, "", false},
		"trailing comma in array": {`{"a":[1,],"model":"gpt-4o"}`, "", false},
		"missing comma":           {`{"a":1 "model":"gpt-4o"}`, "", false},
		"missing colon":           {`{"model" "gpt-4o"}`, "", false},
		"NaN":                     {`{"t":NaN,"model":"gpt-4o"}`, "", false},
		"Infinity":                {`{"t":-Infinity,"model":"gpt-4o"}`, "", false},
		"leading zero":            {`{"t":01,"model":"gpt-4o"}`, "", false},
		"bare dot":                {`{"t":1.,"model":"gpt-4o"}`, "", false},
		"bare exponent":           {`{"t":1e,"model":"gpt-4o"}`, "", false},
		"plus sign":               {`{"t":+1,"model":"gpt-4o"}`, "", false},
		"single quotes":           {`{'model':'gpt-4o'}`, "", false},
		"unquoted key":            {`{model:"gpt-4o"}`, "", false},
		"comment":                 {`{/*x*/"model":"gpt-4o"}`, "", false},
		"byte order mark":         {"\uFEFF{\"model\":\"gpt-4o\"}", "", false},
		"control character":       {"{\"model\":\"gpt\t4o\"}", "", false},
		"unknown escape":          {`{"model":"gpt\x4o"}`, "", false},
		"short unicode escape":    {`{"model":"gpt\u2d"}`, "", false},
		"mismatched brackets":     {`{"a":[1},"model":"gpt-4o"}`, "", false},
		"literal typo":            {`{"a":tru,"model":"gpt-4o"}`, "", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := modelFromBody(tc.body)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("modelFromBody = %q, %v; want %q, %v", clipModel(got), ok, tc.want, tc.ok)
			}
			// Whatever the scanner accepts, encoding/json reads the same.
			if ok {
				var m map[string]json.RawMessage
				var v string
				if err := json.Unmarshal([]byte(tc.body), &m); err != nil || json.Unmarshal(m["model"], &v) != nil || v != got {
					t.Fatalf("encoding/json disagrees: %v, %q", err, v)
				}
			}
		})
	}
}

// Every top-level "model" in any letter case is yielded, duplicates
// included, so that policy can require all of them.
func TestScanBodyYieldsEveryModel(t *testing.T) {
	tests := map[string]struct {
		body    string
		yielded []string
		model   string
		result  bodyResult
	}{
		"one":            {`{"model":"a"}`, []string{"a"}, "a", bodyModel},
		"duplicates":     {`{"model":"a","x":1,"model":"b"}`, []string{"a", "b"}, "b", bodyModel},
		"letter case":    {`{"Model":"a","MODEL":"b","model":"c","mOdEl":1}`, []string{"a", "b", "c"}, "c", bodyModel},
		"escaped case":   {`{"\u004dODEL":"a"}`, []string{"a"}, "", bodyNoModel},
		"nested ignored": {`{"x":{"model":"a"},"y":[{"Model":"b"}]}`, nil, "", bodyNoModel},
		"none":           {`{"models":"a","modelx":"b","mode":"c"}`, nil, "", bodyNoModel},
		"invalid after":  {`{"model":"a","x":}`, []string{"a"}, "", bodyInvalid},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got []string
			model, r := scanBody(tc.body, func(m string) { got = append(got, m) })
			if strings.Join(got, "|") != strings.Join(tc.yielded, "|") || model != tc.model || r != tc.result {
				t.Fatalf("yielded %q, returned %q, %v; want %q, %q, %v", got, model, r, tc.yielded, tc.model, tc.result)
			}
		})
	}
}

// Every byte at every offset of a word-scanned string: the scanner agrees
// with encoding/json on which are allowed, and stops on the first quote.
func TestSkipStringEveryByte(t *testing.T) {
	for c := range 256 {
		for at := range 20 {
			value := []byte(strings.Repeat("a", 20))
			value[at] = byte(c)
			body := `{"model":"` + string(value) + `"}`
			var m map[string]json.RawMessage
			valid := json.Unmarshal([]byte(body), &m) == nil
			got, ok := modelFromBody(body)
			var want string
			if valid {
				json.Unmarshal(m["model"], &want)
			}
			if ok != (valid && m["model"][0] == '"') || got != want {
				t.Fatalf("byte %#x at %d: %q, %v; encoding/json: valid %v, %q", c, at, got, ok, valid, want)
			}
		}
	}
}

func FuzzModelFromBody(f *testing.F) {
	for _, seed := range []string{
		`{"model":"gpt-4o"}`, `{"model":"gpt\u002d4o","model":"x"}`, `{"mod\u0065l":1}`, `{"a":[{"model":"b"},1.5e3,true,null],"model":"c"}`,
		`{"model":"a"`, `[1]`, `{"Model":"a"}`, "{\"model\":\"\xff\"}", `{"a":"\ud800"}`, `null`, `{}`, ` {"model" : "" } `,
		chatBody(2048, "o3"),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := modelFromBody(string(body))
		_, r := scanBody(string(body), nil)
		var m map[string]json.RawMessage
		err := json.Unmarshal(body, &m)
		raw, has := m["model"]
		var want string
		isString := has && json.Unmarshal(raw, &want) == nil && len(raw) > 0 && raw[0] == '"'
		switch {
		case err == nil && m != nil && isString:
			if !ok || got != want {
				t.Fatalf("modelFromBody = %q, %v; encoding/json reads %q", got, ok, want)
			}
		case ok:
			t.Fatalf("modelFromBody = %q, true; encoding/json: %v, model %s", got, err, raw)
		}
		// The scanner is exactly as strict as encoding/json: it refuses a
		// body only when encoding/json does, or when the model is not a
		// string.
		valid := err == nil && m != nil
		if (r != bodyInvalid) != (valid && (!has || isString)) {
			t.Fatalf("scanBody = %v; encoding/json: %v, model %s", r, err, raw)
		}
	})
}

func TestPathModel(t *testing.T) {
	tests := map[string]struct {
		path  string
		want  string
		wantR pathResult
	}{
		"gemini":                {"/v1beta/models/gemini-1.5-pro:generateContent", "gemini-1.5-pro", pathHasModel},
		"gemini stream":         {"/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", "gemini-2.0-flash", pathHasModel},
		"gemini v1":             {"/v1/models/gemini-1.5-flash:countTokens", "gemini-1.5-flash", pathHasModel},
		"behind a route prefix": {"/gemini/v1beta/models/gemini-x:generateContent?key=kw_x", "gemini-x", pathHasModel},
		"vertex":                {"/v1/projects/p/locations/us-central1/publishers/google/models/gemini-1.5-pro:generateContent", "gemini-1.5-pro", pathHasModel},
		"vertex with version":   {"/v1/projects/p/locations/l/publishers/anthropic/models/claude-3-5-sonnet@20240620:rawPredict", "claude-3-5-sonnet@20240620", pathHasModel},
		"percent-escaped":       {"/v1beta/models/gemini%2D1.5-pro%3AgenerateContent", "gemini-1.5-pro", pathHasModel},
		"same model twice":      {"/v1/models/a:b/models/a:c", "a", pathHasModel},
		"azure":                 {"/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21", "gpt4o", pathHasModel},
		"azure behind a prefix": {"/azure/deployments/my-gpt-4o/embeddings", "my-gpt-4o", pathHasModel},
		"azure deployment only": {"/openai/deployments/gpt4o", "gpt4o", pathHasModel},
		"openai chat":           {"/openai/v1/chat/completions", "", pathNoModel},
		"openai model retrieve": {"/v1/models/gpt-4o", "", pathNoModel},
		"openai model list":     {"/v1/models", "", pathNoModel},
		"azure list":            {"/openai/deployments?api-version=1", "", pathNoModel},
		"azure empty name":      {"/openai/deployments//chat", "", pathNoModel},
		"in the query only":     {"/v1/chat/completions?x=/models/gpt-4o:generateContent", "", pathNoModel},
		"empty":                 {"", "", pathNoModel},
		"empty model":           {"/v1beta/models/:generateContent", "", pathUnknown},
		"bad escape":            {"/v1beta/models/gemini%zz:generateContent", "", pathUnknown},
		"two models":            {"/v1beta/models/a:generateContent/models/b:generateContent", "", pathUnknown},
		"model and deployment":  {"/openai/deployments/a/models/b:x", "", pathUnknown},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, r := pathModel(tc.path)
			if got != tc.want || r != tc.wantR {
				t.Fatalf("pathModel(%q) = %q, %v; want %q, %v", tc.path, got, r, tc.want, tc.wantR)
			}
		})
	}
}

func FuzzPathModel(f *testing.F) {
	for _, seed := range []string{"/v1beta/models/g:generateContent?alt=sse", "/openai/deployments/d/chat", "/models/%zz:x", "/models/a:b/models/c:d", "/deployments/"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, path string) {
		m, r := pathModel(path)
		if (r == pathHasModel) != (m != "") {
			t.Fatalf("pathModel(%q) = %q, %v", path, m, r)
		}
		if before, _, _ := strings.Cut(path, "?"); r == pathHasModel && !strings.Contains(before, "/models/") && !strings.Contains(before, "/deployments/") {
			t.Fatalf("pathModel(%q) = %q from no marker", path, m)
		}
	})
}

// TestDecideModel: how a group that restricts models reads them; the
// adversarial cases are in TestAdversarialModels.
func TestDecideModel(t *testing.T) {
	f := newFixture(t)
	s := f.server(t, Options{})
	const (
		allowed   = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
		forbidden = `{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}]}`
	)
	tests := map[string]struct {
		tok      string // the fixture's token name; "gpt" restricts models to gpt-4o* and o3
		header   string // x-ai-eg-model
		partial  string // x-envoy-auth-partial-body: "false" when there is a body, unless set; "-" for none
		provider string // default openai
		path     string // default /v1/chat/completions
		body     string
		want     Reason
		// wantModel is Decision.Model: the model refused, or the one the
		// request goes out for.
		wantModel string
	}{
		"body allowed":                     {tok: "gpt", body: allowed, want: ReasonAllowed, wantModel: "gpt-4o-mini"},
		"body forbidden":                   {tok: "gpt", body: forbidden, want: ReasonModelNotAllowed, wantModel: "gpt-3.5-turbo"},
		"header launders a forbidden body": {tok: "gpt", header: "gpt-4o-mini", body: forbidden, want: ReasonModelNotAllowed, wantModel: "gpt-3.5-turbo"},
		"header forbidden, body allowed":   {tok: "gpt", header: "gpt-3.5-turbo", body: allowed, want: ReasonModelNotAllowed, wantModel: "gpt-3.5-turbo"},
		"body first, then header":          {tok: "gpt", header: "o3", body: allowed, want: ReasonAllowed, wantModel: "gpt-4o-mini"},
		"duplicate forbidden first":        {tok: "gpt", body: `{"model":"gpt-3.5-turbo","model":"gpt-4o"}`, want: ReasonModelNotAllowed, wantModel: "gpt-3.5-turbo"},
		"duplicate forbidden last":         {tok: "gpt", body: `{"model":"gpt-4o","model":"gpt-3.5-turbo"}`, want: ReasonModelNotAllowed, wantModel: "gpt-3.5-turbo"},
		"duplicates allowed: last wins":    {tok: "gpt", body: `{"model":"o3","model":"gpt-4o"}`, want: ReasonAllowed, wantModel: "gpt-4o"},
		"other letter case forbidden":      {tok: "gpt", body: `{"model":"gpt-4o","Model":"gpt-3.5-turbo"}`, want: ReasonModelNotAllowed, wantModel: "gpt-3.5-turbo"},
		"other letter case only":           {tok: "gpt", body: `{"MODEL":"gpt-4o"}`, want: ReasonModelNotAllowed},
		"nested model ignored":             {tok: "gpt", body: `{"model":"o3","metadata":{"model":"gpt-3.5-turbo"}}`, want: ReasonAllowed, wantModel: "o3"},
		"body without model, header":       {tok: "gpt", header: "o3", body: `{"messages":[]}`, want: ReasonModelNotAllowed, wantModel: "o3"},
		"body without model, no header":    {tok: "gpt", body: `{"messages":[]}`, want: ReasonModelNotAllowed},
		"no body, header":                  {tok: "gpt", header: "o3", want: ReasonBodyNotForwarded, wantModel: "o3"},
		"empty body":                       {tok: "gpt", header: "o3", partial: "-", path: "/v1/chat/completions", want: ReasonBodyNotForwarded, wantModel: "o3"},
		"partial body":                     {tok: "gpt", partial: "true", body: allowed[:40], want: ReasonModelUnknown},
		"partial body with a model":        {tok: "gpt", partial: "true", body: allowed, want: ReasonModelUnknown},
		"partial joined to a client copy":  {tok: "gpt", partial: "false,true", header: "o3", body: allowed, want: ReasonModelUnknown, wantModel: "o3"},
		"truncated without the header":     {tok: "gpt", header: "o3", body: allowed[:40], want: ReasonModelUnknown, wantModel: "o3"},
		"not JSON":                         {tok: "gpt", header: "o3", body: "--boundary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-3.5-turbo", want: ReasonModelUnknown, wantModel: "o3"},
		"lenient JSON":                     {tok: "gpt", header: "o3", body: `{"temperature":NaN,"model":"gpt-3.5-turbo"}`, want: ReasonModelUnknown, wantModel: "o3"},
		"model not a string":               {tok: "gpt", header: "o3", body: `{"model":["gpt-3.5-turbo"]}`, want: ReasonModelUnknown, wantModel: "o3"},
		"path allowed":                     {tok: "gpt", provider: "gemini", path: "/v1beta/models/o3:generateContent", body: `{}`, want: ReasonAllowed, wantModel: "o3"},
		"path forbidden, header allowed":   {tok: "gpt", provider: "gemini", header: "o3", path: "/v1beta/models/gemini-ultra:generateContent", body: `{}`, want: ReasonModelNotAllowed, wantModel: "gemini-ultra"},
		"path unreadable":                  {tok: "gpt", provider: "gemini", header: "o3", path: "/v1beta/models/o3%zz:generateContent", body: `{}`, want: ReasonModelUnknown, wantModel: "o3"},
		"path on another provider":         {tok: "gpt", header: "o3", path: "/v1beta/models/o3:generateContent", body: `{}`, want: ReasonEndpointNotAllowed, wantModel: "o3"},
		"azure deployment":                 {tok: "gpt", provider: "azure", path: "/openai/deployments/gpt-4o/chat/completions", body: `{"messages":[]}`, want: ReasonAllowed, wantModel: "gpt-4o"},
		"azure deployment, body model":     {tok: "gpt", provider: "azure", path: "/openai/deployments/gpt-4o/chat/completions", body: `{"model":"o3"}`, want: ReasonAllowed, wantModel: "gpt-4o"},
		"azure body forbidden":             {tok: "gpt", provider: "azure", path: "/openai/deployments/gpt-4o/chat/completions", body: forbidden, want: ReasonModelNotAllowed, wantModel: "gpt-3.5-turbo"},
		// A group without model restrictions never reads the body.
		"unrestricted: body not read": {tok: "ok", header: "h", body: forbidden, want: ReasonAllowed, wantModel: "h"},
		"unrestricted: invalid body":  {tok: "ok", body: "not json", partial: "true", want: ReasonAllowed},
		"unrestricted: no body":       {tok: "ok", partial: "-", want: ReasonAllowed},
		// Nor the path, unless for the audit log of a denial.
		"unrestricted: header kept": {tok: "ok", header: "h", path: "/v1beta/models/p:generateContent", want: ReasonAllowed, wantModel: "h"},
		"denied: path over header":  {tok: "revoked", header: "h", path: "/v1beta/models/p:generateContent", want: ReasonTokenRevoked, wantModel: "p"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := bearerHeader(f.tokens[tc.tok])
			if tc.header != "" {
				h["x-ai-eg-model"] = tc.header
			}
			switch {
			case tc.partial == "-":
			case tc.partial != "":
				h[PartialBodyHeader] = tc.partial
			case tc.body != "":
				h[PartialBodyHeader] = "false"
			}
			path, provider := cmp.Or(tc.path, "/v1/chat/completions"), cmp.Or(tc.provider, "openai")
			d := s.authorizer.Decide(context.Background(), &Request{Method: "POST", Headers: h, Path: path, Body: tc.body, ContextExtensions: map[string]string{"provider": provider}})
			if d.Reason != tc.want || d.Model != tc.wantModel {
				t.Fatalf("reason %q, model %q; want %q, %q", d.Reason, d.Model, tc.want, tc.wantModel)
			}
		})
	}
}

// A user with credentials of their own gets the one for the body's model,
// even in a group that does not restrict models; a user without any never
// has the body read.
func TestPrivateKeyFromBodyModel(t *testing.T) {
	f := newFixture(t)
	s := f.server(t, Options{})
	body := `{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o"}`
	decide := func(tok string, headers map[string]string) Decision {
		h := bearerHeader(f.tokens[tok])
		for k, v := range headers {
			h[k] = v
		}
		return s.authorizer.Decide(context.Background(), &Request{Headers: h, Path: "/v1/chat/completions", Body: body, ContextExtensions: map[string]string{"provider": "openai"}})
	}
	if d := decide("ann", nil); d.Reason != ReasonAllowed || d.Credential == nil || d.Credential.ID != "annopenai" || d.Model != "gpt-4o" {
		t.Errorf("ann: %q, model %q, credential %v; want her gpt-4o credential", d.Reason, d.Model, d.Credential)
	}
	// The body, which the provider reads, beats the header.
	if d := decide("ann", map[string]string{"x-ai-eg-model": "o3"}); d.Credential == nil || d.Credential.ID != "annopenai" {
		t.Errorf("ann with header o3: credential %v, want annopenai", d.Credential)
	}
	// A cut body is not read: the header decides.
	if d := decide("ann", map[string]string{PartialBodyHeader: "true", "x-ai-eg-model": "o3"}); d.Credential != nil || d.Model != "o3" {
		t.Errorf("ann, partial body: credential %v, model %q", d.Credential, d.Model)
	}
	if d := decide("ben", nil); d.Reason != ReasonAllowed || d.Model != "" || d.Key.ID != "k1" {
		t.Errorf("ben: %q, model %q, key %v; want the server key and the body unread", d.Reason, d.Model, d.Key)
	}
}

// The gRPC shell passes the body in either of Envoy's forms, and the audit
// log bounds the model it records.
func TestCheckReadsBody(t *testing.T) {
	f := newFixture(t)
	var logs bytes.Buffer
	a, err := NewAuthorizer(f.records, f.ring, Options{Sources: []Source{{Header: "authorization"}}, ModelHeader: "x-ai-eg-model", Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(a, ServerOptions{Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	headers := map[string]string{"authorization": "Bearer " + f.tokens["gpt"], "x-ai-eg-model": "gpt-4o-mini", PartialBodyHeader: "false"}
	long := strings.Repeat("é", 200)
	for name, tc := range map[string]struct {
		body, raw string
		want      int
	}{
		"string allowed":    {body: `{"model":"gpt-4o-mini"}`, want: 200},
		"string laundering": {body: `{"model":"gpt-3.5-turbo"}`, want: 403},
		"bytes allowed":     {raw: `{"model":"gpt-4o-mini"}`, want: 200},
		"bytes laundering":  {raw: `{"model":"gpt-3.5-turbo"}`, want: 403},
		"long model":        {body: `{"model":"` + long + `"}`, want: 403},
	} {
		t.Run(name, func(t *testing.T) {
			req := checkRequest(headers, "", "openai")
			req.Attributes.Request.Http.Body = tc.body
			req.Attributes.Request.Http.RawBody = []byte(tc.raw)
			resp, err := check(t, s, req)
			if err != nil {
				t.Fatal(err)
			}
			got := 200
			if d := resp.GetDeniedResponse(); d != nil {
				got = int(d.GetStatus().GetCode())
			}
			if got != tc.want {
				t.Fatalf("status %d, want %d: %v", got, tc.want, resp)
			}
		})
	}
	if !strings.Contains(logs.String(), `"model":"gpt-3.5-turbo"`) || strings.Contains(logs.String(), long[:2*maxLoggedModel]) {
		t.Errorf("audit log: %s", logs.String())
	}
	for line := range strings.Lines(logs.String()) {
		if !utf8.ValidString(line) {
			t.Errorf("invalid UTF-8 in the log: %q", line)
		}
	}
}
