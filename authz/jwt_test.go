package authz

import (
	"context"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/keyward/keyward/record"
)

const (
	testIssuer = "https://idp.test"
	// testJWT has a JWT's shape; Envoy verified it or not, as each test
	// says with the metadata it passes.
	testJWT = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
)

var jwtOptions = Options{JWT: []JWTIssuer{{Issuer: testIssuer, UserClaim: "sub", GroupClaim: "groups"}}}

// jwtMetadata is the metadata context Envoy's jwt_authn gives ext_authz
// for a verified payload filed under key.
func jwtMetadata(t testing.TB, key string, claims map[string]any) *corev3.Metadata {
	t.Helper()
	p, err := structpb.NewStruct(claims)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		JWTMetadataNamespace: {Fields: map[string]*structpb.Value{key: structpb.NewStructValue(p)}},
	}}
}

// jwtCheck is a check of a chat completion whose credential places hold
// headers and whose jwt_authn metadata is md (nil: none).
func jwtCheck(headers map[string]string, provider string, md *corev3.Metadata) *authv3.CheckRequest {
	req := checkRequest(headers, "/v1/chat/completions", provider)
	req.Attributes.MetadataContext = md
	return req
}

func TestDecideJWT(t *testing.T) {
	f := newFixture(t)
	claims := func(sub string, groups any) map[string]any {
		c := map[string]any{"iss": testIssuer, "sub": sub, "aud": "llm", "exp": 4102444800}
		if groups != nil {
			c["groups"] = groups
		}
		return c
	}
	valid := jwtMetadata(t, testIssuer, claims("alice", []any{"eng"}))
	tests := map[string]struct {
		opts      *Options
		headers   map[string]string
		md        *corev3.Metadata
		provider  string
		principal string
		want      Reason
		wantGroup string
		wantUser  string
	}{
		"valid":                        {headers: bearerHeader(testJWT), md: valid, want: ReasonAllowed, wantGroup: "eng"},
		"valid in x-api-key":           {headers: map[string]string{"x-api-key": testJWT}, md: valid, provider: "anthropic", want: ReasonAllowed, wantGroup: "eng"},
		"group as a string":            {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, claims("alice", "eng")), want: ReasonAllowed, wantGroup: "eng"},
		"one usable group of several":  {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, claims("alice", []any{"admins", "eng", "eng"})), want: ReasonAllowed, wantGroup: "eng"},
		"two usable groups":            {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, claims("alice", []any{"eng", "byok"})), want: ReasonJWTNotMapped},
		"no group claim":               {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, claims("alice", nil)), want: ReasonJWTNotMapped},
		"empty group claim":            {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, claims("alice", []any{})), want: ReasonJWTNotMapped},
		"group not allowed":            {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, claims("carol", []any{"eng"})), want: ReasonJWTNotMapped},
		"group claim not strings":      {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, claims("alice", []any{1.0, true})), want: ReasonJWTNotMapped},
		"user claim missing":           {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, map[string]any{"iss": testIssuer, "groups": []any{"eng"}}), want: ReasonJWTNotMapped},
		"user claim not a string":      {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, claims("", []any{"eng"})), want: ReasonJWTNotMapped},
		"unknown user":                 {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, claims("dave", []any{"eng"})), want: ReasonJWTNotMapped},
		"disabled user":                {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, claims("bob", []any{"eng"})), want: ReasonUserDisabled},
		"group disabled":               {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, claims("alice", []any{"off"})), want: ReasonGroupDisabled},
		"group deleted":                {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, claims("alice", []any{"gone"})), want: ReasonGroupDeleted},
		"provider not allowed":         {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, claims("alice", []any{"narrow"})), want: ReasonProviderNotAllowed},
		"unknown issuer's payload":     {headers: bearerHeader(testJWT), md: jwtMetadata(t, "https://other.test", claims("alice", []any{"eng"})), want: ReasonJWTInvalid},
		"payload iss differs":          {headers: bearerHeader(testJWT), md: jwtMetadata(t, testIssuer, map[string]any{"iss": "https://other.test", "sub": "alice", "groups": "eng"}), want: ReasonJWTInvalid},
		"jwt without verified payload": {headers: bearerHeader(testJWT), want: ReasonJWTInvalid},
		"jwt in x-api-key unverified":  {headers: map[string]string{"authorization": "Bearer sk-own", "x-api-key": testJWT}, want: ReasonJWTInvalid},
		"keyward token still works":    {headers: bearerHeader(f.tokens["ok"]), want: ReasonAllowed, wantGroup: "eng"},
		"keyward token and a jwt":      {headers: map[string]string{"authorization": "Bearer " + f.tokens["ok"], "x-api-key": testJWT}, md: valid, want: ReasonAmbiguousCredential},
		"own key, no jwt":              {headers: bearerHeader("sk-own"), want: ReasonCustomKey},
		"no credential":                {headers: map[string]string{}, want: ReasonMissingCredential},
		"jwt, no issuers configured":   {opts: &Options{}, headers: bearerHeader(testJWT), md: valid, want: ReasonCustomKey},
		"payload, placeholder":         {headers: bearerHeader("sk-placeholder"), md: valid, want: ReasonAllowed, wantGroup: "eng"},
		"management token":             {headers: bearerHeader("kwm_x"), md: valid, want: ReasonManagementToken},
		"jwt wins over a mapped peer":  {headers: bearerHeader(testJWT), md: valid, principal: spiffePay, want: ReasonAllowed, wantGroup: "eng", wantUser: "alice"},
		"bad jwt from a mapped peer":   {headers: bearerHeader(testJWT), principal: spiffePay, want: ReasonJWTInvalid},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			opts := jwtOptions
			if tc.opts != nil {
				opts = *tc.opts
			}
			provider := tc.provider
			if provider == "" {
				provider = "openai"
			}
			s := f.server(t, opts)
			creq := jwtCheck(tc.headers, provider, tc.md)
			if tc.principal != "" {
				creq.Attributes.Source = sourcePeer(tc.principal)
			}
			resp, err := check(t, s, creq)
			if err != nil {
				t.Fatal(err)
			}
			req := jwtCheck(tc.headers, provider, tc.md)
			d := s.authorizer.Decide(context.Background(), &Request{Method: "POST", Headers: tc.headers, Path: "/v1/chat/completions",
				ContextExtensions: req.Attributes.ContextExtensions, JWTPayloads: jwtPayloads(tc.md.GetFilterMetadata()), Principal: tc.principal})
			if d.Reason != tc.want {
				t.Fatalf("reason %q, want %q (err %v)", d.Reason, tc.want, d.Err)
			}
			if tc.wantUser != "" && (d.User != tc.wantUser || d.Identity != nil) {
				t.Errorf("user %q (identity %v), want %s", d.User, d.Identity, tc.wantUser)
			}
			if tc.wantGroup != "" && (d.Group == nil || d.Group.Name != tc.wantGroup) {
				t.Errorf("group %v, want %s", d.Group, tc.wantGroup)
			}
			if tc.want.Allowed() != (resp.GetOkResponse() != nil) {
				t.Errorf("answer %v for %s", resp, tc.want)
			}
			if !tc.want.Allowed() && resp.GetDeniedResponse().GetHeaders()[1].GetHeader().GetValue() != string(tc.want) {
				t.Errorf("denial says %v", resp.GetDeniedResponse().GetHeaders())
			}
		})
	}
}

