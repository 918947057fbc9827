// Package authz decides whether an LLM request may go through and with
// which provider key, and turns that decision into Envoy's ext_authz
// answer.
//
// The decision (Decide) is a pure function of the request, the live records
// and the configuration: it knows nothing of gRPC or of where records are
// stored. Records come through the small Records interface, backed by
// in-memory caches, so a decision does no I/O when caches are warm. Server is
// the thin gRPC shell that converts a CheckRequest into a Request and a
// Decision into a CheckResponse.
package authz

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Records are the live records the decision reads. Implementations return
// an error wrapping record.ErrNotFound for a record that does not exist;
// any other error means the store could not answer.
//
// A lookup whose context is already done must not wait for the store: it
// answers from memory if it can (a cache's fresh or last-known-good
// record), and otherwise fails at once; the decision then asks again under
// the check's deadline (see Options.CheckDeadline).
type Records interface {
	// Token is by value, so that a store holding its tokens in memory
	// answers without allocating (see Decision.Token).
	Token(ctx context.Context, id string) (record.Token, error)
	User(ctx context.Context, name string) (*record.User, error)
	Group(ctx context.Context, name string) (*record.Group, error)
	Provider(ctx context.Context, name string) (*record.Provider, error)
	// PrivateKeys are the user's own provider credentials. A user with
	// none gets an empty (or nil) index; record.ErrNotFound counts as
	// none too.
	PrivateKeys(ctx context.Context, user string) (*record.PrivateKeys, error)
	// Identities is the index of the principal mappings (empty, not an
	// error, when there are none).
	Identities(ctx context.Context) (*record.Identities, error)
}

// Verifier checks a token's format and signature without I/O, returning its
// id and the hash of its secret (see token.Keyring).
type Verifier interface {
	Verify(tok string) (id string, secretHash [32]byte, err error)
}

// Options configure an Authorizer.
type Options struct {
	// Sources are where client credentials are looked for, in order.
	Sources []Source
	// ModelHeader names the request header that carries the model.
	ModelHeader string
	// DisableCustomKeys refuses every client-supplied provider key, and
	// keeps users' own stored credentials unused: every request then goes
	// out on a server-held key.
	DisableCustomKeys bool
	// Hosts maps a request host (lower case, no port) to a provider name,
	// for routes that carry no provider context extension.
	Hosts map[string]string
	// Endpoints add to the built-in endpoint tables, by provider name:
	// where the models of a request live, for groups that restrict models
	// (see EndpointSpec). An entry replaces the built-in ones that a
	// request could match both.
	Endpoints map[string][]EndpointSpec
	// Now is the clock; default time.Now.
	Now func() time.Time
	// KeyDelivery says, by provider name, how an allowed answer hands the
	// provider key to Envoy: KeyInHeader (the default, for a provider not
	// in it) or KeyInMetadata (Envoy AI Gateway's credentialOverride).
	KeyDelivery map[string]KeyDelivery
	// CheckDeadline bounds how long one check may wait for the store, all
	// its lookups together: past it, a lookup answers from last-known-good
	// records (see cache) or the check is refused with store_unavailable.
	// It counts from the check's first lookup that has to wait (the ones
	// before answered from memory), and never reaches past half the time
	// left before the deadline the caller sent (Envoy sends its authz
	// timeout), so that the answer is back before Envoy gives up. Default
	// DefaultCheckDeadline.
	CheckDeadline time.Duration
	// JWT are the issuers whose JWTs Envoy verifies (jwt_authn) and
	// passes to keyward in metadata (see JWTIssuer). With any, a
	// request whose credential place holds a JWT is decided by its
	// verified payload alone (decideJWT).
	JWT []JWTIssuer
}

// DefaultCheckDeadline is the default Options.CheckDeadline: half of the
// 500ms ext_authz timeout that keyward envoy-config sets by default.
const DefaultCheckDeadline = 250 * time.Millisecond

// ProviderExtension is the context_extensions key that names the provider
// on an Envoy route.
const ProviderExtension = "provider"

