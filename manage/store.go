package manage

import (
	"context"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Store is what management needs of a record store; the file store and the
// Vault store both are one.
//
// A write whose rule depends on what is stored takes the rule as a check
// function, which the store runs atomically with the write: under the file
// lock on the file store, with check-and-set on Vault. A check's error
// aborts the write and comes back unchanged. A check may run more than once
// (Vault retries a lost check-and-set), so it must not have side effects.
//
// Stores return record.ErrNotFound for a record that does not exist,
// record.ErrExists for a create of one that does, and
// record.ErrNotAnnounced when a change was stored but the other replicas
// could not be told (running the same change again announces it).
type Store interface {
	UserStore
	GroupStore
	TokenStore
	APITokenStore
	CredentialStore
	IdentityStore
	// Provider returns a provider record, with its keys.
	Provider(ctx context.Context, name string) (*record.Provider, error)
	// Providers lists the provider records, with their keys.
	Providers(ctx context.Context) ([]*record.Provider, error)
	// SigningKeys returns the token signing keys; none before the first
	// EnsureSigningKey.
	SigningKeys(ctx context.Context) ([]token.SigningKey, error)
	// EnsureSigningKey makes the first signing key if there is none.
	EnsureSigningKey(ctx context.Context) error
}

// UserStore keeps user records.
type UserStore interface {
	User(ctx context.Context, name string) (*record.User, error)
	Users(ctx context.Context) ([]*record.User, error)
	// CreateUser stores u unless a user of that name exists.
	CreateUser(ctx context.Context, u *record.User) error
	// UpdateUser applies change to the stored user and stores the result.
	UpdateUser(ctx context.Context, name string, change func(*record.User) error) (*record.User, error)
	// DeleteUser removes the user with every token, management token and
	// credential they own. An owned record created meanwhile is either
	// removed with them or refused: none outlives its user.
	DeleteUser(ctx context.Context, name string) error
}

// GroupStore keeps group records.
type GroupStore interface {
	Group(ctx context.Context, name string) (*record.Group, error)
	Groups(ctx context.Context) ([]*record.Group, error)
	// CreateGroup stores g unless a group of that name exists.
	CreateGroup(ctx context.Context, g *record.Group) error
	// UpdateGroup applies change to the stored group and stores the result.
	UpdateGroup(ctx context.Context, name string, change func(*record.Group) error) (*record.Group, error)
	// DeleteGroup removes a group; its tokens stay, and are refused.
	DeleteGroup(ctx context.Context, name string) error
}

// TokenStore keeps LLM token records.
type TokenStore interface {
	Token(ctx context.Context, id string) (*record.Token, error)
	// UserTokens lists the tokens user owns, and no one else's.
	UserTokens(ctx context.Context, user string) ([]*record.Token, error)
	// Tokens lists every token.
	Tokens(ctx context.Context) ([]*record.Token, error)
	// CreateToken stores the new token t once check has accepted its
	// owner and the tokens the owner holds, atomically with the owner's
	// other token writes and with the owner's deletion.
	CreateToken(ctx context.Context, t *record.Token, check func(owner *record.User, owned []*record.Token) error) error
	// UpdateToken applies change to the stored token and stores the
	// result, unless the token changed meanwhile.
	UpdateToken(ctx context.Context, id string, change func(*record.Token) error) (*record.Token, error)
	// DeleteToken removes a token record.
	DeleteToken(ctx context.Context, id string) error
}

// APITokenStore keeps management token records.
type APITokenStore interface {
	APIToken(ctx context.Context, id string) (*record.APIToken, error)
	// CreateAPIToken stores the new management token t once check has
	// accepted its owner, atomically with the owner's deletion.
	CreateAPIToken(ctx context.Context, t *record.APIToken, check func(owner *record.User) error) error
	// UpdateAPIToken applies change to the stored management token.
	UpdateAPIToken(ctx context.Context, id string, change func(*record.APIToken) error) (*record.APIToken, error)
}

// CredentialStore keeps users' private provider credentials. Every method
// takes the owner: another user's credential id is record.ErrNotFound.
type CredentialStore interface {
	Credential(ctx context.Context, user, id string) (*record.Credential, error)
	Credentials(ctx context.Context, user string) ([]*record.Credential, error)
	// SaveCredential creates or replaces c once check has accepted its
	// owner and the credentials the owner holds (c's old version among
	// them when it is replaced), atomically with the owner's other
	// credential writes and with the owner's deletion.
	SaveCredential(ctx context.Context, c *record.Credential, check func(owner *record.User, owned []*record.Credential) error) error
	DeleteCredential(ctx context.Context, user, id string) error
}

// IdentityStore keeps principal mappings (record.Identity).
type IdentityStore interface {
	Identity(ctx context.Context, name string) (*record.Identity, error)
	Identities(ctx context.Context) ([]*record.Identity, error)
	// CreateIdentity stores the new mapping id once check has accepted
	// its user and every stored mapping, atomically with the user's
	// other owned writes and with the user's deletion (which removes
	// the user's mappings).
	CreateIdentity(ctx context.Context, id *record.Identity, check func(user *record.User, all []*record.Identity) error) error
	// UpdateIdentity applies change to the stored mapping and stores
	// the result; change may not alter its name, principal, user or
	// group.
	UpdateIdentity(ctx context.Context, name string, change func(*record.Identity) error) (*record.Identity, error)
	// DeleteIdentity removes a mapping.
	DeleteIdentity(ctx context.Context, name string) error
}
