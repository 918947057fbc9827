package filestore

import (
	"cmp"
	"context"
	"fmt"

	"github.com/keyward/keyward/record"
)

// The checked writes of package manage: each runs its check and its write
// in one Update, under the file lock, so that no other writer (another
// command, another process) comes between them.

// CreateUser stores u unless a user of that name exists
// (record.ErrExists).
func (s *Store) CreateUser(ctx context.Context, u *record.User) error {
	return userRecords.create(ctx, s, u)
}

// UpdateUser applies change to the stored user and stores the result.
func (s *Store) UpdateUser(ctx context.Context, name string, change func(*record.User) error) (*record.User, error) {
	return userRecords.update(ctx, s, name, change)
}

// CreateGroup stores g unless a group of that name exists
// (record.ErrExists).
func (s *Store) CreateGroup(ctx context.Context, g *record.Group) error {
	return groupRecords.create(ctx, s, g)
}

// UpdateGroup applies change to the stored group and stores the result.
func (s *Store) UpdateGroup(ctx context.Context, name string, change func(*record.Group) error) (*record.Group, error) {
	return groupRecords.update(ctx, s, name, change)
}

func createEntry[V any](m *map[string]*V, kind, name string, v *V) error {
	if _, ok := (*m)[name]; ok {
		return fmt.Errorf("%s %q: %w", kind, name, record.ErrExists)
	}
	setEntry(m, name, v)
	return nil
}

// updateEntry changes the record m holds under name: made into a record,
// changed, and stored back (under its own name, whatever change did).
func updateEntry[V, R any](m map[string]*V, kind, name string, toRecord func(*V, string) *R, fromRecord func(*R) *V, check, change func(*R) error) (*R, error) {
	v, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("%s %q: %w", kind, name, record.ErrNotFound)
	}
	r := toRecord(v, name)
	if err := cmp.Or(change(r), check(r)); err != nil {
		return nil, err
	}
	m[name] = fromRecord(r)
	return toRecord(m[name], name), nil
}

// owner returns the user record of name from d, or record.ErrNotFound.
func (d *Data) owner(name string) (*record.User, error) {
	u, ok := d.Users[name]
	if !ok {
		return nil, fmt.Errorf("user %q: %w", name, record.ErrNotFound)
	}
	return u.record(name), nil
}

// CreateToken stores the new token t once check has accepted its owner and
// the tokens the owner holds.
func (s *Store) CreateToken(ctx context.Context, t *record.Token, check func(*record.User, []*record.Token) error) error {
	if err := checkTokenNames(t); err != nil {
		return err
	}
	return s.Update(ctx, func(d *Data) error {
		u, err := d.owner(t.User)
		if err != nil {
			return err
		}
		owned, err := d.Tokens.Owned(t.User)
		if err != nil {
			return err
		}
		if err := check(u, owned); err != nil {
			return err
		}
		if _, ok := d.Tokens.Get(t.ID); ok {
			return fmt.Errorf("token %q: %w", t.ID, record.ErrExists)
		}
		d.Tokens.Set(t.ID, *tokenData(t))
		return nil
	})
}

// UpdateToken applies change to the stored token and stores the result.
func (s *Store) UpdateToken(ctx context.Context, id string, change func(*record.Token) error) (*record.Token, error) {
	if err := tokenID.check(id); err != nil {
		return nil, unreadable(err)
	}
	var out *record.Token
	err := s.Update(ctx, func(d *Data) error {
		td, ok := d.Tokens.Get(id)
		if !ok {
			return fmt.Errorf("token %q: %w", id, record.ErrNotFound)
		}
		t, err := td.record(id)
		if err != nil {
			return err
		}
		if err := change(t); err != nil {
			return err
		}
		t.ID = id
		if err := checkTokenNames(t); err != nil {
			return err
		}
		d.Tokens.Set(id, *tokenData(t))
		out = t
		return nil
	})
	return out, err
}

// CreateAPIToken stores the new management token t once check has
// accepted its owner.
func (s *Store) CreateAPIToken(ctx context.Context, t *record.APIToken, check func(*record.User) error) error {
	if err := checkAPIToken(t); err != nil {
		return fmt.Errorf("API token: %w", err)
	}
	return s.Update(ctx, func(d *Data) error {
		u, err := d.owner(t.User)
		if err != nil {
			return err
		}
		if err := check(u); err != nil {
			return err
		}
		return createEntry(&d.apiTokens, "API token", t.ID, apiTokenDataOf(t))
	})
}

// UpdateAPIToken applies change to the stored management token.
func (s *Store) UpdateAPIToken(ctx context.Context, id string, change func(*record.APIToken) error) (*record.APIToken, error) {
	if err := tokenID.check(id); err != nil {
		return nil, unreadable(err)
	}
	var out *record.APIToken
	err := s.Update(ctx, func(d *Data) error {
		td, ok := d.apiTokens[id]
		if !ok || td == nil {
			return fmt.Errorf("API token %q: %w", id, record.ErrNotFound)
		}
		t, err := td.record(id)
		if err != nil {
			return err
		}
		if err := change(t); err != nil {
			return err
		}
		t.ID = id
		if err := checkAPIToken(t); err != nil {
			return err
		}
		d.apiTokens[id], out = apiTokenDataOf(t), t
		return nil
	})
	return out, err
}

// SaveCredential creates or replaces c once check has accepted its owner
// and the credentials the owner holds.
func (s *Store) SaveCredential(ctx context.Context, c *record.Credential, check func(*record.User, []*record.Credential) error) error {
	if err := checkCredential(c); err != nil {
		return fmt.Errorf("credential: %w", err)
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("credential: %w", err)
	}
	return s.Update(ctx, func(d *Data) error {
		u, err := d.owner(c.User)
		if err != nil {
			return err
		}
		var owned []*record.Credential
		for id, cd := range d.credentials[c.User] {
			owned = append(owned, cd.record(c.User, id))
		}
		if err := check(u, owned); err != nil {
			return err
		}
		if d.credentials == nil {
			d.credentials = map[string]map[string]*credentialData{}
		}
		if d.credentials[c.User] == nil {
			d.credentials[c.User] = map[string]*credentialData{}
		}
		d.credentials[c.User][c.ID] = newCredentialData(c)
		return nil
	})
}
