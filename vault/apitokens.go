package vault

import (
	"context"
	"errors"
	"time"

	"github.com/keyward/keyward/record"
)

// Management tokens live at api-tokens/<id>, apart from the LLM tokens:
// the two kinds never share a lookup.

// KindAPIToken is the change marker's kind for a management token; its
// name is the token id. No cache holds these records: writes are marked so
// that replicas learn of them all the same.
const KindAPIToken = "api-token"

const apiTokensDir = "api-tokens/"

// APIToken returns the management token record id, or an error wrapping
// record.ErrNotFound.
func (s *Store) APIToken(ctx context.Context, id string) (*record.APIToken, error) {
	if err := checkTokenID("API token", id); err != nil {
		return nil, notFound(err)
	}
	sec, err := s.get(ctx, apiTokensDir+id)
	if err != nil {
		return nil, err
	}
	return decodeAPIToken(id, sec.Data)
}

// PutAPIToken creates or replaces a management token record. Its user
// must exist (record.ErrNotFound otherwise), so that no token is written
// for nobody.
func (s *Store) PutAPIToken(ctx context.Context, t *record.APIToken) error {
	if err := errors.Join(checkTokenID("API token", t.ID), checkName("user", t.User)); err != nil {
		return err
	}
	if _, err := s.get(ctx, usersDir+t.User); err != nil {
		return err
	}
	return s.put(ctx, KindAPIToken, t.ID, apiTokensDir+t.ID, encodeAPIToken(t))
}

// deleteAPITokens removes every management token of user (one read per
// token: for DeleteUser).
func (s *Store) deleteAPITokens(ctx context.Context, user string) error {
	all, err := listRecords(ctx, s, apiTokensDir, s.APIToken)
	if err != nil {
		return err
	}
	for _, t := range all {
		if t.User != user {
			continue
		}
		if err := s.delete(ctx, KindAPIToken, t.ID, apiTokensDir+t.ID); err != nil && !errors.Is(err, record.ErrNotFound) {
			return err
		}
	}
	return nil
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
