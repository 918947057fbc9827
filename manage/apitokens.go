package manage

import (
	"context"
	"fmt"

	"github.com/keyward/keyward/record"
)

// IssueAPIToken mints a management token for user, who must exist and be
// enabled (checked atomically with the write), and stores its record. The
// returned token is shown once.
func (m *Manager) IssueAPIToken(ctx context.Context, user string) (string, *record.APIToken, error) {
	if err := record.ValidateName("user", user); err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	ring, err := m.keyring(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("issue management token: %w", err)
	}
	tok, err := ring.Management().Mint()
	if err != nil {
		return "", nil, fmt.Errorf("issue management token: %w", err)
	}
	rec := &record.APIToken{ID: tok.ID, Hash: tok.Hash, User: user, Created: m.opts.Now().UTC()}
	err = m.st.CreateAPIToken(ctx, rec, func(owner *record.User) error {
		if owner.Disabled {
			return invalid("user %q is disabled", user)
		}
		return nil
	})
	if err != nil {
		return "", nil, fmt.Errorf("issue management token for %q: %w", user, err)
	}
	return tok.Token, rec, nil
}

// RevokeAPIToken revokes user's management token id; another user's id is
// record.ErrNotFound. Revoking again is no error.
func (m *Manager) RevokeAPIToken(ctx context.Context, user, id string) error {
	_, err := m.st.UpdateAPIToken(ctx, id, func(t *record.APIToken) error {
		if t.User != user {
			return notFound("management token", id)
		}
		t.Revoked = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke management token %s: %w", id, err)
	}
	return nil
}

// APIToken returns a management token record.
func (m *Manager) APIToken(ctx context.Context, id string) (*record.APIToken, error) {
	return m.st.APIToken(ctx, id)
}
