package authz

import (
	"encoding/json"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	lru "github.com/hashicorp/golang-lru/v2"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
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
// reason. An allowed answer is built once per (token record, key record) and
// reused: records are immutable, so a changed record is a new pointer and
// gets a new answer. The parts that depend only on the provider key (its
// header, the removals, its metadata) are built once per key and shared by
// every token's answer. Responses are never modified after they are built,
// which is what makes sharing them between concurrent checks safe.
type responder struct {
	sources []Source
	// inMetadata are the providers whose key goes in dynamic metadata
	// (KeyInMetadata) rather than in their auth header.
	inMetadata map[string]bool
	denied     map[Reason]*authv3.CheckResponse
	// byToken are tokens' answers, byOther the rest: each bounded by the
	// cache size.
	byToken *answers[tokenAnswer]
	byOther *answers[otherAnswer]
	keys    *lru.Cache[keyPartsKey, *keyParts]
	// passthrough is the answer for a client's own key without a token.
	passthrough *authv3.CheckResponse
}

// answerKey is what an allowed answer depends on besides whom it is for:
// the key sent (nil when the client's own goes through; records are
// immutable, so a changed key is a new pointer: a user's own key points
// into their cached record.PrivateKeys), the provider, which credential
// place held the token, whether the client sent its own
// anthropic-version, and whether the key goes in dynamic metadata (fixed
// per provider for the process's life, in the key all the same so that no
// answer of one mode can ever serve the other).
type answerKey struct {
	key           *record.Key
	provider      string
	tokenAt       int32
	clientVersion bool
	inMetadata    bool
}

// tokenAnswer keys a token's answer: its id, user and group are all the
// answer holds of the token (whose record is read by value, so there is
// no record pointer to key by). Token answers are the many: one per active
// token, 80 bytes of key each. The id is held as its characters, not a
// string: nothing of the client's header is kept, nothing is copied apart,
// and comparing it reads no other memory. The user and group are the
// store's names, which a lookup's key shares, so that comparing them
// mostly compares pointers.
type tokenAnswer struct {
	answerKey
	id          [token.IDLen]byte
	user, group string
}

// tokenAnswerOf is the key of d's answer, a token's, over ak; false for
// an id not of a token id's length, which no verified token has.
func tokenAnswerOf(ak answerKey, d *Decision) (tokenAnswer, bool) {
	k := tokenAnswer{answerKey: ak, user: d.Token.User, group: d.Token.Group}
	return k, len(d.TokenID) == token.IDLen && copy(k.id[:], d.TokenID) == token.IDLen
}

// otherAnswer keys the answers of mesh identities (the mapping, a record
// pointer, and the peer's principal, which a prefix mapping answers many
// of) and of JWTs (user, group, verified issuer and subject): few.
type otherAnswer struct {
	answerKey
	identity                     *record.Identity
	principal                    string
	user, group, issuer, subject string
}

type keyPartsKey struct {
	provider      *record.Provider
	key           *record.Key
	user          bool
	clientVersion bool
	inMetadata    bool
}

// keyParts is what every answer that sends one provider key shares.
type keyParts struct {
	headers               []*corev3.HeaderValueOption
	remove, query         []string
	provider, key, source *structpb.Value
	// secret is the raw key for MetadataKeyField under KeyInMetadata;
	// nil otherwise, when no metadata value holds a secret.
	secret *structpb.Value
	// ok and meta are the above as packed messages (see pack), which
	// every token's cached answer points to: see cachedAnswer.
	ok   *authv3.CheckResponse_OkResponse
	meta *structpb.Struct
}

// cachedAnswer is a cached allowed answer for one token and key. Its known
// fields point to the parts shared by every answer with that key (status,
// ok_response, dynamic_metadata, each packed); only the token's own part,
// its identity headers and metadata, is its own, as unknown fields that
// protobuf writes after the known ones. On the wire, ok_response and
// dynamic_metadata so come twice, which protobuf parsers merge into one
// (a repeated embedded message is merged, its repeated fields and map
// entries appended): the same answer as build's, in about half the
// memory per token (see BenchmarkActiveTokenMemory).
type cachedAnswer struct {
	resp authv3.CheckResponse
}

// okStatus is the status of every allowed answer.
var okStatus = &rpcstatus.Status{Code: int32(code.Code_OK)}

// The key_source metadata values: where the key that went out came from.
const (
	keySourceServer = "server"
	keySourceUser   = "user"
)

// keyPartsCacheSize bounds the shared per-key parts: providers times keys,
// a handful each, plus users' own keys in use. Past it the least recently
// used parts are rebuilt when next needed, which only costs a build.
const keyPartsCacheSize = 1024

func newResponder(sources []Source, delivery map[string]KeyDelivery, cacheSize int) (*responder, error) {
	if cacheSize < 1 {
		return nil, fmt.Errorf("cache size %d: must be at least 1", cacheSize)
	}
	seed := maphash.MakeSeed()
	byToken := newAnswers(cacheSize, func(k tokenAnswer) uint64 {
		// A token's answers with each of a provider's keys (they
		// rotate) spread over sets too.
		return maphash.Bytes(seed, k.id[:]) ^ uint64(uintptr(unsafe.Pointer(k.key)))*0x9E3779B97F4A7C15
	})
	byOther := newAnswers(cacheSize, func(k otherAnswer) uint64 { return maphash.Comparable(seed, k) })
	keys, err := lru.New[keyPartsKey, *keyParts](keyPartsCacheSize)
	if err != nil {
		return nil, err
	}
	inMetadata := map[string]bool{}
	for provider, d := range delivery {
		if d == KeyInMetadata {
			inMetadata[provider] = true
		}
	}
	r := &responder{sources: sources, inMetadata: inMetadata, byToken: byToken, byOther: byOther, keys: keys, denied: map[Reason]*authv3.CheckResponse{}}
	for _, reason := range Reasons() {
		if r.denied[reason], err = pack(deniedResponse(reason)); err != nil {
			return nil, err
		}
	}
	r.passthrough, err = pack(r.build(&Decision{Reason: ReasonCustomKey, found: found{tokenAt: -1, customAt: 0, customKey: true}}, nil, false, false))
	return r, err
}

// respond returns the CheckResponse for d. requestHeaders are consulted
// only for client-supplied x-keyward-* (when d.found says there are some)
// and anthropic-version headers.
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
	// Only a key keyward sends can go in metadata: a client's own key
	// stays where the client put it.
	inMetadata := d.Key != nil && r.inMetadata[d.ProviderName]
	if d.found.foreignIdentity {
		return r.build(d, requestHeaders, clientVersion, inMetadata)
	}
	if !d.HasToken() && d.Identity == nil && d.JWTIssuer == "" {
		return r.passthrough
	}
	provider := d.ProviderName
	if d.Provider != nil && d.Provider.Name == provider {
		// The record's own string, the same for every check with the
		// provider: comparing answers' keys then compares pointers and
		// reads no more memory.
		provider = d.Provider.Name
	}
	ak := answerKey{key: d.Key, provider: provider, tokenAt: int32(d.found.tokenAt), clientVersion: clientVersion, inMetadata: inMetadata}
	if d.HasToken() {
		k, ok := tokenAnswerOf(ak, d)
		if !ok {
			return r.newAnswer(d, clientVersion, inMetadata)
		}
		if resp, ok := r.byToken.get(k); ok {
			return resp
		}
		resp := r.newAnswer(d, clientVersion, inMetadata)
		r.byToken.add(k, resp)
		return resp
	}
	k := otherAnswer{answerKey: ak, identity: d.Identity, principal: d.Principal}
	if d.JWTIssuer != "" {
		k.user, k.group, k.issuer, k.subject = d.User, d.Group.Name, d.JWTIssuer, d.JWTSubject
	}
	if resp, ok := r.byOther.get(k); ok {
		return resp
	}
	resp := r.newAnswer(d, clientVersion, inMetadata)
	r.byOther.add(k, resp)
	return resp
}

