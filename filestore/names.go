package filestore

import (
	"cmp"
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
	identityName
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
	case identityName:
		return "identity"
	}
	return "credential id"
}

// unreadable is a read's answer to an invalid name: it names no record,
// so the error is record.ErrNotFound as well as record.ErrInvalidName, and
// a cache in front of the store remembers it as gone.
func unreadable(err error) error {
	return fmt.Errorf("%w; %w", err, record.ErrNotFound)
}

// checkUser checks the names u holds.
func checkUser(u *record.User) error {
	return cmp.Or(userName.check(u.Name), groupName.check(u.Groups...))
}

// checkGroup checks the names g holds.
func checkGroup(g *record.Group) error {
	return cmp.Or(groupName.check(g.Name), providerName.check(g.Providers...))
}

// checkTokenNames checks the names and ids t holds.
func checkTokenNames(t *record.Token) error {
	err := cmp.Or(tokenID.check(t.ID), userName.check(t.User), groupName.check(t.Group))
	if err == nil && t.ReplacedBy != "" {
		err = tokenID.check(t.ReplacedBy)
	}
	if err == nil && t.Principal != "" {
		err = record.ValidatePrincipal(t.Principal, true)
	}
	return err
}

// checkAPIToken checks the names and ids t holds.
func checkAPIToken(t *record.APIToken) error {
	return cmp.Or(tokenID.check(t.ID), userName.check(t.User))
}

// checkCredential checks the names and ids c holds.
func checkCredential(c *record.Credential) error {
	return cmp.Or(credentialID.check(c.ID), userName.check(c.User), credentialName.check(c.Name), providerName.check(c.Provider))
}

// checkIdentity checks the names and the principal id holds.
func checkIdentity(id *record.Identity) error {
	if err := cmp.Or(identityName.check(id.Name), userName.check(id.User), groupName.check(id.Group)); err != nil {
		return err
	}
	return record.ValidatePrincipal(id.Principal, true)
}