// Authorizer makes decisions. It is safe for concurrent use.
type Authorizer struct {
	opts     Options
	records  Records
	verifier Verifier
	// limits are the per-user buckets of groups with a rate limit.
	limits *rateLimiters
	// endpoints say where the models of a request live.
	endpoints *endpoints
	// next spreads requests across a provider's keys.
	next atomic.Uint64
	// fromMemory is a context that is already done: lookups under it
	// answer from memory only (see Records).
	fromMemory context.Context
}

// NewAuthorizer returns an Authorizer over records and verifier.
func NewAuthorizer(records Records, verifier Verifier, opts Options) (*Authorizer, error) {
	if len(opts.Sources) == 0 {
		return nil, errors.New("authz: no credential sources")
	}
	for i, s := range opts.Sources {
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("authz: %w", field.Prefix(fmt.Sprintf("sources[%d]", i), err))
		}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	switch {
	case opts.CheckDeadline < 0:
		return nil, errors.New("authz: CheckDeadline is negative")
	case opts.CheckDeadline == 0:
		opts.CheckDeadline = DefaultCheckDeadline
	}
	limits, err := newRateLimiters(rateLimitersSize)
	if err != nil {
		return nil, fmt.Errorf("authz: rate limiters: %w", err)
	}
	for i, j := range opts.JWT {
		if err := j.validate(); err != nil {
			return nil, fmt.Errorf("authz: jwt[%d]: %w", i, err)
		}
	}
	for provider, kd := range opts.KeyDelivery {
		if err := kd.Validate(); err != nil {
			return nil, fmt.Errorf("authz: key delivery of %q: %w", provider, err)
		}
	}
	eps, err := newEndpoints(opts.Endpoints)
	if err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	fromMemory, cancel := context.WithCancel(context.Background())
	cancel()
	return &Authorizer{opts: opts, records: records, verifier: verifier, limits: limits, endpoints: eps, fromMemory: fromMemory}, nil
}

// Request is what a decision looks at: the parts of Envoy's CheckRequest
// that matter, by reference (nothing is copied).
type Request struct {
	// Method is the request's HTTP method.
	Method string
	// Headers are the request headers, names in lower case.
	Headers map[string]string
	// Path is the request path with its query string.
	Path string
	// Host is the request's :authority.
	Host string
	// ContextExtensions are the route's ext_authz context extensions: the
	// provider, and how the route rewrites the path (see
	// PathPrefixExtension).
	ContextExtensions map[string]string
	// Principal is the peer's identity as Envoy verified it
	// (attributes.source.principal: the URI SAN of the downstream
	// client certificate, a SPIFFE ID in a mesh); "" without mTLS. It
	// never comes from a header.
	Principal string
	// JWTPayloads are the payloads of the JWTs Envoy's jwt_authn
	// verified, by issuer (the JWTMetadataNamespace metadata: never
	// from a header); nil without any.
	JWTPayloads map[string]*structpb.Value
	// Body is the request body when Envoy forwards it (with_request_body),
	// possibly truncated; "" when it does not. It is read only when policy
	// needs the model: see Decision.Model.
	//
	// Envoy 1.40 adds PartialBodyHeader to the check request exactly when
	// it forwards a body, and never passes on a client's copy of it
	// (measured): without it, a request has no body or one keyward did not
	// see.
	Body string
	// SourceAddress is the downstream peer's address, for the audit log.
	SourceAddress string
}

// PartialBodyHeader is the header Envoy adds to the check request when it
// forwards the body: "true" when the body was cut at max_request_bytes
// (allow_partial_message), "false" otherwise.
const PartialBodyHeader = "x-envoy-auth-partial-body"

