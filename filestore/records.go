package filestore

import (
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
	td := &TokenData{User: t.User, Group: t.Group, Name: t.Name, Hash: HashString(t.Hash), Created: t.Created.UTC(), Revoked: t.Revoked, Last4: t.Last4, ReplacedBy: t.ReplacedBy}
	if !t.Expires.IsZero() {
		e := t.Expires.UTC()
		td.Expires = &e
	}
	return td
}

func (t *TokenData) record(id string) (*record.Token, error) {
	rt := &record.Token{ID: id, User: t.User, Group: t.Group, Name: t.Name, Created: t.Created, Revoked: t.Revoked, Last4: t.Last4, ReplacedBy: t.ReplacedBy}
	if t.Expires != nil {
		rt.Expires = *t.Expires
	}
	var ok bool
	if rt.Hash, ok = record.ParseHash(t.Hash); !ok {
		return nil, fmt.Errorf("token %s: hash: must be 64 hex digits (SHA-256)", id)
	}
	return rt, nil
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
