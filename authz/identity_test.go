package authz

import (
	"context"
	"slices"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keyward/keyward/record"
)

// sourcePeer is a downstream peer whose certificate Envoy verified, with
// principal as its URI SAN.
func sourcePeer(principal string) *authv3.AttributeContext_Peer {
	return &authv3.AttributeContext_Peer{Principal: principal}
}

// The mesh identities of the fixture: SPIFFE IDs of workloads in the
// "mesh.test" trust domain.
const (
	spiffePay      = "spiffe://mesh.test/ns/payments/sa/api"
	spiffePayOther = "spiffe://mesh.test/ns/payments/sa/batch"
	spiffeOps      = "spiffe://mesh.test/ns/ops/sa/cron"
	spiffeUnmapped = "spiffe://mesh.test/ns/web/sa/front"
)

// meshIdentities map the payments namespace to alice in eng (a prefix),
// its api workload exactly to ann in eng, and a few broken ones.
func meshIdentities() []*record.Identity {
	return []*record.Identity{
		{Name: "payments", Principal: "spiffe://mesh.test/ns/payments/*", User: "alice", Group: "eng"},
		{Name: "pay-api", Principal: spiffePay, User: "ben", Group: "eng"},
		{Name: "ops", Principal: spiffeOps, User: "alice", Group: "eng", Disabled: true},
		{Name: "nouser", Principal: "spiffe://mesh.test/ns/x/sa/nouser", User: "dave", Group: "eng"},
		{Name: "disabled-user", Principal: "spiffe://mesh.test/ns/x/sa/bob", User: "bob", Group: "eng"},
		{Name: "not-member", Principal: "spiffe://mesh.test/ns/x/sa/carol", User: "carol", Group: "eng"},
		{Name: "gone", Principal: "spiffe://mesh.test/ns/x/sa/gone", User: "alice", Group: "gone"},
		{Name: "off", Principal: "spiffe://mesh.test/ns/x/sa/off", User: "alice", Group: "off"},
		{Name: "narrow", Principal: "spiffe://mesh.test/ns/x/sa/narrow", User: "alice", Group: "narrow"},
		{Name: "ann-byok", Principal: "spiffe://mesh.test/ns/x/sa/ann", User: "ann", Group: "eng"},
		{Name: "ann-nobyok", Principal: "spiffe://mesh.test/ns/x/sa/ann-nobyok", User: "ann", Group: "nobyok"},
	}
}

