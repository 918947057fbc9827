package main

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

// providerName is the one provider of the fixture; its key is read from
// providerEnv in keyward's environment.
const (
	providerName = "openai"
	providerEnv  = "OPENAI_API_KEY"
	// providerKey is a placeholder: the load test never calls a provider,
	// and a real key from the caller's environment must not be handed on.
	providerKey = "sk-loadtest-not-a-real-key"
)

// fixture is a generated keyward configuration and store.
type fixture struct {
	configPath string
	storePath  string
	storeBytes int64
	// tokens are the minted token strings, shuffled: any prefix is a
	// random sample of the store.
	tokens []string
}

// fixtureSpec sizes a fixture.
type fixtureSpec struct {
	tokens, groups, users int
}

// writeFixture writes keyward.yaml and its store into dir: spec.groups
// groups that each allow the provider, spec.users users each a member of
// the groups given to them, and spec.tokens tokens spread evenly over the
// groups, each owned by a member of its group.
func writeFixture(ctx context.Context, dir string, spec fixtureSpec) (*fixture, error) {
	key, err := token.NewSigningKey(1)
	if err != nil {
		return nil, err
	}
	ring, err := token.NewKeyring([]token.SigningKey{key})
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	f := &fixture{
		configPath: filepath.Join(dir, "keyward.yaml"),
		storePath:  filepath.Join(dir, "store.yaml"),
		tokens:     make([]string, 0, spec.tokens),
	}
	// Listen on port 0: the kernel picks a free port, and the parent finds
	// it from /proc, so no port is guessed and no other process can take
	// it between a probe and keyward's bind.
	cfg := "listen: 127.0.0.1:0\nlog_level: warn\nshutdown_grace: 1s\nstore:\n  file: store.yaml\n"
	if err := os.WriteFile(f.configPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	st, err := filestore.Open(filestore.Options{Path: f.storePath, Getenv: func(string) string { return "" }})
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
	for _, p := range []string{f.storePath, filestore.DefaultTokensPath(f.storePath)} {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("store size: %w", err)
		}
		f.storeBytes += fi.Size()
	}
	rand.Shuffle(len(f.tokens), func(i, j int) { f.tokens[i], f.tokens[j] = f.tokens[j], f.tokens[i] })
	return f, nil
}

// mintTokens adds spec's tokens to d, spread over its groups and their
// members, and keeps each token string.
func (f *fixture) mintTokens(ctx context.Context, d *filestore.Data, spec fixtureSpec, ring *token.Keyring) error {
	now := time.Now().UTC()
	for i := range spec.tokens {
		if i%10_000 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		m, err := ring.Mint()
		if err != nil {
			return err
		}
		g := i % spec.groups
		d.Tokens.Set(m.ID, filestore.TokenData{
			User:    groupMember(g, i/spec.groups, spec.users),
			Group:   groupName(g),
			Name:    fmt.Sprintf("load-%d", i),
			Hash:    filestore.HashString(m.Hash),
			Created: now,
		})
		f.tokens = append(f.tokens, m.Token)
	}
	return nil
}

// fill sets the provider, groups, users and signing key of d.
func fill(d *filestore.Data, spec fixtureSpec, key token.SigningKey) {
	d.Providers = map[string]*filestore.ProviderData{
		providerName: {Kind: "openai", Keys: []filestore.KeyData{{ID: "k1", Env: providerEnv}}},
	}
	d.Groups = make(map[string]*filestore.GroupData, spec.groups)
	d.Users = make(map[string]*filestore.UserData, spec.users)
	d.SigningKeys = []filestore.SigningKeyData{{ID: key.ID, Secret: base64.StdEncoding.EncodeToString(key.Secret)}}
	for u := range spec.users {
		d.Users[userName(u)] = &filestore.UserData{Role: "user"}
	}
	for g := range spec.groups {
		d.Groups[groupName(g)] = &filestore.GroupData{Providers: []string{providerName}}
		for k := range membersPerGroup {
			u := d.Users[groupMember(g, k, spec.users)]
			if len(u.Groups) == 0 || u.Groups[len(u.Groups)-1] != groupName(g) {
				u.Groups = append(u.Groups, groupName(g))
			}
		}
	}
}

// membersPerGroup is how many users share each group, so that users belong
// to several groups as in a real deployment.
const membersPerGroup = 2

// groupMember returns the name of group g's k-th member (k wraps).
func groupMember(g, k, users int) string {
	return userName((g + k%membersPerGroup) % users)
}

func userName(u int) string  { return fmt.Sprintf("user-%05d", u) }
func groupName(g int) string { return fmt.Sprintf("group-%04d", g) }
