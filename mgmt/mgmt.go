// Package mgmt is keyward's HTTP JSON management API: admins manage users
// and groups, users manage their own LLM tokens. Callers authenticate with
// a management token ("kwm_…", never an LLM token) or the bootstrap admin
// credential. The rules themselves live in package manage; this package is
// transport, authentication, isolation and the audit trail.
package mgmt

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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

// MinAdminTokenLen is the shortest bootstrap admin credential accepted.
const MinAdminTokenLen = 32

// BootstrapUser is the caller name of the bootstrap admin in responses and
// audit events.
const BootstrapUser = "bootstrap"

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
	Tokens(ctx context.Context) ([]*record.Token, error)
	// APIToken returns a management token record, or an error wrapping
	// record.ErrNotFound.
	APIToken(ctx context.Context, id string) (*record.APIToken, error)
	PutAPIToken(ctx context.Context, t *record.APIToken) error
}

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
}

// Server is the management API, an http.Handler.
type Server struct {
	st  Store
	log *slog.Logger
	now func() time.Time
	// adminHash is the SHA-256 of the bootstrap credential, compared in
	// constant time; the credential itself is not kept.
	adminHash [sha256.Size]byte
	hasAdmin  bool
	mux       *http.ServeMux
	// paths matches every served path whatever the method, to tell 405
	// from 404.
	paths *http.ServeMux
}

// New returns a Server over opts.Store.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("mgmt: no store")
	}
	s := &Server{st: opts.Store, log: opts.Logger, now: opts.Now, mux: http.NewServeMux(), paths: http.NewServeMux()}
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
	admin  bool
	handle func(w http.ResponseWriter, r *http.Request, c caller)
}

func (s *Server) routes() []route {
	return []route{
		{"GET", "/v1/users", true, s.listUsers},
		{"POST", "/v1/users", true, s.createUser},
		{"GET", "/v1/users/{name}", true, s.getUser},
		{"PUT", "/v1/users/{name}", true, s.putUser},
		{"DELETE", "/v1/users/{name}", true, s.deleteUser},
		{"GET", "/v1/groups", true, s.listGroups},
		{"POST", "/v1/groups", true, s.createGroup},
		{"GET", "/v1/groups/{name}", true, s.getGroup},
		{"PUT", "/v1/groups/{name}", true, s.putGroup},
		{"DELETE", "/v1/groups/{name}", true, s.deleteGroup},
		{"GET", "/v1/tokens", false, s.listTokens},
		{"POST", "/v1/tokens", false, s.createToken},
		{"GET", "/v1/tokens/{id}", false, s.getToken},
		{"DELETE", "/v1/tokens/{id}", false, s.revokeToken},
	}
}

// caller is who is asking.
type caller struct {
	name  string
	admin bool
}

// guard authenticates the request and enforces the route's role.
func (s *Server) guard(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, e := s.authenticate(r)
		if e != nil {
			s.audit(r.Context(), "", "authenticate", rt.method+" "+rt.path, "denied", slog.String("reason", e.code))
			writeError(w, e)
			return
		}
		if rt.admin && !c.admin {
			s.audit(r.Context(), c.name, "authorize", rt.method+" "+rt.path, "denied", slog.String("reason", codeAdminOnly))
			writeError(w, &apiError{http.StatusForbidden, codeAdminOnly, "This route is for admins."})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		rt.handle(w, r, c)
	})
}

const maxBody = 1 << 20

func (s *Server) unrouted(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.paths.Handler(r); pattern != "" {
		writeError(w, &apiError{http.StatusMethodNotAllowed, codeMethodNotAllowed, "Method " + r.Method + " is not allowed here."})
		return
	}
	writeError(w, &apiError{http.StatusNotFound, codeNotFound, "No such route."})
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
			return caller{name: BootstrapUser, admin: true}, nil
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
	return caller{name: u.Name, admin: u.Role == record.RoleAdmin}, nil
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

// audit records one management event. Callers pass names and ids only,
// never a credential.
func (s *Server) audit(ctx context.Context, who, action, target, outcome string, extra ...slog.Attr) {
	attrs := append([]slog.Attr{
		slog.String("who", who), slog.String("action", action),
		slog.String("target", target), slog.String("outcome", outcome),
	}, extra...)
	s.log.LogAttrs(ctx, slog.LevelInfo, "management", attrs...)
}
