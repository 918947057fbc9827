package mgmt

import (
	"context"
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
	list(s, w, r, "user.list", "users", s.st.Users, func(u *record.User) string { return u.Name }, userOut)
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request, _ caller) {
	get(s, w, r, "user.get", s.st.User, userOut)
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
	// RequestsPerMinute is the per-token rate limit; 0 for none.
	RequestsPerMinute int `json:"requests_per_minute"`
}

func groupOut(g *record.Group) groupJSON {
	return groupJSON{Name: g.Name, Disabled: g.Disabled, Providers: nonNil(g.Providers), Models: nonNil(g.Models), DisableCustomKeys: g.DisableCustomKeys, RequestsPerMinute: g.RequestsPerMinute}
}

// groupPatch is the body of PUT /v1/groups/{name}: absent fields are kept.
type groupPatch struct {
	Disabled          *bool     `json:"disabled"`
	Providers         *[]string `json:"providers"`
	Models            *[]string `json:"models"`
	DisableCustomKeys *bool     `json:"disable_custom_keys"`
	RequestsPerMinute *int      `json:"requests_per_minute"`
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request, _ caller) {
	list(s, w, r, "group.list", "groups", s.st.Groups, func(g *record.Group) string { return g.Name }, groupOut)
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request, _ caller) {
	get(s, w, r, "group.get", s.st.Group, groupOut)
}

func (s *Server) createGroup(w http.ResponseWriter, r *http.Request, c caller) {
	var in groupJSON
	if e := decode(r, &in); e != nil {
		s.fail(w, r, c, "group.create", target("group", in.Name), e)
		return
	}
	tgt := target("group", in.Name)
	g := &record.Group{Name: in.Name, Disabled: in.Disabled, Providers: in.Providers, Models: in.Models, DisableCustomKeys: in.DisableCustomKeys, RequestsPerMinute: in.RequestsPerMinute}
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
	if in.RequestsPerMinute != nil {
		g.RequestsPerMinute = *in.RequestsPerMinute
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
	var ok bool
	switch kind {
	case "token", "management-token":
		ok = token.ValidID(name)
	case "credential":
		ok = record.ValidCredentialID(name)
	default:
		ok = record.ValidateName(kind, name) == nil
	}
	if !ok {
		return kind + "/(invalid name)"
	}
	return kind + "/" + name
}

// providerJSON is a provider as admins see it: names and key ids, never a
// key.
type providerJSON struct {
	Name   string   `json:"name"`
	Kind   string   `json:"kind"`
	KeyIDs []string `json:"key_ids"`
}

func providerOut(p *record.Provider) providerJSON {
	out := providerJSON{Name: p.Name, Kind: string(p.Kind), KeyIDs: make([]string, 0, len(p.Keys))}
	for _, k := range p.Keys {
		out.KeyIDs = append(out.KeyIDs, k.ID)
	}
	return out
}

func (s *Server) listProviders(w http.ResponseWriter, r *http.Request, _ caller) {
	list(s, w, r, "provider.list", "providers", s.st.Providers, func(p *record.Provider) string { return p.Name }, providerOut)
}

func (s *Server) getProvider(w http.ResponseWriter, r *http.Request, _ caller) {
	get(s, w, r, "provider.get", s.st.Provider, providerOut)
}

// list answers an admin list route: every record load returns, by name,
// under key.
func list[R, J any](s *Server, w http.ResponseWriter, r *http.Request, action, key string, load func(context.Context) ([]*R, error), name func(*R) string, show func(*R) J) {
	recs, err := load(r.Context())
	if err != nil {
		writeError(w, s.storeError(r.Context(), action, err))
		return
	}
	slices.SortFunc(recs, func(a, b *R) int { return strings.Compare(name(a), name(b)) })
	out := make([]J, 0, len(recs))
	for _, rec := range recs {
		out = append(out, show(rec))
	}
	writeJSON(w, http.StatusOK, map[string]any{key: out})
}

// get answers an admin read route: the record named in the path.
func get[R, J any](s *Server, w http.ResponseWriter, r *http.Request, action string, load func(context.Context, string) (*R, error), show func(*R) J) {
	rec, err := load(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, s.classify(r.Context(), action, err))
		return
	}
	writeJSON(w, http.StatusOK, show(rec))
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
	name := r.PathValue("name")
	tok, rec, err := IssueAPIToken(r.Context(), s.st, name, s.now())
	if err != nil {
		s.fail(w, r, c, "management-token.create", target("user", name), s.classify(r.Context(), "management-token.create", err))
		return
	}
	s.done(r, c, "management-token.create", target("management-token", rec.ID), slog.String("user", name))
	writeJSON(w, http.StatusCreated, apiTokenJSON{Token: tok, ID: rec.ID, User: rec.User, Created: rec.Created})
}

func (s *Server) revokeAPIToken(w http.ResponseWriter, r *http.Request, c caller) {
	name, id := r.PathValue("name"), r.PathValue("id")
	tgt := target("management-token", id)
	t, err := s.st.APIToken(r.Context(), id)
	if err == nil && t.User != name {
		err = record.ErrNotFound // another user's token: not found under this user
	}
	if err != nil {
		s.fail(w, r, c, "management-token.revoke", tgt, s.classify(r.Context(), "management-token.revoke", err))
		return
	}
	if !t.Revoked {
		revoked := *t
		revoked.Revoked = true
		if err := s.st.PutAPIToken(r.Context(), &revoked); err != nil {
			s.fail(w, r, c, "management-token.revoke", tgt, s.storeError(r.Context(), "management-token.revoke", err))
			return
		}
	}
	s.done(r, c, "management-token.revoke", tgt, slog.String("user", name))
	w.WriteHeader(http.StatusNoContent)
}

// meJSON is the answer to GET /v1/me: who the request acts for.
type meJSON struct {
	Name   string   `json:"name"`
	Role   string   `json:"role"`
	Groups []string `json:"groups"`
	// Actor is who authenticated: the admin, when an admin acts on the
	// user's behalf; else the user.
	Actor string `json:"actor"`
}

func (s *Server) me(w http.ResponseWriter, r *http.Request, c caller) {
	if c.name == BootstrapUser && c.actor == BootstrapUser {
		writeJSON(w, http.StatusOK, meJSON{Name: BootstrapUser, Role: string(record.RoleAdmin), Groups: []string{}, Actor: c.actor})
		return
	}
	u, err := s.st.User(r.Context(), c.name)
	if err != nil {
		writeError(w, s.classify(r.Context(), "me", err))
		return
	}
	writeJSON(w, http.StatusOK, meJSON{Name: u.Name, Role: string(u.Role), Groups: nonNil(u.Groups), Actor: c.actor})
}
