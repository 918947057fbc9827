package cache

import (
	"context"
	"errors"
	"iter"
	"strings"

	"github.com/keyward/keyward/record"
)

// Source is the store that Records load from.
type Source interface {
	Token(ctx context.Context, id string) (*record.Token, error)
	User(ctx context.Context, name string) (*record.User, error)
	Group(ctx context.Context, name string) (*record.Group, error)
	Provider(ctx context.Context, name string) (*record.Provider, error)
	// Credentials lists a user's own provider credentials; a user with
	// none may answer with an empty list or record.ErrNotFound.
	Credentials(ctx context.Context, user string) ([]*record.Credential, error)
}

// IdentitySource is a Source that keeps principal mappings. A Source
// without them maps no principal.
type IdentitySource interface {
	Identities(ctx context.Context) ([]*record.Identity, error)
}

// identitiesKey is the one key of the identities cache: the mappings are
// indexed together, since a lookup by principal must see every prefix.
const identitiesKey = "all"

// ResidentSource is a Source that holds its records in memory, returns
// tokens by value and users, groups, providers and users' indexed
// credentials by pointer without I/O or allocation, and reports every
// change (the file store). Records reads those straight from it: caching
// copies would only add memory (a token's record per active token), a
// lock and a clock read to each lookup.
type ResidentSource interface {
	Source
	// ResidentToken is Token by value, without allocating.
	ResidentToken(ctx context.Context, id string) (record.Token, error)
	// PrivateKeys is Credentials indexed as Records.PrivateKeys returns
	// them: an empty index for a user with none, never record.ErrNotFound.
	PrivateKeys(ctx context.Context, user string) (*record.PrivateKeys, error)
}

// Records caches each kind of live record of a Source in its own Cache,
// with records the store reports gone (record.ErrNotFound) cached as
// negative entries; a ResidentSource's tokens, users, groups, providers
// and private keys are read from it directly. It serves authz.Records.
type Records struct {
	tokens    reader[record.Token]
	users     reader[*record.User]
	groups    reader[*record.Group]
	providers reader[*record.Provider]
	// privateKeys are each user's own credentials, indexed for the
	// decision, by user name.
	privateKeys reader[*record.PrivateKeys]
	// identities is the index of every principal mapping, one entry,
	// reloaded whole when a mapping changes.
	identities *Cache[*record.Identities]
}

// NewRecords returns record caches over src, each sized and timed by opts.
// They share one Health (opts.Health, or a new one): a store that hangs on
// one kind of record is not waited for on the others.
func NewRecords(src Source, opts Options) (*Records, error) {
	if opts.IsNotFound == nil {
		opts.IsNotFound = func(err error) bool { return errors.Is(err, record.ErrNotFound) }
	}
	if opts.Health == nil {
		opts.Health = &Health{}
	}
	r := &Records{}
	var err error
	if rs, ok := src.(ResidentSource); ok {
		r.tokens = direct[record.Token](rs.ResidentToken)
		r.users, r.groups, r.providers = direct[*record.User](src.User), direct[*record.Group](src.Group), direct[*record.Provider](src.Provider)
		r.privateKeys = direct[*record.PrivateKeys](rs.PrivateKeys)
	} else {
		tokens, err := New(src.Token, opts)
		if err != nil {
			return nil, err
		}
		r.tokens = byValue[record.Token]{tokens}
		if r.users, err = New(src.User, opts); err != nil {
			return nil, err
		}
		if r.groups, err = New(src.Group, opts); err != nil {
			return nil, err
		}
		if r.providers, err = New(src.Provider, opts); err != nil {
			return nil, err
		}
		if r.privateKeys, err = New(privateKeysOf(src), opts); err != nil {
			return nil, err
		}
	}
	loadIdentities := func(ctx context.Context, _ string) (*record.Identities, error) {
		is, ok := src.(IdentitySource)
		if !ok {
			return record.NewIdentities(nil), nil
		}
		ids, err := is.Identities(ctx)
		if err != nil {
			return nil, err
		}
		return record.NewIdentities(ids), nil
	}
	if r.identities, err = New(loadIdentities, opts); err != nil {
		return nil, err
	}
	return r, nil
}

// privateKeysOf loads a user's credentials from src and indexes them.
func privateKeysOf(src Source) LoadFunc[*record.PrivateKeys] {
	// One empty index serves every user without credentials.
	none := record.NewPrivateKeys(nil)
	return func(ctx context.Context, user string) (*record.PrivateKeys, error) {
		creds, err := src.Credentials(ctx, user)
		switch {
		case errors.Is(err, record.ErrNotFound), err == nil && len(creds) == 0:
			// Most users have none: a positive entry, so that their
			// requests cost no store traffic.
			return none, nil
		case err != nil:
			return nil, err
		}
		return record.NewPrivateKeys(creds), nil
	}
}

