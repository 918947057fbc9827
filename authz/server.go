package authz

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// ResponseCacheSize bounds the cache of built allowed responses:
	// tokens' answers, and apart from them the few of mesh identities
	// and JWTs. Default 10000.
	ResponseCacheSize int
	// Log receives audit events (denials) and errors. Default: discard.
	Log *slog.Logger
	// DenyLogRate, when positive, bounds how many denials per second are
	// logged one by one (with bursts of DenyLogBurst, default twice the
	// rate), so that a flood of bad tokens cannot flood the log; the rest
	// are counted and the count reported with the next logged denial. Zero,
	// the default, logs every denial.
	DenyLogRate  rate.Limit
	DenyLogBurst int
	// Observe, when set, is called once per Check, after the answer is
	// built, with its outcome; metrics hang here. It runs on the hot path,
	// so it must be quick and safe for concurrent use. Default: nothing
	// observes.
	Observe func(o Observation)
	// Tracer, when set, traces each Check as a server span joined to the
	// caller's trace (see CheckSpanName). Default: no tracing, at no
	// cost to the check.
	Tracer trace.Tracer
}

// Observation is what an observer learns of one check: its reason, where
// the key came from and how long the check took. It holds no user, group,
// token, key or request data, so no observer can put one in a metric.
type Observation struct {
	Reason Reason
	// KeySource is where the key that goes out comes from: KeySourceServer,
	// KeySourceUser (the user's own stored credential), KeySourceClient (the
	// client's own provider key passes through), or "" for a denial.
	KeySource string
	// Took is the time spent in Check.
	Took time.Duration
}

// The Observation.KeySource values of allowed checks. KeySourceServer and
// KeySourceUser are also the key_source values of the dynamic metadata.
const (
	KeySourceServer = keySourceServer
	KeySourceUser   = keySourceUser
	KeySourceClient = "client"
)

// Server is the Envoy ext_authz v3 gRPC service: a thin shell that turns a
// CheckRequest into a Request, asks the Authorizer and answers with the
// matching CheckResponse. Client input never becomes a gRPC error.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	authorizer *Authorizer
	responder  *responder
	log        *slog.Logger
	denyLog    *rate.Limiter
	suppressed atomic.Int64
	observe    func(Observation)
	tracer     trace.Tracer
	// epoch is the base of check timings: time.Since of it reads only the
	// monotonic clock, cheaper than time.Now.
	epoch time.Time
}

var _ authv3.AuthorizationServer = (*Server)(nil)

// NewServer returns a Server over a.
func NewServer(a *Authorizer, opts ServerOptions) (*Server, error) {
	if opts.ResponseCacheSize == 0 {
		opts.ResponseCacheSize = 10_000
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	switch {
	case opts.DenyLogRate <= 0:
		opts.DenyLogRate = rate.Inf
	case opts.DenyLogBurst <= 0:
		opts.DenyLogBurst = max(1, int(2*opts.DenyLogRate))
	}
	r, err := newResponder(a.opts.Sources, a.opts.KeyDelivery, opts.ResponseCacheSize)
	if err != nil {
		return nil, fmt.Errorf("authz: response cache: %w", err)
	}
	return &Server{
		authorizer: a,
		responder:  r,
		log:        opts.Log,
		denyLog:    rate.NewLimiter(opts.DenyLogRate, opts.DenyLogBurst),
		observe:    opts.Observe,
		tracer:     opts.Tracer,
		epoch:      time.Now(),
	}, nil
}

// Check answers one ext_authz check. (Served over gRPC with Register,
// a check reads its request straight from the wire instead: see
// decodeRequest.)
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	r := requestOf(req)
	return s.check(ctx, &r), nil
}

// requestOf is the Request of a decoded CheckRequest.
func requestOf(req *authv3.CheckRequest) Request {
	attrs := req.GetAttributes()
	http := attrs.GetRequest().GetHttp()
	return Request{
		Method:            http.GetMethod(),
		Headers:           http.GetHeaders(),
		Path:              http.GetPath(),
		Host:              http.GetHost(),
		ContextExtensions: attrs.GetContextExtensions(),
		Principal:         attrs.GetSource().GetPrincipal(),
		JWTPayloads:       jwtPayloads(attrs.GetMetadataContext().GetFilterMetadata()),
		Body:              requestBody(http),
		SourceAddress:     attrs.GetSource().GetAddress().GetSocketAddress().GetAddress(),
	}
}

