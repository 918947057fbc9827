package authz

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/keyward/keyward/record"
)

// decide runs one decision for a token of the fixture: a chat completion
// that names model in its header and its body, when model is set.
func (f *fixture) decide(t testing.TB, opts Options, tok, provider, model string) Decision {
	t.Helper()
	return f.decideWith(t, opts, tok, provider, model, nil)
}

// decideWith is decide with extra request headers.
func (f *fixture) decideWith(t testing.TB, opts Options, tok, provider, model string, extra map[string]string) Decision {
	t.Helper()
	headers := bearerHeader(f.tokens[tok])
	maps.Copy(headers, extra)
	var body string
	if model != "" {
		headers["x-ai-eg-model"] = model
		headers[PartialBodyHeader] = "false"
		body = `{"model":"` + model + `"}`
	}
	req := checkRequest(headers, "", provider)
	r := Request{Method: "POST", Headers: headers, Path: req.Attributes.Request.Http.Path, Host: req.Attributes.Request.Http.Host, ContextExtensions: req.Attributes.ContextExtensions, Body: body}
	return f.server(t, opts).authorizer.Decide(context.Background(), &r)
}

// TestPrivateKeyPolicy: a user's own credential is used exactly when the
// global switch and the group allow custom keys, the user has one for the
// provider, and its model fits; otherwise the server key goes out. ann's
// openai credential is for gpt-4o only; ben has none.
func TestPrivateKeyPolicy(t *testing.T) {
	f := newFixture(t)
	type tc struct {
		global, group bool // custom keys disabled by the switch, by the group
		user, model   string
	}
	tests := map[string]tc{}
	for _, global := range []bool{false, true} {
		for _, group := range []bool{false, true} {
			for _, user := range []string{"ann", "ben"} {
				for _, model := range []string{"gpt-4o", "o3"} {
					name := fmt.Sprintf("global-off=%v/group-off=%v/%s/%s", global, group, user, model)
					tests[name] = tc{global, group, user, model}
				}
			}
		}
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tok := tc.user
			if tc.group {
				tok += "-nobyok"
			}
			d := f.decide(t, Options{DisableCustomKeys: tc.global}, tok, "openai", tc.model)
			if d.Reason != ReasonAllowed {
				t.Fatalf("reason %s, want allowed (err %v)", d.Reason, d.Err)
			}
			wantUser := !tc.global && !tc.group && tc.user == "ann" && tc.model == "gpt-4o"
			switch {
			case wantUser && (d.Credential == nil || d.Key.ID != "user:annopenai" || d.Key.Secret != annOpenAIKey):
				t.Fatalf("key %v (credential %v), want ann's own", d.Key, d.Credential)
			case !wantUser && (d.Credential != nil || d.Key.ID != "k1" || d.Key.Secret != openaiKey):
				t.Fatalf("key %v (credential %v), want the server's k1", d.Key, d.Credential)
			}
		})
	}
}