// newAnswer builds the answer respond caches for d: a token's that sends a
// key, its own part written compactly over the key's shared parts; any
// other (a mesh identity's, a JWT's: few, with more in them) built whole
// and packed.
func (r *responder) newAnswer(d *Decision, clientVersion, inMetadata bool) *authv3.CheckResponse {
	if d.Key != nil && d.HasToken() {
		if resp := r.compact(d, clientVersion, inMetadata); resp != nil {
			return resp
		}
	}
	resp := r.build(d, nil, clientVersion, inMetadata)
	if packed, err := pack(resp); err == nil {
		return packed
	}
	return resp
}

// compact builds the answer for d, which sends a key, as a cachedAnswer: the
// key's shared parts and the token's own identity. It returns nil if the
// key's parts could not be encoded, and build serves.
func (r *responder) compact(d *Decision, clientVersion, inMetadata bool) *authv3.CheckResponse {
	p := r.keyParts(d.Provider, d.Key, d.Credential != nil, clientVersion, inMetadata)
	if p.ok == nil {
		return nil
	}
	own := identityWire(d.Token.User, d.Token.Group, d.TokenID)
	a := &cachedAnswer{}
	a.resp.Status, a.resp.HttpResponse, a.resp.DynamicMetadata = okStatus, p.ok, p.meta
	a.resp.ProtoReflect().SetUnknown(protoreflect.RawFields(own))
	return &a.resp
}