// check answers the check of r. Client input never becomes an error.
func (s *Server) check(ctx context.Context, r *Request) (resp *authv3.CheckResponse) {
	var start time.Duration
	if s.observe != nil {
		start = time.Since(s.epoch)
	}
	var span trace.Span
	if s.tracer != nil {
		ctx, span = s.startSpan(ctx)
	}
	defer func() {
		// Fail closed. The panic value is not logged: it could hold
		// request data; its type and the stack locate the bug.
		if p := recover(); p != nil {
			s.log.Error("panic in check", "panic_type", fmt.Sprintf("%T", p), "stack", string(debug.Stack()))
			resp = s.responder.denied[ReasonInternal]
			if s.observe != nil {
				s.observe(Observation{Reason: ReasonInternal, Took: time.Since(s.epoch) - start})
			}
			if span != nil {
				endSpan(span, &Decision{Reason: ReasonInternal})
			}
		}
	}()
	d := s.authorizer.Decide(ctx, r)
	if !d.Reason.Allowed() {
		s.audit(r, &d)
	}
	resp = s.responder.respond(&d, r.Headers)
	if s.observe != nil {
		// By value: a pointer to d would make d escape to the heap.
		s.observe(Observation{Reason: d.Reason, KeySource: keySource(&d), Took: time.Since(s.epoch) - start})
	}
	if span != nil {
		endSpan(span, &d)
	}
	return resp
}

// keySource is the Observation.KeySource of d.
func keySource(d *Decision) string {
	switch {
	case !d.Reason.Allowed():
		return ""
	case d.Key == nil:
		return KeySourceClient
	case d.Credential != nil:
		return KeySourceUser
	default:
		return KeySourceServer
	}
}

// audit logs a denial as a structured event: who, what, why; never a
// credential or the query string (which may hold one).
func (s *Server) audit(r *Request, d *Decision) {
	if !s.denyLog.Allow() {
		s.suppressed.Add(1)
		return
	}
	path, _, _ := strings.Cut(r.Path, "?")
	attrs := []slog.Attr{
		slog.String("event", "authz.deny"),
		slog.String("reason", string(d.Reason)),
		slog.Int("status", d.Reason.HTTPStatus()),
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("path", path),
		slog.String("source", r.SourceAddress),
	}
	if id := r.Headers["x-request-id"]; id != "" {
		attrs = append(attrs, slog.String("request_id", id))
	}
	if d.TokenID != "" {
		attrs = append(attrs, slog.String("token_id", d.TokenID))
	}
	if d.HasToken() {
		attrs = append(attrs, slog.String("user", d.Token.User), slog.String("group", d.Token.Group))
	}
	if d.Principal != "" {
		// A SPIFFE ID Envoy verified: an identity, never a secret.
		attrs = append(attrs, slog.String("principal", d.Principal))
	}
	if d.Identity != nil {
		attrs = append(attrs, slog.String("identity", d.Identity.Name), slog.String("user", d.Identity.User), slog.String("group", d.Identity.Group))
	}
	if d.JWTIssuer != "" {
		// The verified issuer and subject, never the JWT.
		attrs = append(attrs, slog.String("jwt_issuer", d.JWTIssuer), slog.String("jwt_subject", d.JWTSubject), slog.String("user", d.User))
		if d.Group != nil {
			attrs = append(attrs, slog.String("group", d.Group.Name))
		}
	}
	if d.ProviderName != "" {
		attrs = append(attrs, slog.String("provider", d.ProviderName))
	}
	if d.Model != "" {
		attrs = append(attrs, slog.String("model", clipModel(d.Model)))
	}
	if d.Err != nil {
		attrs = append(attrs, slog.String("err", d.Err.Error()))
	}
	if n := s.suppressed.Swap(0); n > 0 {
		attrs = append(attrs, slog.Int64("suppressed_before", n))
	}
	level := slog.LevelInfo
	if d.Reason.HTTPStatus() == 503 {
		level = slog.LevelWarn
	}
	s.log.LogAttrs(context.Background(), level, "request denied", attrs...)
}

// requestBody is the body Envoy forwarded, without a copy: the string form
// (the default), or the bytes of pack_as_bytes viewed as a string. The view
// is safe: protobuf decoding gives raw_body its own array, and nothing
// writes to a CheckRequest once it is decoded.
func requestBody(http *authv3.AttributeContext_HttpRequest) string {
	if b := http.GetBody(); b != "" {
		return b
	}
	return view(http.GetRawBody())
}
