package manage

import (
	"context"
	"fmt"

	"github.com/keyward/keyward/record"
)

// GroupPatch changes a group: nil fields are kept.
type GroupPatch struct {
	Disabled          *bool
	Providers         *[]string
	Models            *[]string
	DisableCustomKeys *bool
	RequestsPerMinute *int
}

// Apply sets the fields p names on g.
func (p *GroupPatch) Apply(g *record.Group) {
	set(&g.Disabled, p.Disabled)
	set(&g.Providers, p.Providers)
	set(&g.Models, p.Models)
	set(&g.DisableCustomKeys, p.DisableCustomKeys)
	set(&g.RequestsPerMinute, p.RequestsPerMinute)
}

// ValidateGroup checks a group before it is stored: plain names, and a
// rate limit that is no limit (0) or positive.
func ValidateGroup(g *record.Group) error {
	if err := record.ValidateName("group", g.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := validateNames("providers", "provider", g.Providers); err != nil {
		return err
	}
	if g.RequestsPerMinute < 0 {
		return invalid("requests_per_minute: must be 0 (no limit) or more, got %d", g.RequestsPerMinute)
	}
	return nil
}

// CreateGroup stores a new group. A group of that name existing already
// is record.ErrExists.
func (m *Manager) CreateGroup(ctx context.Context, g record.Group) (*record.Group, error) {
	if err := ValidateGroup(&g); err != nil {
		return nil, err
	}
	if err := m.st.CreateGroup(ctx, &g); err != nil {
		return nil, fmt.Errorf("create group %q: %w", g.Name, err)
	}
	return &g, nil
}

// UpdateGroup changes the fields of group name that p sets.
func (m *Manager) UpdateGroup(ctx context.Context, name string, p GroupPatch) (*record.Group, error) {
	g, err := m.st.UpdateGroup(ctx, name, func(g *record.Group) error {
		p.Apply(g)
		return ValidateGroup(g)
	})
	if err != nil {
		return nil, fmt.Errorf("update group %q: %w", name, err)
	}
	return g, nil
}

// DeleteGroup removes a group. Its tokens stay, and are refused from the
// next check on (within the store's propagation time).
func (m *Manager) DeleteGroup(ctx context.Context, name string) error {
	if err := m.st.DeleteGroup(ctx, name); err != nil {
		return fmt.Errorf("delete group %q: %w", name, err)
	}
	return nil
}

// Group returns a group record.
func (m *Manager) Group(ctx context.Context, name string) (*record.Group, error) {
	return m.st.Group(ctx, name)
}

// Groups lists the groups by name.
func (m *Manager) Groups(ctx context.Context) ([]*record.Group, error) {
	return sortedBy(m.st.Groups(ctx))(func(g *record.Group) string { return g.Name })
}

// Provider returns a provider record. Callers show key ids, never keys.
func (m *Manager) Provider(ctx context.Context, name string) (*record.Provider, error) {
	return m.st.Provider(ctx, name)
}

// Providers lists the providers by name. Callers show key ids, never keys.
func (m *Manager) Providers(ctx context.Context) ([]*record.Provider, error) {
	return sortedBy(m.st.Providers(ctx))(func(p *record.Provider) string { return p.Name })
}
