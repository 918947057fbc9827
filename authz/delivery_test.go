package authz

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// answer is an allowed answer taken apart: every place a value can travel.
type answer struct {
	headers       map[string]string
	remove, query []string
	meta          map[string]*structpb.Value
}

func allowed(t *testing.T, resp *authv3.CheckResponse) answer {
	t.Helper()
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("denied: %v", resp)
	}
	return answer{headers: headerMap(ok.Headers), remove: ok.HeadersToRemove, query: ok.QueryParametersToRemove, meta: resp.GetDynamicMetadata().GetFields()}
}

// metaPlaces are the metadata fields whose value (of any type, nested)
// shows secret.
func (a answer) metaPlaces(secret string) []string {
	var places []string
	for name, v := range a.meta {
		raw, _ := v.MarshalJSON()
		if strings.Contains(string(raw), secret) {
			places = append(places, name)
		}
	}
	return places
}

// headerPlaces are the headers set whose name or value shows secret.
func (a answer) headerPlaces(secret string) []string {
	var places []string
	for name, v := range a.headers {
		if strings.Contains(name+v, secret) {
			places = append(places, name)
		}
	}
	return places
}

// checkDelivery asserts where secret went: in metadata mode only in
// MetadataKeyField (raw) and no header is the provider's; in header mode in
// authHeader=authValue and in no metadata value. Every client credential
// place but the header set is removed either way.
func checkDelivery(t *testing.T, a answer, inMetadata bool, secret, authHeader, authValue string) {
	t.Helper()
	for _, h := range []string{"authorization", "x-api-key", "x-goog-api-key", "api-key"} {
		if h != authHeader || inMetadata {
			if !contains(a.remove, h) {
				t.Errorf("client credential header %s not removed (removes %v)", h, a.remove)
			}
		}
	}
	if !contains(a.query, "key") {
		t.Errorf("query parameter key not removed (removes %v)", a.query)
	}
	if a.headers[HeaderUser] == "" || a.headers[HeaderGroup] == "" || a.headers[HeaderTokenID] == "" {
		t.Errorf("identity headers missing: %v", a.headers)
	}
	for _, f := range []string{"user", "group", "token_id", "provider", "key_id", "key_source"} {
		if a.meta[f] == nil {
			t.Errorf("metadata %s missing", f)
		}
	}
	if !inMetadata {
		if a.headers[authHeader] != authValue {
			t.Errorf("%s = %q, want the key in its convention", authHeader, a.headers[authHeader])
		}
		if got := a.metaPlaces(secret); len(got) > 0 {
			t.Errorf("header mode: metadata %v holds the key", got)
		}
		if a.meta[MetadataKeyField] != nil {
			t.Errorf("header mode: metadata has %s", MetadataKeyField)
		}
		return
	}
	if got := a.meta[MetadataKeyField].GetStringValue(); got != secret {
		t.Errorf("metadata %s = %q (%d chars), want the raw key", MetadataKeyField, got[:min(4, len(got))], len(got))
	}
	if got := a.metaPlaces(secret); len(got) != 1 || got[0] != MetadataKeyField {
		t.Errorf("metadata mode: the key is in metadata %v, want %s only", got, MetadataKeyField)
	}
	if got := a.headerPlaces(secret); len(got) > 0 {
		t.Errorf("metadata mode: headers %v carry the key", got)
	}
	if _, set := a.headers[authHeader]; set {
		t.Errorf("metadata mode sets the provider header %s", authHeader)
	}
	if !contains(a.remove, authHeader) {
		t.Errorf("metadata mode keeps the client's %s (removes %v)", authHeader, a.remove)
	}
}

