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

type verifierState struct{ ring *Keyring }

// Set makes r the keyring that verifies from now on. A nil r means the
// store holds no signing keys: no token can be valid.
func (v *Verifier) Set(r *Keyring) { v.state.Store(&verifierState{ring: r}) }

// Verify is Keyring.Verify on the current keyring.
func (v *Verifier) Verify(tok string) (string, [sha256.Size]byte, error) {
	st := v.state.Load()
	switch {
	case st == nil:
		return "", [sha256.Size]byte{}, ErrNotReady
	case st.ring == nil:
		return "", [sha256.Size]byte{}, ErrForged
	}
	return st.ring.Verify(tok)
}
