// Package mgmt is keyward's HTTP JSON management API: admins manage users
// and groups and see providers; users manage their own LLM tokens and
// private provider credentials, and an admin may act on a user's behalf.
// Callers authenticate with a management token ("kwm_…", never an LLM
// token) or the bootstrap admin credential. The rules themselves live in
// package manage; this package is transport, authentication, isolation and
// the audit trail.
package mgmt

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// AdminTokenEnv names the environment variable that holds the bootstrap
// admin credential; the caller reads it and passes it as
// Options.AdminToken.
const AdminTokenEnv = "KEYWARD_ADMIN_TOKEN"

// AdminTokenFileEnv names the environment variable that may instead give
// the path of a file holding the bootstrap admin credential: a Kubernetes
// secret or a file rendered by Vault Agent, so that the credential can live
// in Vault and stay out of the process environment.
const AdminTokenFileEnv = "KEYWARD_ADMIN_TOKEN_FILE"

// AdminToken returns the bootstrap admin credential the environment gives,
// from AdminTokenEnv or the file AdminTokenFileEnv names (surrounding white
// space trimmed); "" when neither is set. Errors name the variable or the
// file, never the credential.
func AdminToken(getenv func(string) string) (string, error) {
	tok, file := getenv(AdminTokenEnv), getenv(AdminTokenFileEnv)
	switch {
	case file == "":
		return tok, nil
	case tok != "":
		return "", fmt.Errorf("set %s or %s, not both", AdminTokenEnv, AdminTokenFileEnv)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", AdminTokenFileEnv, err)
	}
	if tok = strings.TrimSpace(string(raw)); tok == "" {
		return "", fmt.Errorf("%s: %s is empty", AdminTokenFileEnv, file)
	}
	return tok, nil
}

// MinAdminTokenLen is the shortest bootstrap admin credential accepted.
const MinAdminTokenLen = 32

// BootstrapUser is the caller name of the bootstrap admin in responses and
// audit events.
const BootstrapUser = manage.ReservedUser

// Store is what the management API needs of a record store; the file and
// Vault stores both satisfy it.
type Store interface {
	manage.Store
	PutGroup(ctx context.Context, g *record.Group) error
	DeleteGroup(ctx context.Context, name string) error
	PutUser(ctx context.Context, u *record.User) error
	DeleteUser(ctx context.Context, name string) error
	Users(ctx context.Context) ([]*record.User, error)
	Groups(ctx context.Context) ([]*record.Group, error)
	// UserTokens lists one user's LLM tokens, and no one else's.
	UserTokens(ctx context.Context, user string) ([]*record.Token, error)
	Provider(ctx context.Context, name string) (*record.Provider, error)
	Providers(ctx context.Context) ([]*record.Provider, error)
	// APIToken returns a management token record, or an error wrapping
	// record.ErrNotFound.
	APIToken(ctx context.Context, id string) (*record.APIToken, error)
	PutAPIToken(ctx context.Context, t *record.APIToken) error
	// The credential methods take the owner with the id: another user's
	// id is record.ErrNotFound.
	Credential(ctx context.Context, user, id string) (*record.Credential, error)
	Credentials(ctx context.Context, user string) ([]*record.Credential, error)
	PutCredential(ctx context.Context, c *record.Credential) error
	DeleteCredential(ctx context.Context, user, id string) error
}

// DefaultRotationGrace is how long a rotated token keeps working when
// neither the request nor Options name a grace period: a day, time for a
// deployment to roll out its new secret.
const DefaultRotationGrace = 24 * time.Hour

// Options configure a Server.
type Options struct {
	// Store holds the records. Required.
	Store Store
	// AdminToken is the bootstrap admin credential (see AdminTokenEnv);
	// empty disables it. It must be at least MinAdminTokenLen characters.
	AdminToken string
	// Logger receives the audit events; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// RotationGrace is the default grace period of a token rotation;
	// zero means DefaultRotationGrace. A request may name its own, up to
	// manage.MaxRotationGrace.
	RotationGrace time.Duration
	// Observe, when set, is called once per request after it is answered,
	// with the route pattern ("GET /v1/tokens", never the request's own
	// path, which holds names and ids; "" when no route matched) and the
	// status sent. Metrics hang here.
	Observe func(route string, status int)
}

