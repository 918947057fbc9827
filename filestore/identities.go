package filestore

import (
	"context"
	"fmt"

	"github.com/keyward/keyward/record"
)

// Identity returns the principal mapping name, from the loaded snapshot.
func (s *Store) Identity(_ context.Context, name string) (*record.Identity, error) {
	if err := identityName.check(name); err != nil {
		return nil, unreadable(err)
	}
	return find(s.snap.Load().identities, identityName, name)
}

// Identities lists the principal mappings, from the loaded snapshot.
func (s *Store) Identities(context.Context) ([]*record.Identity, error) {
	return values(s.snap.Load().identities), nil
}

// CreateIdentity stores the new mapping id once check has accepted its
// user and every stored mapping, under the file lock.
func (s *Store) CreateIdentity(ctx context.Context, id *record.Identity, check func(*record.User, []*record.Identity) error) error {
	if err := checkIdentity(id); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return s.Update(ctx, func(d *Data) error {
		u, err := d.owner(id.User)
		if err != nil {
			return err
		}
		all := make([]*record.Identity, 0, len(d.Identities))
		for name, i := range d.Identities {
			all = append(all, i.record(name))
		}
		if err := check(u, all); err != nil {
			return err
		}
		return createEntry(&d.Identities, "identity", id.Name, identityData(id))
	})
}

// UpdateIdentity applies change to the stored mapping; its name,
// principal, user and group stay as they were.
func (s *Store) UpdateIdentity(ctx context.Context, name string, change func(*record.Identity) error) (*record.Identity, error) {
	if err := identityName.check(name); err != nil {
		return nil, unreadable(err)
	}
	var out *record.Identity
	err := s.Update(ctx, func(d *Data) error {
		cur, ok := d.Identities[name]
		if !ok || cur == nil {
			return fmt.Errorf("identity %q: %w", name, record.ErrNotFound)
		}
		id := cur.record(name)
		if err := change(id); err != nil {
			return err
		}
		id.Name, id.Principal, id.User, id.Group = name, cur.Principal, cur.User, cur.Group
		d.Identities[name], out = identityData(id), id
		return nil
	})
	return out, err
}

// DeleteIdentity removes a mapping.
func (s *Store) DeleteIdentity(ctx context.Context, name string) error {
	return deleteEntry(ctx, s, identityName, name, func(d *Data) map[string]*IdentityData { return d.Identities })
}
