// Package manage holds keyward's management rules, the same whichever store
// keeps the records and whoever asks (the CLI, the management API in
// manage/httpapi): who may get a token for which group and how many, what
// creating, rotating or revoking a token does, what users, groups,
// management tokens and private credentials may look like, and what
// deleting a user takes with it.
//
// Every rule that reads the store before it writes runs atomically with the
// write: a Manager hands its check to the store, which runs it under the
// file lock (file store) or with check-and-set (Vault). Front ends map the
// errors once: ErrInvalid (a rule is broken), record.ErrExists,
// record.ErrNotFound, ErrLimit, ErrConflict, record.ErrNotAnnounced, and
// anything else is the store failing.
package manage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/token"
)

// The errors callers branch on, besides the store's record.ErrNotFound,
// record.ErrExists and record.ErrNotAnnounced.
var (
	// ErrInvalid marks a request that breaks a rule; the message says
	// which, naming fields and records, never a secret.
	ErrInvalid = errors.New("invalid request")
	// ErrLimit marks a request past a limit, such as a user's number of
	// active tokens.
	ErrLimit = errors.New("limit reached")
	// ErrConflict marks a change that lost a race with another change of
	// the same record (two rotations of one token): nothing was changed.
	ErrConflict = errors.New("conflicting change")
)

// invalid returns an ErrInvalid error with the given message.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Defaults of Options.
const (
	// DefaultRotationGrace is how long a rotated token keeps working when
	// the rotation names no grace period: a day, time for a deployment to
	// roll out its new secret.
	DefaultRotationGrace = 24 * time.Hour
	// MaxRotationGrace bounds the grace period of a rotation: an old token
	// that lingers for months is a second token, not a rotation.
	MaxRotationGrace = 30 * 24 * time.Hour
	// DefaultMaxActiveTokens is how many active LLM tokens a user may hold
	// at once when Options.MaxActiveTokens is zero.
	DefaultMaxActiveTokens = 100
)

// Options configure a Manager. The zero value takes every default.
type Options struct {
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// RotationGrace is the grace period of a rotation that names none.
	// Default DefaultRotationGrace; at most MaxRotationGrace.
	RotationGrace time.Duration
	// MaxActiveTokens caps the active LLM tokens a user holds (rotated,
	// revoked and expired ones do not count). Default
	// DefaultMaxActiveTokens.
	MaxActiveTokens int
}

// Manager applies the management rules to a Store. It is safe for
// concurrent use, and so is running several Managers (processes) against
// one store: the stores make each rule's read and write atomic.
type Manager struct {
	st   Store
	opts Options
}

// New returns a Manager over st. Options out of range are an error naming
// the field.
func New(st Store, opts Options) (*Manager, error) {
	if st == nil {
		return nil, errors.New("manage: no store")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RotationGrace == 0 {
		opts.RotationGrace = DefaultRotationGrace
	} else if err := ValidateRotationGrace(opts.RotationGrace); err != nil {
		return nil, fmt.Errorf("manage: rotation grace: %w", err)
	}
	switch n := opts.MaxActiveTokens; {
	case n == 0:
		opts.MaxActiveTokens = DefaultMaxActiveTokens
	case n < 0:
		return nil, fmt.Errorf("manage: max active tokens %d: want at least 1", n)
	}
	return &Manager{st: st, opts: opts}, nil
}

// ValidateRotationGrace checks the grace period of a rotation: between 0
// and MaxRotationGrace.
func ValidateRotationGrace(g time.Duration) error {
	if g < 0 || g > MaxRotationGrace {
		return fmt.Errorf("%v is not between 0 and %v", g, MaxRotationGrace)
	}
	return nil
}

// RotationGrace is the grace period of a rotation that names none.
func (m *Manager) RotationGrace() time.Duration { return m.opts.RotationGrace }

// ReservedUser is the name the bootstrap admin acts under in the
// management API and its audit log; no user record may take it.
const ReservedUser = "bootstrap"

// keyring returns the keyring that mints LLM tokens, from the store's
// signing keys; management tokens use its Management form.
func (m *Manager) keyring(ctx context.Context) (*token.Keyring, error) {
	keys, err := m.st.SigningKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	return token.NewKeyring(keys)
}

// EnsureSigningKey makes the store's first token signing key if it has
// none, so that tokens can be minted.
func (m *Manager) EnsureSigningKey(ctx context.Context) error {
	return m.st.EnsureSigningKey(ctx)
}

// Now is the Manager's clock: what token states are judged against.
func (m *Manager) Now() time.Time { return m.opts.Now() }