// TestJWTAnswer: a JWT's answer sends keyward's key and removes every
// other credential place (the JWT and the SDK's placeholder never reach
// the provider); identity headers and metadata say the user, group,
// issuer and subject, never the JWT.
func TestJWTAnswer(t *testing.T) {
	f := newFixture(t)
	s := f.server(t, jwtOptions)
	md := jwtMetadata(t, testIssuer, map[string]any{"iss": testIssuer, "sub": "alice", "groups": []any{"eng"}})
	for _, tc := range []struct {
		name, provider string
		headers        map[string]string
		header, value  string
	}{
		{"openai", "openai", map[string]string{"authorization": "Bearer " + testJWT, "x-api-key": "sk-placeholder", "x-keyward-token-id": "forged"}, "authorization", "Bearer " + openaiKey},
		{"anthropic", "anthropic", map[string]string{"x-api-key": testJWT}, "x-api-key", anthropicKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // built, then cached
				resp, err := check(t, s, jwtCheck(tc.headers, tc.provider, md))
				if err != nil {
					t.Fatal(err)
				}
				ok := resp.GetOkResponse()
				if ok == nil {
					t.Fatalf("denied: %v", resp.GetDeniedResponse().GetBody())
				}
				set := headerMap(ok.GetHeaders())
				if set[tc.header] != tc.value || set[HeaderUser] != "alice" || set[HeaderGroup] != "eng" {
					t.Errorf("headers set %v", set)
				}
				for _, src := range []string{"authorization", "x-api-key", "x-goog-api-key", "api-key", HeaderTokenID} {
					if src != tc.header && !slices.Contains(ok.GetHeadersToRemove(), src) {
						t.Errorf("%s not removed: %v", src, ok.GetHeadersToRemove())
					}
				}
				meta := resp.GetDynamicMetadata().GetFields()
				if meta["jwt_issuer"].GetStringValue() != testIssuer || meta["jwt_subject"].GetStringValue() != "alice" || meta["user"].GetStringValue() != "alice" || meta["group"].GetStringValue() != "eng" {
					t.Errorf("metadata %v", meta)
				}
				for _, v := range meta {
					if v.GetStringValue() == testJWT {
						t.Errorf("the JWT is in the metadata")
					}
				}
			}
		})
	}
}

