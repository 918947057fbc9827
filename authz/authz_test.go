package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// memRecords is an in-memory Records for tests; fail makes every lookup
// fail as a store outage would.
type memRecords struct {
	tokens    map[string]*record.Token
	users     map[string]*record.User
	groups    map[string]*record.Group
	providers map[string]*record.Provider
	// privateKeys are users' own credentials by user; a user not in it
	// has none.
	privateKeys map[string]*record.PrivateKeys
	// identities index the principal mappings (see meshIdentities).
	identities *record.Identities
	fail       error
	// privateFail fails PrivateKeys alone.
	privateFail error
	// privateAsked counts the lookups of users' credentials, by user.
	privateAsked map[string]int
	lookups      int
}

func get[V any](m *memRecords, recs map[string]*V, name string) (*V, error) {
	m.lookups++
	if m.fail != nil {
		return nil, m.fail
	}
	if v, ok := recs[name]; ok {
		return v, nil
	}
	return nil, fmt.Errorf("%q: %w", name, record.ErrNotFound)
}

func (m *memRecords) Token(_ context.Context, id string) (record.Token, error) {
	t, err := get(m, m.tokens, id)
	if err != nil {
		return record.Token{}, err
	}
	return *t, nil
}
func (m *memRecords) User(_ context.Context, n string) (*record.User, error) {
	return get(m, m.users, n)
}
func (m *memRecords) Group(_ context.Context, n string) (*record.Group, error) {
	return get(m, m.groups, n)
}
func (m *memRecords) Provider(_ context.Context, n string) (*record.Provider, error) {
	return get(m, m.providers, n)
}
func (m *memRecords) Identities(context.Context) (*record.Identities, error) {
	m.lookups++
	if m.fail != nil {
		return nil, m.fail
	}
	return m.identities, nil
}

// PrivateKeys does not allocate, so that the benchmarks measure the
// decision, not the fake: a user without credentials gets nil.
func (m *memRecords) PrivateKeys(_ context.Context, user string) (*record.PrivateKeys, error) {
	m.lookups++
	if m.privateAsked != nil {
		m.privateAsked[user]++
	}
	switch {
	case m.fail != nil:
		return nil, m.fail
	case m.privateFail != nil:
		return nil, m.privateFail
	}
	if k, ok := m.privateKeys[user]; ok {
		return k, nil
	}
	// As cache.Records answers for a user without credentials: an empty
	// index, not nil.
	return emptyPrivateKeys, nil
}

var emptyPrivateKeys = record.NewPrivateKeys(nil)

var testNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

const (
	openaiKey    = "sk-test-openai-0123456789"
	anthropicKey = "sk-ant-test-0123456789"
)

// ann's own keys: no answer may show them except in the header that goes
// upstream.
const (
	annOpenAIKey    = "sk-ann-own-openai-SECRET-4242"
	annAnthropicKey = "sk-ant-ann-own-SECRET-4242"
	annCustomKey    = "ann-own-custom-SECRET-4242"
)

// annCredentials are ann's own: openai for gpt-4o only; anthropic, custom
// and the keyless provider "empty" for any model; and "nowhere", a
// provider without a record.
func annCredentials() []*record.Credential {
	c := func(id, provider, model, key string) *record.Credential {
		return &record.Credential{ID: id, User: "ann", Name: "own-" + provider, Provider: provider, Model: model, Key: key, Created: testNow.Add(-time.Hour)}
	}
	return []*record.Credential{
		c("annopenai", "openai", "gpt-4o", annOpenAIKey),
		c("annanthropic", "anthropic", "", annAnthropicKey),
		c("anncustom", "custom", "", annCustomKey),
		c("annempty", "empty", "", "sk-ann-own-empty"),
		c("annnowhere", "nowhere", "", "sk-ann-own-nowhere"),
	}
}