func TestDecidePrincipal(t *testing.T) {
	f := newFixture(t)
	bound := f.records.tokens[tokenID(t, f, "byok")]
	bound.Principal = "spiffe://mesh.test/ns/payments/*"
	placeholder := map[string]string{"authorization": "Bearer sk-placeholder"}
	tests := map[string]struct {
		opts      Options
		principal string
		headers   map[string]string
		provider  string
		want      Reason
		wantUser  string
		wantKey   string
		wantIdent string
	}{
		"exact mapping":               {principal: spiffePay, headers: map[string]string{}, want: ReasonAllowed, wantUser: "ben", wantKey: "k1", wantIdent: "pay-api"},
		"exact beats prefix":          {principal: spiffePay, headers: placeholder, want: ReasonAllowed, wantUser: "ben", wantIdent: "pay-api"},
		"prefix mapping":              {principal: spiffePayOther, headers: placeholder, want: ReasonAllowed, wantUser: "alice", wantKey: "k1", wantIdent: "payments"},
		"prefix deeper":               {principal: spiffePayOther + "/x", headers: placeholder, want: ReasonAllowed, wantIdent: "payments"},
		"placeholder, keys forbidden": {opts: Options{DisableCustomKeys: true}, principal: spiffePayOther, headers: placeholder, want: ReasonAllowed, wantIdent: "payments"},
		"anthropic placeholder":       {principal: spiffePayOther, headers: map[string]string{"x-api-key": "placeholder"}, provider: "anthropic", want: ReasonAllowed, wantKey: "a1"},
		"unmapped":                    {principal: spiffeUnmapped, headers: map[string]string{}, want: ReasonPrincipalNotMapped},
		"unmapped placeholder":        {opts: Options{DisableCustomKeys: true}, principal: spiffeUnmapped, headers: placeholder, want: ReasonPrincipalNotMapped},
		"unmapped own key allowed":    {principal: spiffeUnmapped, headers: placeholder, want: ReasonCustomKey},
		"not a spiffe id":             {principal: "spiffe://mesh.test/ns/payments/sa/../x", headers: map[string]string{}, want: ReasonPrincipalNotMapped},
		"trust domain differs":        {principal: "spiffe://other.test/ns/payments/sa/api", headers: map[string]string{}, want: ReasonPrincipalNotMapped},
		"prefix needs the slash":      {principal: "spiffe://mesh.test/ns/paymentsX/sa/api", headers: map[string]string{}, want: ReasonPrincipalNotMapped},
		"no principal, no credential": {headers: map[string]string{}, want: ReasonMissingCredential},
		"mapping disabled":            {principal: spiffeOps, headers: map[string]string{}, want: ReasonPrincipalDisabled},
		"user deleted":                {principal: "spiffe://mesh.test/ns/x/sa/nouser", headers: map[string]string{}, want: ReasonUserDeleted},
		"user disabled":               {principal: "spiffe://mesh.test/ns/x/sa/bob", headers: map[string]string{}, want: ReasonUserDisabled},
		"user not member":             {principal: "spiffe://mesh.test/ns/x/sa/carol", headers: map[string]string{}, want: ReasonGroupNotPermitted},
		"group deleted":               {principal: "spiffe://mesh.test/ns/x/sa/gone", headers: map[string]string{}, want: ReasonGroupDeleted},
		"group disabled":              {principal: "spiffe://mesh.test/ns/x/sa/off", headers: map[string]string{}, want: ReasonGroupDisabled},
		"provider not allowed":        {principal: "spiffe://mesh.test/ns/x/sa/narrow", headers: map[string]string{}, want: ReasonProviderNotAllowed},
		"user's own key":              {principal: "spiffe://mesh.test/ns/x/sa/ann", headers: placeholder, provider: "anthropic", want: ReasonAllowed, wantUser: "ann"},
		"own key off in group":        {principal: "spiffe://mesh.test/ns/x/sa/ann-nobyok", headers: placeholder, provider: "anthropic", want: ReasonAllowed, wantKey: "a1"},
		"management token still":      {principal: spiffePay, headers: bearerHeader("kwm_" + "x"), want: ReasonManagementToken},
		"token wins over principal":   {principal: spiffeUnmapped, headers: bearerHeader(f.tokens["ok"]), want: ReasonAllowed, wantUser: "alice"},
		"bound token, right peer":     {principal: spiffePayOther, headers: bearerHeader(f.tokens["byok"]), want: ReasonAllowed},
		"bound token, wrong peer":     {principal: spiffeUnmapped, headers: bearerHeader(f.tokens["byok"]), want: ReasonTokenBoundElsewhere},
		"bound token, no mTLS":        {headers: bearerHeader(f.tokens["byok"]), want: ReasonTokenBoundElsewhere},
		"bound token, bad principal":  {principal: "spiffe://mesh.test/ns/payments/../x", headers: bearerHeader(f.tokens["byok"]), want: ReasonTokenBoundElsewhere},
		"store down":                  {principal: spiffePay, headers: map[string]string{}, want: ReasonStoreUnavailable},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if name == "store down" {
				f := newFixture(t)
				f.records.fail = context.DeadlineExceeded
				tc.opts.CheckDeadline = 1
				d := f.server(t, tc.opts).authorizer.Decide(context.Background(), &Request{Headers: tc.headers, Path: "/v1/chat/completions", Principal: tc.principal, ContextExtensions: map[string]string{"provider": "openai"}})
				if d.Reason != tc.want {
					t.Fatalf("reason %q, want %q", d.Reason, tc.want)
				}
				return
			}
			provider := tc.provider
			if provider == "" {
				provider = "openai"
			}
			s := f.server(t, tc.opts)
			d := s.authorizer.Decide(context.Background(), &Request{Method: "POST", Headers: tc.headers, Path: "/v1/chat/completions", Principal: tc.principal, ContextExtensions: map[string]string{"provider": provider}})
			if d.Reason != tc.want {
				t.Fatalf("reason %q, want %q (err %v)", d.Reason, tc.want, d.Err)
			}
			if tc.wantUser != "" && d.User != tc.wantUser {
				t.Errorf("user %q, want %q", d.User, tc.wantUser)
			}
			if tc.wantKey != "" && (d.Key == nil || d.Key.ID != tc.wantKey || d.Credential != nil) {
				t.Errorf("key %v (credential %v), want server key %s", d.Key, d.Credential, tc.wantKey)
			}
			if tc.wantIdent != "" && (d.Identity == nil || d.Identity.Name != tc.wantIdent) {
				t.Errorf("identity %v, want %s", d.Identity, tc.wantIdent)
			}
		})
	}
}

