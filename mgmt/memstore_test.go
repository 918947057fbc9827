package mgmt

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// memStore is an in-memory Store for tests.
type memStore struct {
	mu        sync.Mutex
	users     map[string]*record.User
	groups    map[string]*record.Group
	tokens    map[string]*record.Token
	apiTokens map[string]*record.APIToken
}

var _ Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{users: map[string]*record.User{}, groups: map[string]*record.Group{}, tokens: map[string]*record.Token{}, apiTokens: map[string]*record.APIToken{}}
}

func get[T any](s *memStore, m map[string]*T, kind, name string) (*T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("%s %q: %w", kind, name, record.ErrNotFound)
	}
	c := *v
	return &c, nil
}

func put[T any](s *memStore, m map[string]*T, name string, v *T) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := *v
	m[name] = &c
	return nil
}

func del[T any](s *memStore, m map[string]*T, kind, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := m[name]; !ok {
		return fmt.Errorf("%s %q: %w", kind, name, record.ErrNotFound)
	}
	delete(m, name)
	return nil
}

func all[T any](s *memStore, m map[string]*T) []*T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Values(m))
}

func (s *memStore) User(_ context.Context, n string) (*record.User, error) {
	return get(s, s.users, "user", n)
}
func (s *memStore) Group(_ context.Context, n string) (*record.Group, error) {
	return get(s, s.groups, "group", n)
}
func (s *memStore) Token(_ context.Context, id string) (*record.Token, error) {
	return get(s, s.tokens, "token", id)
}
func (s *memStore) APIToken(_ context.Context, id string) (*record.APIToken, error) {
	return get(s, s.apiTokens, "management token", id)
}
func (s *memStore) SigningKeys(context.Context) ([]token.SigningKey, error) {
	return []token.SigningKey{{ID: 1, Secret: bytes.Repeat([]byte{7}, token.KeySize)}}, nil
}
func (s *memStore) PutToken(_ context.Context, t *record.Token) error {
	return put(s, s.tokens, t.ID, t)
}
func (s *memStore) PutAPIToken(_ context.Context, t *record.APIToken) error {
	return put(s, s.apiTokens, t.ID, t)
}
func (s *memStore) PutGroup(_ context.Context, g *record.Group) error {
	return put(s, s.groups, g.Name, g)
}
func (s *memStore) PutUser(_ context.Context, u *record.User) error {
	return put(s, s.users, u.Name, u)
}
func (s *memStore) DeleteGroup(_ context.Context, n string) error {
	return del(s, s.groups, "group", n)
}

// DeleteUser removes the user and their tokens, as the file store does.
func (s *memStore) DeleteUser(_ context.Context, n string) error {
	if err := del(s, s.users, "user", n); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	maps.DeleteFunc(s.tokens, func(_ string, t *record.Token) bool { return t.User == n })
	return nil
}
func (s *memStore) Users(context.Context) ([]*record.User, error)   { return all(s, s.users), nil }
func (s *memStore) Groups(context.Context) ([]*record.Group, error) { return all(s, s.groups), nil }
func (s *memStore) Tokens(context.Context) ([]*record.Token, error) { return all(s, s.tokens), nil }
