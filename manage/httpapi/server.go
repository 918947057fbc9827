// Package httpapi is keyward's HTTP JSON management API: admins manage
// users and groups and see providers; users manage their own LLM tokens and
// private provider credentials, and an admin may act on a user's behalf.
// Callers authenticate with a management token ("kwm_…", never an LLM
// token), the bootstrap admin credential, or, when configured, a JWT of an
// OIDC issuer (package oidc).
//
// It is a thin adapter over package manage, which owns every rule: this
// package is transport, authentication, isolation by caller, the JSON
// shapes and the audit trail.
package httpapi

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/manage/httpapi/oidc"
)

// MinAdminTokenLen is the shortest bootstrap admin credential accepted.
const MinAdminTokenLen = 32

// BootstrapUser is the caller name of the bootstrap admin in responses and
// audit events.
const BootstrapUser = manage.ReservedUser

// Keys verifies management tokens offline, against the signing keys the
// serving process keeps current (token.Verifier): a forged or random
// management token costs no store read.
type Keys interface {
	VerifyManagement(tok string) (id string, secretHash [sha256.Size]byte, err error)
}

// JWTs verifies the JWTs of the configured OIDC issuer (*oidc.Verifier).
type JWTs interface {
	Verify(ctx context.Context, raw string) (oidc.Identity, error)
}

// Options configure a Server.
type Options struct {
	// Manager applies the rules to the record store. Required.
	Manager *manage.Manager
	// Keys verifies management tokens. Required.
	Keys Keys
	// AdminToken is the bootstrap admin credential (see AdminTokenEnv);
	// empty disables it. It must be at least MinAdminTokenLen characters.
	AdminToken string
	// OIDC, when set, verifies bearer credentials shaped like a JWT
	// (oidc.LooksLikeJWT); nil refuses them as today.
	OIDC JWTs
	// Logger receives the audit events; nil discards them.
	Logger *slog.Logger
	// Observe, when set, is called once per request after it is answered,
	// with the route pattern ("GET /v1/tokens", never the request's own
	// path, which holds names and ids; "" when no route matched) and the
	// status sent. Metrics hang here.
	Observe func(route string, status int)
}

// Server is the management API, an http.Handler.
type Server struct {
	m    *manage.Manager
	keys Keys
	log  *slog.Logger
	// adminHash is the SHA-256 of the bootstrap credential, compared in
	// constant time; the credential itself is not kept.
	adminHash [sha256.Size]byte
	hasAdmin  bool
	oidc      JWTs
	mux       *http.ServeMux
	// paths matches every served path whatever the method, to tell 405
	// from 404.
	paths   *http.ServeMux
	observe func(route string, status int)
}

// New returns a Server over opts.Manager.
func New(opts Options) (*Server, error) {
	switch {
	case opts.Manager == nil:
		return nil, errors.New("httpapi: no manager")
	case opts.Keys == nil:
		return nil, errors.New("httpapi: no keys to verify management tokens")
	}
	s := &Server{m: opts.Manager, keys: opts.Keys, oidc: opts.OIDC, log: opts.Logger, mux: http.NewServeMux(), paths: http.NewServeMux(), observe: opts.Observe}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.AdminToken != "" {
		if len(opts.AdminToken) < MinAdminTokenLen {
			return nil, fmt.Errorf("httpapi: %s is %d characters, need at least %d", AdminTokenEnv, len(opts.AdminToken), MinAdminTokenLen)
		}
		s.adminHash, s.hasAdmin = sha256.Sum256([]byte(opts.AdminToken)), true
	}
	seen := map[string]bool{}
	for _, rt := range s.routes() {
		s.mux.Handle(rt.Method+" "+rt.Path, s.guard(rt))
		if !seen[rt.Path] {
			seen[rt.Path] = true
			s.paths.Handle(rt.Path, http.NotFoundHandler())
		}
	}
	s.mux.HandleFunc("/", s.unrouted)
	return s, nil
}

// ServeHTTP serves the management API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Route is one entry of the route table, the single list of what is
// served: the OpenAPI test and the `keyward api` command read it too.
type Route struct {
	// Name identifies the route to the command line ("users.create").
	Name string
	// Method and Path are the route's pattern.
	Method, Path string
	// Scope is who may call it.
	Scope  Scope
	handle func(w http.ResponseWriter, r *http.Request, c caller)
}

// Scope is who may call a route.
type Scope int

const (
	// AdminOnly routes manage users, groups and providers.
	AdminOnly Scope = iota
	// Own routes act on the caller's own tokens and credentials, or, for
	// an admin who names one with ?user=, on that user's.
	Own
)

// OnBehalfParam is the query parameter with which an admin acts on another
// user's tokens and credentials.
const OnBehalfParam = "user"

// Routes lists what the API serves, for documentation and clients.
func Routes() []Route {
	var s Server
	return s.routes()
}

