package vault

import (
	"fmt"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Every name and id that becomes part of a Vault path (a user, group,
// provider, token, management token or credential, and the per-user token
// index) is checked by each public method before any request: with the
// rules the records use, so that no "..", "/", "%2F" or space ever reaches
// a path, and no name can break the change marker's lines.
//
// An invalid name is record.ErrInvalidName. A read of one (a get or a list
// of one user's records) is record.ErrNotFound as well: no such record can
// exist, and the caches keep "gone" answers for exactly that. A write or
// a delete of one is record.ErrInvalidName only: the caller made a
// mistake, and must not be told the record is merely missing.
//
// A principal's claim (identity-principals/<hash>) is named by the hex
// SHA-256 of the principal, which checkIdentity has checked first: no
// principal's '/', ':' or '*' reaches a path.
//
// Errors never quote an invalid name or id: it may be a secret pasted
// into the wrong place (a whole token for a token id).

// checkName checks a user, group or provider name.
func checkName(kind, name string) error { return record.CheckName(kind, name) }

// checkTokenID checks the id of an LLM token or a management token.
func checkTokenID(kind, id string) error {
	if !token.ValidID(id) {
		return fmt.Errorf("%s id: %w: want %d URL-safe base64 characters", kind, record.ErrInvalidName, token.IDLen)
	}
	return nil
}

// checkCredential checks a credential's owner and id.
func checkCredential(user, id string) error {
	if err := checkName("user", user); err != nil {
		return err
	}
	return record.CheckCredentialID(id)
}

// notFound marks a read's invalid-name error as a missing record too.
func notFound(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w (%w)", err, record.ErrNotFound)
}