// tokenID is the id of the fixture's token name.
func tokenID(t *testing.T, f *fixture, name string) string {
	t.Helper()
	for id, r := range f.records.tokens {
		if r.Name == name {
			return id
		}
	}
	t.Fatalf("no token %s", name)
	return ""
}

// TestPrincipalAnswer checks the answer to a mapped principal: keyward's
// key in the provider's header, every other credential place removed (the
// SDK's placeholder never reaches the provider), identity headers and
// metadata with the mapping and principal, and no client x-keyward-token-id.
func TestPrincipalAnswer(t *testing.T) {
	f := newFixture(t)
	s := f.server(t, Options{})
	for _, tc := range []struct {
		name, provider string
		headers        map[string]string
		header, value  string
	}{
		{"openai", "openai", map[string]string{"authorization": "Bearer sk-placeholder", "x-api-key": "sk-placeholder", "x-keyward-token-id": "forged"}, "authorization", "Bearer " + openaiKey},
		{"anthropic", "anthropic", map[string]string{"x-api-key": "sk-placeholder"}, "x-api-key", anthropicKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // built, then cached
				req := checkRequest(tc.headers, "/v1/chat/completions?key=placeholder", tc.provider)
				req.Attributes.Source = sourcePeer(spiffePayOther)
				resp, err := check(t, s, req)
				if err != nil {
					t.Fatal(err)
				}
				ok := resp.GetOkResponse()
				if ok == nil {
					t.Fatalf("denied: %v", resp.GetDeniedResponse().GetBody())
				}
				set := map[string]string{}
				for _, h := range ok.GetHeaders() {
					set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
				}
				if set[tc.header] != tc.value || set[HeaderUser] != "alice" || set[HeaderGroup] != "eng" {
					t.Errorf("headers set %v", set)
				}
				removed := ok.GetHeadersToRemove()
				for _, src := range []string{"authorization", "x-api-key", "x-goog-api-key", "api-key", HeaderTokenID} {
					if src != tc.header && !slices.Contains(removed, src) {
						t.Errorf("%s not removed: %v", src, removed)
					}
				}
				if !slices.Contains(ok.GetQueryParametersToRemove(), "key") {
					t.Errorf("query key not removed: %v", ok.GetQueryParametersToRemove())
				}
				meta := resp.GetDynamicMetadata().GetFields()
				if meta["principal"].GetStringValue() != spiffePayOther || meta["identity"].GetStringValue() != "payments" || meta["user"].GetStringValue() != "alice" {
					t.Errorf("metadata %v", meta)
				}
				if _, ok := meta["token_id"]; ok {
					t.Errorf("token_id in metadata of a mesh identity")
				}
			}
		})
	}
}
