package filestore

import (
	"fmt"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Every name and id a Store method is given, and every name inside a
// record it writes (a group's providers, a user's groups, a token's owner
// and group), is checked before it is used, so that a name that breaks the
// rules is refused as such (record.ErrInvalidName) rather than stored, or
// taken for one that is not there.

// nameKind is what a name names, and so the rule it must follow.
type nameKind int

const (
	providerName nameKind = iota
	groupName
	userName
	credentialName
	tokenID
	credentialID
)

// check returns an error wrapping record.ErrInvalidName for the first of
// names that breaks k's rule.
func (k nameKind) check(names ...string) error {
	for _, n := range names {
		if err := k.checkOne(n); err != nil {
			return err
		}
	}
	return nil
}

func (k nameKind) checkOne(n string) error {
	switch k {
	case tokenID:
		if !token.ValidID(n) {
			return fmt.Errorf("%w: token id %q: not a token id", record.ErrInvalidName, n)
		}
	case credentialID:
		if !record.ValidCredentialID(n) {
			return fmt.Errorf("%w: credential id %q: not 1-64 letters, digits, '-' or '_'", record.ErrInvalidName, n)
		}
	default:
		if err := record.ValidateName(k.String(), n); err != nil {
			return fmt.Errorf("%w: %w", record.ErrInvalidName, err)
		}
	}
	return nil
}

func (k nameKind) String() string {
	switch k {
	case providerName:
		return "provider"
	case groupName:
		return "group"
	case userName:
		return "user"
	case credentialName:
		return "credential"
	case tokenID:
		return "token id"
	}
	return "credential id"
}

// unreadable is a read's answer to an invalid name: it names no record,
// so the error is record.ErrNotFound as well as record.ErrInvalidName, and
// a cache in front of the store remembers it as gone.
func unreadable(err error) error {
	return fmt.Errorf("%w; %w", err, record.ErrNotFound)
}
