package loadrig

import (
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/token"
	"github.com/keyward/keyward/vault"
	"github.com/keyward/keyward/vault/vaulttest"
)

// TestVaultFixture: the Vault fixture's configuration loads, and its store
// holds what the file fixture's does: every token verifiable with the
// store's signing keys, owned by a user who may use its group, in a
// group that allows the provider, whose key is in Vault.
func TestVaultFixture(t *testing.T) {
	bao, err := StartBao(t.Context(), vaulttest.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bao.Stop(time.Second) })
	spec := Spec{Tokens: 40, Groups: 5, Users: 3, CacheTTL: 5 * time.Minute}
	f, err := WriteVaultFixture(t.Context(), t.TempDir(), bao, spec)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(f.ConfigPath, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.Kind != "vault" || cfg.Vault.Address != bao.Addr || cfg.Cache.TTL != spec.CacheTTL {
		t.Fatalf("config: store %q at %q, cache TTL %s; want vault at %s, %s", cfg.Store.Kind, cfg.Vault.Address, cfg.Cache.TTL, bao.Addr, spec.CacheTTL)
	}
	st, err := vault.New(cfg.Vault, slog.New(slog.DiscardHandler), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	keys, err := st.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := token.NewKeyring(keys)
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.Provider(ctx, ProviderName)
	if err != nil || len(p.Keys) != 1 || p.Keys[0].Secret != ProviderKey {
		t.Fatalf("provider: %+v, %v", p, err)
	}
	if len(f.Tokens) != spec.Tokens {
		t.Fatalf("%d tokens returned, want %d", len(f.Tokens), spec.Tokens)
	}
	for _, tok := range f.Tokens {
		id, hash, err := ring.Verify(tok)
		if err != nil {
			t.Fatalf("token does not verify: %v", err)
		}
		rec, err := st.Token(ctx, id)
		if err != nil || !token.HashEqual(hash, rec.Hash) {
			t.Fatalf("token %s: %+v, %v", id, rec, err)
		}
		u, err := st.User(ctx, rec.User)
		if err != nil || !u.MayUse(rec.Group) {
			t.Fatalf("token %s: user %+v may not use group %q (%v)", id, u, rec.Group, err)
		}
		g, err := st.Group(ctx, rec.Group)
		if err != nil || !slices.Contains(g.Providers, ProviderName) {
			t.Fatalf("token %s: group %+v does not allow %s (%v)", id, g, ProviderName, err)
		}
	}
}
