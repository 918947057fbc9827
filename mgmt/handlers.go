package mgmt

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// userJSON is a user on the wire.
type userJSON struct {
	Name     string   `json:"name"`
	Role     string   `json:"role"`
	Disabled bool     `json:"disabled"`
	Groups   []string `json:"groups"`
}

func userOut(u *record.User) userJSON {
	return userJSON{Name: u.Name, Role: string(u.Role), Disabled: u.Disabled, Groups: nonNil(u.Groups)}
}

// userPatch is the body of PUT /v1/users/{name}: absent fields are kept.
type userPatch struct {
	Role     *string   `json:"role"`
	Disabled *bool     `json:"disabled"`
	Groups   *[]string `json:"groups"`
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, _ caller) {
	users, err := s.st.Users(r.Context())
	if err != nil {
		writeError(w, s.storeError(r.Context(), "user.list", err))
		return
	}
	slices.SortFunc(users, func(a, b *record.User) int { return strings.Compare(a.Name, b.Name) })
	out := make([]userJSON, 0, len(users))
	for _, u := range users {
		out = append(out, userOut(u))
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": out})
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request, _ caller) {
	u, err := s.st.User(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, s.classify(r.Context(), "user.get", err))
		return
	}
	writeJSON(w, http.StatusOK, userOut(u))
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request, c caller) {
	var in userJSON
	if e := decode(r, &in); e != nil {
		s.fail(w, r, c, "user.create", target("user", in.Name), e)
		return
	}
	tgt := target("user", in.Name)
	if in.Role == "" {
		in.Role = string(record.RoleUser)
	}
	u := &record.User{Name: in.Name, Role: record.Role(in.Role), Disabled: in.Disabled, Groups: in.Groups}
	if err := manage.ValidateUser(u); err != nil {
		s.fail(w, r, c, "user.create", tgt, s.classify(r.Context(), "user.create", err))
		return
	}
	switch _, err := s.st.User(r.Context(), u.Name); {
	case err == nil:
		s.fail(w, r, c, "user.create", tgt, &apiError{http.StatusConflict, codeConflict, "User " + u.Name + " exists; use PUT to change it."})
		return
	case !errors.Is(err, record.ErrNotFound):
		s.fail(w, r, c, "user.create", tgt, s.storeError(r.Context(), "user.create", err))
		return
	}
	if err := s.st.PutUser(r.Context(), u); err != nil {
		s.fail(w, r, c, "user.create", tgt, s.storeError(r.Context(), "user.create", err))
		return
	}
	s.done(r, c, "user.create", tgt)
	writeJSON(w, http.StatusCreated, userOut(u))
}

func (s *Server) putUser(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("name")
	tgt := target("user", name)
	var in userPatch
	if e := decode(r, &in); e != nil {
		s.fail(w, r, c, "user.update", tgt, e)
		return
	}
	old, err := s.st.User(r.Context(), name)
	if err != nil {
		s.fail(w, r, c, "user.update", tgt, s.classify(r.Context(), "user.update", err))
		return
	}
	u := *old // records are immutable: change a copy
	if in.Role != nil {
		u.Role = record.Role(*in.Role)
	}
	if in.Disabled != nil {
		u.Disabled = *in.Disabled
	}
	if in.Groups != nil {
		u.Groups = *in.Groups
	}
	if err := manage.ValidateUser(&u); err != nil {
		s.fail(w, r, c, "user.update", tgt, s.classify(r.Context(), "user.update", err))
		return
	}
	if err := s.st.PutUser(r.Context(), &u); err != nil {
		s.fail(w, r, c, "user.update", tgt, s.storeError(r.Context(), "user.update", err))
		return
	}
	s.done(r, c, "user.update", tgt)
	writeJSON(w, http.StatusOK, userOut(&u))
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("name")
	if err := s.st.DeleteUser(r.Context(), name); err != nil {
		s.fail(w, r, c, "user.delete", target("user", name), s.classify(r.Context(), "user.delete", err))
		return
	}
	s.done(r, c, "user.delete", target("user", name))
	w.WriteHeader(http.StatusNoContent)
}

