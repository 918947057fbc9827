package authz

import (
	"encoding/json"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	lru "github.com/hashicorp/golang-lru/v2"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/keyward/keyward/record"
)

// Identity headers keyward sets on allowed requests. Client-supplied
// headers with the x-keyward- prefix are always removed.
const (
	HeaderUser    = "x-keyward-user"
	HeaderGroup   = "x-keyward-group"
	HeaderTokenID = "x-keyward-token-id"

	headerPrefix = "x-keyward-"
)

// MetadataNamespace is where Envoy files the dynamic metadata keyward emits
// (the ext_authz filter's name).
const MetadataNamespace = "envoy.filters.http.ext_authz"

// responder turns decisions into CheckResponses. Denials are built once per
// reason; an allowed answer is built once per (token, provider, key) and
// reused while those records stay the same, so the hot path allocates
// almost nothing. Responses are never modified after they are built, which
// is what makes sharing them between concurrent checks safe.
type responder struct {
	sources []Source
	denied  map[Reason]*authv3.CheckResponse
	allowed *lru.Cache[allowKey, *allowEntry]
	// passthrough is the answer for a client's own key without a token.
	passthrough *authv3.CheckResponse
}

type allowKey struct {
	tokenID, provider, keyID string
	custom                   bool
	tokenAt                  int
	// clientVersion: the client sent its own anthropic-version.
	clientVersion bool
}

// allowEntry remembers which records a response was built from: records are
// immutable, so a changed record is a different pointer and a rebuild.
type allowEntry struct {
	token *record.Token
	key   *record.Key
	resp  *authv3.CheckResponse
}

func newResponder(sources []Source, cacheSize int) (*responder, error) {
	allowed, err := lru.New[allowKey, *allowEntry](cacheSize)
	if err != nil {
		return nil, err
	}
	r := &responder{sources: sources, allowed: allowed, denied: map[Reason]*authv3.CheckResponse{}}
	for _, reason := range Reasons() {
		r.denied[reason] = deniedResponse(reason)
	}
	r.passthrough = r.build(&Decision{Reason: ReasonCustomKey, found: found{tokenAt: -1, customAt: 0, customKey: true}}, nil, false)
	return r, nil
}

// respond returns the CheckResponse for d. requestHeaders are consulted
// only to remove client-supplied x-keyward-* headers.
func (r *responder) respond(d *Decision, requestHeaders map[string]string) *authv3.CheckResponse {
	if !d.Reason.Allowed() {
		if resp, ok := r.denied[d.Reason]; ok {
			return resp
		}
		return r.denied[ReasonInternal]
	}
	clientVersion := false
	if d.Provider != nil && d.Provider.Kind == record.KindAnthropic {
		_, clientVersion = requestHeaders["anthropic-version"]
	}
	if hasForeignIdentityHeader(requestHeaders) {
		return r.build(d, requestHeaders, clientVersion)
	}
	if d.Token == nil {
		return r.passthrough
	}
	k := allowKey{tokenID: d.TokenID, provider: d.ProviderName, custom: d.Key == nil, tokenAt: d.found.tokenAt, clientVersion: clientVersion}
	if d.Key != nil {
		k.keyID = d.Key.ID
	}
	if e, ok := r.allowed.Get(k); ok && e.token == d.Token && e.key == d.Key {
		return e.resp
	}
	resp := r.build(d, nil, clientVersion)
	r.allowed.Add(k, &allowEntry{token: d.Token, key: d.Key, resp: resp})
	return resp
}

// hasForeignIdentityHeader reports whether the client sent an x-keyward-*
// header that keyward does not overwrite anyway. Usually it did not, and
// the cached response serves.
func hasForeignIdentityHeader(headers map[string]string) bool {
	for name := range headers {
		if isForeignIdentityHeader(name) {
			return true
		}
	}
	return false
}

func isForeignIdentityHeader(name string) bool {
	return len(name) > len(headerPrefix) && name[:len(headerPrefix)] == headerPrefix &&
		name != HeaderUser && name != HeaderGroup && name != HeaderTokenID
}

