package token

import (
	"crypto/sha256"
	"errors"
	"sync/atomic"
)

// ErrNotReady means no signing keys have been loaded yet (the store has not
// answered since start-up): the token cannot be judged, which is not the
// same as judging it forged.
var ErrNotReady = errors.New("token signing keys not loaded yet")

// Verifier verifies tokens against the current Keyring and lets a new one
// be swapped in when the signing keys change, without a lock on the hot
// path. Until Set is first called it answers ErrNotReady.
type Verifier struct {
	state atomic.Pointer[verifierState]
}

// verifierState is one keyring and its management form, made once per Set
// rather than per management token verified.
type verifierState struct{ ring, management *Keyring }

// Set makes r the keyring that verifies from now on. A nil r means the
// store holds no signing keys: no token can be valid.
func (v *Verifier) Set(r *Keyring) {
	st := &verifierState{ring: r}
	if r != nil {
		st.management = r.Management()
	}
	v.state.Store(st)
}

// Verify is Keyring.Verify on the current keyring.
func (v *Verifier) Verify(tok string) (string, [sha256.Size]byte, error) {
	return v.verify(tok, func(st *verifierState) *Keyring { return st.ring })
}

// VerifyManagement verifies a management token ("kwm_…") on the current
// keyring's management form, without I/O: a forged management token costs
// no store read.
func (v *Verifier) VerifyManagement(tok string) (string, [sha256.Size]byte, error) {
	return v.verify(tok, func(st *verifierState) *Keyring { return st.management })
}

func (v *Verifier) verify(tok string, ring func(*verifierState) *Keyring) (string, [sha256.Size]byte, error) {
	st := v.state.Load()
	switch {
	case st == nil:
		return "", [sha256.Size]byte{}, ErrNotReady
	case st.ring == nil:
		return "", [sha256.Size]byte{}, ErrForged
	}
	return ring(st).Verify(tok)
}