// pack returns a CheckResponse that carries resp's wire encoding as unknown
// fields. protobuf writes unknown fields out verbatim, so on the wire the
// two are the same bytes, but the packed form is a few hundred bytes where
// the message tree is kilobytes, and gRPC's marshal becomes a copy. This is
// what lets keyward cache an answer per active token cheaply. Decode a
// packed response with Unpack to read its fields.
func pack(resp *authv3.CheckResponse) (*authv3.CheckResponse, error) {
	raw, err := proto.Marshal(resp)
	if err != nil {
		return nil, fmt.Errorf("authz: encode response: %w", err)
	}
	packed := &authv3.CheckResponse{}
	packed.ProtoReflect().SetUnknown(protoreflect.RawFields(raw))
	return packed, nil
}

// Unpack returns resp with its fields readable: the Server's answers may be
// packed (see pack), which only their wire encoding shows.
func Unpack(resp *authv3.CheckResponse) (*authv3.CheckResponse, error) {
	raw, err := proto.Marshal(resp)
	if err != nil {
		return nil, err
	}
	out := &authv3.CheckResponse{}
	return out, proto.Unmarshal(raw, out)
}

// isForeignIdentityHeader reports whether the client header name is an
// x-keyward-* header that keyward does not overwrite anyway, which the
// answer must remove. Usually there is none (see found.foreignIdentity),
// and the cached response serves.
func isForeignIdentityHeader(name string) bool {
	return len(name) > len(headerPrefix) && name[:len(headerPrefix)] == headerPrefix &&
		name != HeaderUser && name != HeaderGroup && name != HeaderTokenID
}