// build makes an allowed response. When requestHeaders is not nil, the
// client's own x-keyward-* headers in it are listed for removal. An
// Anthropic request gets anthropic-version unless clientVersion says the
// client sent one: keyward decides this itself rather than rely on
// ADD_IF_ABSENT, which Envoy 1.40 applied as an overwrite in our tests.
func (r *responder) build(d *Decision, requestHeaders map[string]string, clientVersion bool) *authv3.CheckResponse {
	ok := &authv3.OkHttpResponse{}
	meta := map[string]*structpb.Value{}
	if d.Token != nil {
		ok.Headers = append(ok.Headers,
			setHeader(HeaderUser, d.Token.User),
			setHeader(HeaderGroup, d.Token.Group),
			setHeader(HeaderTokenID, d.TokenID))
		meta["user"] = structpb.NewStringValue(d.Token.User)
		meta["group"] = structpb.NewStringValue(d.Token.Group)
		meta["token_id"] = structpb.NewStringValue(d.TokenID)
	} else {
		ok.HeadersToRemove = append(ok.HeadersToRemove, HeaderUser, HeaderGroup, HeaderTokenID)
	}
	if d.ProviderName != "" {
		meta["provider"] = structpb.NewStringValue(d.ProviderName)
	}
	switch {
	case d.Key != nil:
		name, value := authHeader(d.Provider, d.Key.Secret)
		ok.Headers = append(ok.Headers, setHeader(name, value))
		if d.Provider.Kind == record.KindAnthropic && !clientVersion {
			version := d.Provider.AnthropicVersion
			if version == "" {
				version = record.DefaultAnthropicVersion
			}
			ok.Headers = append(ok.Headers, setHeader("anthropic-version", version))
		}
		meta["key_id"] = structpb.NewStringValue(d.Key.ID)
		// Every client credential goes, except the header just set.
		for _, s := range r.sources {
			if s.Header != "" && s.Header != name {
				ok.HeadersToRemove = append(ok.HeadersToRemove, s.Header)
			}
			if s.Query != "" {
				ok.QueryParametersToRemove = append(ok.QueryParametersToRemove, s.Query)
			}
		}
	case d.found.tokenAt >= 0:
		// The client's own key passes through; only the keyward token,
		// which the provider must never see, is removed.
		meta["custom_key"] = structpb.NewBoolValue(true)
		s := r.sources[d.found.tokenAt]
		if s.Header != "" {
			ok.HeadersToRemove = append(ok.HeadersToRemove, s.Header)
		} else {
			ok.QueryParametersToRemove = append(ok.QueryParametersToRemove, s.Query)
		}
	default:
		meta["custom_key"] = structpb.NewBoolValue(true)
	}
	for name := range requestHeaders {
		if isForeignIdentityHeader(name) {
			ok.HeadersToRemove = append(ok.HeadersToRemove, name)
		}
	}
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: &structpb.Struct{Fields: meta},
	}
}

// authHeader is the provider's convention for carrying key.
func authHeader(p *record.Provider, key string) (name, value string) {
	switch p.Kind {
	case record.KindAnthropic:
		return "x-api-key", key
	case record.KindAzure:
		return "api-key", key
	case record.KindGemini:
		return "x-goog-api-key", key
	case record.KindCustom:
		return p.Header, strings.Replace(p.ValueTemplate, record.KeyPlaceholder, key, 1)
	default:
		return "authorization", "Bearer " + key
	}
}

func setHeader(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: name, Value: value},
		// Explicit: Envoy 1.37 briefly appended when this was left unset,
		// which would send the client's token and the key side by side.
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// errorBody is the OpenAI-style error the SDKs parse.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    Reason  `json:"code"`
	} `json:"error"`
}

func deniedResponse(reason Reason) *authv3.CheckResponse {
	var body errorBody
	body.Error.Message = reason.Message()
	body.Error.Type = reason.errorType()
	body.Error.Code = reason
	raw, _ := json.Marshal(body) // cannot fail: strings only
	status := reason.HTTPStatus()
	headers := []*corev3.HeaderValueOption{
		setHeader("content-type", "application/json"),
		setHeader("x-keyward-reason", string(reason)),
	}
	rpc := code.Code_PERMISSION_DENIED
	switch status {
	case 401:
		headers = append(headers, setHeader("www-authenticate", `Bearer realm="keyward", error="invalid_token"`))
		rpc = code.Code_UNAUTHENTICATED
	case 503:
		rpc = code.Code_UNAVAILABLE
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(rpc), Message: string(reason)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			Headers: headers,
			Body:    string(raw),
		}},
	}
}
