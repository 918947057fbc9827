package authz

import (
	"encoding/json"
	"maps"
	"net/url"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keyward/keyward/record"
)

// The adversarial suite at the decision: a hostile tenant with valid
// tokens tries every endpoint, spelling and combination of credentials.
// e2e/adversarial_test.go runs the same classes through real Envoy.

// hostile is one hostile (or control) request.
type hostile struct {
	method   string // default POST
	path     string
	provider string
	headers  map[string]string
	body     string
	// partial is Envoy's x-envoy-auth-partial-body: "false" (the
	// default: the whole body was forwarded), "true", or "-" for none.
	partial string
	// prefix and rewrite are the route's path_prefix and prefix_rewrite
	// context extensions, as envoy-config sets them.
	prefix, rewrite string
	want            Reason
}

// request builds the CheckRequest Envoy would send for h.
func (h hostile) request() *authv3.CheckRequest {
	headers := maps.Clone(h.headers)
	if headers == nil {
		headers = map[string]string{}
	}
	switch h.partial {
	case "":
		headers[PartialBodyHeader] = "false"
	case "-":
	default:
		headers[PartialBodyHeader] = h.partial
	}
	req := checkRequest(headers, h.path, h.provider)
	if h.method != "" {
		req.Attributes.Request.Http.Method = h.method
	}
	req.Attributes.Request.Http.Body = h.body
	if h.prefix != "" {
		req.Attributes.ContextExtensions["path_prefix"] = h.prefix
		req.Attributes.ContextExtensions["prefix_rewrite"] = h.rewrite
	}
	return req
}

// outcome is the reason s answers req with: the code of a denial,
// allowed or allowed_custom_key.
func outcome(t *testing.T, s *Server, req *authv3.CheckRequest) Reason {
	t.Helper()
	resp, err := check(t, s, req)
	if err != nil {
		t.Fatal(err)
	}
	if denied := resp.GetDeniedResponse(); denied != nil {
		var body ErrorBody
		if err := json.Unmarshal([]byte(denied.GetBody()), &body); err != nil {
			t.Fatalf("denial body %q: %v", denied.GetBody(), err)
		}
		return Reason(body.Error.Code)
	}
	if resp.GetDynamicMetadata().AsMap()["custom_key"] == true {
		return ReasonCustomKey
	}
	return ReasonAllowed
}

func runHostile(t *testing.T, s *Server, tests map[string]hostile) {
	t.Helper()
	for name, h := range tests {
		t.Run(name, func(t *testing.T) {
			if got := outcome(t, s, h.request()); got != h.want {
				t.Fatalf("%s %s: %s, want %s", h.method, h.path, got, h.want)
			}
		})
	}
}

// smallGroup adds the group "small", restricted to small models, and a
// token of alice's in it.
func (f *fixture) smallGroup(t *testing.T) string {
	t.Helper()
	tok := f.limited(t, "small", 0, "small")["small"]
	f.records.groups["small"] = &record.Group{Name: "small", Models: []string{"gpt-4o-mini", "claude-3-5-haiku*", "gemini-1.5-flash*"}}
	return tok
}