// build makes an allowed response. When requestHeaders is not nil, the
// client's own x-keyward-* headers in it are listed for removal. An
// Anthropic request gets anthropic-version unless clientVersion says the
// client sent one: keyward decides this itself rather than rely on
// ADD_IF_ABSENT, which Envoy 1.40 applied as an overwrite in our tests.
// inMetadata puts the key in dynamic metadata instead of its header (see
// KeyInMetadata).
func (r *responder) build(d *Decision, requestHeaders map[string]string, clientVersion, inMetadata bool) *authv3.CheckResponse {
	ok := &authv3.OkHttpResponse{}
	meta := make(map[string]*structpb.Value, 8)
	switch {
	case d.Identity != nil:
		// A mesh identity: the mapping stands where a token's id would,
		// and the verified principal goes in metadata (never a secret).
		ok.Headers = []*corev3.HeaderValueOption{
			setHeader(HeaderUser, d.Identity.User),
			setHeader(HeaderGroup, d.Identity.Group),
		}
		meta["user"] = structpb.NewStringValue(d.Identity.User)
		meta["group"] = structpb.NewStringValue(d.Identity.Group)
		meta["identity"] = structpb.NewStringValue(d.Identity.Name)
		meta["principal"] = structpb.NewStringValue(d.Principal)
	case d.JWTIssuer != "":
		// A verified JWT: its mapped user and group, and its issuer
		// and subject in metadata (never the JWT).
		ok.Headers = []*corev3.HeaderValueOption{
			setHeader(HeaderUser, d.User),
			setHeader(HeaderGroup, d.Group.Name),
		}
		meta["user"] = structpb.NewStringValue(d.User)
		meta["group"] = structpb.NewStringValue(d.Group.Name)
		meta["jwt_issuer"] = structpb.NewStringValue(d.JWTIssuer)
		meta["jwt_subject"] = structpb.NewStringValue(d.JWTSubject)
	case d.HasToken():
		ok.Headers = []*corev3.HeaderValueOption{
			setHeader(HeaderUser, d.Token.User),
			setHeader(HeaderGroup, d.Token.Group),
			setHeader(HeaderTokenID, d.TokenID),
		}
		meta["user"] = structpb.NewStringValue(d.Token.User)
		meta["group"] = structpb.NewStringValue(d.Token.Group)
		meta["token_id"] = structpb.NewStringValue(d.TokenID)
	default:
		ok.HeadersToRemove = []string{HeaderUser, HeaderGroup, HeaderTokenID}
	}
	switch {
	case d.Key != nil:
		p := r.keyParts(d.Provider, d.Key, d.Credential != nil, clientVersion, inMetadata)
		ok.Headers = append(ok.Headers, p.headers...)
		// Clipped: appending below must copy, not write into the
		// shared array.
		ok.HeadersToRemove = slices.Clip(p.remove)
		ok.QueryParametersToRemove = p.query
		meta["provider"], meta["key_id"], meta["key_source"] = p.provider, p.key, p.source
		if p.secret != nil {
			meta[MetadataKeyField] = p.secret
		}
	case d.found.tokenAt >= 0:
		// The client's own key passes through; only the keyward token,
		// which the provider must never see, is removed.
		meta["provider"] = structpb.NewStringValue(d.ProviderName)
		meta["custom_key"] = structpb.NewBoolValue(true)
		s := r.sources[d.found.tokenAt]
		if s.Header != "" {
			ok.HeadersToRemove = append(ok.HeadersToRemove, s.Header)
		} else {
			ok.QueryParametersToRemove = []string{s.Query}
		}
	default:
		meta["custom_key"] = structpb.NewBoolValue(true)
	}
	if d.Identity != nil || d.JWTIssuer != "" {
		// No token id to set: a client's copy goes.
		ok.HeadersToRemove = append(ok.HeadersToRemove, HeaderTokenID)
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

// keyParts returns the parts shared by every answer that sends key; user
// says the key is the user's own credential, not a server key. The
// metadata names the key by its id; its secret is in it only under
// inMetadata, in MetadataKeyField alone, and then no header carries it.
func (r *responder) keyParts(p *record.Provider, key *record.Key, user, clientVersion, inMetadata bool) *keyParts {
	k := keyPartsKey{provider: p, key: key, user: user, clientVersion: clientVersion, inMetadata: inMetadata}
	if parts, ok := r.keys.Get(k); ok {
		return parts
	}
	name, value := authHeader(p, key.Secret)
	source := keySourceServer
	if user {
		source = keySourceUser
	}
	parts := &keyParts{
		provider: structpb.NewStringValue(p.Name),
		key:      structpb.NewStringValue(key.ID),
		source:   structpb.NewStringValue(source),
	}
	if inMetadata {
		// The raw key, as AI Gateway expects it: it adds the
		// provider's scheme ("Bearer ") itself. The provider's auth
		// header is removed rather than set, so that nothing a client
		// sent under that name gets through either.
		parts.secret = structpb.NewStringValue(key.Secret)
		if !slices.ContainsFunc(r.sources, func(s Source) bool { return s.Header == name }) {
			parts.remove = append(parts.remove, name)
		}
		name = ""
	} else {
		parts.headers = []*corev3.HeaderValueOption{setHeader(name, value)}
	}
	if p.Kind == record.KindAnthropic && !clientVersion {
		version := p.AnthropicVersion
		if version == "" {
			version = record.DefaultAnthropicVersion
		}
		parts.headers = append(parts.headers, setHeader("anthropic-version", version))
	}
	// Every client credential goes, except the header just set (none
	// under inMetadata).
	for _, s := range r.sources {
		if s.Header != "" && s.Header != name {
			parts.remove = append(parts.remove, s.Header)
		}
		if s.Query != "" {
			parts.query = append(parts.query, s.Query)
		}
	}
	parts.pack()
	r.keys.Add(k, parts)
	return parts
}

// pack fills p.ok and p.meta, or leaves them nil if p cannot be encoded.
func (p *keyParts) pack() {
	ok, err := proto.Marshal(&authv3.OkHttpResponse{Headers: p.headers, HeadersToRemove: p.remove, QueryParametersToRemove: p.query})
	if err != nil {
		return
	}
	meta := map[string]*structpb.Value{"provider": p.provider, "key_id": p.key, "key_source": p.source}
	if p.secret != nil {
		meta[MetadataKeyField] = p.secret
	}
	raw, err := proto.Marshal(&structpb.Struct{Fields: meta})
	if err != nil {
		return
	}
	packedOk, packedMeta := &authv3.OkHttpResponse{}, &structpb.Struct{}
	packedOk.ProtoReflect().SetUnknown(protoreflect.RawFields(ok))
	packedMeta.ProtoReflect().SetUnknown(protoreflect.RawFields(raw))
	p.ok, p.meta = &authv3.CheckResponse_OkResponse{OkResponse: packedOk}, packedMeta
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

// ErrorBody is the OpenAI-style error body the SDKs parse: keyward's
// denials and the management API's errors both answer with it.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the body's error: a message that never echoes what the
// client sent, its type ("invalid_request_error", "authentication_error",
// …) and keyward's stable code. Param is always null.
type ErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

func deniedResponse(reason Reason) *authv3.CheckResponse {
	body := ErrorBody{ErrorDetail{Message: reason.Message(), Type: reason.errorType(), Code: string(reason)}}
	raw, _ := json.Marshal(body) // cannot fail: strings only
	status := reason.HTTPStatus()
	headers := []*corev3.HeaderValueOption{
		setHeader("content-type", "application/json"),
		setHeader("x-keyward-reason", string(reason)),
	}
	if challenge := wwwAuthenticate(reason); challenge != "" {
		headers = append(headers, setHeader("www-authenticate", challenge))
	}
	rpc := code.Code_PERMISSION_DENIED
	switch status {
	case 400:
		rpc = code.Code_INVALID_ARGUMENT
	case 401:
		rpc = code.Code_UNAUTHENTICATED
	case 429:
		rpc = code.Code_RESOURCE_EXHAUSTED
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

// wwwAuthenticate is the challenge of a denial, as RFC 6750 §3 words it: no
// error code when the request carried no credential, invalid_token for one
// that is not valid, invalid_request (400) for credentials keyward cannot
// read unambiguously; none for the other denials, which are not about the
// credential.
func wwwAuthenticate(reason Reason) string {
	const challenge = `Bearer realm="keyward"`
	switch {
	case reason == ReasonMissingCredential:
		return challenge
	case reason == ReasonAmbiguousCredential:
		return challenge + `, error="invalid_request"`
	case reason.HTTPStatus() == 401:
		return challenge + `, error="invalid_token"`
	}
	return ""
}
