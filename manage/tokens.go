package manage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/keyward/keyward/record"
)

// TokenRequest asks for a new LLM token.
type TokenRequest struct {
	User  string
	Group string
	// Name says what the token is for (an application or client); it is
	// required and unique among the user's active tokens.
	Name string
	// TTL is the token's lifetime; zero for a token that does not expire.
	TTL time.Duration
	// Principal binds the token to a workload: a SPIFFE ID or prefix
	// (record.ValidatePrincipal) the presenting peer must match. Empty
	// for a token usable from anywhere.
	Principal string
}

// Issued is a token just made: Token is shown to its owner once and is not
// recoverable afterwards; Record is what the store keeps.
type Issued struct {
	Token  string
	Record *record.Token
}

// CreateToken mints a token for req.User in req.Group and stores it. The
// group must exist and be enabled, the user must be enabled and allowed the
// group, the name must be free among the user's active tokens
// (record.ErrExists) and the user below their cap of active tokens
// (ErrLimit): checked now, atomically with the write, not only when the
// token is used.
func (m *Manager) CreateToken(ctx context.Context, req TokenRequest) (*Issued, error) {
	if req.TTL < 0 {
		return nil, invalid("ttl: must not be negative")
	}
	if req.Name == "" {
		return nil, invalid("name: say what the token is for (an application or client)")
	}
	iss, err := m.mint(ctx, req)
	if err != nil {
		return nil, err
	}
	err = m.st.CreateToken(ctx, iss.Record, func(owner *record.User, owned []*record.Token) error {
		if err := checkOwner(owner, req.Group); err != nil {
			return err
		}
		return m.checkRoom(owned, req.Name)
	})
	if err != nil {
		return nil, ownerError("create token", req.User, err)
	}
	return iss, nil
}

