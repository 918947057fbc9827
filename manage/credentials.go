package manage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/keyward/keyward/record"
)

// CredentialPatch sets a private credential's fields: nil fields are kept
// (on a create, left empty).
type CredentialPatch struct {
	Name     *string
	Provider *string
	Model    *string
	BaseURL  *string
	Key      *string
	// Extra is a JSON object; JSON null clears it.
	Extra *json.RawMessage
}

// Apply sets the fields p names on c and checks the result (Validate
// errors are ErrInvalid, naming fields, never quoting the key).
func (p *CredentialPatch) Apply(c *record.Credential) error {
	set(&c.Name, p.Name)
	set(&c.Provider, p.Provider)
	set(&c.Model, p.Model)
	set(&c.BaseURL, p.BaseURL)
	set(&c.Key, p.Key)
	if p.Extra != nil {
		c.Extra = *p.Extra
		if string(c.Extra) == "null" {
			c.Extra = nil
		}
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: credential: %v", ErrInvalid, err)
	}
	return nil
}

// CreateCredential stores a new private credential of user, made from p.
func (m *Manager) CreateCredential(ctx context.Context, user string, p CredentialPatch) (*record.Credential, error) {
	c := &record.Credential{ID: record.NewCredentialID(), User: user, Created: m.opts.Now().UTC()}
	if err := m.saveCredential(ctx, c, p, false); err != nil {
		return nil, err
	}
	return c, nil
}

// UpdateCredential changes user's credential id by p.
func (m *Manager) UpdateCredential(ctx context.Context, user, id string, p CredentialPatch) (*record.Credential, error) {
	old, err := m.Credential(ctx, user, id)
	if err != nil {
		return nil, err
	}
	c := *old // records are immutable: change a copy
	if err := m.saveCredential(ctx, &c, p, true); err != nil {
		return nil, err
	}
	return &c, nil
}

// saveCredential applies p to c, checks it and stores it: a provider
// keyward knows, and, atomically with the write, a name the user has not
// given another of their credentials (record.ErrExists) and, for an
// update, a credential that still exists.
func (m *Manager) saveCredential(ctx context.Context, c *record.Credential, p CredentialPatch, update bool) error {
	if err := p.Apply(c); err != nil {
		return err
	}
	switch _, err := m.st.Provider(ctx, c.Provider); {
	case errors.Is(err, record.ErrNotFound):
		return invalid("provider: no provider named %s", c.Provider)
	case err != nil:
		return fmt.Errorf("read provider %q: %w", c.Provider, err)
	}
	err := m.st.SaveCredential(ctx, c, func(_ *record.User, owned []*record.Credential) error {
		found := false
		for _, o := range owned {
			switch {
			case o.ID == c.ID:
				found = true
			case o.Name == c.Name:
				return fmt.Errorf("%w: a credential named %s; change that one instead", record.ErrExists, c.Name)
			}
		}
		if update && !found {
			return notFound("credential", c.ID)
		}
		return nil
	})
	if err != nil {
		return ownerError("save credential", c.User, err)
	}
	return nil
}

// DeleteCredential removes user's credential id.
func (m *Manager) DeleteCredential(ctx context.Context, user, id string) error {
	if !record.ValidCredentialID(id) {
		return notFound("credential", id)
	}
	if err := m.st.DeleteCredential(ctx, user, id); err != nil {
		return fmt.Errorf("delete credential %s: %w", id, err)
	}
	return nil
}

// Credential returns user's credential id; another user's is
// record.ErrNotFound.
func (m *Manager) Credential(ctx context.Context, user, id string) (*record.Credential, error) {
	if !record.ValidCredentialID(id) {
		return nil, notFound("credential", id)
	}
	c, err := m.st.Credential(ctx, user, id)
	switch {
	case err != nil:
		return nil, err
	case c.User != user:
		return nil, notFound("credential", id)
	}
	return c, nil
}

// Credentials lists user's credentials, oldest first; none is an empty
// list.
func (m *Manager) Credentials(ctx context.Context, user string) ([]*record.Credential, error) {
	creds, err := m.st.Credentials(ctx, user)
	if errors.Is(err, record.ErrNotFound) {
		return nil, nil
	}
	return creds, err
}
