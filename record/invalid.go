package record

import "errors"

// ErrInvalidName reports a name or id that cannot name a record: a
// provider, group, user or credential name that ValidateName refuses, or a
// malformed token or credential id. Stores refuse one at every read, write
// and delete, with an error wrapping this one, before it reaches a map key
// or a path. A write or delete given one fails with it and never reports
// ErrNotFound instead; a read may wrap both, since such a name names
// nothing. Callers branch on it with errors.Is: it is the caller's mistake.
var ErrInvalidName = errors.New("invalid name")
