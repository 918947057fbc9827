package record

import (
	"errors"
	"fmt"
)

// ErrInvalidName reports a name or id that cannot name a record: a
// provider, group, user or credential name that ValidateName refuses, or a
// malformed token or credential id. Stores refuse one at every read, write
// and delete, with an error wrapping this one, before it reaches a map key
// or a path. A write or delete given one fails with it and never reports
// ErrNotFound instead; a read may wrap both, since such a name names
// nothing. Callers branch on it with errors.Is: it is the caller's mistake.
var ErrInvalidName = errors.New("invalid name")

// CheckName is ValidateName at a store's boundary: an error wrapping
// ErrInvalidName, which does not quote the name (it may be a secret
// pasted into the wrong place).
func CheckName(kind, name string) error {
	if !validName(name) {
		return fmt.Errorf("%s name: %w: want 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", kind, ErrInvalidName)
	}
	return nil
}

// CheckCredentialID is ValidCredentialID at a store's boundary: an error
// wrapping ErrInvalidName, which does not quote the id.
func CheckCredentialID(id string) error {
	if !ValidCredentialID(id) {
		return fmt.Errorf("credential id: %w: want 1-64 URL-safe base64 characters", ErrInvalidName)
	}
	return nil
}
