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
	tok, rec, err := mintToken(ctx, st, req, now)
	if err != nil {
		return "", nil, err
	}
	if err := st.PutToken(ctx, rec); err != nil {
		return "", nil, fmt.Errorf("store token: %w", err)
	}
	return tok, rec, nil
}

// mintToken checks req against the user's and group's records and mints
// its token, without storing it.
func mintToken(ctx context.Context, st Store, req TokenRequest, now time.Time) (string, *record.Token, error) {
	if req.TTL < 0 {
		return "", nil, fmt.Errorf("%w: expiry must not be negative", ErrInvalid)
	}
	if err := record.ValidateTokenName(req.Name); err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrInvalid, err)
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
	rec := &record.Token{ID: m.ID, Hash: m.Hash, User: req.User, Group: req.Group, Name: req.Name, Created: now.UTC(), Last4: m.Token[len(m.Token)-4:]}
	if req.TTL > 0 {
		rec.Expires = now.Add(req.TTL).UTC()
	}
	return m.Token, rec, nil
}

// MaxRotationGrace bounds the grace period of a rotation: an old token
// that lingers for months is a second token, not a rotation.
const MaxRotationGrace = 30 * 24 * time.Hour

// Rotation is the outcome of RotateToken.
type Rotation struct {
	// Token is the new token string, shown to its owner once.
	Token string
	// New is the new token's record; Old the old one's, as now stored.
	New, Old *record.Token
}

// RotateToken replaces token id with a new token of the same user, group
// and name. The old token keeps working for grace (zero stops it at once,
// and never past its own expiry), then is refused as expired; it records
// which token replaced it. A token with an expiry passes its lifetime on:
// the new one lasts as long from now. The user must still be allowed the
// group, as at creation. A token already rotated, revoked or expired is
// not rotated again, so that one token never has two successors.
func RotateToken(ctx context.Context, st Store, id string, grace time.Duration, now time.Time) (*Rotation, error) {
	if grace < 0 || grace > MaxRotationGrace {
		return nil, fmt.Errorf("%w: grace must be between 0 and %v", ErrInvalid, MaxRotationGrace)
	}
	old, err := st.Token(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case old.Revoked:
		return nil, fmt.Errorf("%w: token %s is revoked", ErrInvalid, id)
	case old.ReplacedBy != "":
		return nil, fmt.Errorf("%w: token %s was already rotated; rotate its replacement %s", ErrInvalid, id, old.ReplacedBy)
	case old.Expired(now):
		return nil, fmt.Errorf("%w: token %s has expired", ErrInvalid, id)
	}
	req := TokenRequest{User: old.User, Group: old.Group, Name: old.Name}
	if !old.Expires.IsZero() {
		req.TTL = old.Expires.Sub(old.Created)
	}
	tok, rec, err := mintToken(ctx, st, req, now)
	if err != nil {
		return nil, err
	}
	// The new token is stored first: if the second write fails, the old
	// token still works and nothing is lost but a retry.
	if err := st.PutToken(ctx, rec); err != nil {
		return nil, fmt.Errorf("store new token: %w", err)
	}
	retired := *old
	retired.ReplacedBy = rec.ID
	if end := now.Add(grace).UTC(); retired.Expires.IsZero() || end.Before(retired.Expires) {
		retired.Expires = end
	}
	if err := st.PutToken(ctx, &retired); err != nil {
		return nil, fmt.Errorf("store old token %s (the new token %s is stored and works): %w", id, rec.ID, err)
	}
	return &Rotation{Token: tok, New: rec, Old: &retired}, nil
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
	if g.RequestsPerMinute < 0 {
		return fmt.Errorf("%w: requests_per_minute: must be 0 (no limit) or more, got %d", ErrInvalid, g.RequestsPerMinute)
	}
	return nil
}

// ReservedUser is the name the bootstrap admin acts under in the
// management API and its audit log; no user record may take it.
const ReservedUser = "bootstrap"

// ValidateUser checks a user before it is stored.
func ValidateUser(u *record.User) error {
	if err := record.ValidateName("user", u.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if u.Name == ReservedUser {
		return fmt.Errorf("%w: user name %q is reserved for the bootstrap admin", ErrInvalid, u.Name)
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
