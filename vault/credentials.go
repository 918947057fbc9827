package vault

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/keyward/keyward/record"
)

// Users' own provider credentials live under their user's path,
// users/<user>/credentials/<id>: every method takes the owner, and another
// user's id names a path that does not exist.

func credentialsDir(user string) string { return usersDir + user + "/credentials/" }

// PutCredential creates or replaces one of c.User's credentials. The user
// must exist (record.ErrNotFound otherwise), so that no credential is
// written for nobody.
func (s *Store) PutCredential(ctx context.Context, c *record.Credential) error {
	return s.SaveCredential(ctx, c, func(*record.User, []*record.Credential) error { return nil })
}

// SaveCredential creates or replaces c once check has accepted its owner
// and the credentials the owner holds, atomically with the owner's other
// credential writes and deletion (see ownedWrite), and announces it.
func (s *Store) SaveCredential(ctx context.Context, c *record.Credential, check func(*record.User, []*record.Credential) error) error {
	if err := checkCredential(c.User, c.ID); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("credential: %w", err)
	}
	path := credentialsDir(c.User) + c.ID
	err := s.ownedWrite(ctx, c.User, func(u *record.User) (undoFunc, error) {
		owned, err := s.Credentials(ctx, c.User)
		if err != nil {
			return nil, err
		}
		if err := check(u, owned); err != nil {
			return nil, err
		}
		prev, err := s.readVersion(ctx, path)
		if err != nil {
			return nil, err
		}
		if err := s.casPut(ctx, path, encodeCredential(c), prev.n); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return s.restore(ctx, path, prev) }, nil
	})
	if err != nil {
		return err
	}
	return s.announce(ctx, change{kind: record.TypeCredential, name: c.User + "/" + c.ID})
}

// restore puts back the version of path that prev read: the record as it
// was, or none.
func (s *Store) restore(ctx context.Context, path string, prev version) error {
	if prev.data == nil {
		return s.kv.DeleteMetadata(ctx, path)
	}
	_, err := s.kv.Put(ctx, path, prev.data)
	return err
}

// Credential returns user's credential id. It is record.ErrNotFound when
// user has no such credential, whoever else may.
func (s *Store) Credential(ctx context.Context, user, id string) (*record.Credential, error) {
	if err := checkCredential(user, id); err != nil {
		return nil, notFound(err)
	}
	sec, err := s.get(ctx, credentialsDir(user)+id)
	if err != nil {
		return nil, err
	}
	return decodeCredential(user, id, sec.Data)
}

// Credentials lists user's credentials, oldest first: one list of
// users/<user>/credentials/ and one read each. keyward serve calls it for
// each user whose token is in use, once per cache TTL, to send the user's
// own key where policy allows: its policy (examples/vault/keyward.hcl)
// allows that one list. A user without credentials, or without a record,
// has none (an empty list, no error).
func (s *Store) Credentials(ctx context.Context, user string) ([]*record.Credential, error) {
	if err := checkName("user", user); err != nil {
		return nil, notFound(err)
	}
	out, err := listRecords(ctx, s, credentialsDir(user), func(ctx context.Context, id string) (*record.Credential, error) {
		return s.Credential(ctx, user, id)
	})
	if isForbidden(err) {
		// Most likely a serve policy from before private credentials:
		// say what it lacks, in the log line this error ends up in.
		return nil, fmt.Errorf("%w (the policy must allow list on %s/metadata/users/+/credentials/, see examples/vault/keyward.hcl)", err, s.cfg.Mount)
	}
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *record.Credential) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// DeleteCredential removes user's credential id, atomically with the
// user's other credential writes (see ownedWrite). It is
// record.ErrNotFound when user has no such credential, whoever else may.
func (s *Store) DeleteCredential(ctx context.Context, user, id string) error {
	if err := checkCredential(user, id); err != nil {
		return err
	}
	path := credentialsDir(user) + id
	err := s.ownedWrite(ctx, user, func(*record.User) (undoFunc, error) {
		prev, err := s.readVersion(ctx, path)
		switch {
		case err != nil:
			return nil, err
		case prev.data == nil:
			return nil, fmt.Errorf("credential %q of user %q: %w", id, user, record.ErrNotFound)
		}
		if err := s.kv.DeleteMetadata(ctx, path); err != nil {
			return nil, fmt.Errorf("vault delete %s: %w", path, err)
		}
		return func(ctx context.Context) error { return s.restore(ctx, path, prev) }, nil
	})
	if err != nil {
		return err
	}
	return s.announce(ctx, change{kind: record.TypeCredential, name: user + "/" + id})
}

// sweepCredentials removes every credential of user (for DeleteUser,
// whose user is buried already: no owned write).
func (s *Store) sweepCredentials(ctx context.Context, user string) ([]change, error) {
	ids, err := s.list(ctx, credentialsDir(user))
	if err != nil {
		return nil, err
	}
	changes := make([]change, 0, len(ids))
	for _, id := range ids {
		if !record.ValidCredentialID(id) {
			continue
		}
		if err := s.kv.DeleteMetadata(ctx, credentialsDir(user)+id); err != nil {
			return nil, fmt.Errorf("vault delete %s: %w", credentialsDir(user)+id, err)
		}
		changes = append(changes, change{kind: record.TypeCredential, name: user + "/" + id})
	}
	return changes, nil
}

func encodeCredential(c *record.Credential) map[string]any {
	return map[string]any{
		"name":     c.Name,
		"provider": c.Provider,
		"model":    c.Model,
		"base_url": c.BaseURL,
		"key":      c.Key,
		// A string, not a nested object: OpenBao limits how complex a
		// record's JSON may be, and the user's object is theirs to shape.
		"extra":   string(c.Extra),
		"created": c.Created.UTC().Format(time.RFC3339Nano),
	}
}

func decodeCredential(user, id string, m map[string]any) (*record.Credential, error) {
	f := &fields{path: credentialsDir(user) + id, m: m}
	c := &record.Credential{
		ID:       id,
		User:     user,
		Name:     f.str("name"),
		Provider: f.str("provider"),
		Model:    f.str("model"),
		BaseURL:  f.str("base_url"),
		Key:      f.str("key"),
		Created:  f.time("created"),
	}
	if extra := f.str("extra"); extra != "" {
		c.Extra = json.RawMessage(extra)
	}
	if err := c.Validate(); err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s: %w", f.path, err))
	}
	return c, f.err()
}