// Decision is the outcome of a check. For a denial only Reason (and Err)
// are set; the record fields are filled as far as the check got, for the
// audit log.
type Decision struct {
	Reason Reason
	// Err is the underlying error of a store or internal failure, for the
	// log; never shown to the client.
	Err     error
	TokenID string
	// Token is the token's record once read and its secret matched (by
	// value, so that reading it allocates nothing); its ID is "" until
	// then, and for requests without a token. See HasToken.
	Token record.Token
	// Identity is the principal mapping a request without a keyward
	// token is decided under (mesh identity); nil for a token's request.
	Identity *record.Identity
	// Principal is the peer's verified identity (Request.Principal).
	Principal string
	// JWTIssuer and JWTSubject are the issuer and "sub" of the verified
	// JWT a request is decided under; "" for other requests.
	JWTIssuer, JWTSubject string
	// User is the name of the user the request is decided as: the
	// token's, the mapping's or the JWT's, once known.
	User  string
	Group *record.Group
	// ProviderName is the route's provider; Provider its record, when
	// keyward sends the key (a server-held one or the user's own).
	ProviderName string
	Provider     *record.Provider
	// Key is the key to send: a server-held key, or the user's own
	// credential's when Credential is set. It is nil when the client's own
	// key passes through (ReasonCustomKey).
	Key *record.Key
	// Credential is the user's own stored credential that Key comes from,
	// when the request goes out on it rather than on a server key.
	Credential *record.Credential
	// Model is the model the provider will use, as far as the decision
	// needed to know. In a group that restricts models it is the one in
	// the place its endpoint says (see checkModels; "" for several
	// different ones). Otherwise it is the JSON body's "model", else the
	// model the path names (Gemini's models/{model}:, Azure's
	// deployments/{name}/, read by pathModel, a best effort that decides
	// no policy), else the model header: the body is read only for a user
	// with credentials of their own, the path for those and for denials
	// (the audit log); an allowed request needing neither keeps the
	// header's model, and pays nothing for the others. On a
	// model_not_allowed denial it is the model refused.
	Model string

	found found
	// modelRead: Model has been resolved from the path (and the body, where
	// needed), see readModel.
	modelRead bool
}

// HasToken reports whether d.Token holds the record of the request's
// token.
func (d *Decision) HasToken() bool { return d.Token.ID != "" }

// Decide checks the request and picks the key it goes out with.
func (a *Authorizer) Decide(ctx context.Context, req *Request) Decision {
	l := lookups{parent: ctx, fromMemory: a.fromMemory, deadline: a.opts.CheckDeadline}
	defer l.end()
	f := findCredentials(a.opts.Sources, req.Headers, req.Path)
	d := Decision{found: f, Model: req.Headers[a.opts.ModelHeader], Principal: req.Principal}
	switch {
	case f.management:
		d.Reason = ReasonManagementToken
	case f.ambiguous:
		d.Reason = ReasonAmbiguousCredential
	case f.badScheme:
		d.Reason = ReasonMalformedToken
	case f.tokenAt >= 0 && f.jwt && len(a.opts.JWT) > 0:
		// A JWT beside a keyward token would pass as the client's
		// own provider key.
		d.Reason = ReasonAmbiguousCredential
	case f.tokenAt >= 0:
		d.Reason = a.decideAs(&l, req, &d, a.liveToken(&l, req, &d))
	case len(a.opts.JWT) > 0 && (f.jwt || len(req.JWTPayloads) > 0):
		d.Reason = a.decideJWT(&l, req, &d)
	case req.Principal != "":
		d.Reason = a.decidePrincipal(&l, req, &d)
	case !f.customKey:
		d.Reason = ReasonMissingCredential
	case a.opts.DisableCustomKeys:
		d.Reason = ReasonCustomKeyForbidden
	default:
		// No keyward token: the client's own key goes through
		// untouched and nothing is asserted about who sent it.
		d.Reason = ReasonCustomKey
	}
	if !d.Reason.Allowed() && !d.modelRead {
		// For the audit log; the body stays unread.
		a.readModel(req, &d, false)
	}
	return d
}

// decidePrincipal decides a request without a keyward token from a peer
// whose identity Envoy verified. A mapped principal is decided as the
// mapping's user and group (decideAs), whatever the client put in the
// credential places: that is removed, never forwarded (the SDKs insist
// on sending some API key). An unmapped one is refused, except that a
// client's own provider key still goes through where custom keys are
// allowed, as it would without mTLS.
func (a *Authorizer) decidePrincipal(l *lookups, req *Request, d *Decision) Reason {
	ids, r := lookup(l, d, a.identities, "", "")
	if r != "" {
		return r
	}
	if d.Identity = ids.Lookup(req.Principal); d.Identity != nil {
		return a.decideAs(l, req, d, a.liveIdentity(l, d))
	}
	if d.found.customKey && !a.opts.DisableCustomKeys {
		return ReasonCustomKey
	}
	return ReasonPrincipalNotMapped
}

