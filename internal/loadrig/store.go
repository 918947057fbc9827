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
	// Listen on port 0: the kernel picks a free port, and the parent finds
	// it from /proc, so no port is guessed and no other process can take
	// it between a probe and keyward's bind.
	cfg := "listen: 127.0.0.1:0\nlog_level: warn\nshutdown_grace: 1s\nstore:\n  file: store.yaml\n"
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
	rand.Shuffle(len(f.Tokens), func(i, j int) { f.Tokens[i], f.Tokens[j] = f.Tokens[j], f.Tokens[i] })
	return f, nil
}

// mintTokens adds spec's tokens to d, spread over its groups and their
// members, and keeps each token string.
func (f *Fixture) mintTokens(ctx context.Context, d *filestore.Data, spec Spec, ring *token.Keyring) error {
	now := time.Now().UTC()
	for i := range spec.Tokens {
		if i%10_000 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		m, err := ring.Mint()
		if err != nil {
			return err
		}
		g := i % spec.Groups
		d.Tokens.Set(m.ID, filestore.TokenData{
			User:    groupMember(g, i/spec.Groups, spec.Users),
			Group:   groupName(g),
			Name:    fmt.Sprintf("load-%d", i),
			Hash:    filestore.HashString(m.Hash),
			Created: now,
		})
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
	for u := range spec.Users {
		d.Users[userName(u)] = &filestore.UserData{Role: "user"}
	}
	for g := range spec.Groups {
		d.Groups[groupName(g)] = &filestore.GroupData{Providers: []string{ProviderName}}
		for k := range membersPerGroup {
			u := d.Users[groupMember(g, k, spec.Users)]
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
