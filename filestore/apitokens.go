package filestore

import (
	"context"
	"fmt"

	"github.com/keyward/keyward/record"
)

// Management tokens live in the API token file, by id, apart from the LLM
// tokens: the two kinds never share a lookup.

// APIToken returns the management token record id, from the loaded
// snapshot, or an error wrapping record.ErrNotFound.
func (s *Store) APIToken(_ context.Context, id string) (*record.APIToken, error) {
	return find(s.snap.Load().apiTokens, tokenID, id)
}

// PutAPIToken creates or replaces a management token record. Its user
// must exist (record.ErrNotFound otherwise), so that no token outlives
// DeleteUser unowned.
func (s *Store) PutAPIToken(ctx context.Context, t *record.APIToken) error {
	if err := checkAPIToken(t); err != nil {
		return fmt.Errorf("API token: %w", err)
	}
	return s.Update(ctx, func(d *Data) error {
		if _, ok := d.Users[t.User]; !ok {
			return fmt.Errorf("user %q: %w", t.User, record.ErrNotFound)
		}
		if d.apiTokens == nil {
			d.apiTokens = map[string]*apiTokenData{}
		}
		d.apiTokens[t.ID] = &apiTokenData{User: t.User, Hash: HashString(t.Hash), Created: t.Created.UTC(), Revoked: t.Revoked}
		return nil
	})
}

// APITokens lists the management tokens, from the loaded snapshot.
func (s *Store) APITokens(context.Context) ([]*record.APIToken, error) {
	return values(s.snap.Load().apiTokens), nil
}