// identities adapts Records.Identities to lookup.
func (a *Authorizer) identities(ctx context.Context, _ string) (*record.Identities, error) {
	return a.records.Identities(ctx)
}

// liveIdentity is a mapping's liveness: the mapping enabled, then its
// user and group live, as liveToken checks a token's. It sets d.User and
// d.Group as far as it gets.
func (a *Authorizer) liveIdentity(l *lookups, d *Decision) Reason {
	id := d.Identity
	if id.Disabled {
		return ReasonPrincipalDisabled
	}
	d.User = id.User
	return a.liveMember(l, d, id.User, id.Group)
}

// decideAs decides a request whose identity a liveness check has
// established — a token's (liveToken), a mapped principal's
// (liveIdentity); live is its outcome, "" when d.User and d.Group are
// set and live: every check of checkPolicy, then, for a request those
// allow, the group's rate limit, which all of the user's requests in the
// group share. Only allowed requests count against it. (The outcome, not
// the check as a func value: passing the decision's pointers through a
// func value would move them to the heap.)
func (a *Authorizer) decideAs(l *lookups, req *Request, d *Decision, live Reason) Reason {
	r := live
	if r == "" {
		r = a.checkPolicy(l, req, d)
	}
	if r.Allowed() && d.Group.RequestsPerMinute > 0 && !a.limits.allow(d.User, d.Group.Name, d.Group.RequestsPerMinute, a.opts.Now()) {
		// A denial names no key.
		d.Key, d.Credential = nil, nil
		return ReasonRateLimited
	}
	return r
}

// checkPolicy applies the group's policy to a request whose identity is
// live (d.User and d.Group set): the group enabled, provider, models, the
// client's own key, and picks the key.
func (a *Authorizer) checkPolicy(l *lookups, req *Request, d *Decision) Reason {
	g := d.Group
	if g.Disabled {
		return ReasonGroupDisabled
	}

	// Policy: provider and model.
	name := a.providerName(req)
	if name == "" {
		return ReasonUnknownProvider
	}
	d.ProviderName = name
	if !g.AllowsProvider(name) {
		return ReasonProviderNotAllowed
	}
	var p *record.Provider
	if len(g.Models) > 0 {
		// Where the models live depends on the provider's kind. A
		// provider without a record has no built-in endpoints.
		var r Reason
		if p, r = lookup(l, d, a.records.Provider, name, ""); r != "" {
			return r
		}
		if r := a.checkModels(req, g, p, d); r != "" {
			return r
		}
	}
	if d.found.customKey && d.Identity == nil && d.JWTIssuer == "" {
		// Beside a token, the client's own key goes through where
		// allowed. Under a mesh identity it is never forwarded: the
		// answer removes it and sends keyward's key.
		if a.opts.DisableCustomKeys || g.DisableCustomKeys {
			return ReasonCustomKeyForbidden
		}
		return ReasonCustomKey
	}
	if p == nil {
		var r Reason
		if p, r = lookup(l, d, a.records.Provider, name, ReasonNoProviderKey); p == nil {
			return r
		}
	}
	return a.pickKey(l, req, d, p)
}

// liveToken is stage one and two of a token's check: the token itself
// (signature, then its record: secret, revocation, expiry, the workload
// it is bound to), then whether its user and group are still live. It
// sets d.TokenID, d.Token, d.User and d.Group as far as it gets.
func (a *Authorizer) liveToken(l *lookups, req *Request, d *Decision) Reason {
	id, hash, err := a.verifier.Verify(d.found.token)
	switch {
	case errors.Is(err, token.ErrMalformed):
		return ReasonMalformedToken
	case errors.Is(err, token.ErrNotReady):
		d.Err = err
		return ReasonStoreUnavailable
	case err != nil:
		// Forged or signed by a key this server does not hold: never
		// looked up, so random tokens cost no store traffic.
		return ReasonInvalidToken
	}
	d.TokenID = id
	rec, r := lookup(l, d, a.records.Token, id, ReasonInvalidToken)
	if r != "" {
		return r
	}
	if !token.HashEqual(hash, rec.Hash) {
		return ReasonInvalidToken
	}
	d.Token = rec
	d.Token.ID = id // what HasToken reads, whatever the store put there
	t := &d.Token
	switch {
	case t.Revoked:
		return ReasonTokenRevoked
	case t.Expired(a.opts.Now()):
		return ReasonTokenExpired
	case t.Principal != "" && !record.MatchPrincipal(t.Principal, req.Principal):
		return ReasonTokenBoundElsewhere
	}
	d.User = t.User
	return a.liveMember(l, d, t.User, t.Group)
}

