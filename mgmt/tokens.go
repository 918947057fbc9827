package mgmt

import (
	"cmp"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
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
}

func (s *Server) tokenOut(t *record.Token) tokenJSON {
	out := tokenJSON{ID: t.ID, Name: t.Name, Group: t.Group, Created: t.Created, State: t.State(s.now()), Masked: maskToken(t), ReplacedBy: t.ReplacedBy}
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
	tokens, err := s.st.UserTokens(r.Context(), c.name)
	if err != nil {
		writeError(w, s.storeError(r.Context(), "token.list", err))
		return
	}
	slices.SortFunc(tokens, func(a, b *record.Token) int { return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID)) })
	out := make([]tokenJSON, 0, len(tokens))
	for _, t := range tokens {
		out = append(out, s.tokenOut(t))
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

// ownToken returns the caller's token, or a 404 for a token that is missing
// or someone else's: the two must look the same, so that ids of other
// users' tokens are not revealed.
func (s *Server) ownToken(r *http.Request, c caller, action string) (*record.Token, *apiError) {
	t, err := s.st.Token(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, record.ErrNotFound) || (err == nil && t.User != c.name):
		return nil, errNoSuchToken
	case err != nil:
		return nil, s.storeError(r.Context(), action, err)
	}
	return t, nil
}

var errNoSuchToken = &apiError{http.StatusNotFound, codeNotFound, "No such token."}

func (s *Server) getToken(w http.ResponseWriter, r *http.Request, c caller) {
	t, e := s.ownToken(r, c, "token.get")
	if e != nil {
		// Audited: a read of someone else's token is an isolation denial.
		s.fail(w, r, c, "token.get", target("token", r.PathValue("id")), e)
		return
	}
	writeJSON(w, http.StatusOK, s.tokenOut(t))
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, c caller) {
	var in tokenRequest
	if e := decode(r, &in); e != nil {
		s.fail(w, r, c, "token.create", target("group", in.Group), e)
		return
	}
	tgt := target("group", in.Group)
	ttl, e := duration("ttl", in.TTL, false)
	if e == nil {
		e = s.checkTokenName(r, c, in.Name)
	}
	if e != nil {
		s.fail(w, r, c, "token.create", tgt, e)
		return
	}
	tok, rec, err := manage.CreateToken(r.Context(), s.st, manage.TokenRequest{User: c.name, Group: in.Group, Name: in.Name, TTL: ttl}, s.now())
	if err != nil {
		e := s.classify(r.Context(), "token.create", err)
		if e.status == http.StatusNotFound {
			// A missing group (or a caller without a user record, such as
			// the bootstrap admin) is a bad request, not a missing route.
			e = &apiError{http.StatusBadRequest, codeInvalidRequest, "Cannot create the token: " + err.Error()}
		}
		s.fail(w, r, c, "token.create", tgt, e)
		return
	}
	s.done(r, c, "token.create", target("token", rec.ID))
	out := s.tokenOut(rec)
	out.Token = tok
	writeJSON(w, http.StatusCreated, out)
}

// checkTokenName wants a name for every token made through the API (one
// token per application or client, named after it), unique among the
// caller's tokens still in use, so that a listing tells them apart.
// Rotation keeps the name: the old token is no longer in use once replaced.
func (s *Server) checkTokenName(r *http.Request, c caller, name string) *apiError {
	if name == "" {
		return &apiError{http.StatusBadRequest, codeInvalidRequest, "name: say what the token is for (an application or client)."}
	}
	tokens, err := s.st.UserTokens(r.Context(), c.name)
	if err != nil {
		return s.storeError(r.Context(), "token.create", err)
	}
	now := s.now()
	for _, t := range tokens {
		if t.Name == name && t.State(now) == "active" {
			return &apiError{http.StatusConflict, codeConflict, "You already have an active token named " + name + " (" + t.ID + "); rotate or revoke it, or pick another name."}
		}
	}
	return nil
}

func (s *Server) rotateToken(w http.ResponseWriter, r *http.Request, c caller) {
	tgt := target("token", r.PathValue("id"))
	var in rotateRequest
	if r.ContentLength != 0 {
		if e := decode(r, &in); e != nil {
			s.fail(w, r, c, "token.rotate", tgt, e)
			return
		}
	}
	grace := s.grace
	if in.Grace != "" {
		d, e := duration("grace", in.Grace, true)
		if e != nil {
			s.fail(w, r, c, "token.rotate", tgt, e)
			return
		}
		grace = d
	}
	t, e := s.ownToken(r, c, "token.rotate")
	if e != nil {
		s.fail(w, r, c, "token.rotate", tgt, e)
		return
	}
	rot, err := manage.RotateToken(r.Context(), s.st, t.ID, grace, s.now())
	if err != nil {
		s.fail(w, r, c, "token.rotate", tgt, s.classify(r.Context(), "token.rotate", err))
		return
	}
	s.done(r, c, "token.rotate", tgt, slog.String("replaced_by", rot.New.ID), slog.Time("old_expires", rot.Old.Expires))
	out := rotationJSON{tokenJSON: s.tokenOut(rot.New), Replaces: rot.Old.ID, OldExpires: rot.Old.Expires}
	out.Token = rot.Token
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, c caller) {
	tgt := target("token", r.PathValue("id"))
	t, e := s.ownToken(r, c, "token.revoke")
	if e != nil {
		s.fail(w, r, c, "token.revoke", tgt, e)
		return
	}
	if err := manage.RevokeToken(r.Context(), s.st, t.ID); err != nil {
		s.fail(w, r, c, "token.revoke", tgt, s.classify(r.Context(), "token.revoke", err))
		return
	}
	s.done(r, c, "token.revoke", tgt)
	w.WriteHeader(http.StatusNoContent)
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