func TestKeyDelivery(t *testing.T) {
	f := newFixture(t)
	tests := map[string]struct {
		provider   string
		tok        string
		headers    func(tok string) map[string]string
		path       string
		secret     string
		authHeader string
		authValue  string
		anthropicV bool
	}{
		"openai bearer":         {provider: "openai", tok: "ok", secret: openaiKey, authHeader: "authorization", authValue: "Bearer " + openaiKey},
		"openai query token":    {provider: "openai", tok: "ok", path: "/v1/chat/completions?key=", secret: openaiKey, authHeader: "authorization", authValue: "Bearer " + openaiKey},
		"anthropic x-api-key":   {provider: "anthropic", tok: "ok", headers: func(tok string) map[string]string { return map[string]string{"x-api-key": tok} }, secret: anthropicKey, authHeader: "x-api-key", authValue: anthropicKey, anthropicV: true},
		"azure api-key":         {provider: "azure", tok: "ok", headers: func(tok string) map[string]string { return map[string]string{"api-key": tok} }, secret: "azure-secret-1", authHeader: "api-key", authValue: "azure-secret-1"},
		"gemini":                {provider: "gemini", tok: "ok", secret: "gemini-secret-1", authHeader: "x-goog-api-key", authValue: "gemini-secret-1"},
		"custom header":         {provider: "custom", tok: "ok", secret: "custom-secret-1", authHeader: "x-internal-auth", authValue: "Token custom-secret-1"},
		"user's own key":        {provider: "anthropic", tok: "ann", secret: annAnthropicKey, authHeader: "x-api-key", authValue: annAnthropicKey, anthropicV: true},
		"user's own custom key": {provider: "custom", tok: "ann", secret: annCustomKey, authHeader: "x-internal-auth", authValue: "Token " + annCustomKey},
	}
	for name, tc := range tests {
		for _, inMetadata := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/metadata=%v", name, inMetadata), func(t *testing.T) {
				opts := Options{}
				if inMetadata {
					opts.KeyDelivery = map[string]KeyDelivery{tc.provider: KeyInMetadata}
				}
				s := f.server(t, opts)
				tok := f.tokens[tc.tok]
				headers := bearerHeader(tok)
				if tc.headers != nil {
					headers = tc.headers(tok)
				}
				path := tc.path
				if strings.HasSuffix(path, "=") {
					path, headers = path+tok, map[string]string{}
				}
				// What a client may send under the provider's header
				// name (when it is no credential source) must not get
				// through either.
				if !slices.ContainsFunc(s.responder.sources, func(src Source) bool { return src.Header == tc.authHeader }) {
					headers[tc.authHeader] = "client-sent-value"
				}
				for range 2 { // built, then cached
					resp, err := check(t, s, checkRequest(headers, path, tc.provider))
					if err != nil {
						t.Fatal(err)
					}
					a := allowed(t, resp)
					checkDelivery(t, a, inMetadata, tc.secret, tc.authHeader, tc.authValue)
					if _, set := a.headers["anthropic-version"]; set != tc.anthropicV {
						t.Errorf("anthropic-version set=%v, want %v", set, tc.anthropicV)
					}
					for _, v := range a.headers {
						if strings.Contains(v, tok[3:]) {
							t.Error("an answer header carries the client's token")
						}
					}
					if got := a.metaPlaces(tok[3:]); len(got) > 0 {
						t.Errorf("metadata %v carries the client's token", got)
					}
				}
			})
		}
	}
}