// liveMember checks that user is live and may use group, and that group
// is live; it sets d.Group.
func (a *Authorizer) liveMember(l *lookups, d *Decision, user, group string) Reason {
	u, r := lookup(l, d, a.records.User, user, ReasonUserDeleted)
	if u == nil {
		return r
	}
	switch {
	case u.Disabled:
		return ReasonUserDisabled
	case !u.MayUse(group):
		return ReasonGroupNotPermitted
	}
	g, r := lookup(l, d, a.records.Group, group, ReasonGroupDeleted)
	if g == nil {
		return r
	}
	d.Group = g
	return ""
}

// pickKey sets the key the request goes out on: the user's own where
// policy allows and they have one, else one of p's server keys.
func (a *Authorizer) pickKey(l *lookups, req *Request, d *Decision, p *record.Provider) Reason {
	d.Provider = p
	if !a.opts.DisableCustomKeys && !d.Group.DisableCustomKeys {
		k, r := a.privateKey(l, req, d, d.User, d.ProviderName)
		if r != "" {
			return r
		}
		if k != nil {
			// The user's own key, whatever the server holds.
			d.Key, d.Credential = &k.Key, k.Credential
			return ReasonAllowed
		}
	}
	if len(p.Keys) == 0 {
		return ReasonNoProviderKey
	}
	d.Key = &p.Keys[a.next.Add(1)%uint64(len(p.Keys))]
	return ReasonAllowed
}

// privateKey is user's own credential for provider and the request's
// model, if they have one. A store failure is store_unavailable: a user's
// key must not silently fall back to the server's, nor the other way round.
func (a *Authorizer) privateKey(l *lookups, req *Request, d *Decision, user, provider string) (*record.PrivateKey, Reason) {
	// A user the store does not know has none: no reason, nil keys.
	keys, r := lookup(l, d, a.records.PrivateKeys, user, "")
	if r != "" {
		return nil, r
	}
	if keys.Has(provider) && !d.modelRead {
		// Only a user with credentials of their own for this provider
		// pays for reading the model: it picks among them. (Users
		// without any get an empty index from the caches.)
		a.readModel(req, d, true)
	}
	return keys.For(provider, d.Model), ""
}

// lookup loads one record under the check's deadline (see lookups). A
// record that is gone yields the reason notFound; any other failure is
// store_unavailable (fail closed, 503).
func lookup[V any](l *lookups, d *Decision, load func(context.Context, string) (V, error), name string, notFound Reason) (V, Reason) {
	v, err := load(l.next(), name)
	if err != nil && l.again(err) {
		v, err = load(l.ctx, name)
	}
	var zero V
	switch {
	case err == nil:
		return v, ""
	case errors.Is(err, record.ErrNotFound):
		return zero, notFound
	default:
		d.Err = err
		return zero, ReasonStoreUnavailable
	}
}

// providerName is the route's provider: its context extension, else the
// configured host mapping.
func (a *Authorizer) providerName(req *Request) string {
	if p := req.ContextExtensions[ProviderExtension]; p != "" {
		return p
	}
	host := req.Host
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	return a.opts.Hosts[strings.ToLower(host)]
}

// readModel resolves d.Model (see Decision.Model): the body's model when
// body is set and the complete body names one, else the path's, else the
// header's, already there.
func (a *Authorizer) readModel(req *Request, d *Decision, body bool) {
	d.modelRead = true
	if body && req.Body != "" && !partialBody(req) {
		if m, ok := modelFromBody(req.Body); ok {
			d.Model = m
			return
		}
	}
	if m, r := pathModel(req.Path); r == pathHasModel {
		d.Model = m
	}
}

// partialBody reports whether Envoy cut the body it forwarded. Anything but
// an absent header or exactly "false" counts as cut: a client-sent copy
// joined to Envoy's ("false,true") must not hide a truncation.
func partialBody(req *Request) bool {
	v, ok := req.Headers[PartialBodyHeader]
	return ok && v != "false"
}
