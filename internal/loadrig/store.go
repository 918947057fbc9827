package loadrig

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/token"
)

// The one provider of the fixture: ProviderName, its key read from
// ProviderEnv in keyward's environment.
const (
	// ProviderName is the provider every group allows.
	ProviderName = "openai"
	// ProviderEnv names the provider key's environment variable.
	ProviderEnv = "OPENAI_API_KEY"
	// ProviderKey is a placeholder: the load test never calls a provider,
	// and a real key from the caller's environment must not be handed on.
	ProviderKey = "sk-loadtest-not-a-real-key"
)

// Fixture is a generated keyward configuration and store.
type Fixture struct {
	// ConfigPath is keyward.yaml, StorePath the store file it names.
	ConfigPath, StorePath string
	// StoreBytes is the size of the store file and the token file.
	StoreBytes int64
	// Tokens are the minted token strings, shuffled: any prefix is a
	// random sample of the store.
	Tokens []string
}

// Spec sizes a fixture.
type Spec struct {
	Tokens, Groups, Users int
	// CacheTTL is keyward's cache.ttl; zero keeps its default.
	CacheTTL time.Duration
}

// config is the start of keyward.yaml, before its store section. keyward
// listens on port 0: the kernel picks a free port, and the parent finds it
// from /proc, so no port is guessed and no other process can take it
// between a probe and keyward's bind.
func (s Spec) config() string {
	cfg := "listen: 127.0.0.1:0\nlog_level: warn\nshutdown_grace: 1s\n"
	if s.CacheTTL > 0 {
		cfg += fmt.Sprintf("cache:\n  ttl: %s\n", s.CacheTTL)
	}
	return cfg
}

// WriteFixture writes keyward.yaml and its store into dir: spec.Groups
// groups that each allow the provider, spec.Users users each a member of
// the groups given to them, and spec.Tokens tokens spread evenly over the
// groups, each owned by a member of its group.
func WriteFixture(ctx context.Context, dir string, spec Spec) (*Fixture, error) {
	key, err := token.NewSigningKey(1)
	if err != nil {
		return nil, err
	}
	ring, err := token.NewKeyring([]token.SigningKey{key})
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	f := &Fixture{
		ConfigPath: filepath.Join(dir, "keyward.yaml"),
		StorePath:  filepath.Join(dir, "store.yaml"),
		Tokens:     make([]string, 0, spec.Tokens),
	}
	cfg := spec.config() + "store:\n  file: store.yaml\n"
	if err := os.WriteFile(f.ConfigPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	st, err := filestore.Open(filestore.Options{Path: f.StorePath, Getenv: func(string) string { return "" }})
	if err != nil {
		return nil, err
	}
	err = st.Update(ctx, func(d *filestore.Data) error {
		fill(d, spec, key)
		return f.mintTokens(ctx, d, spec, ring)
	})
	if err != nil {
		return nil, fmt.Errorf("write store: %w", err)
	}
	for _, p := range []string{f.StorePath, filestore.DefaultTokensPath(f.StorePath)} {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("store size: %w", err)
		}
		f.StoreBytes += fi.Size()
	}
	f.shuffle()
	return f, nil
}

// shuffle puts the tokens in random order: any prefix is then a random
// sample of the store.
func (f *Fixture) shuffle() {
	rand.Shuffle(len(f.Tokens), func(i, j int) { f.Tokens[i], f.Tokens[j] = f.Tokens[j], f.Tokens[i] })
}

// mintTokens adds spec's tokens to d (see mint).
func (f *Fixture) mintTokens(ctx context.Context, d *filestore.Data, spec Spec, ring *token.Keyring) error {
	now := time.Now().UTC()
	return f.mint(ctx, spec, ring, func(m token.Minted, user, group, name string) {
		d.Tokens.Set(m.ID, filestore.TokenData{User: user, Group: group, Name: name, Hash: filestore.HashString(m.Hash), Created: now})
	})
}

// mint makes spec's tokens, spread over its groups and their members,
// keeps each token string and hands each to add with its owner, group
// and name.
func (f *Fixture) mint(ctx context.Context, spec Spec, ring *token.Keyring, add func(m token.Minted, user, group, name string)) error {
	for i := range spec.Tokens {
		if i%10_000 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		m, err := ring.Mint()
		if err != nil {
			return err
		}
		g := i % spec.Groups
		add(m, groupMember(g, i/spec.Groups, spec.Users), groupName(g), fmt.Sprintf("load-%d", i))
		f.Tokens = append(f.Tokens, m.Token)
	}
	return nil
}

// fill sets the provider, groups, users and signing key of d.
func fill(d *filestore.Data, spec Spec, key token.SigningKey) {
	d.Providers = map[string]*filestore.ProviderData{
		ProviderName: {Kind: "openai", Keys: []filestore.KeyData{{ID: "k1", Env: ProviderEnv}}},
	}
	d.Groups = make(map[string]*filestore.GroupData, spec.Groups)
	d.Users = make(map[string]*filestore.UserData, spec.Users)
	d.SigningKeys = []filestore.SigningKeyData{{ID: key.ID, Secret: base64.StdEncoding.EncodeToString(key.Secret)}}
	for g := range spec.Groups {
		d.Groups[groupName(g)] = &filestore.GroupData{Providers: []string{ProviderName}}
	}
	for u, groups := range userGroups(spec) {
		d.Users[userName(u)] = &filestore.UserData{Role: "user", Groups: groups}
	}
}

// userGroups are the groups of each user, by user number: every group
// has membersPerGroup members.
func userGroups(spec Spec) [][]string {
	out := make([][]string, spec.Users)
	for g := range spec.Groups {
		for k := range membersPerGroup {
			u := memberOf(g, k, spec.Users)
			if n := len(out[u]); n == 0 || out[u][n-1] != groupName(g) {
				out[u] = append(out[u], groupName(g))
			}
		}
	}
	return out
}

// membersPerGroup is how many users share each group, so that users belong
// to several groups as in a real deployment.
const membersPerGroup = 2

// memberOf is the number of group g's k-th member (k wraps).
func memberOf(g, k, users int) int { return (g + k%membersPerGroup) % users }

// groupMember returns the name of group g's k-th member.
func groupMember(g, k, users int) string { return userName(memberOf(g, k, users)) }

func userName(u int) string  { return fmt.Sprintf("user-%05d", u) }
func groupName(g int) string { return fmt.Sprintf("group-%04d", g) }
