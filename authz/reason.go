package authz

// Reason is a stable code for the outcome of a check. It is the "code" of
// the JSON error body, the audit log's reason and a metric label, so it
// never changes once released.
type Reason string

// The reasons. ReasonAllowed is the only one that lets a request through.
const (
	ReasonAllowed   Reason = "allowed"
	ReasonCustomKey Reason = "allowed_custom_key"

	// 400: the request carries its credentials so that keyward cannot
	// tell which one is meant, or so that Envoy would leave one in place
	// (RFC 6750's invalid_request).
	ReasonAmbiguousCredential Reason = "ambiguous_credential"

	// 401: no usable keyward credential.
	ReasonMissingCredential Reason = "missing_credential"
	ReasonMalformedToken    Reason = "malformed_token"
	ReasonInvalidToken      Reason = "invalid_token"
	ReasonTokenExpired      Reason = "token_expired"
	ReasonTokenRevoked      Reason = "token_revoked"
	ReasonManagementToken   Reason = "management_token"
	// ReasonPrincipalNotMapped: no keyward token, and the peer's verified
	// identity (a SPIFFE ID from mTLS) matches no principal mapping.
	ReasonPrincipalNotMapped Reason = "principal_not_mapped"
	// ReasonJWTInvalid: JWT issuers are configured and a credential
	// place holds a JWT that Envoy's jwt_authn did not verify for one of
	// them (expired, not yet valid, badly signed, another issuer's, a
	// wrong audience), or the verified payload's iss is not its issuer.
	ReasonJWTInvalid Reason = "jwt_invalid"

	// 403: a valid token that policy refuses.
	ReasonUserDeleted       Reason = "user_deleted"
	ReasonUserDisabled      Reason = "user_disabled"
	ReasonGroupDeleted      Reason = "group_deleted"
	ReasonGroupDisabled     Reason = "group_disabled"
	ReasonGroupNotPermitted Reason = "group_not_permitted"
	// ReasonPrincipalDisabled: the principal mapping that matches the
	// peer is disabled.
	ReasonPrincipalDisabled Reason = "principal_disabled"
	// ReasonJWTNotMapped: a verified JWT whose user claim is missing or
	// names no keyward user, or whose group claim names no group, or
	// several, that the user may use.
	ReasonJWTNotMapped Reason = "jwt_not_mapped"
	// ReasonTokenBoundElsewhere: a token bound to a workload, presented
	// by a peer that is not it (or without mTLS).
	ReasonTokenBoundElsewhere Reason = "token_bound_elsewhere"
	ReasonUnknownProvider     Reason = "unknown_provider"
	ReasonProviderNotAllowed  Reason = "provider_not_allowed"
	ReasonModelNotAllowed     Reason = "model_not_allowed"
	// ReasonModelUnknown: the group restricts models and the request's
	// body, path or query names a model keyward cannot read (a body cut
	// at Envoy's limit, not one valid JSON object, a "model" that is not a
	// string), so it cannot tell which model the provider would use.
	ReasonModelUnknown Reason = "model_unknown"
	// ReasonEndpointNotAllowed: the group restricts models and the
	// request is for an endpoint keyward does not know where every model
	// lives in (see Endpoint), or one configured as naming none.
	ReasonEndpointNotAllowed Reason = "endpoint_not_allowed"
	// ReasonBodyNotForwarded: the group restricts models and the request
	// has a body Envoy did not send to keyward (no with_request_body), so
	// the model the provider reads is unknown.
	ReasonBodyNotForwarded   Reason = "body_not_forwarded"
	ReasonCustomKeyForbidden Reason = "custom_key_forbidden"

	// 429: the token's group rate limit (record.Group.RequestsPerMinute)
	// is used up for now.
	ReasonRateLimited Reason = "rate_limited"

	// 503: keyward cannot serve the request now.
	ReasonNoProviderKey    Reason = "no_provider_key"
	ReasonStoreUnavailable Reason = "store_unavailable"
	ReasonInternal         Reason = "internal_error"
)

// Reasons lists every denial reason, for tests, docs and metric setup.
func Reasons() []Reason {
	return []Reason{
		ReasonAmbiguousCredential, ReasonMissingCredential, ReasonMalformedToken, ReasonInvalidToken, ReasonTokenExpired, ReasonTokenRevoked,
		ReasonManagementToken, ReasonUserDeleted, ReasonUserDisabled, ReasonGroupDeleted, ReasonGroupDisabled, ReasonGroupNotPermitted,
		ReasonUnknownProvider, ReasonProviderNotAllowed, ReasonModelNotAllowed, ReasonModelUnknown, ReasonEndpointNotAllowed,
		ReasonBodyNotForwarded, ReasonCustomKeyForbidden,
		ReasonPrincipalNotMapped, ReasonPrincipalDisabled, ReasonTokenBoundElsewhere,
		ReasonJWTInvalid, ReasonJWTNotMapped,
		ReasonRateLimited,
		ReasonNoProviderKey, ReasonStoreUnavailable, ReasonInternal,
	}
}