// TestAdversarialModels: a group that restricts models reaches no model
// it may not use, by any endpoint or spelling; the model header names an
// allowed model throughout and decides nothing.
func TestAdversarialModels(t *testing.T) {
	f := newFixture(t)
	tok := f.smallGroup(t)
	s := f.server(t, Options{})
	bearer := map[string]string{"authorization": "Bearer " + tok, "x-ai-eg-model": "gpt-4o-mini"}
	goog := map[string]string{"x-goog-api-key": tok, "x-ai-eg-model": "gemini-1.5-flash"}
	ant := map[string]string{"x-api-key": tok, "x-ai-eg-model": "claude-3-5-haiku-latest"}
	az := map[string]string{"api-key": tok, "x-ai-eg-model": "gpt-4o-mini"}
	const (
		chat    = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
		gemBody = `{"contents":[{"parts":[{"text":"hi"}]}]}`
		haiku   = `{"model":"claude-3-5-haiku-latest","max_tokens":5,"messages":[]}`
	)
	batch := func(models ...string) string {
		var reqs []string
		for _, m := range models {
			reqs = append(reqs, `{"custom_id":"x","params":{"model":`+m+`,"max_tokens":5,"messages":[]}}`)
		}
		return `{"requests":[` + strings.Join(reqs, ",") + `]}`
	}
	openai := func(path, body string, want Reason) hostile {
		return hostile{path: "/openai" + path, provider: "openai", headers: bearer, body: body, prefix: "/openai/", rewrite: "/", want: want}
	}
	anthropic := func(path, body string, want Reason) hostile {
		return hostile{path: "/anthropic" + path, provider: "anthropic", headers: ant, body: body, prefix: "/anthropic/", rewrite: "/", want: want}
	}
	gemini := func(path string, want Reason) hostile {
		return hostile{path: "/gemini" + path, provider: "gemini", headers: goog, body: gemBody, prefix: "/gemini/", rewrite: "/", want: want}
	}
	azure := func(path, body string, want Reason) hostile {
		return hostile{path: "/azure" + path, provider: "azure", headers: az, body: body, prefix: "/azure/", rewrite: "/openai/", want: want}
	}
	runHostile(t, s, map[string]hostile{
		// Controls: what the group may do still goes through.
		"chat":                       openai("/v1/chat/completions", chat, ReasonAllowed),
		"chat, mesh egress":          {path: "/v1/chat/completions", provider: "openai", headers: bearer, body: chat, want: ReasonAllowed},
		"responses":                  openai("/v1/responses", `{"model":"gpt-4o-mini","input":"hi"}`, ReasonAllowed),
		"realtime secret, mini":      openai("/v1/realtime/client_secrets", `{"session":{"type":"realtime","model":"gpt-4o-mini"}}`, ReasonAllowed),
		"messages":                   anthropic("/v1/messages", haiku, ReasonAllowed),
		"batch of haiku":             anthropic("/v1/messages/batches", batch(`"claude-3-5-haiku-latest"`, `"claude-3-5-haiku-20241022"`), ReasonAllowed),
		"gemini":                     gemini("/v1beta/models/gemini-1.5-flash:generateContent", ReasonAllowed),
		"gemini stream":              gemini("/v1beta/models/gemini-1.5-flash-002:streamGenerateContent?alt=sse", ReasonAllowed),
		"azure deployment":           azure("/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21", chat, ReasonAllowed),
		"azure v1":                   azure("/v1/chat/completions", chat, ReasonAllowed),
		"header forbidden":           {path: "/v1/chat/completions", provider: "openai", headers: map[string]string{"authorization": "Bearer " + tok, "x-ai-eg-model": "gpt-4o"}, body: chat, want: ReasonModelNotAllowed},
		"batch of opus":              anthropic("/v1/messages/batches", batch(`"claude-3-5-haiku-latest"`, `"claude-opus-4-1"`), ReasonModelNotAllowed),
		"batch without a model":      anthropic("/v1/messages/batches", `{"requests":[{"custom_id":"x","params":{"max_tokens":5}}]}`, ReasonModelNotAllowed),
		"batch, model not a string":  anthropic("/v1/messages/batches", batch(`["claude-opus-4-1"]`), ReasonModelUnknown),
		"batch, Params in capitals":  anthropic("/v1/messages/batches", `{"requests":[{"Params":{"model":"claude-opus-4-1"},"params":{"model":"claude-3-5-haiku-latest"}}]}`, ReasonModelNotAllowed),
		"batch, requests an object":  anthropic("/v1/messages/batches", `{"requests":{"params":{"model":"claude-opus-4-1"}}}`, ReasonModelUnknown),
		"realtime, gpt-realtime":     openai("/v1/realtime/client_secrets", `{"session":{"type":"realtime","model":"gpt-realtime"}}`, ReasonModelNotAllowed),
		"realtime, default model":    openai("/v1/realtime/client_secrets", `{"session":{"type":"realtime"}}`, ReasonModelNotAllowed),
		"realtime, Session twice":    openai("/v1/realtime/client_secrets", `{"Session":{"model":"gpt-realtime"},"session":{"model":"gpt-4o-mini"}}`, ReasonModelNotAllowed),
		"realtime, top-level model":  openai("/v1/realtime/client_secrets", `{"model":"gpt-realtime","session":{"model":"gpt-4o-mini"}}`, ReasonModelNotAllowed),
		"gemini ephemeral token":     gemini("/v1alpha/auth_tokens", ReasonEndpointNotAllowed),
		"openai batch":               openai("/v1/batches", `{"input_file_id":"file-1","endpoint":"/v1/chat/completions"}`, ReasonEndpointNotAllowed),
		"openai model list":          {method: "GET", path: "/openai/v1/models", provider: "openai", headers: bearer, partial: "-", prefix: "/openai/", rewrite: "/", want: ReasonEndpointNotAllowed},
		"countTokens":                gemini("/v1beta/models/gemini-1.5-flash:countTokens", ReasonEndpointNotAllowed),
		"models%2F":                  gemini("/v1beta/models%2Fgemini-1.5-pro:generateContent", ReasonEndpointNotAllowed),
		"Models":                     gemini("/v1beta/Models/gemini-1.5-pro:generateContent", ReasonEndpointNotAllowed),
		"tunedModels":                gemini("/v1beta/tunedModels/mine:generateContent", ReasonEndpointNotAllowed),
		"method in other case":       gemini("/v1beta/models/gemini-1.5-flash:GenerateContent", ReasonEndpointNotAllowed),
		"; in the model":             gemini("/v1beta/models/gemini-1.5-flash;gemini-1.5-pro:generateContent", ReasonModelUnknown),
		"escape in the model":        gemini("/v1beta/models/gemini-1.5-flash%2D8b:generateContent", ReasonModelUnknown),
		"empty model":                gemini("/v1beta/models/:generateContent", ReasonModelUnknown),
		"// in the path":             gemini("/v1beta//models/gemini-1.5-flash:generateContent", ReasonEndpointNotAllowed),
		"gemini pro":                 gemini("/v1beta/models/gemini-1.5-pro:generateContent", ReasonModelNotAllowed),
		"gemini body names pro":      {path: "/gemini/v1beta/models/gemini-1.5-flash:generateContent", provider: "gemini", headers: goog, body: `{"model":"models/gemini-1.5-pro","contents":[]}`, prefix: "/gemini/", rewrite: "/", want: ReasonModelNotAllowed},
		"Azure Deployments":          azure("/Deployments/gpt-4o/chat/completions", chat, ReasonEndpointNotAllowed),
		"Azure deployments%2F":       azure("/deployments%2Fgpt-4o/chat/completions", chat, ReasonEndpointNotAllowed),
		"Azure ?deployment=":         azure("/deployments/gpt-4o-mini/chat/completions?api-version=1&deployment=gpt-4o", chat, ReasonModelUnknown),
		"Azure ?Deploymen%74=":       azure("/v1/chat/completions?Deploymen%74=gpt-4o", chat, ReasonModelUnknown),
		"Azure deployment gpt-4o":    azure("/deployments/gpt-4o/chat/completions", chat, ReasonModelNotAllowed),
		"trailing slash":             openai("/v1/chat/completions/", chat, ReasonEndpointNotAllowed),
		"outside the route prefix":   {path: "/other/v1/chat/completions", provider: "openai", headers: bearer, body: chat, prefix: "/openai/", rewrite: "/", want: ReasonEndpointNotAllowed},
		"custom provider":            {path: "/v1/chat/completions", provider: "custom", headers: bearer, body: chat, want: ReasonEndpointNotAllowed},
		"header alone":               openai("/v1/chat/completions", `{"messages":[]}`, ReasonModelNotAllowed),
		"body not forwarded":         {path: "/v1/chat/completions", provider: "openai", headers: map[string]string{"authorization": "Bearer " + tok, "x-ai-eg-model": "gpt-4o-mini", "content-length": "64"}, partial: "-", want: ReasonBodyNotForwarded},
		"chunked body not forwarded": {path: "/v1/chat/completions", provider: "openai", headers: bearer, partial: "-", want: ReasonBodyNotForwarded},
		"body cut short":             {path: "/v1/chat/completions", provider: "openai", headers: bearer, body: chat, partial: "true", want: ReasonModelUnknown},
	})
}

