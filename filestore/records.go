package filestore

import (
	"context"
	"fmt"

	"github.com/keyward/keyward/record"
)

// Conversions between the records and their file forms. A file form that
// cannot become a record (a bad hash) is an error naming the record.

func userData(u *record.User) *UserData {
	return &UserData{Role: u.Role, Disabled: u.Disabled, Groups: u.Groups}
}

func (u *UserData) record(name string) *record.User {
	if u == nil {
		u = &UserData{}
	}
	role := u.Role
	if role == "" {
		role = record.RoleUser
	}
	return &record.User{Name: name, Role: role, Disabled: u.Disabled, Groups: u.Groups}
}

func groupData(g *record.Group) *GroupData {
	return &GroupData{Disabled: g.Disabled, Providers: g.Providers, Models: g.Models, DisableCustomKeys: g.DisableCustomKeys, RequestsPerMinute: g.RequestsPerMinute}
}

func (g *GroupData) record(name string) *record.Group {
	if g == nil {
		g = &GroupData{}
	}
	return &record.Group{Name: name, Disabled: g.Disabled, Providers: g.Providers, Models: g.Models, DisableCustomKeys: g.DisableCustomKeys, RequestsPerMinute: g.RequestsPerMinute}
}

func tokenData(t *record.Token) *TokenData {
	td := &TokenData{User: t.User, Group: t.Group, Name: t.Name, Hash: HashString(t.Hash), Created: t.Created.UTC(), Revoked: t.Revoked, Last4: t.Last4, ReplacedBy: t.ReplacedBy, Principal: t.Principal}
	if !t.Expires.IsZero() {
		e := t.Expires.UTC()
		td.Expires = &e
	}
	return td
}

func (t *TokenData) record(id string) (*record.Token, error) {
	rt := &record.Token{ID: id, User: t.User, Group: t.Group, Name: t.Name, Created: t.Created, Revoked: t.Revoked, Last4: t.Last4, ReplacedBy: t.ReplacedBy, Principal: t.Principal}
	if t.Expires != nil {
		rt.Expires = *t.Expires
	}
	var ok bool
	if rt.Hash, ok = record.ParseHash(t.Hash); !ok {
		return nil, fmt.Errorf("token %s: hash: must be 64 hex digits (SHA-256)", id)
	}
	return rt, nil
}

func identityData(i *record.Identity) *IdentityData {
	return &IdentityData{Principal: i.Principal, User: i.User, Group: i.Group, Disabled: i.Disabled, Created: i.Created.UTC(), Updated: i.Updated.UTC()}
}

func (i *IdentityData) record(name string) *record.Identity {
	if i == nil {
		i = &IdentityData{}
	}
	return &record.Identity{Name: name, Principal: i.Principal, User: i.User, Group: i.Group, Disabled: i.Disabled, Created: i.Created, Updated: i.Updated}
}

func apiTokenDataOf(t *record.APIToken) *apiTokenData {
	return &apiTokenData{User: t.User, Hash: HashString(t.Hash), Created: t.Created.UTC(), Revoked: t.Revoked}
}

func (t *apiTokenData) record(id string) (*record.APIToken, error) {
	rt := &record.APIToken{ID: id, User: t.User, Created: t.Created, Revoked: t.Revoked}
	var ok bool
	if rt.Hash, ok = record.ParseHash(t.Hash); !ok {
		return nil, fmt.Errorf("API token %s: hash: must be 64 hex digits (SHA-256)", id)
	}
	return rt, nil
}

// named is a kind of record the store file holds by name (users, groups):
// what its writes need to check, convert and find it.
type named[V, R any] struct {
	kind     nameKind
	entries  func(*Data) *map[string]*V
	nameOf   func(*R) string
	toData   func(*R) *V
	toRecord func(*V, string) *R
	// check checks the names a record holds (see names.go).
	check func(*R) error
}

var (
	userRecords = named[UserData, record.User]{
		kind:     userName,
		entries:  func(d *Data) *map[string]*UserData { return &d.Users },
		nameOf:   func(u *record.User) string { return u.Name },
		toData:   userData,
		toRecord: (*UserData).record,
		check:    checkUser,
	}
	groupRecords = named[GroupData, record.Group]{
		kind:     groupName,
		entries:  func(d *Data) *map[string]*GroupData { return &d.Groups },
		nameOf:   func(g *record.Group) string { return g.Name },
		toData:   groupData,
		toRecord: (*GroupData).record,
		check:    checkGroup,
	}
)

// put creates or replaces r.
func (n named[V, R]) put(ctx context.Context, s *Store, r *R) error {
	if err := n.check(r); err != nil {
		return err
	}
	return s.Update(ctx, func(d *Data) error {
		setEntry(n.entries(d), n.nameOf(r), n.toData(r))
		return nil
	})
}

// create stores r unless a record of its name exists (record.ErrExists).
func (n named[V, R]) create(ctx context.Context, s *Store, r *R) error {
	if err := n.check(r); err != nil {
		return err
	}
	return s.Update(ctx, func(d *Data) error { return createEntry(n.entries(d), n.kind.String(), n.nameOf(r), n.toData(r)) })
}

// update applies change to the stored record of name and stores the
// result.
func (n named[V, R]) update(ctx context.Context, s *Store, name string, change func(*R) error) (*R, error) {
	if err := n.kind.check(name); err != nil {
		return nil, unreadable(err)
	}
	var out *R
	err := s.Update(ctx, func(d *Data) (err error) {
		out, err = updateEntry(*n.entries(d), n.kind.String(), name, n.toRecord, n.toData, n.check, change)
		return err
	})
	return out, err
}