// Allowed reports whether the reason lets the request through.
func (r Reason) Allowed() bool { return r == ReasonAllowed || r == ReasonCustomKey }

// HTTPStatus is the status the client gets for a denial.
func (r Reason) HTTPStatus() int {
	switch r {
	case ReasonAllowed, ReasonCustomKey:
		return 200
	case ReasonAmbiguousCredential:
		return 400
	case ReasonMissingCredential, ReasonMalformedToken, ReasonInvalidToken, ReasonTokenExpired, ReasonTokenRevoked, ReasonManagementToken, ReasonPrincipalNotMapped, ReasonJWTInvalid:
		return 401
	case ReasonRateLimited:
		return 429
	case ReasonNoProviderKey, ReasonStoreUnavailable, ReasonInternal:
		return 503
	default:
		return 403
	}
}

// errorType is the OpenAI-style error "type" for the reason's status.
func (r Reason) errorType() string {
	switch r.HTTPStatus() {
	case 400:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 403:
		return "permission_error"
	case 429:
		return "rate_limit_error"
	default:
		return "service_unavailable"
	}
}

// Message is the human-readable text of the JSON error body. It states
// what is wrong without echoing anything the client sent.
func (r Reason) Message() string {
	if m, ok := reasonMessages[r]; ok {
		return m
	}
	return string(r)
}

// reasonMessages are the messages of the reasons keyward gives.
var reasonMessages = map[Reason]string{
	ReasonMissingCredential:   "No API key provided. Send your keyward token as a Bearer token or in x-api-key.",
	ReasonAmbiguousCredential: "The request carries more than one credential, or one keyward does not read in that form (a repeated, comma-joined or encoded name such as ?ke%79=, KEY=, x_api_key); send one keyward token in one place.",
	ReasonMalformedToken:      "The keyward token is malformed (truncated or mistyped), or sent in Authorization under a scheme other than Bearer.",
	ReasonInvalidToken:        "The keyward token is not valid.",
	ReasonTokenExpired:        "The keyward token has expired.",
	ReasonTokenRevoked:        "The keyward token has been revoked.",
	ReasonManagementToken:     "A management token cannot call an LLM; use a keyward token.",
	ReasonPrincipalNotMapped:  "No keyward token, and this workload's identity (its mTLS SPIFFE ID) is not mapped to a keyward user and group.",
	ReasonPrincipalDisabled:   "This workload's identity mapping is disabled.",
	ReasonJWTInvalid:          "The JWT is not valid here: expired, not yet valid, not signed by a configured issuer's keys, or for another audience.",
	ReasonJWTNotMapped:        "The JWT is valid, but its claims do not map to a keyward user and exactly one group that user may use.",
	ReasonTokenBoundElsewhere: "The keyward token is bound to another workload.",
	ReasonUserDeleted:         "The user this request runs as (its token's, or its workload mapping's) no longer exists.",
	ReasonUserDisabled:        "The user this request runs as is disabled.",
	ReasonGroupDeleted:        "The group this request runs in (its token's, or its workload mapping's) no longer exists.",
	ReasonGroupDisabled:       "The group this request runs in is disabled.",
	ReasonGroupNotPermitted:   "The user this request runs as may no longer use the group it runs in.",
	ReasonUnknownProvider:     "No LLM provider is configured for this route.",
	ReasonProviderNotAllowed:  "The group this request runs in may not use this provider.",
	ReasonModelNotAllowed:     "The group this request runs in may not use this model (or the request does not name one).",
	ReasonModelUnknown:        "The group this request runs in restricts models, and keyward could not read which model this request uses (a body larger than keyward reads, a body that is not a JSON object, a model that is not a string, a path model with characters keyward does not read, or a model or deployment query parameter).",
	ReasonEndpointNotAllowed:  "The group this request runs in restricts models, and this endpoint is not one keyward knows where every model of the request lives in.",
	ReasonBodyNotForwarded:    "The group this request runs in restricts models, and the request has a body keyward did not receive (Envoy must forward request bodies: keyward envoy-config -forward-body; Istio: includeRequestBodyInCheck; Envoy Gateway: bodyToExtAuth).",
	ReasonCustomKeyForbidden:  "Provider keys supplied by clients are not allowed here; use a keyward token.",
	ReasonRateLimited:         "Your rate limit in this group (shared by all your tokens and workloads) is exceeded; retry later.",
	ReasonNoProviderKey:       "No key is available for this provider.",
	ReasonStoreUnavailable:    "keyward cannot reach its record store.",
	ReasonInternal:            "keyward failed to check this request.",
}
