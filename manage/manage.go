// Package manage holds keyward's management rules, the same whichever store
// keeps the records and whoever asks (the CLI now, the management API
// later): who may get a token for which group, what creating, rotating or
// revoking a token does, and what deleting a user takes with it.
package manage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Store is what management needs of a record store.
type Store interface {
	User(ctx context.Context, name string) (*record.User, error)
	Group(ctx context.Context, name string) (*record.Group, error)
	Token(ctx context.Context, id string) (*record.Token, error)
	SigningKeys(ctx context.Context) ([]token.SigningKey, error)
	PutToken(ctx context.Context, t *record.Token) error
}

// ErrInvalid marks a request that breaks a rule; the message says which.
var ErrInvalid = errors.New("invalid request")

// TokenRequest asks for a new token.
type TokenRequest struct {
	User  string
	Group string
	Name  string
	// TTL is the token's lifetime; zero for a token that does not expire.
	TTL time.Duration
}

// CreateToken mints a token for req.User in req.Group and stores its
// record. The group must exist and be one the user may use: this is
// checked now, not only when the token is used. The returned token string
// is shown to its owner once and is not recoverable afterwards.
func CreateToken(ctx context.Context, st Store, req TokenRequest, now time.Time) (string, *record.Token, error) {
	if req.TTL < 0 {
		return "", nil, fmt.Errorf("%w: expiry must not be negative", ErrInvalid)
	}
	u, err := st.User(ctx, req.User)
	if err != nil {
		return "", nil, err
	}
	if u.Disabled {
		return "", nil, fmt.Errorf("%w: user %q is disabled", ErrInvalid, req.User)
	}
	if !u.MayUse(req.Group) {
		return "", nil, fmt.Errorf("%w: user %q may not use group %q (usable: %v)", ErrInvalid, req.User, req.Group, u.Groups)
	}
	g, err := st.Group(ctx, req.Group)
	if err != nil {
		return "", nil, err
	}
	if g.Disabled {
		return "", nil, fmt.Errorf("%w: group %q is disabled", ErrInvalid, req.Group)
	}
	keys, err := st.SigningKeys(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("signing keys: %w", err)
	}
	ring, err := token.NewKeyring(keys)
	if err != nil {
		return "", nil, err
	}
	m, err := ring.Mint()
	if err != nil {
		return "", nil, err
	}
	rec := &record.Token{ID: m.ID, Hash: m.Hash, User: req.User, Group: req.Group, Name: req.Name, Created: now.UTC()}
	if req.TTL > 0 {
		rec.Expires = now.Add(req.TTL).UTC()
	}
	if err := st.PutToken(ctx, rec); err != nil {
		return "", nil, fmt.Errorf("store token: %w", err)
	}
	return m.Token, rec, nil
}

// RevokeToken marks a token revoked: it is refused from the next check on
// (within the store's propagation time) and stays listed as revoked.
func RevokeToken(ctx context.Context, st Store, id string) error {
	t, err := st.Token(ctx, id)
	if err != nil {
		return err
	}
	if t.Revoked {
		return nil
	}
	revoked := *t
	revoked.Revoked = true
	return st.PutToken(ctx, &revoked)
}

// ValidateGroup checks a group's names before it is stored.
func ValidateGroup(g *record.Group) error {
	if err := record.ValidateName("group", g.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	for _, p := range g.Providers {
		if err := record.ValidateName("provider", p); err != nil {
			return fmt.Errorf("%w: providers: %v", ErrInvalid, err)
		}
	}
	return nil
}

// ValidateUser checks a user before it is stored.
func ValidateUser(u *record.User) error {
	if err := record.ValidateName("user", u.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if u.Role != record.RoleUser && u.Role != record.RoleAdmin {
		return fmt.Errorf("%w: role %q is not user or admin", ErrInvalid, u.Role)
	}
	for _, g := range u.Groups {
		if err := record.ValidateName("group", g); err != nil {
			return fmt.Errorf("%w: groups: %v", ErrInvalid, err)
		}
	}
	return nil
}
