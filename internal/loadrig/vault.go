package loadrig

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
	"github.com/keyward/keyward/vault"
	"github.com/keyward/keyward/vault/vaulttest"
)

// VaultMount is the KV v2 mount a Vault fixture's records live under.
const VaultMount = "keyward"

// baoReadyTimeout bounds how long a dev server may take to answer
// sys/health; importWorkers is how many writes a fixture has in flight.
const (
	baoReadyTimeout = 30 * time.Second
	importWorkers   = 32
)

// Bao is an OpenBao dev server (in memory, loopback only) started by
// StartBao. Its owner must call Stop.
type Bao struct {
	*Child
	// Addr is its URL, RootToken the token that may do anything.
	Addr, RootToken string
}

// StartBao runs `bao server -dev` from bin on a free loopback port and
// waits until it is healthy.
func StartBao(ctx context.Context, bin string) (*Bao, error) {
	hostport, err := vaulttest.FreeHostPort()
	if err != nil {
		return nil, err
	}
	b := &Bao{Addr: "http://" + hostport, RootToken: "root-" + rand.Text()}
	b.Child, err = StartChild("bao", bin, []string{"server", "-dev",
		"-dev-listen-address=" + hostport,
		"-dev-root-token-id=" + b.RootToken,
		"-dev-no-store-token", // leave ~/.vault-token alone
	}, os.Environ())
	if err != nil {
		return nil, err
	}
	if err := b.waitHealthy(ctx); err != nil {
		b.Stop(time.Second)
		return nil, err
	}
	return b, nil
}

// waitHealthy polls sys/health until it answers, the process exits or
// baoReadyTimeout passes.
func (b *Bao) waitHealthy(ctx context.Context) error {
	c, err := b.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, baoReadyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := c.Sys().HealthWithContext(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-b.Exited():
			return b.Failure(errors.New("exited before it was healthy"))
		case <-ctx.Done():
			return b.Failure(fmt.Errorf("not healthy at %s: %w", b.Addr, err))
		case <-tick.C:
		}
	}
}

func (b *Bao) client() (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = b.Addr
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	c.SetToken(b.RootToken)
	return c, nil
}

// WriteVaultFixture writes keyward.yaml into dir for a keyward on bao's
// store, and fills the store as WriteFixture fills a file: the provider
// (its key in Vault), spec's groups and users, and spec's tokens, the
// tokens written with ImportTokens. keyward logs in with the root token,
// from a file in dir.
func WriteVaultFixture(ctx context.Context, dir string, bao *Bao, spec Spec) (*Fixture, error) {
	c, err := bao.client()
	if err != nil {
		return nil, err
	}
	if err := mountKV(ctx, c); err != nil {
		return nil, err
	}
	tokenFile := filepath.Join(dir, "vault-token")
	if err := os.WriteFile(tokenFile, []byte(bao.RootToken), 0o600); err != nil {
		return nil, fmt.Errorf("write vault token: %w", err)
	}
	f := &Fixture{ConfigPath: filepath.Join(dir, "keyward.yaml"), Tokens: make([]string, 0, spec.Tokens)}
	cfg := spec.config() + fmt.Sprintf("store:\n  kind: vault\nvault:\n  address: %s\n  mount: %s\n  auth:\n    method: token\n    token_file: %s\n",
		bao.Addr, VaultMount, tokenFile)
	if err := os.WriteFile(f.ConfigPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	st, err := vault.New(vault.Config{Address: bao.Addr, Mount: VaultMount, Auth: vault.AuthConfig{Method: "token", TokenFile: tokenFile}},
		slog.New(slog.DiscardHandler), func(string) string { return "" })
	if err != nil {
		return nil, err
	}
	if err := st.Start(sctx); err != nil {
		return nil, fmt.Errorf("vault store: %w", err)
	}
	defer st.Wait()
	defer stop()
	if err := f.fillVault(ctx, c, st, spec); err != nil {
		return nil, fmt.Errorf("fill vault: %w", err)
	}
	f.shuffle()
	return f, nil
}

// mountKV enables the KV v2 mount and waits until it takes writes (a new
// mount answers "upgrading" for a moment).
func mountKV(ctx context.Context, c *api.Client) error {
	if err := c.Sys().MountWithContext(ctx, VaultMount, &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		return fmt.Errorf("mount %s: %w", VaultMount, err)
	}
	ctx, cancel := context.WithTimeout(ctx, baoReadyTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := c.KVv2(VaultMount).Put(ctx, "system/ready", map[string]any{"ok": true})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mount %s not ready: %w", VaultMount, err)
		case <-tick.C:
		}
	}
}

// fillVault writes the provider, groups, users and tokens.
func (f *Fixture) fillVault(ctx context.Context, c *api.Client, st *vault.Store, spec Spec) error {
	// Provider keys are the security team's to write: keyward's own
	// writes never touch them, so the fixture writes the record raw.
	if _, err := c.KVv2(VaultMount).Put(ctx, "providers/"+ProviderName, map[string]any{"kind": "openai", "key_k1": ProviderKey}); err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	if err := st.EnsureSigningKey(ctx); err != nil {
		return err
	}
	keys, err := st.SigningKeys(ctx)
	if err != nil {
		return err
	}
	ring, err := token.NewKeyring(keys)
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	for g := range spec.Groups {
		if err := st.PutGroup(ctx, &record.Group{Name: groupName(g), Providers: []string{ProviderName}}); err != nil {
			return err
		}
	}
	for u, groups := range userGroups(spec) {
		if err := st.PutUser(ctx, &record.User{Name: userName(u), Role: record.RoleUser, Groups: groups}); err != nil {
			return err
		}
	}
	now := time.Now().UTC()
	tokens := make([]*record.Token, 0, spec.Tokens)
	err = f.mint(ctx, spec, ring, func(m token.Minted, user, group, name string) {
		tokens = append(tokens, &record.Token{ID: m.ID, Hash: m.Hash, User: user, Group: group, Name: name, Created: now})
	})
	if err != nil {
		return err
	}
	return st.ImportTokens(ctx, tokens, importWorkers)
}