// TestJWTLiveness: an allowed JWT is refused once its user is disabled,
// deleted or removed from the group, whatever answer is cached.
func TestJWTLiveness(t *testing.T) {
	md := jwtMetadata(t, testIssuer, map[string]any{"iss": testIssuer, "sub": "ben", "groups": []any{"eng"}})
	for name, tc := range map[string]struct {
		change func(*memRecords)
		want   Reason
	}{
		"disabled": {func(m *memRecords) {
			m.users["ben"] = &record.User{Name: "ben", Disabled: true, Groups: []string{"eng"}}
		}, ReasonUserDisabled},
		"deleted":            {func(m *memRecords) { delete(m.users, "ben") }, ReasonJWTNotMapped},
		"removed from group": {func(m *memRecords) { m.users["ben"] = &record.User{Name: "ben", Groups: []string{"nobyok"}} }, ReasonJWTNotMapped},
		"group disabled":     {func(m *memRecords) { m.groups["eng"] = &record.Group{Name: "eng", Disabled: true} }, ReasonGroupDisabled},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			s := f.server(t, jwtOptions)
			req := jwtCheck(bearerHeader(testJWT), "openai", md)
			if resp, _ := check(t, s, req); resp.GetOkResponse() == nil {
				t.Fatalf("denied before the change: %v", resp.GetDeniedResponse().GetBody())
			}
			tc.change(f.records)
			resp, _ := check(t, s, req)
			if got := resp.GetDeniedResponse().GetHeaders()[1].GetHeader().GetValue(); got != string(tc.want) {
				t.Fatalf("after the change: %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLooksLikeJWT(t *testing.T) {
	for v, want := range map[string]bool{
		testJWT:                      true,
		"eyJhbGciOiJub25lIn0.eyJ9.":  true, // unsigned: still a JWT, refused
		"sk-proj-abc":                false,
		"eyJhbGciOiJFUzI1NiJ9.e30":   false,
		"eyJ.a.b.c":                  false,
		"eyJhbGc.iOi+J9.e30":         false,
		"AIzaSyA-abc.def.ghi":        false,
		"kw_1_AAAAAAAAAAAAAAAAAAAAA": false,
	} {
		if got := looksLikeJWT(v); got != want {
			t.Errorf("looksLikeJWT(%q) = %v", v, got)
		}
	}
}
