package manage

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyward/keyward/record"
)

// IdentityRequest asks for a new principal mapping (record.Identity).
type IdentityRequest struct {
	Name      string
	Principal string
	User      string
	Group     string
	Disabled  bool
}

// ValidateIdentity checks a mapping before it is stored: plain names and a
// strict SPIFFE ID or prefix (record.ValidatePrincipal).
func ValidateIdentity(id *record.Identity) error {
	for _, n := range []struct{ kind, name string }{{"identity", id.Name}, {"user", id.User}, {"group", id.Group}} {
		if err := record.ValidateName(n.kind, n.name); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if err := record.ValidatePrincipal(id.Principal, true); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

// CreateIdentity maps req.Principal to req.User in req.Group. The group
// must exist and be enabled, the user must exist, be enabled and be
// allowed the group, and no other mapping may hold the same principal
// (record.ErrExists), nor the name: the user and the mappings are checked
// atomically with the write, as for a token. The decision checks user and
// group again on every request.
func (m *Manager) CreateIdentity(ctx context.Context, req IdentityRequest) (*record.Identity, error) {
	now := m.opts.Now().UTC()
	id := &record.Identity{Name: req.Name, Principal: req.Principal, User: req.User, Group: req.Group, Disabled: req.Disabled, Created: now, Updated: now}
	if err := ValidateIdentity(id); err != nil {
		return nil, err
	}
	g, err := m.st.Group(ctx, id.Group)
	switch {
	case errors.Is(err, record.ErrNotFound):
		return nil, invalid("group %q does not exist", id.Group)
	case err != nil:
		return nil, fmt.Errorf("read group %q: %w", id.Group, err)
	case g.Disabled:
		return nil, invalid("group %q is disabled", id.Group)
	}
	err = m.st.CreateIdentity(ctx, id, func(u *record.User, all []*record.Identity) error {
		if err := checkOwner(u, id.Group); err != nil {
			return err
		}
		for _, o := range all {
			switch {
			case o.Name == id.Name:
				return fmt.Errorf("identity %q: %w", id.Name, record.ErrExists)
			case o.Principal == id.Principal:
				return fmt.Errorf("%w: identity %q maps the same principal", record.ErrExists, o.Name)
			}
		}
		return nil
	})
	if err != nil {
		return nil, ownerError("create identity", id.User, err)
	}
	return id, nil
}

// SetIdentityDisabled disables or enables mapping name. A disabled mapping
// refuses its principal (principal_disabled) on every replica within the
// store's propagation time.
func (m *Manager) SetIdentityDisabled(ctx context.Context, name string, disabled bool) (*record.Identity, error) {
	id, err := m.st.UpdateIdentity(ctx, name, func(id *record.Identity) error {
		id.Disabled = disabled
		id.Updated = m.opts.Now().UTC()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("update identity %q: %w", name, err)
	}
	return id, nil
}

// DeleteIdentity removes mapping name: its principal is refused
// (principal_not_mapped, unless a shorter prefix maps it) from the next
// check on, within the store's propagation time.
func (m *Manager) DeleteIdentity(ctx context.Context, name string) error {
	if err := m.st.DeleteIdentity(ctx, name); err != nil {
		return fmt.Errorf("delete identity %q: %w", name, err)
	}
	return nil
}

// Identity returns a mapping.
func (m *Manager) Identity(ctx context.Context, name string) (*record.Identity, error) {
	return m.st.Identity(ctx, name)
}

// Identities lists the mappings by name.
func (m *Manager) Identities(ctx context.Context) ([]*record.Identity, error) {
	return sortedBy(m.st.Identities(ctx))(func(id *record.Identity) string { return id.Name })
}
