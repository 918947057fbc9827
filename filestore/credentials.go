package filestore

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/keyward/keyward/record"
)

// Users' own provider credentials live in the credentials file, by user and
// then by id. Every method takes the owner: a credential id alone reaches
// nothing, and another user's id is simply not found.

// PutCredential creates or replaces one of c.User's credentials. The user
// must exist (record.ErrNotFound otherwise), so that no credential outlives
// DeleteUser unowned.
func (s *Store) PutCredential(ctx context.Context, c *record.Credential) error {
	return s.SaveCredential(ctx, c, func(*record.User, []*record.Credential) error { return nil })
}

// Credential returns user's credential id, from the loaded snapshot. It is
// record.ErrNotFound when user has no such credential, whoever else may.
func (s *Store) Credential(_ context.Context, user, id string) (*record.Credential, error) {
	if err := cmp.Or(userName.check(user), credentialID.check(id)); err != nil {
		return nil, unreadable(err)
	}
	if c, ok := s.snap.Load().credentials.byUser[user][id]; ok {
		return c, nil
	}
	return nil, credentialNotFound(user, id)
}

// Credentials lists user's credentials, oldest first, from the loaded
// snapshot.
func (s *Store) Credentials(_ context.Context, user string) ([]*record.Credential, error) {
	if err := userName.check(user); err != nil {
		return nil, unreadable(err)
	}
	return oldestFirst(s.snap.Load().credentials.byUser[user]), nil
}

// PrivateKeys returns user's credentials indexed for the decision, from
// the loaded snapshot, where they were indexed as the credentials file
// was read: nothing is built or allocated here. A user without
// credentials, or unknown, gets an empty index. With it the store is a
// cache.ResidentSource.
func (s *Store) PrivateKeys(_ context.Context, user string) (*record.PrivateKeys, error) {
	set := s.snap.Load().credentials
	if k, ok := set.keys[user]; ok {
		return k, nil
	}
	if err := userName.check(user); err != nil {
		return nil, unreadable(err)
	}
	return set.none, nil
}

// oldestFirst lists one user's credentials, oldest first.
func oldestFirst(byID map[string]*record.Credential) []*record.Credential {
	out := values(byID)
	slices.SortFunc(out, func(a, b *record.Credential) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// DeleteCredential removes user's credential id. It is record.ErrNotFound
// when user has no such credential, whoever else may.
func (s *Store) DeleteCredential(ctx context.Context, user, id string) error {
	if err := cmp.Or(userName.check(user), credentialID.check(id)); err != nil {
		return err
	}
	return s.Update(ctx, func(d *Data) error {
		m := d.credentials[user]
		if _, ok := m[id]; !ok {
			return credentialNotFound(user, id)
		}
		delete(m, id)
		if len(m) == 0 {
			delete(d.credentials, user)
		}
		return nil
	})
}

func credentialNotFound(user, id string) error {
	return fmt.Errorf("credential %q of user %q: %w", id, user, record.ErrNotFound)
}
