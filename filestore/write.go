package filestore

import (
	"context"
	"fmt"
	"maps"

	"github.com/keyward/keyward/record"
)

// PutProvider creates or replaces a provider record. Its keys name
// environment variables: the file never holds key material.
func (s *Store) PutProvider(ctx context.Context, name string, p *ProviderData) error {
	if err := providerName.check(name); err != nil {
		return err
	}
	return s.Update(ctx, func(d *Data) error {
		setEntry(&d.Providers, name, p)
		return nil
	})
}

// DeleteProvider removes a provider record.
func (s *Store) DeleteProvider(ctx context.Context, name string) error {
	return deleteEntry(ctx, s, providerName, name, func(d *Data) map[string]*ProviderData { return d.Providers })
}

// PutGroup creates or replaces a group.
func (s *Store) PutGroup(ctx context.Context, g *record.Group) error {
	return groupRecords.put(ctx, s, g)
}

// DeleteGroup removes a group. Its tokens stay, and are denied.
func (s *Store) DeleteGroup(ctx context.Context, name string) error {
	return deleteEntry(ctx, s, groupName, name, func(d *Data) map[string]*GroupData { return d.Groups })
}

// PutUser creates or replaces a user.
func (s *Store) PutUser(ctx context.Context, u *record.User) error {
	return userRecords.put(ctx, s, u)
}

// DeleteUser removes a user, every token and management token they own
// and every credential they stored, in one write.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	if err := userName.check(name); err != nil {
		return err
	}
	return s.Update(ctx, func(d *Data) error {
		if err := removeEntry(d.Users, userName, name); err != nil {
			return err
		}
		var owned []string
		for id, t := range d.Tokens.All() {
			if t.User == name {
				owned = append(owned, id)
			}
		}
		for _, id := range owned {
			d.Tokens.Delete(id)
		}
		delete(d.credentials, name)
		maps.DeleteFunc(d.Identities, func(_ string, i *IdentityData) bool { return i != nil && i.User == name })
		maps.DeleteFunc(d.apiTokens, func(_ string, t *apiTokenData) bool { return t != nil && t.User == name })
		return nil
	})
}

// PutToken creates or replaces a token record.
func (s *Store) PutToken(ctx context.Context, t *record.Token) error {
	if err := checkTokenNames(t); err != nil {
		return err
	}
	return s.Update(ctx, func(d *Data) error {
		d.Tokens.Set(t.ID, *tokenData(t))
		return nil
	})
}

// DeleteToken removes a token record.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	if err := tokenID.check(id); err != nil {
		return err
	}
	return s.Update(ctx, func(d *Data) error {
		if !d.Tokens.Delete(id) {
			return fmt.Errorf("token %q: %w", id, record.ErrNotFound)
		}
		return nil
	})
}

// UserTokens lists user's token records, from the loaded snapshot.
func (s *Store) UserTokens(_ context.Context, user string) ([]*record.Token, error) {
	if err := userName.check(user); err != nil {
		return nil, unreadable(err)
	}
	return s.snap.Load().tokens.owned(user), nil
}

// Tokens lists the token records, from the loaded snapshot.
func (s *Store) Tokens(context.Context) ([]*record.Token, error) {
	return s.snap.Load().tokens.all(), nil
}

// Users lists the users.
func (s *Store) Users(context.Context) ([]*record.User, error) {
	return values(s.snap.Load().users), nil
}

// Groups lists the groups.
func (s *Store) Groups(context.Context) ([]*record.Group, error) {
	return values(s.snap.Load().groups), nil
}

func values[V any](m map[string]*V) []*V {
	out := make([]*V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func setEntry[V any](m *map[string]*V, name string, v *V) {
	if *m == nil {
		*m = map[string]*V{}
	}
	(*m)[name] = v
}

// deleteEntry removes the record named name, of kind k, from the map of
// d that records returns.
func deleteEntry[V any](ctx context.Context, s *Store, k nameKind, name string, records func(*Data) map[string]*V) error {
	if err := k.check(name); err != nil {
		return err
	}
	return s.Update(ctx, func(d *Data) error { return removeEntry(records(d), k, name) })
}

func removeEntry[V any](m map[string]*V, k nameKind, name string) error {
	if _, ok := m[name]; !ok {
		return fmt.Errorf("%s %q: %w", k, name, record.ErrNotFound)
	}
	delete(m, name)
	return nil
}

// Providers lists the providers with the keys their environment variables
// hold now.
func (s *Store) Providers(context.Context) ([]*record.Provider, error) {
	return values(s.snap.Load().providers), nil
}
