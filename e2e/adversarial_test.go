package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/fakeprovider"
)

// The adversarial suite: a hostile tenant with valid tokens tries to reach
// a model its group may not use and to get a credential past keyward to
// the provider, through real Envoy. Every case is one raw request; what
// counts is what reached the fake provider.

// attack is one hostile request.
type attack struct {
	name   string
	method string // default POST
	path   string
	header http.Header // sent as is: repeated values and odd names included
	body   string
	// chunked sends the body without a content-length.
	chunked bool
	// status, when set, is the answer noLeak expects.
	status int
}

// send makes the request through Envoy and returns the answer and what
// reached the provider because of it.
func (s *stack) send(t *testing.T, a attack) (response, []fakeprovider.Request) {
	t.Helper()
	method := a.method
	if method == "" {
		method = http.MethodPost
	}
	var body io.Reader
	if a.body != "" {
		body = strings.NewReader(a.body)
	}
	req, err := http.NewRequest(method, s.envoyURL+a.path, body)
	if err != nil {
		t.Fatalf("%s: %v", a.name, err)
	}
	for name, values := range a.header {
		req.Header[name] = values // not canonicalised: x_api_key stays as it is
	}
	if a.body != "" {
		req.Header.Set("content-type", "application/json")
		if a.chunked {
			req.ContentLength = -1
			req.Body = io.NopCloser(strings.NewReader(a.body)) // hides the length
		}
	}
	s.provider.Reset()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", a.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}, s.provider.Requests()
}

// hdr builds a header from name, value pairs; a name may repeat.
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = append(h[kv[i]], kv[i+1])
	}
	return h
}

// leaks lists where any of secrets shows in what the provider received.
func leaks(reqs []fakeprovider.Request, secrets ...string) []string {
	var where []string
	for _, r := range reqs {
		places := map[string]string{"path": r.Path, "query": r.RawQuery, "body": string(r.Body)}
		if q, err := url.QueryUnescape(r.RawQuery); err == nil {
			places["decoded query"] = q
		}
		for name, values := range r.Header {
			places["header "+name] = strings.Join(values, ",")
		}
		for place, text := range places {
			for _, s := range secrets {
				if s != "" && strings.Contains(text, s) {
					where = append(where, fmt.Sprintf("%s (%.6s…)", place, s))
				}
			}
		}
	}
	return where
}

// refuse runs attacks that must be refused before the provider: a 4xx
// answer (from keyward, or from Envoy for a path it rejects itself) and
// nothing upstream. It returns how many it ran.
func (s *stack) refuse(t *testing.T, attacks []attack) int {
	t.Helper()
	for _, a := range attacks {
		r, got := s.send(t, a)
		if r.status < 400 || r.status >= 500 || len(got) != 0 {
			t.Errorf("%s: %d %s; the provider received %d requests, want a refusal and none", a.name, r.status, r.body, len(got))
		}
	}
	return len(attacks)
}

// noLeak runs attacks that may be refused or allowed, but must never put
// one of secrets in front of the provider. It returns how many it ran.
func (s *stack) noLeak(t *testing.T, attacks []attack, secrets ...string) int {
	t.Helper()
	for _, a := range attacks {
		r, got := s.send(t, a)
		if where := leaks(got, secrets...); len(where) > 0 {
			t.Errorf("%s: %d; the provider received a client credential in %v", a.name, r.status, where)
		}
		if a.status != 0 && r.status != a.status {
			t.Errorf("%s: %d %s, want %d", a.name, r.status, r.body, a.status)
		}
	}
	return len(attacks)
}

// allow runs requests that must go through, so that the suite cannot pass
// by refusing everything.
func (s *stack) allow(t *testing.T, requests []attack) {
	t.Helper()
	for _, a := range requests {
		if r, got := s.send(t, a); r.status != http.StatusOK || len(got) != 1 {
			t.Errorf("%s: %d %s, the provider received %d requests; want it allowed", a.name, r.status, r.body, len(got))
		}
	}
}

const geminiBody = `{"contents":[{"parts":[{"text":"hi"}]}]}`

