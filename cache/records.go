package cache

import (
	"context"
	"errors"

	"github.com/keyward/keyward/record"
)

// Source is the store that Records load from.
type Source interface {
	Token(ctx context.Context, id string) (*record.Token, error)
	User(ctx context.Context, name string) (*record.User, error)
	Group(ctx context.Context, name string) (*record.Group, error)
	Provider(ctx context.Context, name string) (*record.Provider, error)
}

// Records caches each kind of live record of a Source in its own Cache,
// with records the store reports gone (record.ErrNotFound) cached as
// negative entries. It serves authz.Records.
type Records struct {
	tokens    *Cache[*record.Token]
	users     *Cache[*record.User]
	groups    *Cache[*record.Group]
	providers *Cache[*record.Provider]
}

// NewRecords returns record caches over src, each sized and timed by opts.
func NewRecords(src Source, opts Options) (*Records, error) {
	if opts.IsNotFound == nil {
		opts.IsNotFound = func(err error) bool { return errors.Is(err, record.ErrNotFound) }
	}
	r := &Records{}
	var err error
	if r.tokens, err = New(src.Token, opts); err != nil {
		return nil, err
	}
	if r.users, err = New(src.User, opts); err != nil {
		return nil, err
	}
	if r.groups, err = New(src.Group, opts); err != nil {
		return nil, err
	}
	if r.providers, err = New(src.Provider, opts); err != nil {
		return nil, err
	}
	return r, nil
}

// Token returns the live token record with the given id.
func (r *Records) Token(ctx context.Context, id string) (*record.Token, error) {
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

// Purge drops every cached record, e.g. after the store reported a change.
func (r *Records) Purge() {
	r.tokens.Purge()
	r.users.Purge()
	r.groups.Purge()
	r.providers.Purge()
}

// Invalidate drops one cached record. kind is token, user, group or
// provider (credential and api-token changes concern no cached record); any
// other kind drops everything, to be safe.
func (r *Records) Invalidate(kind, name string) {
	switch kind {
	case "token":
		r.tokens.Invalidate(name)
	case "user":
		r.users.Invalidate(name)
	case "group":
		r.groups.Invalidate(name)
	case "provider":
		r.providers.Invalidate(name)
	case "credential":
		// Not cached here: nothing to drop.
	case "api-token":
		// Not cached here either: nothing to drop.
	default:
		r.Purge()
	}
}
