package record

import (
	"cmp"
	"slices"
)

// PrivateKeyPrefix starts the Key.ID of a user's own credential: "user:"
// and the credential id. It tells a user's key apart from a server key in
// logs and metadata without showing the secret.
const PrivateKeyPrefix = "user:"

// PrivateKey is one user credential ready to go out: the credential, and
// the Key that carries its secret.
type PrivateKey struct {
	// Credential is the user's credential the key comes from.
	Credential *Credential
	// Key is the credential as a provider key: ID is PrivateKeyPrefix and
	// the credential id, Secret the credential's key.
	Key Key
}

// PrivateKeys are one user's credentials by provider and model, built once
// per load so that a request picks its key with map lookups and no
// allocation, and so that each *Key stays the same pointer for as long as
// the PrivateKeys is in use (responses are cached by key pointer). Like
// every record it is immutable once built.
type PrivateKeys struct {
	providers map[string]*providerKeys
}

// providerKeys are the usable credentials for one provider: the best one
// per model named, and the best one without a model.
type providerKeys struct {
	byModel  map[string]*PrivateKey
	anyModel *PrivateKey
}

// NewPrivateKeys indexes one user's credentials. Credentials without a key
// are left out. See For for which credential a request gets.
func NewPrivateKeys(creds []*Credential) *PrivateKeys {
	// Newest first, so that the first credential seen for a slot is the
	// one that keeps it.
	sorted := slices.Clone(creds)
	sorted = slices.DeleteFunc(sorted, func(c *Credential) bool { return c == nil || c.Key == "" })
	slices.SortFunc(sorted, func(a, b *Credential) int {
		return cmp.Or(b.Created.Compare(a.Created), cmp.Compare(b.ID, a.ID))
	})
	p := &PrivateKeys{providers: make(map[string]*providerKeys)}
	for _, c := range sorted {
		pk := p.providers[c.Provider]
		if pk == nil {
			pk = &providerKeys{byModel: make(map[string]*PrivateKey)}
			p.providers[c.Provider] = pk
		}
		entry := &PrivateKey{Credential: c, Key: Key{ID: PrivateKeyPrefix + c.ID, Secret: c.Key}}
		switch {
		case c.Model == "":
			if pk.anyModel == nil {
				pk.anyModel = entry
			}
		case pk.byModel[c.Model] == nil:
			pk.byModel[c.Model] = entry
		}
	}
	return p
}

// Has reports whether the user has any usable credential for provider, so
// that a caller can skip working out the model when none could be picked.
// Safe on a nil PrivateKeys.
func (p *PrivateKeys) Has(provider string) bool {
	return p != nil && p.providers[provider] != nil
}

// For returns the credential a request to provider for model goes out on,
// or nil when the user has none that fits. A credential for exactly that
// model comes first, then one without a model (any model); a credential
// for another model is never used. Among equals, the most recently created
// wins (on a tie, the larger id). For is safe on a nil PrivateKeys and does
// not allocate.
func (p *PrivateKeys) For(provider, model string) *PrivateKey {
	if p == nil {
		return nil
	}
	pk := p.providers[provider]
	if pk == nil {
		return nil
	}
	if model != "" {
		if k := pk.byModel[model]; k != nil {
			return k
		}
	}
	return pk.anyModel
}