// TestPrivateKeyDecisions covers the edges: keyless providers, missing
// records, policy checks that come first, store failures.
func TestPrivateKeyDecisions(t *testing.T) {
	tests := map[string]struct {
		setup    func(*memRecords)
		tok      string
		provider string
		model    string
		headers  map[string]string
		want     Reason
		wantKey  string // "" when no key is sent
	}{
		"own key where the server has none": {tok: "ann", provider: "empty", want: ReasonAllowed, wantKey: "user:annempty"},
		"no key at all":                     {tok: "ben", provider: "empty", want: ReasonNoProviderKey},
		"provider without a record":         {tok: "ann", provider: "nowhere", want: ReasonNoProviderKey},
		"group model policy comes first":    {tok: "ann-gpt", provider: "openai", model: "gpt-3.5-turbo", want: ReasonModelNotAllowed},
		"group model policy then own key":   {tok: "ann-gpt", provider: "openai", model: "gpt-4o", want: ReasonAllowed, wantKey: "user:annopenai"},
		"request names no model":            {tok: "ann", provider: "openai", want: ReasonAllowed, wantKey: "k1"},
		"any-model credential":              {tok: "ann", provider: "anthropic", model: "claude-sonnet-4", want: ReasonAllowed, wantKey: "user:annanthropic"},
		"client key beats stored key": {
			tok: "ann", provider: "anthropic", headers: map[string]string{"x-api-key": "sk-ant-client-own"}, want: ReasonCustomKey,
		},
		"store down": {
			setup: func(m *memRecords) { m.privateFail = errors.New("vault list: connection refused") },
			tok:   "ann", provider: "openai", model: "gpt-4o", want: ReasonStoreUnavailable,
		},
		"store down, user without": {
			setup: func(m *memRecords) { m.privateFail = errors.New("vault list: connection refused") },
			tok:   "ben", provider: "openai", want: ReasonStoreUnavailable,
		},
		"not found is none": {
			setup: func(m *memRecords) { m.privateFail = fmt.Errorf("user %q: %w", "ann", record.ErrNotFound) },
			tok:   "ann", provider: "openai", model: "gpt-4o", want: ReasonAllowed, wantKey: "k1",
		},
		"nil index is none": {
			setup: func(m *memRecords) { m.privateKeys["ann"] = nil },
			tok:   "ann", provider: "openai", model: "gpt-4o", want: ReasonAllowed, wantKey: "k1",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			if tc.setup != nil {
				tc.setup(f.records)
			}
			d := f.decideWith(t, Options{}, tc.tok, tc.provider, tc.model, tc.headers)
			if d.Reason != tc.want {
				t.Fatalf("reason %s, want %s (err %v)", d.Reason, tc.want, d.Err)
			}
			got := ""
			if d.Key != nil {
				got = d.Key.ID
			}
			if got != tc.wantKey {
				t.Fatalf("key %q, want %q", got, tc.wantKey)
			}
			if (d.Credential != nil) != strings.HasPrefix(got, record.PrivateKeyPrefix) {
				t.Fatalf("credential %v with key %q", d.Credential, got)
			}
			if tc.want == ReasonStoreUnavailable && d.Err == nil {
				t.Fatal("store failure without its error")
			}
		})
	}
}

// TestPrivateKeyOfAnotherUserNeverUsed: the credentials looked up are the
// token's user's, and ben's request goes out on the server key though ann
// has one for the very same provider and model.
func TestPrivateKeyOfAnotherUserNeverUsed(t *testing.T) {
	f := newFixture(t)
	s := f.server(t, Options{})
	headers := bearerHeader(f.tokens["ben"])
	headers["x-ai-eg-model"] = "gpt-4o"
	resp, _ := check(t, s, checkRequest(headers, "", "openai"))
	got := headerMap(resp.GetOkResponse().GetHeaders())
	if got["authorization"] != "Bearer "+openaiKey {
		t.Fatalf("ben's request carries %q, want the server key", got["authorization"])
	}
	if md := resp.DynamicMetadata.AsMap(); md["key_source"] != "server" || md["key_id"] != "k1" {
		t.Fatalf("metadata %v", md)
	}
	if len(f.records.privateAsked) != 1 || f.records.privateAsked["ben"] != 1 {
		t.Fatalf("credentials looked up for %v, want ben's only", f.records.privateAsked)
	}
}

// TestPrivateKeyResponse: the user's key goes in the provider's own header
// (custom template, Anthropic's x-api-key with anthropic-version), every
// client credential is removed, and the metadata names the credential but
// never shows a secret.
func TestPrivateKeyResponse(t *testing.T) {
	f := newFixture(t)
	tests := map[string]struct {
		provider, model string
		header, value   string
		keyID           string
		anthropicV      bool
	}{
		"openai":    {"openai", "gpt-4o", "authorization", "Bearer " + annOpenAIKey, "user:annopenai", false},
		"anthropic": {"anthropic", "", "x-api-key", annAnthropicKey, "user:annanthropic", true},
		"custom":    {"custom", "", "x-internal-auth", "Token " + annCustomKey, "user:anncustom", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := f.server(t, Options{})
			headers := bearerHeader(f.tokens["ann"])
			if tc.model != "" {
				headers["x-ai-eg-model"] = tc.model
			}
			resp, err := check(t, s, checkRequest(headers, "", tc.provider))
			if err != nil || resp.GetOkResponse() == nil {
				t.Fatalf("not allowed: %v, %v", resp, err)
			}
			ok := resp.GetOkResponse()
			got := headerMap(ok.Headers)
			if got[tc.header] != tc.value {
				t.Errorf("%s = %q, want ann's own key", tc.header, got[tc.header])
			}
			if v, has := got["anthropic-version"]; has != tc.anthropicV || has && v != record.DefaultAnthropicVersion {
				t.Errorf("anthropic-version %q (set %v)", v, has)
			}
			for _, h := range []string{"authorization", "x-api-key", "x-goog-api-key", "api-key"} {
				if h != tc.header && !contains(ok.HeadersToRemove, h) {
					t.Errorf("credential header %s not removed", h)
				}
			}
			md := resp.DynamicMetadata.AsMap()
			if md["key_source"] != "user" || md["key_id"] != tc.keyID || md["user"] != "ann" || md["provider"] != tc.provider {
				t.Errorf("metadata %v", md)
			}
			if s := fmt.Sprint(md); strings.Contains(s, "SECRET") {
				t.Errorf("metadata shows a secret: %s", s)
			}
		})
	}
}