type fixture struct {
	ring    *token.Keyring
	records *memRecords
	tokens  map[string]string // name → token string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ring, err := token.NewKeyring([]token.SigningKey{{ID: 1, Secret: bytes.Repeat([]byte{9}, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ring: ring, tokens: map[string]string{}, records: &memRecords{
		tokens:       map[string]*record.Token{},
		privateKeys:  map[string]*record.PrivateKeys{"ann": record.NewPrivateKeys(annCredentials())},
		privateAsked: map[string]int{},
		identities:   record.NewIdentities(meshIdentities()),
		users: map[string]*record.User{
			"alice": {Name: "alice", Groups: []string{"eng", "gone", "off", "byok", "nobyok", "gpt", "narrow"}},
			"bob":   {Name: "bob", Disabled: true, Groups: []string{"eng"}},
			"carol": {Name: "carol", Groups: []string{}},
			// ann has credentials of her own (annCredentials), ben none.
			"ann": {Name: "ann", Groups: []string{"eng", "nobyok", "gpt"}},
			"ben": {Name: "ben", Groups: []string{"eng", "nobyok"}},
		},
		groups: map[string]*record.Group{
			"eng":    {Name: "eng"},
			"off":    {Name: "off", Disabled: true},
			"byok":   {Name: "byok"},
			"nobyok": {Name: "nobyok", DisableCustomKeys: true},
			"gpt":    {Name: "gpt", Models: []string{"gpt-4o*", "o3"}},
			"narrow": {Name: "narrow", Providers: []string{"anthropic"}},
		},
		providers: map[string]*record.Provider{
			"openai":    {Name: "openai", Kind: record.KindOpenAI, Keys: []record.Key{{ID: "k1", Secret: openaiKey}}},
			"anthropic": {Name: "anthropic", Kind: record.KindAnthropic, Keys: []record.Key{{ID: "a1", Secret: anthropicKey}}},
			"azure":     {Name: "azure", Kind: record.KindAzure, Keys: []record.Key{{ID: "z1", Secret: "azure-secret-1"}}},
			"gemini":    {Name: "gemini", Kind: record.KindGemini, Keys: []record.Key{{ID: "g1", Secret: "gemini-secret-1"}}},
			"custom":    {Name: "custom", Kind: record.KindCustom, Header: "x-internal-auth", ValueTemplate: "Token {key}", Keys: []record.Key{{ID: "c1", Secret: "custom-secret-1"}}},
			"empty":     {Name: "empty", Kind: record.KindOpenAI},
		},
	}}
	add := func(name, user, group string, mod func(*record.Token)) {
		m, err := ring.Mint()
		if err != nil {
			t.Fatal(err)
		}
		rec := &record.Token{ID: m.ID, Hash: m.Hash, User: user, Group: group, Name: name, Created: testNow.Add(-time.Hour)}
		if mod != nil {
			mod(rec)
		}
		f.records.tokens[m.ID] = rec
		f.tokens[name] = m.Token
	}
	add("ok", "alice", "eng", nil)
	add("expired", "alice", "eng", func(r *record.Token) { r.Expires = testNow.Add(-time.Second) })
	add("future", "alice", "eng", func(r *record.Token) { r.Expires = testNow.Add(time.Hour) })
	add("revoked", "alice", "eng", func(r *record.Token) { r.Revoked = true })
	add("wronghash", "alice", "eng", func(r *record.Token) { r.Hash[0] ^= 1 })
	add("nouser", "dave", "eng", nil)
	add("disabled-user", "bob", "eng", nil)
	add("not-permitted", "carol", "eng", nil)
	add("gone", "alice", "gone", nil)
	add("off", "alice", "off", nil)
	add("byok", "alice", "byok", nil)
	add("nobyok", "alice", "nobyok", nil)
	add("gpt", "alice", "gpt", nil)
	add("narrow", "alice", "narrow", nil)
	add("ann", "ann", "eng", nil)
	add("ann-nobyok", "ann", "nobyok", nil)
	add("ann-gpt", "ann", "gpt", nil)
	add("ben", "ben", "eng", nil)
	add("ben-nobyok", "ben", "nobyok", nil)
	// A token minted by another server's key: well formed, never verifies.
	other, _ := token.NewKeyring([]token.SigningKey{{ID: 1, Secret: bytes.Repeat([]byte{7}, 32)}})
	m, _ := other.Mint()
	f.tokens["foreign"] = m.Token
	// Signed by our key but never stored.
	m, _ = ring.Mint()
	f.tokens["unknown"] = m.Token
	return f
}

func (f *fixture) server(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Sources == nil {
		opts.Sources = []Source{{Header: "authorization"}, {Header: "x-api-key"}, {Header: "x-goog-api-key"}, {Header: "api-key"}, {Query: "key"}}
	}
	if opts.ModelHeader == "" {
		opts.ModelHeader = "x-ai-eg-model"
	}
	opts.Now = func() time.Time { return testNow }
	a, err := NewAuthorizer(f.records, f.ring, opts)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(a, ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func checkRequest(headers map[string]string, path, provider string) *authv3.CheckRequest {
	if path == "" {
		path = "/v1/chat/completions"
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Path: path, Host: "llm.mesh", Headers: headers,
		}},
	}}
	if provider != "" {
		req.Attributes.ContextExtensions = map[string]string{"provider": provider}
	}
	return req
}

// check calls s.Check and decodes the answer (see Unpack).
func check(t testing.TB, s *Server, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	t.Helper()
	resp, err := s.Check(context.Background(), req)
	if err != nil {
		return resp, err
	}
	return mustUnpack(t, resp), nil
}

