package record

import "errors"

// ErrInvalidName reports a name or id that breaks its rules (ValidateName,
// ValidCredentialID, token ids): a store refuses it before it reaches a
// path or a record. Stores wrap it with the kind of name; callers use
// errors.Is, and answer it as the caller's mistake, never as a missing
// record or a store failure.
var ErrInvalidName = errors.New("invalid name")
