package vault

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/keyward/keyward/record"
)

// Principal mappings live at identities/<name>. Each is owned by its user:
// it is created with an owned write and swept by DeleteUser, so that no
// mapping outlives its user (a user created later under the same name
// does not inherit it).
//
// One principal has one mapping, whichever users they name: a mapping is
// written only once its creator holds the principal's claim, at
// identity-principals/<hex SHA-256 of the principal>, taken with
// check-and-set. The owned write fences one user only; the claim orders
// creators across users.

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
// writes and deletion (see ownedWrite), and once it holds the claim of
// id's principal (claimPrincipal): of mappings of one principal created
// at once for different users, one is stored and the others are
// record.ErrExists. Undone, it gives the claim up.
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
		claimed, err := s.claimPrincipal(ctx, id)
		if err != nil {
			return nil, err
		}
		release := func(ctx context.Context) error { return s.releaseClaim(ctx, id.Principal, id.Name, claimed) }
		if err := s.casPut(ctx, path, encodeIdentity(id), cur.n); err != nil {
			return nil, errors.Join(err, release(context.WithoutCancel(ctx)))
		}
		return func(ctx context.Context) error {
			return errors.Join(s.removeIdentity(ctx, id.Name), release(ctx))
		}, nil
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

// DeleteIdentity removes a mapping with every version, gives up its
// principal's claim (see dropIdentity) and announces it.
func (s *Store) DeleteIdentity(ctx context.Context, name string) error {
	if err := checkName("identity", name); err != nil {
		return err
	}
	id, err := s.Identity(ctx, name)
	if err != nil {
		return err
	}
	if err := s.dropIdentity(ctx, id); err != nil {
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

// dropIdentity removes the stored mapping id, then its principal's claim
// if the claim still names it. Stopped between the two, it leaves a claim
// of a missing mapping, which the next create of the principal takes over.
func (s *Store) dropIdentity(ctx context.Context, id *record.Identity) error {
	if err := s.removeIdentity(ctx, id.Name); err != nil {
		return err
	}
	return s.releaseClaim(ctx, id.Principal, id.Name, 0)
}

// claimPath is where principal's claim lives: a hex SHA-256, as
// principals hold '/', ':' and '*'.
func claimPath(principal string) string {
	return principalsDir + record.FormatHash(sha256.Sum256([]byte(principal)))
}

// claim is a principal's claim as stored: the mapping that holds the
// principal and its user.
type claim struct {
	identity, user string
}

// decodeClaim reads a live claim at path. A claim that does not name a
// mapping and a user (written by hand) is an error, not taken over: it is
// for a person to look at.
func decodeClaim(path string, m map[string]any) (claim, error) {
	f := &fields{path: path, m: m}
	c := claim{identity: f.str("identity"), user: f.str("user")}
	if record.CheckName("identity", c.identity) != nil || record.CheckName("user", c.user) != nil {
		f.bad("identity/user", "want identity and user names")
	}
	return c, f.err()
}

func encodeClaim(id *record.Identity) map[string]any {
	return map[string]any{"identity": id.Name, "user": id.User, "principal": id.Principal}
}

// claimPrincipal takes id's principal for id and returns the claim's KV
// version. A claim naming a live mapping of the principal is
// record.ErrExists. A claim naming a missing one is left over (a create
// that stopped between the claim and the mapping, or a delete between the
// mapping and the claim) or is a create still under way: its user's record
// is written again, unchanged, with check-and-set, so that such a create
// fails its owner fence and undoes itself; the claim is taken over only
// if the mapping is still missing after that.
func (s *Store) claimPrincipal(ctx context.Context, id *record.Identity) (int, error) {
	path := claimPath(id.Principal)
	var claimed int
	err := retryCAS(ctx, path, func() error {
		cur, err := s.readVersion(ctx, path)
		if err != nil {
			return err
		}
		if cur.live() {
			held, err := decodeClaim(path, cur.data)
			if err != nil {
				return err
			}
			if err := s.checkClaimHolder(ctx, id, held); err != nil {
				return err
			}
		}
		if err := s.casPut(ctx, path, encodeClaim(id), cur.n); err != nil {
			return err
		}
		claimed = cur.n + 1
		return nil
	})
	return claimed, err
}

// checkClaimHolder is record.ErrExists when the claim held names a live
// mapping of id's principal. Otherwise, unless the holder is id's own
// user (whose create under way fails against id's owner fence already),
// it fences the holder's create that may be under way and looks again.
func (s *Store) checkClaimHolder(ctx context.Context, id *record.Identity, held claim) error {
	if held.user == id.User {
		return s.mapsPrincipal(ctx, held.identity, id.Principal)
	}
	return s.claimVacant(ctx, id.Principal, held)
}

// claimVacant reports whether the claim held of principal can go: nil
// once the mapping it names is missing (or maps another principal) and no
// create of it can still finish, record.ErrExists while it holds the
// principal.
func (s *Store) claimVacant(ctx context.Context, principal string, held claim) error {
	if err := s.mapsPrincipal(ctx, held.identity, principal); err != nil {
		return err
	}
	if err := s.fenceUser(ctx, held.user); err != nil {
		return err
	}
	return s.mapsPrincipal(ctx, held.identity, principal)
}

// mapsPrincipal is record.ErrExists when mapping name is live and maps
// principal.
func (s *Store) mapsPrincipal(ctx context.Context, name, principal string) error {
	o, err := s.Identity(ctx, name)
	switch {
	case errors.Is(err, record.ErrNotFound):
		return nil
	case err != nil:
		return err
	case o.Principal == principal:
		return fmt.Errorf("%w: identity %q maps the same principal", record.ErrExists, name)
	}
	return nil
}

// fenceUser writes user's record again as it is, with check-and-set: an
// owned write of theirs under way fails its fence and undoes itself (see
// ownedWrite). A user never written has none under way. Another writer
// coming between is errCASLost, for the caller to read again.
func (s *Store) fenceUser(ctx context.Context, user string) error {
	path := usersDir + user
	cur, err := s.readVersion(ctx, path)
	switch {
	case err != nil:
		return err
	case cur.n == 0:
		return nil
	case cur.data == nil:
		cur.data = tombstone()
	}
	return s.casPut(ctx, path, cur.data, cur.n)
}

// releaseClaim gives up principal's claim by writing a tombstone over it
// with check-and-set, so that a claim taken over meanwhile is never
// released by the mapping that lost it. With version (an undo), the claim
// goes only if it is still at the version its creator wrote. Without (a
// delete), it goes if it names mapping name and is vacant (claimVacant):
// a create of the same name under way keeps it.
func (s *Store) releaseClaim(ctx context.Context, principal, name string, version int) error {
	path := claimPath(principal)
	return retryCAS(ctx, path, func() error {
		cur, err := s.readVersion(ctx, path)
		switch {
		case err != nil || !cur.live():
			return err
		case version != 0 && cur.n != version:
			return nil
		case version == 0:
			held, err := decodeClaim(path, cur.data)
			if err != nil || held.identity != name {
				return nil // a claim written by hand stays for a person to look at
			}
			if err := s.claimVacant(ctx, principal, held); errors.Is(err, record.ErrExists) {
				return nil
			} else if err != nil {
				return err
			}
		}
		return s.casPut(ctx, path, tombstone(), cur.n)
	})
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
		if err := s.dropIdentity(ctx, id); err != nil {
			return nil, err
		}
		changes = append(changes, change{kind: record.TypeIdentity, name: id.Name})
	}
	return changes, nil
}