// TestAdversarialCredentials: every place keyward reads a credential from
// is a place Envoy removes it from, in every spelling keyward accepts; a
// second token, or a credential in a spelling Envoy would leave in place,
// is refused.
func TestAdversarialCredentials(t *testing.T) {
	f := newFixture(t)
	a, b, locked := f.tokens["ok"], f.tokens["future"], f.tokens["nobyok"]
	s := f.server(t, Options{})
	const gem = "/v1beta/models/g:generateContent"
	req := func(path string, headers map[string]string, want Reason) hostile {
		return hostile{path: path, provider: "gemini", headers: headers, partial: "-", want: want}
	}
	bearer := func(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }
	runHostile(t, s, map[string]hostile{
		"?key=":                           req(gem+"?alt=sse&key="+a, nil, ReasonAllowed),
		"?key= escaped value":             req(gem+"?key="+url.QueryEscape(a), nil, ReasonAllowed),
		"?key without a value":            req(gem+"?key&alt=sse", bearer(a), ReasonAllowed),
		"look-alike names":                req(gem+"?monkey=1&keys=2&akey=3", bearer(a), ReasonAllowed),
		"Bearer<TAB>":                     req(gem, map[string]string{"authorization": "Bearer\t" + a}, ReasonAllowed),
		"?ke%79=":                         req(gem+"?ke%79="+a, nil, ReasonAmbiguousCredential),
		"?%6Bey=":                         req(gem+"?%6Bey="+a, nil, ReasonAmbiguousCredential),
		"?key=A&ke%79=B":                  req(gem+"?key="+a+"&ke%79="+b, nil, ReasonAmbiguousCredential),
		"?key=A&key=B":                    req(gem+"?key="+a+"&key="+b, nil, ReasonAmbiguousCredential),
		"?key=A&key=A":                    req(gem+"?key="+a+"&key="+a, nil, ReasonAmbiguousCredential),
		"?KEY= beside bearer":             req(gem+"?KEY="+b, bearer(a), ReasonAmbiguousCredential),
		"?key+= beside bearer":            req(gem+"?key+="+b, bearer(a), ReasonAmbiguousCredential),
		"?key%20= beside bearer":          req(gem+"?key%20="+b, bearer(a), ReasonAmbiguousCredential),
		"?x=1;key=B&key=A":                req(gem+"?x=1;key="+b+"&key="+a, nil, ReasonAmbiguousCredential),
		"?key=A;x=1":                      req(gem+"?key="+a+";x=1", nil, ReasonAmbiguousCredential),
		"own key, token A, token B":       req(gem, map[string]string{"authorization": "Bearer sk-own", "x-api-key": a, "x-goog-api-key": b}, ReasonAmbiguousCredential),
		"one token in two places":         req(gem, map[string]string{"authorization": "Bearer " + a, "x-api-key": a}, ReasonAmbiguousCredential),
		"header and query":                req(gem+"?key="+b, bearer(a), ReasonAmbiguousCredential),
		"repeated header: own, token":     req(gem, map[string]string{"authorization": "Bearer " + a, "x-api-key": "sk-own," + b}, ReasonAmbiguousCredential),
		"repeated bearer":                 req(gem, map[string]string{"authorization": "Bearer " + a + ",Bearer " + b}, ReasonAmbiguousCredential),
		"x_api_key":                       req(gem, map[string]string{"authorization": "Bearer " + a, "x_api_key": b}, ReasonAmbiguousCredential),
		"x_goog_api_key alone":            req(gem, map[string]string{"x_goog_api_key": a}, ReasonAmbiguousCredential),
		"Basic token":                     req(gem, map[string]string{"authorization": "Basic " + a}, ReasonMalformedToken),
		"token without a scheme":          req(gem, map[string]string{"authorization": a}, ReasonMalformedToken),
		"Token scheme, own key beside":    req(gem, map[string]string{"authorization": "Token " + a, "x-goog-api-key": "AIza-own"}, ReasonMalformedToken),
		"management token beside":         req(gem, map[string]string{"authorization": "Bearer " + a, "x-api-key": "kwm_x"}, ReasonManagementToken),
		"locked: ?key=T&ke%79=own":        req(gem+"?key="+locked+"&ke%79=AIza-own", nil, ReasonAmbiguousCredential),
		"locked: ?key=T&x=1;key=own":      req(gem+"?key="+locked+"&x=1;key=AIza-own", nil, ReasonAmbiguousCredential),
		"locked: Basic own, token":        req(gem, map[string]string{"authorization": "Basic b3du", "x-goog-api-key": locked}, ReasonCustomKeyForbidden),
		"locked: own key after a token":   req(gem, map[string]string{"x-api-key": locked, "api-key": "AIza-own"}, ReasonCustomKeyForbidden),
		"no token: two own keys":          req(gem, map[string]string{"authorization": "Bearer sk-own", "x-goog-api-key": "AIza-own"}, ReasonCustomKey),
		"no token: own key, bad spelling": req(gem+"?ke%79=AIza-own", map[string]string{"authorization": "Bearer sk-own"}, ReasonAmbiguousCredential),
	})
}