// TestAdversarialModels: a group restricted to small models tries every
// endpoint and spelling that names a model somewhere keyward did not look,
// with the model header naming an allowed model throughout.
func TestAdversarialModels(t *testing.T) {
	s := newStack(t, stackOptions{forwardBody: true})
	s.kw("group", "add", "small", "-models", "gpt-4o-mini,claude-3-5-haiku*,gemini-1.5-flash*")
	s.kw("user", "set", "alice", "-groups", "eng,small")
	tok := s.token("alice", "small")
	bearer := func(model string) http.Header { return hdr("authorization", "Bearer "+tok, "x-ai-eg-model", model) }
	goog := hdr("x-goog-api-key", tok, "x-ai-eg-model", "gemini-1.5-flash")
	azure := hdr("api-key", tok, "x-ai-eg-model", "gpt-4o-mini")
	haiku := hdr("x-api-key", tok, "x-ai-eg-model", "claude-3-5-haiku-latest")

	s.allow(t, []attack{
		{name: "chat, allowed model", path: "/openai/v1/chat/completions", header: bearer("gpt-4o-mini"), body: chatBody},
		{name: "messages, allowed model", path: "/anthropic/v1/messages", header: haiku, body: `{"model":"claude-3-5-haiku-latest","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`},
		{name: "gemini, allowed model", path: "/gemini/v1beta/models/gemini-1.5-flash:generateContent", header: goog, body: geminiBody},
		{name: "azure, allowed deployment", path: "/azure/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21", header: azure, body: chatBody},
	})

	endpoints := s.refuse(t, []attack{
		{name: "anthropic batch of opus", path: "/anthropic/v1/messages/batches", header: haiku,
			body: `{"requests":[{"custom_id":"a","params":{"model":"claude-opus-4-1","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}}]}`},
		{name: "openai realtime secret for gpt-realtime", path: "/openai/v1/realtime/client_secrets", header: bearer("gpt-4o-mini"),
			body: `{"session":{"type":"realtime","model":"gpt-realtime"}}`},
		{name: "gemini ephemeral token", path: "/gemini/v1alpha/auth_tokens", header: goog, body: `{"uses":1}`},
		{name: "openai batch (models in a file)", path: "/openai/v1/batches", header: bearer("gpt-4o-mini"),
			body: `{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}`},
		{name: "gemini countTokens naming pro inside", path: "/gemini/v1beta/models/gemini-1.5-flash:countTokens", header: goog,
			body: `{"generateContentRequest":{"model":"models/gemini-1.5-pro","contents":[{"parts":[{"text":"hi"}]}]}}`},
		{name: "header names the model, body none", path: "/openai/v1/chat/completions", header: bearer("gpt-4o-mini"),
			body: `{"messages":[{"role":"user","content":"hi"}]}`},
	})
	spellings := s.refuse(t, []attack{
		{name: "models%2F", path: "/gemini/v1beta/models%2Fgemini-1.5-pro:generateContent", header: goog, body: geminiBody},
		{name: "/Models/", path: "/gemini/v1beta/Models/gemini-1.5-pro:generateContent", header: goog, body: geminiBody},
		{name: "tunedModels/", path: "/gemini/v1beta/tunedModels/my-pro:generateContent", header: goog, body: geminiBody},
		{name: "; in the model segment", path: "/gemini/v1beta/models/gemini-1.5-flash;gemini-1.5-pro:generateContent", header: goog, body: geminiBody},
		{name: "%3A in the model segment", path: "/gemini/v1beta/models/gemini-1.5-flash-x%3Agenerate:generateContent", header: goog, body: geminiBody},
		{name: "Azure /Deployments/", path: "/azure/Deployments/gpt-4o/chat/completions?api-version=2024-10-21", header: azure, body: chatBody},
		{name: "Azure deployments%2F", path: "/azure/deployments%2Fgpt-4o/chat/completions?api-version=2024-10-21", header: azure, body: chatBody},
		{name: "Azure ?deployment=", path: "/azure/chat/completions?api-version=2024-10-21&deployment=gpt-4o", header: azure, body: chatBody},
		{name: "Azure ?Deploymen%74=", path: "/azure/chat/completions?Deploymen%74=gpt-4o", header: azure, body: chatBody},
		{name: "trailing slash", path: "/openai/v1/chat/completions/", header: bearer("gpt-4o-mini"), body: chatBody},
	})
	t.Logf("model policy: %d allowed controls, %d endpoint attacks, %d path and query spellings refused", 4, endpoints, spellings)
}

