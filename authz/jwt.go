package authz

import (
	"errors"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/keyward/keyward/record"
)

// JWTMetadataNamespace is where Envoy's jwt_authn filter files the
// payloads of the JWTs it verified (payload_in_metadata), which ext_authz
// passes to keyward with metadata_context_namespaces.
const JWTMetadataNamespace = "envoy.filters.http.jwt_authn"

// JWTIssuer is an issuer whose verified JWTs keyward maps to a user and a
// group. Envoy's jwt_authn files a verified payload under the issuer
// itself as the key (payload_in_metadata: keyward envoy-config does so).
type JWTIssuer struct {
	// Issuer is the exact "iss" of its JWTs.
	Issuer string
	// UserClaim names the claim that is the keyward user's name.
	UserClaim string
	// GroupClaim names the claim (a string or a list of strings) among
	// whose values is the group: exactly one of them must be a group the
	// user may use.
	GroupClaim string
}

func (j JWTIssuer) validate() error {
	if j.Issuer == "" || j.UserClaim == "" || j.GroupClaim == "" {
		return errors.New("a JWT issuer needs its issuer, user claim and group claim")
	}
	return nil
}

// looksLikeJWT reports whether v has the shape of a compact JWS: three
// base64url segments, the first a JSON object's encoding ("eyJ" is
// `{"`). No provider key, keyward token or management token has it.
func looksLikeJWT(v string) bool {
	if len(v) < 10 || !strings.HasPrefix(v, "eyJ") {
		return false
	}
	dots := 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '.':
			dots++
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2
}

// decideJWT decides a request that carries a JWT, or whose JWT Envoy
// verified, when JWT issuers are configured. Only a payload Envoy verified
// for a configured issuer counts; a JWT-shaped credential without one
// (expired, badly signed, another issuer's, one Envoy does not know) is
// refused here, so that it never reaches the allow path nor passes as the
// client's own provider key. A verified one is decided as its mapped user
// and group (decideAs); whatever the client put in the credential places
// is removed, never forwarded.
func (a *Authorizer) decideJWT(l *lookups, req *Request, d *Decision) Reason {
	var payload *structpb.Struct
	var iss *JWTIssuer
	for i := range a.opts.JWT {
		if v := req.JWTPayloads[a.opts.JWT[i].Issuer]; v != nil {
			if payload != nil {
				// Two verified JWTs: which one is meant is unclear.
				return ReasonAmbiguousCredential
			}
			payload, iss = v.GetStructValue(), &a.opts.JWT[i]
		}
	}
	if payload == nil {
		return ReasonJWTInvalid
	}
	return a.decideAs(l, req, d, a.liveJWT(l, d, iss, payload.GetFields()))
}

// liveJWT maps a verified payload to a user and a group and checks that
// both are live, as liveToken does a token's. It sets d.JWTIssuer,
// d.JWTSubject, d.User and d.Group as far as it gets. It reads the
// payload in place and allocates nothing.
func (a *Authorizer) liveJWT(l *lookups, d *Decision, iss *JWTIssuer, claims map[string]*structpb.Value) Reason {
	if claims["iss"].GetStringValue() != iss.Issuer {
		// jwt_authn checks this; keyward does not rely on it.
		return ReasonJWTInvalid
	}
	d.JWTIssuer, d.JWTSubject = iss.Issuer, claims["sub"].GetStringValue()
	user := claims[iss.UserClaim].GetStringValue()
	if user == "" {
		return ReasonJWTNotMapped
	}
	d.User = user
	u, r := lookup(l, d, a.records.User, user, ReasonJWTNotMapped)
	if u == nil {
		return r
	}
	if u.Disabled {
		return ReasonUserDisabled
	}
	group, ok := jwtGroup(u, claims[iss.GroupClaim])
	if !ok {
		return ReasonJWTNotMapped
	}
	g, r := lookup(l, d, a.records.Group, group, ReasonGroupDeleted)
	if g == nil {
		return r
	}
	d.Group = g
	return ""
}

// jwtGroup is the one value of the group claim v (a string or a list of
// strings) that names a group u may use; ok is false for none or several.
func jwtGroup(u *record.User, v *structpb.Value) (group string, ok bool) {
	if s, isString := v.GetKind().(*structpb.Value_StringValue); isString {
		return s.StringValue, u.MayUse(s.StringValue)
	}
	n := 0
	for _, e := range v.GetListValue().GetValues() {
		if s := e.GetStringValue(); s != "" && u.MayUse(s) && s != group {
			group = s
			n++
		}
	}
	return group, n == 1
}

// jwtPayloads are the verified payloads of a CheckRequest's metadata
// context, by issuer.
func jwtPayloads(md map[string]*structpb.Struct) map[string]*structpb.Value {
	return md[JWTMetadataNamespace].GetFields()
}