// mint checks the request's group and names and mints its token, without
// storing it.
func (m *Manager) mint(ctx context.Context, req TokenRequest) (*Issued, error) {
	if err := record.ValidateTokenName(req.Name); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := record.ValidateName("user", req.User); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if req.Principal != "" {
		if err := record.ValidatePrincipal(req.Principal, true); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	g, err := m.st.Group(ctx, req.Group)
	switch {
	case errors.Is(err, record.ErrNotFound):
		return nil, invalid("group %q does not exist", req.Group)
	case err != nil:
		return nil, fmt.Errorf("read group %q: %w", req.Group, err)
	case g.Disabled:
		return nil, invalid("group %q is disabled", req.Group)
	}
	ring, err := m.keyring(ctx)
	if err != nil {
		return nil, err
	}
	tok, err := ring.Mint()
	if err != nil {
		return nil, err
	}
	now := m.opts.Now().UTC()
	rec := &record.Token{ID: tok.ID, Hash: tok.Hash, User: req.User, Group: req.Group, Name: req.Name, Created: now, Last4: tok.Token[len(tok.Token)-4:], Principal: req.Principal}
	if req.TTL > 0 {
		rec.Expires = now.Add(req.TTL)
	}
	return &Issued{Token: tok.Token, Record: rec}, nil
}

// checkOwner checks that owner may hold a token of group.
func checkOwner(owner *record.User, group string) error {
	switch {
	case owner.Disabled:
		return invalid("user %q is disabled", owner.Name)
	case !owner.MayUse(group):
		return invalid("user %q may not use group %q (usable: %v)", owner.Name, group, owner.Groups)
	}
	return nil
}

// checkRoom checks that a user holding owned may take one more active
// token named name.
func (m *Manager) checkRoom(owned []*record.Token, name string) error {
	now, active := m.opts.Now(), 0
	for _, t := range owned {
		if t.State(now) != record.TokenActive {
			continue
		}
		if t.Name == name {
			return fmt.Errorf("%w: an active token named %q (%s); rotate or revoke it, or pick another name", record.ErrExists, name, t.ID)
		}
		active++
	}
	if active >= m.opts.MaxActiveTokens {
		return fmt.Errorf("%w: %d active tokens (the most a user may hold); revoke one first", ErrLimit, active)
	}
	return nil
}

// ownerError names what failed; a token's or credential's owner without a
// user record is a broken rule (the bootstrap admin, or a user deleted
// meanwhile), not a missing route.
func ownerError(what, owner string, err error) error {
	if errors.Is(err, record.ErrNotFound) {
		err = invalid("user %q has no user record", owner)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Rotation is the outcome of RotateToken.
type Rotation struct {
	// Token is the new token string, shown to its owner once.
	Token string
	// New is the new token's record; Old the old one's, as now stored.
	New, Old *record.Token
}

// RotateToken replaces token id of owner ("" for any owner) with a new
// token of the same user, group and name. The old token keeps working for
// grace (nil takes Options.RotationGrace; zero stops it at once; never
// past its own expiry), then is refused as expired, and records which
// token replaced it. A token with an expiry passes its lifetime on. The
// user must still be allowed the group, as at creation. A token already
// rotated, revoked or expired is not rotated again, and of two rotations
// at once one fails with ErrConflict: a token has at most one successor.
func (m *Manager) RotateToken(ctx context.Context, owner, id string, grace *time.Duration) (*Rotation, error) {
	g, err := m.grace(grace)
	if err != nil {
		return nil, err
	}
	old, err := m.Token(ctx, owner, id)
	if err != nil {
		return nil, err
	}
	if err := rotatable(old, m.opts.Now()); err != nil {
		return nil, err
	}
	req := TokenRequest{User: old.User, Group: old.Group, Name: old.Name, Principal: old.Principal}
	if !old.Expires.IsZero() {
		req.TTL = old.Expires.Sub(old.Created)
	}
	iss, err := m.mint(ctx, req)
	if err != nil {
		return nil, err
	}
	// The successor is stored first and claimed second: if the claim
	// fails (another rotation won), it is removed before anyone saw it.
	err = m.st.CreateToken(ctx, iss.Record, func(u *record.User, _ []*record.Token) error { return checkOwner(u, req.Group) })
	if err != nil {
		return nil, ownerError("rotate token", req.User, err)
	}
	retired, err := m.st.UpdateToken(ctx, id, func(t *record.Token) error { return m.retire(t, iss.Record.ID, g) })
	if err != nil {
		if derr := m.st.DeleteToken(context.WithoutCancel(ctx), iss.Record.ID); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove unused successor %s: %w", iss.Record.ID, derr))
		}
		return nil, fmt.Errorf("rotate token %s: %w", id, err)
	}
	return &Rotation{Token: iss.Token, New: iss.Record, Old: retired}, nil
}

// grace is the grace period a rotation asked for, or the default.
func (m *Manager) grace(grace *time.Duration) (time.Duration, error) {
	if grace == nil {
		return m.opts.RotationGrace, nil
	}
	if err := ValidateRotationGrace(*grace); err != nil {
		return 0, invalid("grace: %v", err)
	}
	return *grace, nil
}

// rotatable refuses a token that may not be rotated.
func rotatable(t *record.Token, now time.Time) error {
	switch {
	case t.Revoked:
		return invalid("token %s is revoked", t.ID)
	case t.ReplacedBy != "":
		return invalid("token %s was already rotated; rotate its replacement %s", t.ID, t.ReplacedBy)
	case t.Expired(now):
		return invalid("token %s has expired", t.ID)
	}
	return nil
}

// retire marks t as replaced by successor, with grace left to live.
func (m *Manager) retire(t *record.Token, successor string, grace time.Duration) error {
	now := m.opts.Now()
	if err := rotatable(t, now); err != nil {
		return fmt.Errorf("%w: changed meanwhile: %w", ErrConflict, err)
	}
	t.ReplacedBy = successor
	if end := now.Add(grace).UTC(); t.Expires.IsZero() || end.Before(t.Expires) {
		t.Expires = end
	}
	return nil
}

// RevokeToken marks token id of owner ("" for any owner) revoked: it is
// refused from the next check on (within the store's propagation time) and
// stays listed as revoked. Revoking again is no error, and announces the
// change again.
func (m *Manager) RevokeToken(ctx context.Context, owner, id string) error {
	_, err := m.st.UpdateToken(ctx, id, func(t *record.Token) error {
		if owner != "" && t.User != owner {
			return notFound("token", id)
		}
		t.Revoked = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	return nil
}

// notFound is record.ErrNotFound for kind id: also what another user's
// record looks like, so that its id is not revealed.
func notFound(kind, id string) error {
	return fmt.Errorf("%s %q: %w", kind, id, record.ErrNotFound)
}

// Token returns token id when owner ("" for any owner) owns it, else
// record.ErrNotFound.
func (m *Manager) Token(ctx context.Context, owner, id string) (*record.Token, error) {
	t, err := m.st.Token(ctx, id)
	switch {
	case err != nil:
		return nil, err
	case owner != "" && t.User != owner:
		return nil, notFound("token", id)
	}
	return t, nil
}

// Tokens lists owner's tokens ("" for everyone's), oldest first.
func (m *Manager) Tokens(ctx context.Context, owner string) ([]*record.Token, error) {
	var tokens []*record.Token
	var err error
	if owner == "" {
		tokens, err = m.st.Tokens(ctx)
	} else {
		tokens, err = m.st.UserTokens(ctx, owner)
	}
	if err != nil {
		return nil, err
	}
	slices.SortFunc(tokens, func(a, b *record.Token) int { return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID)) })
	return tokens, nil
}