// groupJSON is a group on the wire.
type groupJSON struct {
	Name              string   `json:"name"`
	Disabled          bool     `json:"disabled"`
	Providers         []string `json:"providers"`
	Models            []string `json:"models"`
	DisableCustomKeys bool     `json:"disable_custom_keys"`
}

func groupOut(g *record.Group) groupJSON {
	return groupJSON{Name: g.Name, Disabled: g.Disabled, Providers: nonNil(g.Providers), Models: nonNil(g.Models), DisableCustomKeys: g.DisableCustomKeys}
}

// groupPatch is the body of PUT /v1/groups/{name}: absent fields are kept.
type groupPatch struct {
	Disabled          *bool     `json:"disabled"`
	Providers         *[]string `json:"providers"`
	Models            *[]string `json:"models"`
	DisableCustomKeys *bool     `json:"disable_custom_keys"`
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request, _ caller) {
	groups, err := s.st.Groups(r.Context())
	if err != nil {
		writeError(w, s.storeError(r.Context(), "group.list", err))
		return
	}
	slices.SortFunc(groups, func(a, b *record.Group) int { return strings.Compare(a.Name, b.Name) })
	out := make([]groupJSON, 0, len(groups))
	for _, g := range groups {
		out = append(out, groupOut(g))
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": out})
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request, _ caller) {
	g, err := s.st.Group(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, s.classify(r.Context(), "group.get", err))
		return
	}
	writeJSON(w, http.StatusOK, groupOut(g))
}

func (s *Server) createGroup(w http.ResponseWriter, r *http.Request, c caller) {
	var in groupJSON
	if e := decode(r, &in); e != nil {
		s.fail(w, r, c, "group.create", target("group", in.Name), e)
		return
	}
	tgt := target("group", in.Name)
	g := &record.Group{Name: in.Name, Disabled: in.Disabled, Providers: in.Providers, Models: in.Models, DisableCustomKeys: in.DisableCustomKeys}
	if err := manage.ValidateGroup(g); err != nil {
		s.fail(w, r, c, "group.create", tgt, s.classify(r.Context(), "group.create", err))
		return
	}
	switch _, err := s.st.Group(r.Context(), g.Name); {
	case err == nil:
		s.fail(w, r, c, "group.create", tgt, &apiError{http.StatusConflict, codeConflict, "Group " + g.Name + " exists; use PUT to change it."})
		return
	case !errors.Is(err, record.ErrNotFound):
		s.fail(w, r, c, "group.create", tgt, s.storeError(r.Context(), "group.create", err))
		return
	}
	if err := s.st.PutGroup(r.Context(), g); err != nil {
		s.fail(w, r, c, "group.create", tgt, s.storeError(r.Context(), "group.create", err))
		return
	}
	s.done(r, c, "group.create", tgt)
	writeJSON(w, http.StatusCreated, groupOut(g))
}

func (s *Server) putGroup(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("name")
	tgt := target("group", name)
	var in groupPatch
	if e := decode(r, &in); e != nil {
		s.fail(w, r, c, "group.update", tgt, e)
		return
	}
	old, err := s.st.Group(r.Context(), name)
	if err != nil {
		s.fail(w, r, c, "group.update", tgt, s.classify(r.Context(), "group.update", err))
		return
	}
	g := *old
	if in.Disabled != nil {
		g.Disabled = *in.Disabled
	}
	if in.Providers != nil {
		g.Providers = *in.Providers
	}
	if in.Models != nil {
		g.Models = *in.Models
	}
	if in.DisableCustomKeys != nil {
		g.DisableCustomKeys = *in.DisableCustomKeys
	}
	if err := manage.ValidateGroup(&g); err != nil {
		s.fail(w, r, c, "group.update", tgt, s.classify(r.Context(), "group.update", err))
		return
	}
	if err := s.st.PutGroup(r.Context(), &g); err != nil {
		s.fail(w, r, c, "group.update", tgt, s.storeError(r.Context(), "group.update", err))
		return
	}
	s.done(r, c, "group.update", tgt)
	writeJSON(w, http.StatusOK, groupOut(&g))
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("name")
	if err := s.st.DeleteGroup(r.Context(), name); err != nil {
		s.fail(w, r, c, "group.delete", target("group", name), s.classify(r.Context(), "group.delete", err))
		return
	}
	s.done(r, c, "group.delete", target("group", name))
	w.WriteHeader(http.StatusNoContent)
}