// TestPrivateKeyChangeIsSeen: answers are cached by key pointer, so a new
// credentials index (as the cache loads after a change) changes the answer
// at once, both ways.
func TestPrivateKeyChangeIsSeen(t *testing.T) {
	f := newFixture(t)
	s := f.server(t, Options{})
	headers := bearerHeader(f.tokens["ann"])
	headers["x-ai-eg-model"] = "gpt-4o"
	sent := func() string {
		t.Helper()
		resp, _ := check(t, s, checkRequest(headers, "", "openai"))
		return headerMap(resp.GetOkResponse().GetHeaders())["authorization"]
	}
	steps := []struct {
		creds []*record.Credential
		want  string
	}{
		{annCredentials(), "Bearer " + annOpenAIKey},
		{nil, "Bearer " + openaiKey},
		{[]*record.Credential{{ID: "rotated", User: "ann", Provider: "openai", Key: "sk-ann-rotated"}}, "Bearer sk-ann-rotated"},
		{annCredentials(), "Bearer " + annOpenAIKey},
	}
	for i, step := range steps {
		f.records.privateKeys["ann"] = record.NewPrivateKeys(step.creds)
		for range 2 { // the second answer comes from the cache
			if got := sent(); got != step.want {
				t.Fatalf("step %d: sent %q, want %q", i, got, step.want)
			}
		}
	}
}

// BenchmarkCheckAllowedPrivateKey is BenchmarkCheckAllowed for a user
// whose request goes out on their own credential.
func BenchmarkCheckAllowedPrivateKey(b *testing.B) {
	f := newFixture(b)
	s := f.server(b, Options{})
	req := checkRequest(map[string]string{
		"authorization": "Bearer " + f.tokens["ann"], "x-ai-eg-model": "gpt-4o", "content-type": "application/json", "user-agent": "OpenAI/Python 1.99.0",
		"accept": "application/json", "x-request-id": "6f1c2a1e-0000-4000-8000-000000000000", "x-forwarded-proto": "http",
		"x-stainless-lang": "python", "x-stainless-os": "Linux", "content-length": "96",
	}, "/v1/chat/completions", "openai")
	ctx := context.Background()
	resp, _ := check(b, s, req)
	if resp.GetOkResponse() == nil || resp.DynamicMetadata.AsMap()["key_source"] != "user" {
		b.Fatalf("not on ann's own key: %v", resp)
	}
	f.records.privateAsked = nil // the fake's bookkeeping is not measured
	b.ReportAllocs()
	for b.Loop() {
		s.Check(ctx, req)
	}
}

// TestBodyReadOnlyForOwnCredentials: in a group without model
// restrictions, the forwarded body is read only for a user who has a
// credential of their own for the provider (it picks among them); for
// anyone else, whose caches answer an empty index, the model stays the
// header's and the body is never parsed.
func TestBodyReadOnlyForOwnCredentials(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		tok, want string
	}{
		{"ben", "header-model"}, // no credentials: an empty index
		{"ann", "gpt-4o"},       // an openai credential for gpt-4o
	} {
		headers := bearerHeader(f.tokens[c.tok])
		headers["x-ai-eg-model"] = "header-model"
		req := checkRequest(headers, "/v1/chat/completions", "openai")
		r := Request{Headers: headers, Path: req.Attributes.Request.Http.Path, Body: `{"model":"gpt-4o","messages":[]}`, ContextExtensions: req.Attributes.ContextExtensions}
		d := f.server(t, Options{}).authorizer.Decide(context.Background(), &r)
		if d.Reason != ReasonAllowed || d.Model != c.want {
			t.Errorf("%s: reason %s, model %q, want allowed with %q", c.tok, d.Reason, d.Model, c.want)
		}
	}
}