// A provider in metadata mode and one in header mode share one server, one
// token and its caches: no answer of one serves the other, in any order,
// and keys of other providers never land in metadata.
func TestKeyDeliveryCachesDoNotLeak(t *testing.T) {
	f := newFixture(t)
	s := f.server(t, Options{KeyDelivery: map[string]KeyDelivery{"openai": KeyInMetadata, "gemini": KeyInHeader}})
	tok := f.tokens["ok"]
	type step struct {
		provider   string
		headers    map[string]string
		inMetadata bool
		secret     string
		authHeader string
		authValue  string
	}
	openai := step{"openai", bearerHeader(tok), true, openaiKey, "authorization", "Bearer " + openaiKey}
	anthropic := step{"anthropic", bearerHeader(tok), false, anthropicKey, "x-api-key", anthropicKey}
	gemini := step{"gemini", bearerHeader(tok), false, "gemini-secret-1", "x-goog-api-key", "gemini-secret-1"}
	// A claimed identity header makes the answer uncached (built per
	// request): the mode must hold there too.
	foreign := openai
	foreign.headers = map[string]string{"authorization": "Bearer " + tok, "x-keyward-role": "admin"}
	all := []string{openaiKey, anthropicKey, "gemini-secret-1", "azure-secret-1", "custom-secret-1"}
	for i, st := range []step{openai, anthropic, openai, gemini, foreign, anthropic, openai, foreign, gemini} {
		t.Run(fmt.Sprintf("%d-%s", i, st.provider), func(t *testing.T) {
			resp, err := check(t, s, checkRequest(st.headers, "", st.provider))
			if err != nil {
				t.Fatal(err)
			}
			a := allowed(t, resp)
			checkDelivery(t, a, st.inMetadata, st.secret, st.authHeader, st.authValue)
			for _, other := range all {
				if other == st.secret {
					continue
				}
				if p := append(a.metaPlaces(other), a.headerPlaces(other)...); len(p) > 0 {
					t.Errorf("another provider's key is in %v", p)
				}
			}
		})
	}
	// The client's own key on a metadata-mode provider passes through
	// where the client put it: keyward sends no key, so metadata has none.
	resp, _ := check(t, s, checkRequest(map[string]string{"authorization": "Bearer " + f.tokens["byok"], "x-api-key": "sk-own-client-key"}, "", "openai"))
	a := allowed(t, resp)
	if a.meta[MetadataKeyField] != nil || len(a.metaPlaces("sk-own-client-key")) > 0 {
		t.Errorf("a client's own key went into metadata: %v", a.meta)
	}
	if contains(a.remove, "x-api-key") {
		t.Error("the client's own key is removed")
	}
}

func TestKeyDeliveryOption(t *testing.T) {
	f := newFixture(t)
	for name, tc := range map[string]struct {
		delivery map[string]KeyDelivery
		ok       bool
	}{
		"none":     {nil, true},
		"header":   {map[string]KeyDelivery{"openai": KeyInHeader}, true},
		"metadata": {map[string]KeyDelivery{"openai": KeyInMetadata}, true},
		"empty":    {map[string]KeyDelivery{"openai": ""}, true},
		"unknown":  {map[string]KeyDelivery{"openai": "Metadata"}, false},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewAuthorizer(f.records, f.ring, Options{Sources: []Source{{Header: "authorization"}}, KeyDelivery: tc.delivery})
			if (err == nil) != tc.ok {
				t.Fatalf("NewAuthorizer: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// Both modes keep the warm allowed check free of allocations.
func TestKeyDeliveryAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	for _, d := range []KeyDelivery{KeyInHeader, KeyInMetadata} {
		t.Run(string(d), func(t *testing.T) {
			f := newFixture(t)
			s := f.server(t, Options{KeyDelivery: map[string]KeyDelivery{"openai": d}})
			req := checkRequest(chatHeaders(f.tokens["ok"]), "/v1/chat/completions", "openai")
			if resp, _ := check(t, s, req); resp.GetOkResponse() == nil {
				t.Fatalf("denied: %v", resp)
			}
			f.records.privateAsked = nil
			ctx := context.Background()
			if n := testing.AllocsPerRun(100, func() { s.Check(ctx, req) }); n != 0 {
				t.Fatalf("%v allocations per warm check, want 0", n)
			}
		})
	}
}

func BenchmarkCheckAllowedKeyInMetadata(b *testing.B) {
	f := newFixture(b)
	s := f.server(b, Options{KeyDelivery: map[string]KeyDelivery{"openai": KeyInMetadata}})
	req := checkRequest(chatHeaders(f.tokens["ok"]), "/v1/chat/completions", "openai")
	if resp, _ := check(b, s, req); resp.GetOkResponse() == nil || resp.GetDynamicMetadata().GetFields()[MetadataKeyField] == nil {
		b.Fatalf("not a metadata answer: %v", resp)
	}
	f.records.privateAsked = nil
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		s.Check(ctx, req)
	}
}
