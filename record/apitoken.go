package record

import "time"

// APIToken is the stored half of a management token ("kwm_…"): its owner
// and the hash of its secret, never the token. The owner's role is read
// from the user record on every request, so a demoted admin loses admin
// rights at once. It lives here rather than in the management API so that
// the stores can keep it without depending on the HTTP layer.
type APIToken struct {
	// ID is the token's public identifier, part of the token string.
	ID string
	// Hash is the SHA-256 of the token's secret part.
	Hash [32]byte
	// User owns the token.
	User string
	// Created is when the token was issued.
	Created time.Time
	// Revoked tokens are refused.
	Revoked bool
}