// Token returns the live token record with the given id, by value: from
// a ResidentSource, without allocating.
func (r *Records) Token(ctx context.Context, id string) (record.Token, error) {
	return r.tokens.Get(ctx, id)
}

// User returns the live user record.
func (r *Records) User(ctx context.Context, name string) (*record.User, error) {
	return r.users.Get(ctx, name)
}

// Group returns the live group record.
func (r *Records) Group(ctx context.Context, name string) (*record.Group, error) {
	return r.groups.Get(ctx, name)
}

// Provider returns the live provider record.
func (r *Records) Provider(ctx context.Context, name string) (*record.Provider, error) {
	return r.providers.Get(ctx, name)
}

// PrivateKeys returns the user's own credentials, indexed by provider and
// model; empty (never nil) for a user who has none.
func (r *Records) PrivateKeys(ctx context.Context, user string) (*record.PrivateKeys, error) {
	return r.privateKeys.Get(ctx, user)
}

// Identities returns the index of the principal mappings: one cached
// entry, so a warm lookup does no store I/O.
func (r *Records) Identities(ctx context.Context) (*record.Identities, error) {
	return r.identities.Get(ctx, identitiesKey)
}

// Stats yields each cache's kind (token, user, group, provider,
// private_keys, identities) with its cumulative counters; the kinds read
// from a ResidentSource directly have no cache and are left out. The
// counters are the ones a Get keeps anyway, so a metrics scrape reads them
// at no cost to the hot path.
func (r *Records) Stats() iter.Seq2[string, Stats] {
	return func(yield func(string, Stats) bool) {
		for _, k := range []struct {
			name string
			r    interface{ stats() (Stats, bool) }
		}{
			{"token", r.tokens}, {"user", r.users}, {"group", r.groups}, {"provider", r.providers},
			{"private_keys", r.privateKeys}, {"identities", r.identities},
		} {
			if st, ok := k.r.stats(); ok && !yield(k.name, st) {
				return
			}
		}
	}
}

// reader is how Records reads one kind of record: through a Cache, or
// straight from a ResidentSource (direct).
type reader[V any] interface {
	Get(ctx context.Context, key string) (V, error)
	// stats are the cache's counters; false for no cache.
	stats() (Stats, bool)
	Purge()
	Invalidate(key string)
}

// byValue reads a Cache of records as values: the cache keeps one
// pointer per record, and each Get copies it out.
type byValue[V any] struct{ *Cache[*V] }

func (c byValue[V]) Get(ctx context.Context, key string) (V, error) {
	p, err := c.Cache.Get(ctx, key)
	if err != nil {
		var zero V
		return zero, err
	}
	return *p, nil
}

// direct reads a ResidentSource: nothing to count or drop.
type direct[V any] LoadFunc[V]

func (d direct[V]) Get(ctx context.Context, key string) (V, error) { return d(ctx, key) }
func (direct[V]) stats() (Stats, bool)                             { return Stats{}, false }
func (direct[V]) Purge()                                           {}
func (direct[V]) Invalidate(string)                                {}

// Purge drops every cached record, e.g. after the store reported a change.
func (r *Records) Purge() {
	r.tokens.Purge()
	r.users.Purge()
	r.groups.Purge()
	r.providers.Purge()
	r.privateKeys.Purge()
	r.identities.Purge()
}

// Invalidate drops one cached record. t is token, user, group or
// provider; or credential, whose name is "<user>/<id>" and which drops that
// user's credentials (a user change drops them too). api-token changes
// concern no cached record; any other kind drops everything, to be safe.
func (r *Records) Invalidate(t record.Type, name string) {
	switch t {
	case record.TypeToken:
		r.tokens.Invalidate(name)
	case record.TypeUser:
		r.users.Invalidate(name)
		r.privateKeys.Invalidate(name)
	case record.TypeGroup:
		r.groups.Invalidate(name)
	case record.TypeProvider:
		r.providers.Invalidate(name)
	case record.TypeCredential:
		user, _, _ := strings.Cut(name, "/")
		r.privateKeys.Invalidate(user)
	case record.TypeIdentity:
		// Any mapping's change can change what a principal maps to.
		r.identities.Invalidate(identitiesKey)
	case record.TypeAPIToken:
		// Not cached here either: nothing to drop.
	default:
		r.Purge()
	}
}