func mustUnpack(t testing.TB, resp *authv3.CheckResponse) *authv3.CheckResponse {
	t.Helper()
	out, err := Unpack(resp)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func bearerHeader(tok string) map[string]string {
	return map[string]string{"authorization": "Bearer " + tok}
}

func TestDecide(t *testing.T) {
	f := newFixture(t)
	tok := func(name string) map[string]string { return bearerHeader(f.tokens[name]) }
	tests := map[string]struct {
		opts     Options
		headers  map[string]string
		path     string
		provider string
		host     string
		want     Reason
		wantKey  string
	}{
		"allowed bearer":             {headers: tok("ok"), provider: "openai", want: ReasonAllowed, wantKey: "k1"},
		"allowed x-api-key":          {headers: map[string]string{"x-api-key": f.tokens["ok"]}, provider: "anthropic", want: ReasonAllowed, wantKey: "a1"},
		"allowed x-goog-api-key":     {headers: map[string]string{"x-goog-api-key": f.tokens["ok"]}, provider: "gemini", want: ReasonAllowed, wantKey: "g1"},
		"allowed api-key":            {headers: map[string]string{"api-key": f.tokens["ok"]}, provider: "azure", want: ReasonAllowed, wantKey: "z1"},
		"allowed query key":          {headers: map[string]string{}, path: "/v1beta/models/g:generateContent?alt=sse&key=" + f.tokens["ok"], provider: "gemini", want: ReasonAllowed, wantKey: "g1"},
		"allowed lower-case bearer":  {headers: map[string]string{"authorization": "bearer " + f.tokens["ok"]}, provider: "openai", want: ReasonAllowed},
		"allowed not yet expired":    {headers: tok("future"), provider: "openai", want: ReasonAllowed},
		"provider from host":         {opts: Options{Hosts: map[string]string{"api.openai.com": "openai"}}, headers: tok("ok"), host: "API.openai.com:443", want: ReasonAllowed, wantKey: "k1"},
		"model header alone":         {headers: map[string]string{"authorization": "Bearer " + f.tokens["gpt"], "x-ai-eg-model": "gpt-4o-mini"}, provider: "openai", want: ReasonBodyNotForwarded},
		"missing credential":         {headers: map[string]string{}, provider: "openai", want: ReasonMissingCredential},
		"empty bearer":               {headers: map[string]string{"authorization": "Bearer "}, provider: "openai", want: ReasonMissingCredential},
		"malformed token":            {headers: bearerHeader(f.tokens["ok"][:40]), provider: "openai", want: ReasonMalformedToken},
		"forged token":               {headers: tok("foreign"), provider: "openai", want: ReasonInvalidToken},
		"unknown token":              {headers: tok("unknown"), provider: "openai", want: ReasonInvalidToken},
		"hash mismatch":              {headers: tok("wronghash"), provider: "openai", want: ReasonInvalidToken},
		"expired token":              {headers: tok("expired"), provider: "openai", want: ReasonTokenExpired},
		"revoked token":              {headers: tok("revoked"), provider: "openai", want: ReasonTokenRevoked},
		"user deleted":               {headers: tok("nouser"), provider: "openai", want: ReasonUserDeleted},
		"user disabled":              {headers: tok("disabled-user"), provider: "openai", want: ReasonUserDisabled},
		"group not permitted":        {headers: tok("not-permitted"), provider: "openai", want: ReasonGroupNotPermitted},
		"group deleted":              {headers: tok("gone"), provider: "openai", want: ReasonGroupDeleted},
		"group disabled":             {headers: tok("off"), provider: "openai", want: ReasonGroupDisabled},
		"unknown provider":           {headers: tok("ok"), host: "example.com", want: ReasonUnknownProvider},
		"provider not allowed":       {headers: tok("narrow"), provider: "openai", want: ReasonProviderNotAllowed},
		"model not allowed":          {headers: map[string]string{"authorization": "Bearer " + f.tokens["gpt"], "x-ai-eg-model": "gpt-3.5-turbo"}, provider: "openai", want: ReasonModelNotAllowed},
		"model missing":              {headers: tok("gpt"), provider: "openai", want: ReasonBodyNotForwarded},
		"no provider key":            {headers: tok("ok"), provider: "empty", want: ReasonNoProviderKey},
		"provider record missing":    {headers: tok("ok"), provider: "nowhere", want: ReasonNoProviderKey},
		"custom key alone allowed":   {headers: bearerHeader("sk-client-own-key"), provider: "openai", want: ReasonCustomKey},
		"management token":           {headers: bearerHeader(token.ManagementPrefix + strings.Repeat("A", 70)), provider: "openai", want: ReasonManagementToken},
		"management token beside":    {headers: map[string]string{"authorization": "Bearer " + f.tokens["byok"], "x-api-key": token.ManagementPrefix + "x"}, provider: "anthropic", want: ReasonManagementToken},
		"custom key alone forbidden": {opts: Options{DisableCustomKeys: true}, headers: bearerHeader("sk-client-own-key"), provider: "openai", want: ReasonCustomKeyForbidden},
		"custom key with token":      {headers: map[string]string{"authorization": "Bearer " + f.tokens["byok"], "x-api-key": "sk-ant-own"}, provider: "anthropic", want: ReasonCustomKey},
		"custom key group forbids":   {headers: map[string]string{"authorization": "Bearer " + f.tokens["nobyok"], "x-api-key": "sk-ant-own"}, provider: "anthropic", want: ReasonCustomKeyForbidden},
		"custom key global forbids":  {opts: Options{DisableCustomKeys: true}, headers: map[string]string{"authorization": "Bearer " + f.tokens["byok"], "x-api-key": "sk-ant-own"}, provider: "anthropic", want: ReasonCustomKeyForbidden},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := f.server(t, tc.opts)
			req := checkRequest(tc.headers, tc.path, tc.provider)
			if tc.host != "" {
				req.Attributes.Request.Http.Host = tc.host
			}
			r := Request{Method: "POST", Headers: tc.headers, Path: req.Attributes.Request.Http.Path, Host: req.Attributes.Request.Http.Host, ContextExtensions: req.Attributes.ContextExtensions}
			d := s.authorizer.Decide(context.Background(), &r)
			if d.Reason != tc.want {
				t.Fatalf("reason %q, want %q (err %v)", d.Reason, tc.want, d.Err)
			}
			if tc.wantKey != "" && (d.Key == nil || d.Key.ID != tc.wantKey) {
				t.Fatalf("key %v, want %s", d.Key, tc.wantKey)
			}
		})
	}
}