// Server is the management API, an http.Handler.
type Server struct {
	st    Store
	log   *slog.Logger
	now   func() time.Time
	grace time.Duration
	// adminHash is the SHA-256 of the bootstrap credential, compared in
	// constant time; the credential itself is not kept.
	adminHash [sha256.Size]byte
	hasAdmin  bool
	mux       *http.ServeMux
	// paths matches every served path whatever the method, to tell 405
	// from 404.
	paths   *http.ServeMux
	observe func(route string, status int)
}

// New returns a Server over opts.Store.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("mgmt: no store")
	}
	s := &Server{st: opts.Store, log: opts.Logger, now: opts.Now, grace: opts.RotationGrace, mux: http.NewServeMux(), paths: http.NewServeMux(), observe: opts.Observe}
	switch {
	case s.grace == 0:
		s.grace = DefaultRotationGrace
	case s.grace < 0 || s.grace > manage.MaxRotationGrace:
		return nil, fmt.Errorf("mgmt: rotation grace %v: want between 0 and %v", s.grace, manage.MaxRotationGrace)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if opts.AdminToken != "" {
		if len(opts.AdminToken) < MinAdminTokenLen {
			return nil, fmt.Errorf("mgmt: %s is %d characters, need at least %d", AdminTokenEnv, len(opts.AdminToken), MinAdminTokenLen)
		}
		s.adminHash, s.hasAdmin = sha256.Sum256([]byte(opts.AdminToken)), true
	}
	seen := map[string]bool{}
	for _, rt := range s.routes() {
		s.mux.Handle(rt.method+" "+rt.path, s.guard(rt))
		if !seen[rt.path] {
			seen[rt.path] = true
			s.paths.Handle(rt.path, http.NotFoundHandler())
		}
	}
	s.mux.HandleFunc("/", s.unrouted)
	return s, nil
}

// ServeHTTP serves the management API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// route is one entry of the route table, the single list of what is served:
// the OpenAPI test reads it too.
type route struct {
	method string
	path   string
	scope  scope
	handle func(w http.ResponseWriter, r *http.Request, c caller)
}

// scope is who may call a route.
type scope int

const (
	// adminOnly routes manage users, groups and providers.
	adminOnly scope = iota
	// own routes act on the caller's own tokens and credentials, or, for
	// an admin who names one with ?user=, on that user's.
	own
)

// OnBehalfParam is the query parameter with which an admin acts on another
// user's tokens and credentials.
const OnBehalfParam = "user"

func (s *Server) routes() []route {
	return []route{
		{"GET", "/v1/users", adminOnly, s.listUsers},
		{"POST", "/v1/users", adminOnly, s.createUser},
		{"GET", "/v1/users/{name}", adminOnly, s.getUser},
		{"PUT", "/v1/users/{name}", adminOnly, s.putUser},
		{"DELETE", "/v1/users/{name}", adminOnly, s.deleteUser},
		{"POST", "/v1/users/{name}/management-tokens", adminOnly, s.createAPIToken},
		{"DELETE", "/v1/users/{name}/management-tokens/{id}", adminOnly, s.revokeAPIToken},
		{"GET", "/v1/groups", adminOnly, s.listGroups},
		{"POST", "/v1/groups", adminOnly, s.createGroup},
		{"GET", "/v1/groups/{name}", adminOnly, s.getGroup},
		{"PUT", "/v1/groups/{name}", adminOnly, s.putGroup},
		{"DELETE", "/v1/groups/{name}", adminOnly, s.deleteGroup},
		{"GET", "/v1/providers", adminOnly, s.listProviders},
		{"GET", "/v1/providers/{name}", adminOnly, s.getProvider},
		{"GET", "/v1/me", own, s.me},
		{"GET", "/v1/tokens", own, s.listTokens},
		{"POST", "/v1/tokens", own, s.createToken},
		{"GET", "/v1/tokens/{id}", own, s.getToken},
		{"DELETE", "/v1/tokens/{id}", own, s.revokeToken},
		{"POST", "/v1/tokens/{id}/rotate", own, s.rotateToken},
		{"GET", "/v1/credentials", own, s.listCredentials},
		{"POST", "/v1/credentials", own, s.createCredential},
		{"GET", "/v1/credentials/{id}", own, s.getCredential},
		{"PUT", "/v1/credentials/{id}", own, s.putCredential},
		{"DELETE", "/v1/credentials/{id}", own, s.deleteCredential},
	}
}

