package vault

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/keyward/keyward/record"
)

// Management tokens live at api-tokens/<id>, apart from the LLM tokens:
// the two kinds never share a lookup.

const apiTokensDir = "api-tokens/"

// APIToken returns the management token record id, or an error wrapping
// record.ErrNotFound.
func (s *Store) APIToken(ctx context.Context, id string) (*record.APIToken, error) {
	return getNamed(ctx, s, checkTokenID("API token", id), apiTokensDir+id, id, decodeAPIToken)
}

// PutAPIToken creates or replaces a management token record. Its user
// must exist (record.ErrNotFound otherwise), so that no token is written
// for nobody.
func (s *Store) PutAPIToken(ctx context.Context, t *record.APIToken) error {
	if err := cmp.Or(checkTokenID("API token", t.ID), checkName("user", t.User)); err != nil {
		return err
	}
	if _, err := s.get(ctx, usersDir+t.User); err != nil {
		return err
	}
	return s.put(ctx, record.TypeAPIToken, t.ID, apiTokensDir+t.ID, encodeAPIToken(t))
}

// CreateAPIToken stores the new management token t once check has
// accepted its owner, atomically with the owner's deletion (see
// ownedWrite).
func (s *Store) CreateAPIToken(ctx context.Context, t *record.APIToken, check func(*record.User) error) error {
	if err := cmp.Or(checkTokenID("API token", t.ID), checkName("user", t.User)); err != nil {
		return err
	}
	path := apiTokensDir + t.ID
	return s.ownedWrite(ctx, t.User, func(u *record.User) (undoFunc, error) {
		if err := check(u); err != nil {
			return nil, err
		}
		if err := s.casPut(ctx, path, encodeAPIToken(t), 0); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return s.kv.DeleteMetadata(ctx, path) }, nil
	})
}

// UpdateAPIToken applies change to the stored management token with
// check-and-set, and announces it.
func (s *Store) UpdateAPIToken(ctx context.Context, id string, change func(*record.APIToken) error) (*record.APIToken, error) {
	if err := checkTokenID("API token", id); err != nil {
		return nil, notFound(err)
	}
	return updateRecord(ctx, s, record.TypeAPIToken, id, apiTokensDir+id, codec[record.APIToken]{decodeAPIToken, encodeAPIToken}, change)
}

// sweepAPITokens removes every management token of user (one read per
// management token: for DeleteUser).
func (s *Store) sweepAPITokens(ctx context.Context, user string) ([]change, error) {
	all, err := s.APITokens(ctx)
	if err != nil {
		return nil, err
	}
	var changes []change
	for _, t := range all {
		if t.User != user {
			continue
		}
		if err := s.kv.DeleteMetadata(ctx, apiTokensDir+t.ID); err != nil {
			return nil, fmt.Errorf("vault delete %s: %w", apiTokensDir+t.ID, err)
		}
		changes = append(changes, change{kind: record.TypeAPIToken, name: t.ID})
	}
	return changes, nil
}

func encodeAPIToken(t *record.APIToken) map[string]any {
	return map[string]any{
		"user":    t.User,
		"hash":    record.FormatHash(t.Hash),
		"created": t.Created.UTC().Format(time.RFC3339Nano),
		"revoked": t.Revoked,
	}
}

func decodeAPIToken(id string, m map[string]any) (*record.APIToken, error) {
	f := &fields{path: apiTokensDir + id, m: m}
	t := &record.APIToken{
		ID:      id,
		Hash:    f.hash("hash"),
		User:    f.str("user"),
		Created: f.time("created"),
		Revoked: f.boolean("revoked"),
	}
	if t.User == "" {
		f.bad("user", "must be set")
	}
	return t, f.err()
}

// APITokens lists every management token (one read each).
func (s *Store) APITokens(ctx context.Context) ([]*record.APIToken, error) {
	return listRecords(ctx, s, apiTokensDir, s.APIToken)
}
