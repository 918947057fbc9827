package vault

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyward/keyward/record"
)

// Principal mappings live at identities/<name>. Each is owned by its user:
// it is created with an owned write and swept by DeleteUser, so that no
// mapping outlives its user (a user created later under the same name
// does not inherit it).

// checkIdentity checks the names and the principal of a mapping to be
// written.
func checkIdentity(id *record.Identity) error {
	if err := errors.Join(checkName("identity", id.Name), checkName("user", id.User), checkName("group", id.Group)); err != nil {
		return err
	}
	return record.ValidatePrincipal(id.Principal, true)
}

// Identity returns the principal mapping name.
func (s *Store) Identity(ctx context.Context, name string) (*record.Identity, error) {
	return getNamed(ctx, s, checkName("identity", name), identitiesDir+name, name, decodeIdentity)
}

// Identities lists every principal mapping: one list and one read each.
// Mappings are few; the record caches hold the whole index, reloaded only
// when the change marker names a mapping.
func (s *Store) Identities(ctx context.Context) ([]*record.Identity, error) {
	return listRecords(ctx, s, identitiesDir, s.Identity)
}

// CreateIdentity stores the new mapping id once check has accepted its
// user and every stored mapping, atomically with the user's other owned
// writes and deletion (see ownedWrite).
func (s *Store) CreateIdentity(ctx context.Context, id *record.Identity, check func(*record.User, []*record.Identity) error) error {
	if err := checkIdentity(id); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	path := identitiesDir + id.Name
	err := s.ownedWrite(ctx, id.User, func(u *record.User) (undoFunc, error) {
		all, err := s.Identities(ctx)
		if err != nil {
			return nil, err
		}
		if err := check(u, all); err != nil {
			return nil, err
		}
		cur, err := s.readVersion(ctx, path)
		switch {
		case err != nil:
			return nil, err
		case cur.live():
			return nil, fmt.Errorf("identity %q: %w", id.Name, record.ErrExists)
		}
		if err := s.casPut(ctx, path, encodeIdentity(id), cur.n); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return s.removeIdentity(ctx, id.Name) }, nil
	})
	if err != nil {
		return err
	}
	return s.announce(ctx, change{kind: record.TypeIdentity, name: id.Name})
}

// UpdateIdentity applies change to the stored mapping with check-and-set;
// its principal, user and group stay as they were.
func (s *Store) UpdateIdentity(ctx context.Context, name string, change func(*record.Identity) error) (*record.Identity, error) {
	if err := checkName("identity", name); err != nil {
		return nil, notFound(err)
	}
	return updateRecord(ctx, s, record.TypeIdentity, name, identitiesDir+name, codec[record.Identity]{decodeIdentity, encodeIdentity}, func(id *record.Identity) error {
		old := *id
		if err := change(id); err != nil {
			return err
		}
		id.Name, id.Principal, id.User, id.Group = old.Name, old.Principal, old.User, old.Group
		return nil
	})
}

// DeleteIdentity removes a mapping with every version and announces it.
func (s *Store) DeleteIdentity(ctx context.Context, name string) error {
	if err := checkName("identity", name); err != nil {
		return err
	}
	if _, err := s.Identity(ctx, name); err != nil {
		return err
	}
	if err := s.removeIdentity(ctx, name); err != nil {
		return err
	}
	return s.announce(ctx, change{kind: record.TypeIdentity, name: name})
}

func (s *Store) removeIdentity(ctx context.Context, name string) error {
	if err := s.kv.DeleteMetadata(ctx, identitiesDir+name); err != nil {
		return fmt.Errorf("vault delete %s: %w", identitiesDir+name, err)
	}
	return nil
}

// sweepIdentities removes every mapping of user (for DeleteUser, whose
// user is buried already).
func (s *Store) sweepIdentities(ctx context.Context, user string) ([]change, error) {
	all, err := s.Identities(ctx)
	if err != nil {
		return nil, err
	}
	var changes []change
	for _, id := range all {
		if id.User != user {
			continue
		}
		if err := s.removeIdentity(ctx, id.Name); err != nil {
			return nil, err
		}
		changes = append(changes, change{kind: record.TypeIdentity, name: id.Name})
	}
	return changes, nil
}
