package httpapi

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// tokenJSON is an LLM token on the wire. Token is set once, in the answer
// to its creation or rotation; afterwards only Masked is shown.
type tokenJSON struct {
	Token      string     `json:"token,omitempty"`
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Group      string     `json:"group"`
	Created    time.Time  `json:"created"`
	Expires    *time.Time `json:"expires"`
	State      string     `json:"state"`
	Masked     string     `json:"masked"`
	ReplacedBy string     `json:"replaced_by,omitempty"`
	// Principal is the workload the token is bound to; absent for a
	// token any peer may present.
	Principal string `json:"principal,omitempty"`
}

func (s *Server) tokenOut(t *record.Token) tokenJSON {
	out := tokenJSON{ID: t.ID, Name: t.Name, Group: t.Group, Created: t.Created, State: t.State(s.m.Now()), Masked: maskToken(t), ReplacedBy: t.ReplacedBy, Principal: t.Principal}
	if !t.Expires.IsZero() {
		e := t.Expires
		out.Expires = &e
	}
	return out
}

// maskToken is how a token is shown after its creation: its prefix and
// last four characters, enough to tell tokens apart and nothing to use.
// Tokens stored before their last four characters were recorded show
// their public id instead.
func maskToken(t *record.Token) string {
	if t.Last4 == "" {
		return token.Prefix + t.ID + "…"
	}
	return token.Prefix + "…" + t.Last4
}

// tokenRequest is the body of POST /v1/tokens.
type tokenRequest struct {
	Group string `json:"group"`
	Name  string `json:"name"`
	// TTL is a Go duration ("720h"); empty for a token that does not expire.
	TTL string `json:"ttl"`
	// Principal binds the token to a workload: a SPIFFE ID, or a prefix
	// ending in "/*"; empty for none.
	Principal string `json:"principal"`
}

// rotateRequest is the body of POST /v1/tokens/{id}/rotate; it may be
// empty.
type rotateRequest struct {
	// Grace is a Go duration ("1h", "0s"); empty for the server's default.
	Grace string `json:"grace"`
}

