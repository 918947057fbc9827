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
	if c, ok := s.snap.Load().credentials[user][id]; ok {
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
	out := values(s.snap.Load().credentials[user])
	slices.SortFunc(out, func(a, b *record.Credential) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
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
