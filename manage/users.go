package manage

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/keyward/keyward/record"
)

// UserPatch changes a user: nil fields are kept.
type UserPatch struct {
	Role     *record.Role
	Disabled *bool
	Groups   *[]string
}

// Apply sets the fields p names on u.
func (p *UserPatch) Apply(u *record.User) {
	set(&u.Role, p.Role)
	set(&u.Disabled, p.Disabled)
	set(&u.Groups, p.Groups)
}

// set copies *v to *dst when v is not nil: one field of a patch.
func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

// ValidateUser checks a user before it is stored: a plain name that is not
// the bootstrap admin's, a known role, plain group names.
func ValidateUser(u *record.User) error {
	if err := record.ValidateName("user", u.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if u.Name == ReservedUser {
		return invalid("user name %q is reserved for the bootstrap admin", u.Name)
	}
	if u.Role != record.RoleUser && u.Role != record.RoleAdmin {
		return invalid("role %q is not user or admin", u.Role)
	}
	return validateNames("groups", "group", u.Groups)
}

// validateNames checks the names of a list field.
func validateNames(field, kind string, names []string) error {
	for _, n := range names {
		if err := record.ValidateName(kind, n); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalid, field, err)
		}
	}
	return nil
}

// CreateUser stores a new user; the role defaults to record.RoleUser. A
// user of that name existing already is record.ErrExists.
func (m *Manager) CreateUser(ctx context.Context, u record.User) (*record.User, error) {
	if u.Role == "" {
		u.Role = record.RoleUser
	}
	if err := ValidateUser(&u); err != nil {
		return nil, err
	}
	if err := m.st.CreateUser(ctx, &u); err != nil {
		return nil, fmt.Errorf("create user %q: %w", u.Name, err)
	}
	return &u, nil
}

// UpdateUser changes the fields of user name that p sets.
func (m *Manager) UpdateUser(ctx context.Context, name string, p UserPatch) (*record.User, error) {
	u, err := m.st.UpdateUser(ctx, name, func(u *record.User) error {
		p.Apply(u)
		return ValidateUser(u)
	})
	if err != nil {
		return nil, fmt.Errorf("update user %q: %w", name, err)
	}
	return u, nil
}

// DeleteUser removes a user with every token, management token and
// credential they own.
func (m *Manager) DeleteUser(ctx context.Context, name string) error {
	if err := m.st.DeleteUser(ctx, name); err != nil {
		return fmt.Errorf("delete user %q: %w", name, err)
	}
	return nil
}

// User returns a user record.
func (m *Manager) User(ctx context.Context, name string) (*record.User, error) {
	return m.st.User(ctx, name)
}

// Users lists the users by name.
func (m *Manager) Users(ctx context.Context) ([]*record.User, error) {
	return sortedBy(m.st.Users(ctx))(func(u *record.User) string { return u.Name })
}

// sortedBy sorts the records a store listed by key, passing the store's
// error on: sortedBy(st.Users(ctx))(name).
func sortedBy[R any](recs []*R, err error) func(key func(*R) string) ([]*R, error) {
	return func(key func(*R) string) ([]*R, error) {
		if err != nil {
			return nil, err
		}
		slices.SortFunc(recs, func(a, b *R) int { return cmp.Compare(key(a), key(b)) })
		return recs, nil
	}
}