// caller is who is asking, and for whom.
type caller struct {
	// name is the user the request acts for: the authenticated user, or
	// the user an admin named with ?user=.
	name string
	// actor is the authenticated user; it differs from name when an admin
	// acts on a user's behalf, which the audit log records.
	actor string
	admin bool
}

// guard authenticates the request, enforces the route's scope and, for an
// admin acting on a user's behalf, sets the caller's name to that user.
func (s *Server) guard(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		routeName := rt.method + " " + rt.path
		raw := w // MaxBytesReader closes an oversized request's connection through the server's own writer
		w, done := s.observing(routeName, w)
		defer done()
		c, e := s.authenticate(r)
		if e != nil {
			s.audit(r.Context(), caller{}, "authenticate", routeName, "denied", slog.String("reason", e.code))
			writeError(w, e)
			return
		}
		onBehalf := r.URL.Query().Get(OnBehalfParam)
		switch {
		case rt.scope == adminOnly && !c.admin:
			s.audit(r.Context(), c, "authorize", routeName, "denied", slog.String("reason", codeAdminOnly))
			writeError(w, &apiError{http.StatusForbidden, codeAdminOnly, "This route is for admins."})
			return
		case onBehalf == "" || onBehalf == c.name:
		case rt.scope != own:
			writeError(w, &apiError{http.StatusBadRequest, codeInvalidRequest, "?" + OnBehalfParam + "= applies only to tokens, credentials and /v1/me."})
			return
		case !c.admin:
			// Answered the same whether the user exists or not.
			s.audit(r.Context(), c, "authorize", routeName, "denied", slog.String("reason", codeAdminOnly), slog.String("on_behalf_of", target("user", onBehalf)))
			writeError(w, &apiError{http.StatusForbidden, codeAdminOnly, "Only admins may act on another user's behalf."})
			return
		default:
			if _, err := s.st.User(r.Context(), onBehalf); err != nil {
				e := s.classify(r.Context(), "authorize", err)
				if e.status == http.StatusNotFound {
					e = &apiError{http.StatusNotFound, codeNotFound, "No such user."}
				}
				s.audit(r.Context(), c, "authorize", routeName, outcome(e), slog.String("reason", e.code), slog.String("on_behalf_of", target("user", onBehalf)))
				writeError(w, e)
				return
			}
			c.name = onBehalf
		}
		r.Body = http.MaxBytesReader(raw, r.Body, maxBody)
		rt.handle(w, r, c)
	})
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

