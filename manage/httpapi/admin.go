package httpapi

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
)

// resource is an admin collection of named records (users, groups,
// providers): its routes are one set of handlers over its functions. R is
// the record, J its wire form, P the body of an update.
type resource[R, J, P any] struct {
	s *Server
	// kind names the records in audit events ("user").
	kind string
	all  func(context.Context) ([]*R, error)
	one  func(context.Context, string) (*R, error)
	show func(*R) J
	// add, name, change and remove are nil for a read-only collection.
	add    func(context.Context, J) (*R, error)
	name   func(J) string
	change func(context.Context, string, P) (*R, error)
	remove func(context.Context, string) error
}

func (rs *resource[R, J, P]) list(w http.ResponseWriter, r *http.Request, _ caller) {
	recs, err := rs.all(r.Context())
	if err != nil {
		writeError(w, rs.s.errorFor(r.Context(), rs.kind+".list", err))
		return
	}
	out := make([]J, 0, len(recs))
	for _, rec := range recs {
		out = append(out, rs.show(rec))
	}
	writeJSON(w, http.StatusOK, map[string]any{plural(rs.kind): out})
}

func (rs *resource[R, J, P]) get(w http.ResponseWriter, r *http.Request, _ caller) {
	rec, err := rs.one(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, rs.s.errorFor(r.Context(), rs.kind+".get", err))
		return
	}
	writeJSON(w, http.StatusOK, rs.show(rec))
}

func (rs *resource[R, J, P]) create(w http.ResponseWriter, r *http.Request, c caller) {
	var in J
	e := decode(r.Body, &in)
	tgt := target(rs.kind, rs.name(in))
	if e != nil {
		rs.s.fail(w, r, c, rs.kind+".create", tgt, e)
		return
	}
	rec, err := rs.add(r.Context(), in)
	rs.s.act(w, r, c, rs.kind+".create", tgt, err, func() { writeJSON(w, http.StatusCreated, rs.show(rec)) })
}

func (rs *resource[R, J, P]) update(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("name")
	tgt := target(rs.kind, name)
	var in P
	if e := decode(r.Body, &in); e != nil {
		rs.s.fail(w, r, c, rs.kind+".update", tgt, e)
		return
	}
	rec, err := rs.change(r.Context(), name, in)
	rs.s.act(w, r, c, rs.kind+".update", tgt, err, func() { writeJSON(w, http.StatusOK, rs.show(rec)) })
}

func (rs *resource[R, J, P]) delete(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("name")
	err := rs.remove(r.Context(), name)
	rs.s.act(w, r, c, rs.kind+".delete", target(rs.kind, name), err, func() { w.WriteHeader(http.StatusNoContent) })
}

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
	Role     *record.Role `json:"role"`
	Disabled *bool        `json:"disabled"`
	Groups   *[]string    `json:"groups"`
}

func (s *Server) users() *resource[record.User, userJSON, userPatch] {
	return &resource[record.User, userJSON, userPatch]{
		s: s, kind: "user", all: s.m.Users, one: s.m.User, show: userOut,
		add: func(ctx context.Context, in userJSON) (*record.User, error) {
			return s.m.CreateUser(ctx, record.User{Name: in.Name, Role: record.Role(in.Role), Disabled: in.Disabled, Groups: in.Groups})
		},
		name: func(in userJSON) string { return in.Name },
		change: func(ctx context.Context, name string, in userPatch) (*record.User, error) {
			return s.m.UpdateUser(ctx, name, manage.UserPatch(in))
		},
		remove: s.m.DeleteUser,
	}
}

// groupJSON is a group on the wire.
type groupJSON struct {
	Name              string   `json:"name"`
	Disabled          bool     `json:"disabled"`
	Providers         []string `json:"providers"`
	Models            []string `json:"models"`
	DisableCustomKeys bool     `json:"disable_custom_keys"`
	// RequestsPerMinute is the rate limit of each of the group's users;
	// 0 for none.
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

func (s *Server) groups() *resource[record.Group, groupJSON, groupPatch] {
	return &resource[record.Group, groupJSON, groupPatch]{
		s: s, kind: "group", all: s.m.Groups, one: s.m.Group, show: groupOut,
		add: func(ctx context.Context, in groupJSON) (*record.Group, error) {
			return s.m.CreateGroup(ctx, record.Group(in))
		},
		name: func(in groupJSON) string { return in.Name },
		change: func(ctx context.Context, name string, in groupPatch) (*record.Group, error) {
			return s.m.UpdateGroup(ctx, name, manage.GroupPatch(in))
		},
		remove: s.m.DeleteGroup,
	}
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

func (s *Server) providers() *resource[record.Provider, providerJSON, struct{}] {
	return &resource[record.Provider, providerJSON, struct{}]{s: s, kind: "provider", all: s.m.Providers, one: s.m.Provider, show: providerOut}
}

func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

// identityJSON is a principal mapping on the wire.
type identityJSON struct {
	Name      string    `json:"name"`
	Principal string    `json:"principal"`
	User      string    `json:"user"`
	Group     string    `json:"group"`
	Disabled  bool      `json:"disabled"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

func identityOut(id *record.Identity) identityJSON {
	return identityJSON{Name: id.Name, Principal: id.Principal, User: id.User, Group: id.Group, Disabled: id.Disabled, Created: id.Created, Updated: id.Updated}
}

// identityPatch is the body of PUT /v1/identities/{name}: a mapping is
// only enabled or disabled; to map another principal, user or group,
// delete it and create another.
type identityPatch struct {
	Disabled *bool `json:"disabled"`
}

func (s *Server) identities() *resource[record.Identity, identityJSON, identityPatch] {
	return &resource[record.Identity, identityJSON, identityPatch]{
		s: s, kind: "identity", all: s.m.Identities, one: s.m.Identity, show: identityOut,
		add: func(ctx context.Context, in identityJSON) (*record.Identity, error) {
			return s.m.CreateIdentity(ctx, manage.IdentityRequest{Name: in.Name, Principal: in.Principal, User: in.User, Group: in.Group, Disabled: in.Disabled})
		},
		name: func(in identityJSON) string { return in.Name },
		change: func(ctx context.Context, name string, in identityPatch) (*record.Identity, error) {
			if in.Disabled == nil {
				return s.m.Identity(ctx, name)
			}
			return s.m.SetIdentityDisabled(ctx, name, *in.Disabled)
		},
		remove: s.m.DeleteIdentity,
	}
}

// plural names a list of kind in a listing's answer ("users",
// "identities").
func plural(kind string) string {
	if stem, ok := strings.CutSuffix(kind, "y"); ok {
		return stem + "ies"
	}
	return kind + "s"
}