// rotationJSON answers a rotation: the new token, shown once, and the old
// one as it now stands.
type rotationJSON struct {
	tokenJSON
	Replaces   string    `json:"replaces"`
	OldExpires time.Time `json:"old_expires"`
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, c caller) {
	tokens, err := s.m.Tokens(r.Context(), c.name)
	if err != nil {
		writeError(w, s.errorFor(r.Context(), "token.list", err))
		return
	}
	out := make([]tokenJSON, 0, len(tokens))
	for _, t := range tokens {
		out = append(out, s.tokenOut(t))
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

func (s *Server) getToken(w http.ResponseWriter, r *http.Request, c caller) {
	t, err := s.m.Token(r.Context(), c.name, r.PathValue("id"))
	if err != nil {
		// Audited: a read of someone else's token is an isolation denial.
		s.fail(w, r, c, "token.get", target("token", r.PathValue("id")), s.errorFor(r.Context(), "token.get", err))
		return
	}
	writeJSON(w, http.StatusOK, s.tokenOut(t))
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, c caller) {
	var in tokenRequest
	e := decode(r.Body, &in)
	tgt := target("group", in.Group)
	var ttl time.Duration
	if e == nil {
		ttl, e = duration("ttl", in.TTL, false)
	}
	if e != nil {
		s.fail(w, r, c, "token.create", tgt, e)
		return
	}
	iss, err := s.m.CreateToken(r.Context(), manage.TokenRequest{User: c.name, Group: in.Group, Name: in.Name, TTL: ttl, Principal: in.Principal})
	if err == nil {
		tgt = target("token", iss.Record.ID)
	}
	s.act(w, r, c, "token.create", tgt, err, func() {
		out := s.tokenOut(iss.Record)
		out.Token = iss.Token
		writeJSON(w, http.StatusCreated, out)
	})
}

func (s *Server) rotateToken(w http.ResponseWriter, r *http.Request, c caller) {
	tgt := target("token", r.PathValue("id"))
	var in rotateRequest
	var e *apiError
	if r.ContentLength != 0 {
		e = decode(r.Body, &in)
	}
	var grace *time.Duration
	if e == nil && in.Grace != "" {
		var d time.Duration
		d, e = duration("grace", in.Grace, true)
		grace = &d
	}
	if e != nil {
		s.fail(w, r, c, "token.rotate", tgt, e)
		return
	}
	rot, err := s.m.RotateToken(r.Context(), c.name, r.PathValue("id"), grace)
	var extra []slog.Attr
	if err == nil {
		extra = []slog.Attr{slog.String("replaced_by", rot.New.ID), slog.Time("old_expires", rot.Old.Expires)}
	}
	s.act(w, r, c, "token.rotate", tgt, err, func() {
		out := rotationJSON{tokenJSON: s.tokenOut(rot.New), Replaces: rot.Old.ID, OldExpires: rot.Old.Expires}
		out.Token = rot.Token
		writeJSON(w, http.StatusCreated, out)
	}, extra...)
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, c caller) {
	id := r.PathValue("id")
	err := s.m.RevokeToken(r.Context(), c.name, id)
	s.act(w, r, c, "token.revoke", target("token", id), err, func() { w.WriteHeader(http.StatusNoContent) })
}

// duration parses a Go duration from a request field: positive, or also
// zero when zeroOK.
func duration(field, v string, zeroOK bool) (time.Duration, *apiError) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || (d == 0 && !zeroOK) {
		want := "a positive duration such as \"720h\""
		if zeroOK {
			want = "a duration such as \"1h\" or \"0s\""
		}
		return 0, &apiError{http.StatusBadRequest, codeInvalidRequest, field + ": want " + want + "."}
	}
	return d, nil
}

// apiTokenJSON is a management token on the wire; Token is set once, in the
// answer to its creation.
type apiTokenJSON struct {
	Token   string    `json:"token,omitempty"`
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	Revoked bool      `json:"revoked"`
}

func (s *Server) createAPIToken(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("user")
	tok, rec, err := s.m.IssueAPIToken(r.Context(), name)
	tgt := target("user", name)
	if err == nil {
		tgt = target("management-token", rec.ID)
	}
	s.act(w, r, c, "management-token.create", tgt, err, func() {
		writeJSON(w, http.StatusCreated, apiTokenJSON{Token: tok, ID: rec.ID, User: rec.User, Created: rec.Created})
	}, slog.String("user", name))
}

func (s *Server) revokeAPIToken(w http.ResponseWriter, r *http.Request, c caller) {
	name, id := r.PathValue("user"), r.PathValue("id")
	err := s.m.RevokeAPIToken(r.Context(), name, id)
	s.act(w, r, c, "management-token.revoke", target("management-token", id), err, func() { w.WriteHeader(http.StatusNoContent) }, slog.String("user", name))
}

// meJSON is the answer to GET /v1/me: who the request acts for.
type meJSON struct {
	Name   string   `json:"name"`
	Role   string   `json:"role"`
	Groups []string `json:"groups"`
	// Actor is who authenticated: the admin, when an admin acts on the
	// user's behalf; else the user; for an OIDC token,
	// oidc:<issuer host>:<sub>.
	Actor string `json:"actor"`
}

func (s *Server) me(w http.ResponseWriter, r *http.Request, c caller) {
	if c.name == BootstrapUser && c.actor == BootstrapUser {
		writeJSON(w, http.StatusOK, meJSON{Name: BootstrapUser, Role: string(record.RoleAdmin), Groups: []string{}, Actor: c.auditName()})
		return
	}
	u, err := s.m.User(r.Context(), c.name)
	if err != nil {
		writeError(w, s.errorFor(r.Context(), "me", err))
		return
	}
	role := u.Role
	if c.name == c.actor && !c.admin {
		// The caller's own role as authenticated: an OIDC user-role
		// token acts as a user even for a user the store makes admin.
		role = record.RoleUser
	}
	writeJSON(w, http.StatusOK, meJSON{Name: u.Name, Role: string(role), Groups: nonNil(u.Groups), Actor: c.auditName()})
}