// TestAdversarialBodyNotForwarded: without envoy-config -forward-body
// keyward cannot see the model the provider reads, so a restricted group
// is refused whatever the header says, body sent with a length or chunked.
func TestAdversarialBodyNotForwarded(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.kw("group", "add", "small", "-models", "gpt-4o-mini")
	s.kw("user", "set", "alice", "-groups", "eng,small")
	tok := s.token("alice", "small")
	etok := s.token("alice", "eng")
	forbidden := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`
	h := hdr("authorization", "Bearer "+tok, "x-ai-eg-model", "gpt-4o-mini")
	n := s.refuse(t, []attack{
		{name: "content-length body", path: "/openai/v1/chat/completions", header: h, body: forbidden},
		{name: "chunked body", path: "/openai/v1/chat/completions", header: h, body: forbidden, chunked: true},
	})
	// A group without model restrictions is untouched.
	s.allow(t, []attack{{name: "unrestricted group", path: "/openai/v1/chat/completions", header: hdr("authorization", "Bearer "+etok), body: forbidden}})
	t.Logf("body not forwarded: %d refused", n)
}

// TestAdversarialCredentials: no spelling, repetition or combination of
// credentials gets a keyward token, or a client's own key where custom
// keys are forbidden, past keyward to the provider.
func TestAdversarialCredentials(t *testing.T) {
	s := newStack(t, stackOptions{forwardBody: true})
	s.kw("group", "add", "locked", "-disable-custom-keys")
	s.kw("user", "set", "alice", "-groups", "eng,locked")
	a, b := s.token("alice", "eng"), s.token("alice", "eng")
	locked := s.token("alice", "locked")
	const own = "AIza-client-own-key-0000"
	const ownOpenAI = "sk-client-own-key-0000"
	gem := "/gemini/v1beta/models/gemini-1.5-flash:generateContent"
	q := url.QueryEscape

	s.allow(t, []attack{
		{name: "?key= token", path: gem + "?alt=sse&key=" + q(a), body: geminiBody},
		{name: "bearer token", path: "/openai/v1/chat/completions", header: hdr("authorization", "Bearer "+a), body: chatBody},
	})
	tokens := s.noLeak(t, []attack{
		{name: "?ke%79=token", status: 400, path: gem + "?ke%79=" + a + "&alt=sse", body: geminiBody},
		{name: "?key=A&ke%79=B", status: 400, path: gem + "?key=" + a + "&ke%79=" + b, body: geminiBody},
		{name: "?key=A&key=B", status: 400, path: gem + "?key=" + a + "&key=" + b, body: geminiBody},
		{name: "?KEY=B beside a bearer token", status: 400, path: gem + "?KEY=" + b, header: hdr("authorization", "Bearer "+a), body: geminiBody},
		{name: "?key+=B beside a bearer token", status: 400, path: gem + "?key+=" + b, header: hdr("authorization", "Bearer "+a), body: geminiBody},
		{name: "?x=1;key=B beside ?key=A", status: 400, path: gem + "?x=1;key=" + b + "&key=" + a, body: geminiBody},
		{name: "own key, token A, token B", status: 400, path: "/openai/v1/chat/completions", header: hdr("authorization", "Bearer "+ownOpenAI, "x-api-key", a, "x-goog-api-key", b), body: chatBody},
		{name: "x-api-key twice: own key and token B", status: 400, path: "/anthropic/v1/messages", header: hdr("authorization", "Bearer "+a, "x-api-key", ownOpenAI, "x-api-key", b), body: anthropicBody},
		{name: "x_api_key with token B", status: 200, path: "/anthropic/v1/messages", header: hdr("authorization", "Bearer "+a, "x_api_key", b), body: anthropicBody},
		{name: "Authorization: Basic token", status: 401, path: "/openai/v1/chat/completions", header: hdr("authorization", "Basic "+a), body: chatBody},
		{name: "Authorization: token without a scheme, own key beside", status: 401, path: "/anthropic/v1/messages", header: hdr("authorization", a, "x-api-key", ownOpenAI), body: anthropicBody},
		{name: "Authorization: Bearer<TAB>token", status: 200, path: "/openai/v1/chat/completions", header: hdr("authorization", "Bearer\t"+a), body: chatBody},
	}, a[3:], b[3:])
	custom := s.noLeak(t, []attack{
		{name: "locked: ?key=token&ke%79=own", status: 400, path: gem + "?key=" + locked + "&ke%79=" + own, body: geminiBody},
		{name: "locked: ?key=token&x=1;key=own", status: 400, path: gem + "?key=" + locked + "&x=1;key=" + own, body: geminiBody},
		{name: "locked: ?KEY=own", status: 400, path: gem + "?KEY=" + own, header: hdr("authorization", "Bearer "+locked), body: geminiBody},
		{name: "locked: x_goog_api_key own", status: 200, path: gem, header: hdr("authorization", "Bearer "+locked, "x_goog_api_key", own), body: geminiBody},
		{name: "locked: Authorization: Basic own, token in x-goog-api-key", status: 403, path: gem, header: hdr("authorization", "Basic "+own, "x-goog-api-key", locked), body: geminiBody},
	}, own, ownOpenAI, locked[3:])
	t.Logf("credentials: 2 allowed controls, %d token attacks, %d custom-key attacks", tokens, custom)
}

// TestAdversarialRatePerUser: a user's new tokens share the group's budget
// with their old ones; another user has their own.
func TestAdversarialRatePerUser(t *testing.T) {
	s := newStack(t, stackOptions{})
	// Two a minute: the bucket refills one each 30 s, far longer than
	// the few requests below take.
	s.kw("group", "add", "limited", "-rpm", "2")
	s.kw("user", "set", "alice", "-groups", "limited")
	s.kw("user", "add", "bob", "-groups", "limited")
	t1, t2, t3 := s.limitedToken("alice", "limited"), s.limitedToken("alice", "limited"), s.limitedToken("alice", "limited")
	bob := s.limitedToken("bob", "limited")
	call := func(tok string) response {
		return s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + tok}, chatBody)
	}
	for i, tok := range []string{t1, t2} {
		if r := call(tok); r.status != 200 {
			t.Fatalf("alice's request %d: %d %s", i+1, r.status, r.body)
		}
	}
	if r := call(t3); r.status != 429 || r.errorCode() != "rate_limited" {
		t.Errorf("alice's third token after her two requests: %d %s, want 429 rate_limited", r.status, r.body)
	}
	if r := call(bob); r.status != 200 {
		t.Errorf("bob: %d %s, want his own budget", r.status, r.body)
	}
}

// TestAdversarialWWWAuthenticate: RFC 6750 §3.1: no error code when the
// request carried no credential; invalid_token for a bad one.
func TestAdversarialWWWAuthenticate(t *testing.T) {
	s := newStack(t, stackOptions{})
	tests := map[string]struct {
		header http.Header
		want   string
	}{
		"no credential": {nil, `Bearer realm="keyward"`},
		"random token":  {hdr("authorization", "Bearer kw_"+strings.Repeat("x", 64)), `Bearer realm="keyward", error="invalid_token"`},
	}
	for name, tc := range tests {
		r, _ := s.send(t, attack{name: name, path: "/openai/v1/chat/completions", header: tc.header, body: chatBody})
		if got := r.header.Get("www-authenticate"); r.status != 401 || got != tc.want {
			t.Errorf("%s: %d, www-authenticate %q; want 401, %q", name, r.status, got, tc.want)
		}
	}
}