// tokenJSON is an LLM token on the wire. Token is set once, in the answer
// to its creation; lists show Masked only.
type tokenJSON struct {
	Token   string     `json:"token,omitempty"`
	ID      string     `json:"id"`
	Name    string     `json:"name"`
	Group   string     `json:"group"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires"`
	State   string     `json:"state"`
	Masked  string     `json:"masked"`
}

func (s *Server) tokenOut(t *record.Token) tokenJSON {
	out := tokenJSON{ID: t.ID, Name: t.Name, Group: t.Group, Created: t.Created, State: t.State(s.now()), Masked: mask(t.ID)}
	if !t.Expires.IsZero() {
		e := t.Expires
		out.Expires = &e
	}
	return out
}

// mask is how a token is shown after its creation. The store keeps only
// the secret's hash, not the token's last characters, so the mask is the
// token's public start: prefix and id.
func mask(id string) string { return token.Prefix + id + "…" }

// tokenRequest is the body of POST /v1/tokens.
type tokenRequest struct {
	Group string `json:"group"`
	Name  string `json:"name"`
	// TTL is a Go duration ("720h"); empty for a token that does not expire.
	TTL string `json:"ttl"`
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, c caller) {
	tokens, err := s.st.Tokens(r.Context())
	if err != nil {
		writeError(w, s.storeError(r.Context(), "token.list", err))
		return
	}
	slices.SortFunc(tokens, func(a, b *record.Token) int { return a.Created.Compare(b.Created) })
	out := []tokenJSON{}
	for _, t := range tokens {
		if t.User == c.name {
			out = append(out, s.tokenOut(t))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

// ownToken returns the caller's token id, or a 404 for a token that is
// missing or someone else's: the two must look the same, so that ids of
// other users' tokens are not revealed.
func (s *Server) ownToken(r *http.Request, c caller, action string) (*record.Token, *apiError) {
	t, err := s.st.Token(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, record.ErrNotFound) || (err == nil && t.User != c.name):
		return nil, &apiError{http.StatusNotFound, codeNotFound, "No such token."}
	case err != nil:
		return nil, s.storeError(r.Context(), action, err)
	}
	return t, nil
}

func (s *Server) getToken(w http.ResponseWriter, r *http.Request, c caller) {
	t, e := s.ownToken(r, c, "token.get")
	if e != nil {
		writeError(w, e)
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
	var ttl time.Duration
	if in.TTL != "" {
		d, err := time.ParseDuration(in.TTL)
		if err != nil || d <= 0 {
			s.fail(w, r, c, "token.create", tgt, &apiError{http.StatusBadRequest, codeInvalidRequest, "ttl: want a positive duration such as \"720h\", or none for no expiry."})
			return
		}
		ttl = d
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
	s.audit(r.Context(), c.name, "token.create", target("token", rec.ID), "ok")
	out := s.tokenOut(rec)
	out.Token = tok
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

func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

// target names what a change acts on for the audit log. The names come
// from the request: one that is not a valid name or id is not logged, in
// case someone pasted a secret into the path.
func target(kind, name string) string {
	ok := record.ValidateName(kind, name) == nil
	if kind == "token" {
		ok = token.ValidID(name)
	}
	if !ok {
		return kind + "/(invalid name)"
	}
	return kind + "/" + name
}