// authenticate finds the caller from the bearer credential. The messages
// never echo the credential.
func (s *Server) authenticate(r *http.Request) (caller, *apiError) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if tok = strings.TrimSpace(tok); !ok || tok == "" {
		return caller{}, &apiError{http.StatusUnauthorized, codeMissingCredential, "No management credential provided. Send a management token as a Bearer token."}
	}
	if s.hasAdmin {
		h := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(h[:], s.adminHash[:]) == 1 {
			return caller{name: BootstrapUser, actor: BootstrapUser, admin: true}, nil
		}
	}
	if !strings.HasPrefix(tok, token.ManagementPrefix) {
		return caller{}, &apiError{http.StatusUnauthorized, codeInvalidToken, "Not a management credential: the management API takes management tokens (" + token.ManagementPrefix + "…), not keyward LLM tokens or provider keys."}
	}
	ctx := r.Context()
	ring, err := s.ring(ctx)
	if err != nil {
		return caller{}, s.storeError(ctx, "authenticate", err)
	}
	id, hash, err := ring.Verify(tok)
	switch {
	case errors.Is(err, token.ErrMalformed):
		return caller{}, &apiError{http.StatusUnauthorized, codeMalformedToken, "The management token is malformed (truncated or mistyped)."}
	case err != nil:
		return caller{}, errInvalidToken
	}
	t, err := s.st.APIToken(ctx, id)
	switch {
	case errors.Is(err, record.ErrNotFound):
		return caller{}, errInvalidToken
	case err != nil:
		return caller{}, s.storeError(ctx, "authenticate", err)
	case !token.HashEqual(hash, t.Hash):
		return caller{}, errInvalidToken
	case t.Revoked:
		return caller{}, &apiError{http.StatusUnauthorized, codeTokenRevoked, "The management token has been revoked."}
	}
	u, err := s.st.User(ctx, t.User)
	switch {
	case errors.Is(err, record.ErrNotFound):
		return caller{}, errInvalidToken
	case err != nil:
		return caller{}, s.storeError(ctx, "authenticate", err)
	case u.Disabled:
		return caller{}, &apiError{http.StatusForbidden, codeUserDisabled, "The user is disabled."}
	}
	return caller{name: u.Name, actor: u.Name, admin: u.Role == record.RoleAdmin}, nil
}

var errInvalidToken = &apiError{http.StatusUnauthorized, codeInvalidToken, "The management token is not valid."}

// ring builds the management keyring from the store's signing keys.
func (s *Server) ring(ctx context.Context) (*token.Keyring, error) {
	return managementRing(ctx, s.st)
}

func managementRing(ctx context.Context, st manage.Store) (*token.Keyring, error) {
	keys, err := st.SigningKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	ring, err := token.NewKeyring(keys)
	if err != nil {
		return nil, err
	}
	return ring.Management(), nil
}

// IssueAPIToken mints a management token for user, who must exist and be
// enabled, and stores its record. The returned token is shown once.
func IssueAPIToken(ctx context.Context, st Store, user string, now time.Time) (string, *record.APIToken, error) {
	u, err := st.User(ctx, user)
	if err != nil {
		return "", nil, fmt.Errorf("issue management token: %w", err)
	}
	if u.Disabled {
		return "", nil, fmt.Errorf("issue management token: %w: user %q is disabled", manage.ErrInvalid, user)
	}
	ring, err := managementRing(ctx, st)
	if err != nil {
		return "", nil, fmt.Errorf("issue management token: %w", err)
	}
	m, err := ring.Mint()
	if err != nil {
		return "", nil, fmt.Errorf("issue management token: %w", err)
	}
	rec := &record.APIToken{ID: m.ID, Hash: m.Hash, User: user, Created: now.UTC()}
	if err := st.PutAPIToken(ctx, rec); err != nil {
		return "", nil, fmt.Errorf("issue management token: store: %w", err)
	}
	return m.Token, rec, nil
}

// audit records one management event: who, what, on what, with which
// outcome, and for whom when an admin acts on a user's behalf. Callers pass
// names and ids only, never a credential.
func (s *Server) audit(ctx context.Context, c caller, action, target, outcome string, extra ...slog.Attr) {
	attrs := append(make([]slog.Attr, 0, 5+len(extra)),
		slog.String("who", c.actor), slog.String("action", action),
		slog.String("target", target), slog.String("outcome", outcome))
	if c.name != c.actor {
		attrs = append(attrs, slog.String("on_behalf_of", c.name))
	}
	attrs = append(attrs, extra...)
	s.log.LogAttrs(ctx, slog.LevelInfo, "management", attrs...)
}