func (s *Server) routes() []Route {
	users, groups, providers, identities := s.users(), s.groups(), s.providers(), s.identities()
	return []Route{
		{"users.list", "GET", "/v1/users", AdminOnly, users.list},
		{"users.create", "POST", "/v1/users", AdminOnly, users.create},
		{"users.get", "GET", "/v1/users/{name}", AdminOnly, users.get},
		{"users.update", "PUT", "/v1/users/{name}", AdminOnly, users.update},
		{"users.delete", "DELETE", "/v1/users/{name}", AdminOnly, users.delete},
		{"management-tokens.create", "POST", "/v1/users/{user}/management-tokens", AdminOnly, s.createAPIToken},
		{"management-tokens.revoke", "DELETE", "/v1/users/{user}/management-tokens/{id}", AdminOnly, s.revokeAPIToken},
		{"groups.list", "GET", "/v1/groups", AdminOnly, groups.list},
		{"groups.create", "POST", "/v1/groups", AdminOnly, groups.create},
		{"groups.get", "GET", "/v1/groups/{name}", AdminOnly, groups.get},
		{"groups.update", "PUT", "/v1/groups/{name}", AdminOnly, groups.update},
		{"groups.delete", "DELETE", "/v1/groups/{name}", AdminOnly, groups.delete},
		{"identities.list", "GET", "/v1/identities", AdminOnly, identities.list},
		{"identities.create", "POST", "/v1/identities", AdminOnly, identities.create},
		{"identities.get", "GET", "/v1/identities/{name}", AdminOnly, identities.get},
		{"identities.update", "PUT", "/v1/identities/{name}", AdminOnly, identities.update},
		{"identities.delete", "DELETE", "/v1/identities/{name}", AdminOnly, identities.delete},
		{"providers.list", "GET", "/v1/providers", AdminOnly, providers.list},
		{"providers.get", "GET", "/v1/providers/{name}", AdminOnly, providers.get},
		{"me", "GET", "/v1/me", Own, s.me},
		{"tokens.list", "GET", "/v1/tokens", Own, s.listTokens},
		{"tokens.create", "POST", "/v1/tokens", Own, s.createToken},
		{"tokens.get", "GET", "/v1/tokens/{id}", Own, s.getToken},
		{"tokens.revoke", "DELETE", "/v1/tokens/{id}", Own, s.revokeToken},
		{"tokens.rotate", "POST", "/v1/tokens/{id}/rotate", Own, s.rotateToken},
		{"credentials.list", "GET", "/v1/credentials", Own, s.listCredentials},
		{"credentials.create", "POST", "/v1/credentials", Own, s.createCredential},
		{"credentials.get", "GET", "/v1/credentials/{id}", Own, s.getCredential},
		{"credentials.update", "PUT", "/v1/credentials/{id}", Own, s.putCredential},
		{"credentials.delete", "DELETE", "/v1/credentials/{id}", Own, s.deleteCredential},
	}
}

// guard authenticates the request, enforces the route's scope and, for an
// admin acting on a user's behalf, sets the caller's name to that user.
func (s *Server) guard(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		routeName := rt.Method + " " + rt.Path
		raw := w // MaxBytesReader closes an oversized request's connection through the server's own writer
		w, done := s.observing(routeName, w)
		defer done()
		c, e := s.authenticate(r)
		if e != nil {
			attrs := []slog.Attr{slog.String("reason", e.code)}
			if c.denial != "" {
				attrs = append(attrs, slog.String("detail", c.denial))
			}
			s.audit(r.Context(), c, "authenticate", routeName, "denied", attrs...)
			writeError(w, e)
			return
		}
		if c, e = s.authorize(r, rt, c); e != nil {
			writeError(w, e)
			return
		}
		r.Body = http.MaxBytesReader(raw, r.Body, maxBody)
		rt.handle(w, r, c)
	})
}

// authorize enforces rt's scope on c, and turns c into the user an admin
// names with ?user= on an Own route. Denials are audited.
func (s *Server) authorize(r *http.Request, rt Route, c caller) (caller, *apiError) {
	routeName := rt.Method + " " + rt.Path
	onBehalf := r.URL.Query().Get(OnBehalfParam)
	deny := func(e *apiError, extra ...slog.Attr) (caller, *apiError) {
		s.audit(r.Context(), c, "authorize", routeName, outcome(e), append(extra, slog.String("reason", e.code))...)
		return c, e
	}
	switch {
	case rt.Scope == AdminOnly && !c.admin:
		return deny(&apiError{http.StatusForbidden, codeAdminOnly, "This route is for admins."})
	case onBehalf == "" || onBehalf == c.name:
		return c, nil
	case rt.Scope != Own:
		return c, &apiError{http.StatusBadRequest, codeInvalidRequest, "?" + OnBehalfParam + "= applies only to tokens, credentials and /v1/me."}
	case !c.admin:
		// Answered the same whether the user exists or not.
		return deny(&apiError{http.StatusForbidden, codeAdminOnly, "Only admins may act on another user's behalf."}, slog.String("on_behalf_of", target("user", onBehalf)))
	}
	if _, err := s.m.User(r.Context(), onBehalf); err != nil {
		e := s.errorFor(r.Context(), "authorize", err)
		if e.status == http.StatusNotFound {
			e = &apiError{http.StatusNotFound, codeNotFound, "No such user."}
		}
		return deny(e, slog.String("on_behalf_of", target("user", onBehalf)))
	}
	c.name = onBehalf
	return c, nil
}

const maxBody = 1 << 20

func (s *Server) unrouted(w http.ResponseWriter, r *http.Request) {
	w, done := s.observing("", w)
	defer done()
	if _, pattern := s.paths.Handler(r); pattern != "" {
		writeError(w, &apiError{http.StatusMethodNotAllowed, codeMethodNotAllowed, "Method " + r.Method + " is not allowed here."})
		return
	}
	writeError(w, &apiError{http.StatusNotFound, codeNotFound, "No such route."})
}

// observing wraps w to learn the status sent, for Options.Observe; done
// reports it. Without an observer it returns w as it is.
func (s *Server) observing(route string, w http.ResponseWriter) (http.ResponseWriter, func()) {
	if s.observe == nil {
		return w, func() {}
	}
	sw := &statusWriter{ResponseWriter: w}
	return sw, func() { s.observe(route, sw.sent()) }
}

// statusWriter records the status of the answer written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sent is the status the client got: 200 when the handler set none.
func (w *statusWriter) sent() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