func TestEveryReasonHasAResponse(t *testing.T) {
	r, err := newResponder([]Source{{Header: "authorization"}}, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, reason := range Reasons() {
		resp := mustUnpack(t, r.respond(&Decision{Reason: reason}, nil))
		denied := resp.GetDeniedResponse()
		if denied == nil {
			t.Fatalf("%s: not a denial", reason)
		}
		if got := int(denied.GetStatus().GetCode()); got != reason.HTTPStatus() || got < 400 {
			t.Errorf("%s: status %d, want %d", reason, got, reason.HTTPStatus())
		}
		var body ErrorBody
		if err := json.Unmarshal([]byte(denied.Body), &body); err != nil {
			t.Fatalf("%s: body %q: %v", reason, denied.Body, err)
		}
		if Reason(body.Error.Code) != reason || body.Error.Message == "" || body.Error.Type == "" {
			t.Errorf("%s: body %+v", reason, body)
		}
		h := headerMap(denied.Headers)
		if h["content-type"] != "application/json" {
			t.Errorf("%s: content-type %q", reason, h["content-type"])
		}
		// RFC 6750 §3.1: an error code only when a credential was sent.
		challenge, ok := h["www-authenticate"]
		switch status := reason.HTTPStatus(); {
		case ok != (status == 401 || status == 400):
			t.Errorf("%s: www-authenticate present=%v", reason, ok)
		case reason == ReasonMissingCredential && challenge != `Bearer realm="keyward"`,
			status == 400 && challenge != `Bearer realm="keyward", error="invalid_request"`,
			status == 401 && reason != ReasonMissingCredential && challenge != `Bearer realm="keyward", error="invalid_token"`:
			t.Errorf("%s: www-authenticate %q", reason, challenge)
		}
		if resp.GetStatus().GetCode() == 0 {
			t.Errorf("%s: gRPC status OK on a denial", reason)
		}
	}
}

func headerMap(opts []*corev3.HeaderValueOption) map[string]string {
	m := map[string]string{}
	for _, o := range opts {
		m[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
	}
	return m
}

func TestAllowedResponsePerConvention(t *testing.T) {
	f := newFixture(t)
	allSources := []string{"authorization", "x-api-key", "x-goog-api-key", "api-key"}
	tests := map[string]struct {
		provider   string
		header     string
		value      string
		wantKeyID  string
		anthropicV bool
	}{
		"openai":    {"openai", "authorization", "Bearer " + openaiKey, "k1", false},
		"anthropic": {"anthropic", "x-api-key", anthropicKey, "a1", true},
		"azure":     {"azure", "api-key", "azure-secret-1", "z1", false},
		"gemini":    {"gemini", "x-goog-api-key", "gemini-secret-1", "g1", false},
		"custom":    {"custom", "x-internal-auth", "Token custom-secret-1", "c1", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := f.server(t, Options{})
			headers := bearerHeader(f.tokens["ok"])
			headers["x-keyward-user"] = "mallory"
			resp, err := check(t, s, checkRequest(headers, "/v1/x", tc.provider))
			if err != nil {
				t.Fatal(err)
			}
			ok := resp.GetOkResponse()
			if ok == nil {
				t.Fatalf("not allowed: %v", resp)
			}
			for _, h := range ok.Headers {
				if want := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD; h.AppendAction != want {
					t.Errorf("header %s: append action %v, want %v", h.Header.Key, h.AppendAction, want)
				}
			}
			got := headerMap(ok.Headers)
			if got[tc.header] != tc.value {
				t.Errorf("%s = %q, want %q", tc.header, got[tc.header], tc.value)
			}
			if _, has := got["anthropic-version"]; has != tc.anthropicV {
				t.Errorf("anthropic-version present=%v", has)
			}
			rec := f.records.tokens[strings.TrimPrefix(f.tokens["ok"], "")[3:19]]
			if got[HeaderUser] != "alice" || got[HeaderGroup] != "eng" || got[HeaderTokenID] != rec.ID {
				t.Errorf("identity headers %v", got)
			}
			removed := map[string]bool{}
			for _, h := range ok.HeadersToRemove {
				removed[h] = true
			}
			for _, h := range allSources {
				if h != tc.header && !removed[h] {
					t.Errorf("credential header %s not removed", h)
				}
			}
			if removed[tc.header] {
				t.Errorf("the provider header %s is also removed", tc.header)
			}
			if len(ok.QueryParametersToRemove) != 1 || ok.QueryParametersToRemove[0] != "key" {
				t.Errorf("query parameters removed: %v", ok.QueryParametersToRemove)
			}
			md := resp.DynamicMetadata.AsMap()
			want := map[string]any{"user": "alice", "group": "eng", "token_id": rec.ID, "provider": tc.provider, "key_id": tc.wantKeyID, "key_source": "server"}
			for k, v := range want {
				if md[k] != v {
					t.Errorf("metadata %s = %v, want %v", k, md[k], v)
				}
			}
			if len(md) != len(want) {
				t.Errorf("metadata %v has extra fields", md)
			}
			// A second identical request shares the cached response (the
			// client's own x-keyward-user is overwritten either way).
			delete(headers, "x-keyward-user")
			again, _ := s.Check(context.Background(), checkRequest(headers, "/v1/x", tc.provider))
			again2, _ := s.Check(context.Background(), checkRequest(headers, "/v1/x", tc.provider))
			if !proto.Equal(mustUnpack(t, again), resp) {
				t.Error("the cached answer differs from the first one")
			}
			if again != again2 {
				t.Error("allowed response not reused")
			}
		})
	}
}

func TestAnthropicVersionOnlyWhenAbsent(t *testing.T) {
	f := newFixture(t)
	s := f.server(t, Options{})
	for _, tc := range []struct {
		client string
		want   bool
	}{{"", true}, {"2099-01-01", false}, {"", true}} {
		headers := map[string]string{"x-api-key": f.tokens["ok"]}
		if tc.client != "" {
			headers["anthropic-version"] = tc.client
		}
		resp, _ := check(t, s, checkRequest(headers, "", "anthropic"))
		v, set := headerMap(resp.GetOkResponse().GetHeaders())["anthropic-version"]
		if set != tc.want || set && v != record.DefaultAnthropicVersion {
			t.Errorf("client sent %q: keyward sets %q (%v)", tc.client, v, set)
		}
	}
}

func TestForeignIdentityHeadersRemoved(t *testing.T) {
	f := newFixture(t)
	s := f.server(t, Options{})
	headers := bearerHeader(f.tokens["ok"])
	headers["x-keyward-admin"] = "true"
	resp, _ := check(t, s, checkRequest(headers, "", "openai"))
	ok := resp.GetOkResponse()
	if ok == nil || !contains(ok.HeadersToRemove, "x-keyward-admin") {
		t.Fatalf("x-keyward-admin not removed: %v", resp)
	}
	// The custom-key passthrough strips claimed identities too.
	resp, _ = check(t, s, checkRequest(map[string]string{"authorization": "Bearer sk-own", "x-keyward-user": "root", "x-keyward-role": "admin"}, "", "openai"))
	ok = resp.GetOkResponse()
	for _, h := range []string{HeaderUser, HeaderGroup, HeaderTokenID, "x-keyward-role"} {
		if ok == nil || !contains(ok.HeadersToRemove, h) {
			t.Fatalf("passthrough does not remove %s: %v", h, resp)
		}
	}
	if len(ok.Headers) != 0 {
		t.Fatalf("passthrough sets headers: %v", ok.Headers)
	}
}

func TestCustomKeyWithTokenKeepsClientKey(t *testing.T) {
	f := newFixture(t)
	s := f.server(t, Options{})
	resp, _ := check(t, s, checkRequest(map[string]string{"authorization": "Bearer " + f.tokens["byok"], "x-api-key": "sk-ant-own"}, "", "anthropic"))
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("denied: %v", resp)
	}
	if !contains(ok.HeadersToRemove, "authorization") || contains(ok.HeadersToRemove, "x-api-key") {
		t.Fatalf("removes %v: want the token's header only", ok.HeadersToRemove)
	}
	if _, set := headerMap(ok.Headers)["x-api-key"]; set {
		t.Fatal("overwrote the client's own key")
	}
	if resp.DynamicMetadata.AsMap()["custom_key"] != true {
		t.Fatal("metadata does not say custom_key")
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestKeysSpreadAcrossRequests(t *testing.T) {
	f := newFixture(t)
	f.records.providers["openai"] = &record.Provider{Name: "openai", Kind: record.KindOpenAI, Keys: []record.Key{{ID: "k1", Secret: "s1"}, {ID: "k2", Secret: "s2"}, {ID: "k3", Secret: "s3"}}}
	s := f.server(t, Options{})
	seen := map[any]int{}
	for range 30 {
		resp, _ := check(t, s, checkRequest(bearerHeader(f.tokens["ok"]), "", "openai"))
		seen[resp.DynamicMetadata.AsMap()["key_id"]]++
	}
	if len(seen) != 3 || seen["k1"] != 10 {
		t.Fatalf("keys used %v, want 10 each of k1..k3", seen)
	}
}

func TestRandomTokensNeverLookedUp(t *testing.T) {
	f := newFixture(t)
	s := f.server(t, Options{})
	for _, tok := range []string{f.tokens["foreign"], f.tokens["ok"][:30], "kw_" + strings.Repeat("A", 64), "kw_"} {
		check(t, s, checkRequest(bearerHeader(tok), "", "openai"))
	}
	if f.records.lookups != 0 {
		t.Fatalf("%d store lookups for forged tokens", f.records.lookups)
	}
}

func TestStoreFailureIs503(t *testing.T) {
	f := newFixture(t)
	f.records.fail = errors.New("vault: connection refused")
	var logs bytes.Buffer
	a, _ := NewAuthorizer(f.records, f.ring, Options{Sources: []Source{{Header: "authorization"}}})
	s, _ := NewServer(a, ServerOptions{Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	resp, err := check(t, s, checkRequest(bearerHeader(f.tokens["ok"]), "", "openai"))
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 503 {
		t.Fatalf("got %v, %v; want a 503 denial", resp, err)
	}
	if !strings.Contains(logs.String(), "connection refused") || strings.Contains(logs.String(), f.tokens["ok"]) {
		t.Fatalf("log: %s", logs.String())
	}
}

func TestMalformedRequestsNeverError(t *testing.T) {
	f := newFixture(t)
	s := f.server(t, Options{})
	for _, req := range []*authv3.CheckRequest{nil, {}, {Attributes: &authv3.AttributeContext{}}, checkRequest(nil, "?", "")} {
		resp, err := check(t, s, req)
		if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
			t.Fatalf("req %v: %v, %v", req, resp, err)
		}
	}
}

func TestDenialLogHasNoSecrets(t *testing.T) {
	f := newFixture(t)
	var logs bytes.Buffer
	a, _ := NewAuthorizer(f.records, f.ring, Options{Sources: []Source{{Header: "authorization"}, {Query: "key"}}, DisableCustomKeys: true, ModelHeader: "m"})
	s, _ := NewServer(a, ServerOptions{Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	secrets := []string{f.tokens["expired"], "sk-client-own-secret", f.tokens["foreign"]}
	check(t, s, checkRequest(bearerHeader(secrets[0]), "", "openai"))
	check(t, s, checkRequest(bearerHeader(secrets[1]), "/v1/x?key="+secrets[1], "openai"))
	check(t, s, checkRequest(map[string]string{}, "/v1/x?key="+secrets[2], "openai"))
	out := logs.String()
	for _, want := range []string{`"reason":"token_expired"`, `"reason":"custom_key_forbidden"`, `"reason":"invalid_token"`, `"user":"alice"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	for _, secret := range append(secrets, openaiKey) {
		if strings.Contains(out, secret) || strings.Contains(out, secret[3:20]) {
			t.Fatalf("log contains a secret:\n%s", out)
		}
	}
}

// TestDenialLogRate: by default every denial is an event; with a cap,
// the denials past it are counted and the count reported with the next
// logged one, so none goes unaccounted.
func TestDenialLogRate(t *testing.T) {
	f := newFixture(t)
	a, _ := NewAuthorizer(f.records, f.ring, Options{Sources: []Source{{Header: "authorization"}}})
	for _, c := range []struct {
		name       string
		opts       ServerOptions
		wantEvents int
	}{
		{"default: every denial", ServerOptions{}, 300},
		{"capped", ServerOptions{DenyLogRate: 0.001, DenyLogBurst: 10}, 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			c.opts.Log = slog.New(slog.NewJSONHandler(&logs, nil))
			s, _ := NewServer(a, c.opts)
			for range 300 {
				check(t, s, checkRequest(nil, "", "openai"))
			}
			if n := strings.Count(logs.String(), `"event":"authz.deny"`); n != c.wantEvents {
				t.Fatalf("%d events for 300 denials, want %d", n, c.wantEvents)
			}
			if c.wantEvents < 300 {
				if got := s.suppressed.Load(); got != int64(300-c.wantEvents) {
					t.Fatalf("%d denials counted as suppressed, want %d", got, 300-c.wantEvents)
				}
			}
		})
	}
}

func TestQueryCredential(t *testing.T) {
	tests := []struct {
		path, name, want string
		ok, unambiguous  bool
	}{
		{"/x", "key", "", false, true},
		{"/x?", "key", "", false, true},
		{"/x?key=abc", "key", "abc", true, true},
		{"/x?a=1&key=abc&b=2", "key", "abc", true, true},
		{"/x?akey=1&keys=2&monkey=3&ke=4&y=5", "key", "", false, true},
		{"/x?key=a%2Bb", "key", "a+b", true, true},
		{"/x?key=a+b", "key", "a b", true, true},
		{"/x?key=%zz", "key", "%zz", true, true},
		{"/x?key", "key", "", true, true},
		{"/x?key=", "key", "", true, true},
		{"/x?key=abc#frag", "key", "abc#frag", true, true},
		{"/x?key=a?key=b", "key", "a?key=b", true, true},
		// Spellings Envoy does not remove.
		{"/x?k%65y=abc", "key", "", false, false},
		{"/x?%6b%65%79=abc", "key", "", false, false},
		{"/x?KEY=abc", "key", "", false, false},
		{"/x?Key=abc", "key", "", false, false},
		{"/x?key+=abc", "key", "", false, false},
		{"/x?+key=abc", "key", "", false, false},
		{"/x?key%20=abc", "key", "", false, false},
		{"/x?a=1;key=abc", "key", "", false, false},
		{"/x?key=abc;a=1", "key", "", false, false},
		{"/x?key;=abc", "key", "", false, false},
		// Twice, even the same.
		{"/x?key=abc&key=def", "key", "", false, false},
		{"/x?key=abc&key=abc", "key", "", false, false},
		{"/x?key&key=abc", "key", "", false, false},
		{"/x?key=abc&ke%79=def", "key", "", false, false},
		// Not spellings of key.
		{"/x?k%zzey=abc", "key", "", false, true},
		{"/x?ke%2579=abc", "key", "", false, true},
		{"/x?k+ey=abc", "key", "", false, true},
	}
	for _, tc := range tests {
		got, ok, unambiguous := queryCredential(tc.path, tc.name)
		if got != tc.want || ok != tc.ok || unambiguous != tc.unambiguous {
			t.Errorf("queryCredential(%q, %q) = %q, %v, %v; want %q, %v, %v", tc.path, tc.name, got, ok, unambiguous, tc.want, tc.ok, tc.unambiguous)
		}
	}
}

func TestAuthorization(t *testing.T) {
	tests := []struct {
		value, cred string
		bearer      bool
	}{
		{"Bearer kw_x", "kw_x", true},
		{"bearer kw_x", "kw_x", true},
		{"BEARER   kw_x", "kw_x", true},
		{"Bearer\tkw_x", "kw_x", true},
		{" Bearer kw_x ", "kw_x", true},
		{"Bearer", "", true},
		{"Bearer ", "", true},
		{"Basic dXNlcg==", "dXNlcg==", false},
		{"Token kw_x", "kw_x", false},
		{"kw_x", "kw_x", false},
		{"Bearerkw_x", "Bearerkw_x", false},
		{"", "", false},
	}
	for _, tc := range tests {
		if cred, bearer := authorization(tc.value); cred != tc.cred || bearer != tc.bearer {
			t.Errorf("authorization(%q) = %q, %v; want %q, %v", tc.value, cred, bearer, tc.cred, tc.bearer)
		}
	}
}

// FuzzFindCredentials: whatever a client sends, every credential keyward
// reads is in a place the answer has Envoy remove, as Envoy 1.40 removes
// it (envoyRemoved): after every source is removed nothing is left that
// keyward reads as a credential, and after the token's place alone is
// removed (the client's own key going through) no token is left. Else the
// request is refused before any of that (ambiguous, management token, a
// token under another scheme).
func FuzzFindCredentials(f *testing.F) {
	sources := []Source{{Header: "authorization"}, {Header: "x-api-key"}, {Query: "key"}}
	f.Add("Bearer kw_abc", "sk-x", "x-goog-api-key", "v", "/v1?key=kw_y&a=b")
	f.Add("", "", "", "", "?")
	f.Add("Basic dXNlcg==", "kw_", "x_api_key", "kw_z", "/%zz?key=%")
	f.Add("Bearer sk-own", "kw_a", "", "", "/v1?ke%79=kw_b&x=1;key=sk&KEY=1&key+=2")
	f.Add("Bearer\tkw_a", "a,b", "x-keyward-user", "root", "/v1?key&key=kw_a#f")
	f.Fuzz(func(t *testing.T, auth, apiKey, name, value, path string) {
		headers := map[string]string{"authorization": auth, "x-api-key": apiKey}
		if name = strings.ToLower(name); name != "" {
			headers[name] = value
		}
		got := findCredentials(sources, headers, path)
		switch {
		case got.tokenAt >= 0 && !token.LooksLikeToken(got.token):
			t.Fatalf("token %q without prefix", got.token)
		case got.tokenAt >= 0 && got.tokenAt == got.customAt:
			t.Fatal("one source is both token and custom key")
		case got.customKey != (got.customAt >= 0):
			t.Fatal("customKey and customAt disagree")
		case got.ambiguous || got.management || got.badScheme:
			return
		}
		rest, restPath := envoyRemoved(sources, headers, path, -1)
		if after := findCredentials(sources, rest, restPath); after.tokenAt >= 0 || after.customKey || after.ambiguous || after.management || after.badScheme {
			t.Fatalf("after every credential is removed, keyward still reads %+v", after)
		}
		if got.tokenAt >= 0 {
			rest, restPath = envoyRemoved(sources, headers, path, got.tokenAt)
			if after := findCredentials(sources, rest, restPath); after.tokenAt >= 0 || after.ambiguous {
				t.Fatalf("after the token's place is removed, keyward still reads %+v", after)
			}
		}
	})
}

// envoyRemoved is the headers and path that reach the provider after Envoy
// 1.40 applies headers_to_remove and query_parameters_to_remove for
// sources[only], or for every source when only is -1: it removes the
// headers, and every '&'-separated query parameter whose raw name is the
// source's query name (as measured; it also reorders the rest, which does
// not matter here).
func envoyRemoved(sources []Source, headers map[string]string, path string, only int) (map[string]string, string) {
	headers = maps.Clone(headers)
	for i, s := range sources {
		if only >= 0 && i != only {
			continue
		}
		if s.Header != "" {
			delete(headers, s.Header)
			continue
		}
		before, query, ok := strings.Cut(path, "?")
		if !ok {
			continue
		}
		var kept []string
		for _, pair := range strings.Split(query, "&") {
			if name, _, _ := strings.Cut(pair, "="); name != s.Query {
				kept = append(kept, pair)
			}
		}
		path = before + "?" + strings.Join(kept, "&")
	}
	return headers, path
}

func BenchmarkCheckAllowed(b *testing.B) {
	f := newFixture(b)
	s := f.server(b, Options{})
	req := checkRequest(map[string]string{
		"authorization": "Bearer " + f.tokens["ok"], "content-type": "application/json", "user-agent": "OpenAI/Python 1.99.0",
		"accept": "application/json", "x-request-id": "6f1c2a1e-0000-4000-8000-000000000000", "x-forwarded-proto": "http",
		"x-stainless-lang": "python", "x-stainless-os": "Linux", "content-length": "96",
	}, "/v1/chat/completions", "openai")
	ctx := context.Background()
	if resp, _ := check(b, s, req); resp.GetOkResponse() == nil {
		b.Fatalf("denied: %v", resp)
	}
	f.records.privateAsked = nil // the fake's bookkeeping is not measured
	b.ReportAllocs()
	for b.Loop() {
		s.Check(ctx, req)
	}
}

// panicRecords panics with a value that must not reach the log.
type panicRecords struct{ memRecords }

func (panicRecords) Token(context.Context, string) (record.Token, error) {
	panic("secret-in-panic-value sk-live-0000")
}

func TestPanicFailsClosed(t *testing.T) {
	f := newFixture(t)
	var logs bytes.Buffer
	a, _ := NewAuthorizer(&panicRecords{}, f.ring, Options{Sources: []Source{{Header: "authorization"}}})
	s, _ := NewServer(a, ServerOptions{Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	resp, err := check(t, s, checkRequest(bearerHeader(f.tokens["ok"]), "", "openai"))
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 503 || !strings.Contains(resp.GetDeniedResponse().GetBody(), `"internal_error"`) {
		t.Fatalf("got %v, %v; want a 503 internal_error denial", resp, err)
	}
	if !strings.Contains(logs.String(), "panic in check") || strings.Contains(logs.String(), "sk-live-0000") {
		t.Fatalf("log: %s", logs.String())
	}
}

// Before the signing keys are loaded (the store has not answered since
// start-up) a token cannot be judged: 503, not 401.
func TestNotReadyIs503(t *testing.T) {
	f := newFixture(t)
	a, _ := NewAuthorizer(f.records, &token.Verifier{}, Options{Sources: []Source{{Header: "authorization"}}})
	s, _ := NewServer(a, ServerOptions{})
	resp, err := check(t, s, checkRequest(bearerHeader(f.tokens["ok"]), "", "openai"))
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 503 || !strings.Contains(resp.GetDeniedResponse().GetBody(), "store_unavailable") {
		t.Fatalf("got %v, %v", resp, err)
	}
	// A store that holds no signing keys at all: no token can be valid.
	var empty token.Verifier
	empty.Set(nil)
	a, _ = NewAuthorizer(f.records, &empty, Options{Sources: []Source{{Header: "authorization"}}})
	s, _ = NewServer(a, ServerOptions{})
	if resp, _ := check(t, s, checkRequest(bearerHeader(f.tokens["ok"]), "", "openai")); resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
		t.Fatalf("no keys: %v", resp)
	}
}
