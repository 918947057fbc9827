package filestore_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/record"
)

// fullStore is a store with a record in every file: providers, a group, a
// user, a signing key, a token, a credential and a management token.
type fullStore struct {
	st    *filestore.Store
	paths map[string]string // by file: store, tokens, credentials, api
	tok   *record.Token
	cred  *record.Credential
	api   *record.APIToken
}

func newFullStore(t *testing.T) *fullStore {
	t.Helper()
	ctx := t.Context()
	path := storePath(t)
	f := &fullStore{st: open(t, path, "", nil), paths: map[string]string{
		"store":       path,
		"tokens":      filestore.DefaultTokensPath(path),
		"credentials": filestore.DefaultCredentialsPath(path),
		"api":         filestore.DefaultAPITokensPath(path),
	}}
	must(t, f.st.EnsureSigningKey(ctx))
	must(t, f.st.PutProvider(ctx, "openai", &filestore.ProviderData{Kind: record.KindOpenAI, Keys: []filestore.KeyData{{ID: "k1", Env: "OPENAI_KEY"}}}))
	must(t, f.st.PutGroup(ctx, &record.Group{Name: "team"}))
	must(t, f.st.PutUser(ctx, &record.User{Name: "ann", Groups: []string{"team"}}))
	f.tok = newToken(t, "ann", "team")
	must(t, f.st.PutToken(ctx, f.tok))
	f.cred = newCredential("ann", "mine")
	must(t, f.st.PutCredential(ctx, f.cred))
	f.api = newAPIToken(t, "ann")
	must(t, f.st.PutAPIToken(ctx, f.api))
	return f
}

// intact reports what of the full store's records st no longer has.
func (f *fullStore) intact(t *testing.T, st *filestore.Store) []string {
	t.Helper()
	ctx := t.Context()
	var lost []string
	check := func(what string, err error) {
		if err != nil {
			lost = append(lost, what)
		}
	}
	_, err := st.Provider(ctx, "openai")
	check("provider", err)
	_, err = st.Group(ctx, "team")
	check("group", err)
	_, err = st.User(ctx, "ann")
	check("user", err)
	if keys, _ := st.SigningKeys(ctx); len(keys) == 0 {
		lost = append(lost, "signing key")
	}
	_, err = st.Token(ctx, f.tok.ID)
	check("token", err)
	_, err = st.Credential(ctx, "ann", f.cred.ID)
	check("credential", err)
	_, err = st.APIToken(ctx, f.api.ID)
	check("API token", err)
	return lost
}

// contents reads every file of the store; a missing file reads as nil.
func (f *fullStore) contents(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for name, p := range f.paths {
		b, err := os.ReadFile(p)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		out[name] = b
	}
	return out
}

// losses are the ways a store file is lost: truncated to nothing in place
// (a crash, `> file`), or deleted (a bad deploy).
var losses = map[string]func(path string) error{
	"truncated": func(p string) error { return os.Truncate(p, 0) },
	"deleted":   os.Remove,
}

// TestLostFileKeepsLastGood empties or deletes each file of a loaded store
// in turn: the serving Store keeps every record, logs the failure, and
// no write goes through, from this process or a fresh one.
func TestLostFileKeepsLastGood(t *testing.T) {
	for _, file := range []string{"store", "tokens", "credentials", "api"} {
		for how, lose := range losses {
			t.Run(file+" "+how, func(t *testing.T) {
				ctx := t.Context()
				f := newFullStore(t)
				log, logs := newLogger()
				changes := 0
				poll := f.st.Poller(log, func() { changes++ })
				must(t, lose(f.paths[file]))
				before := f.contents(t)
				poll()
				if lost := f.intact(t, f.st); len(lost) > 0 {
					t.Errorf("the serving Store lost its %v", lost)
				}
				if changes != 0 {
					t.Errorf("onChange called %d times", changes)
				}
				if !strings.Contains(logs.String(), "store reload failed") || !strings.Contains(logs.String(), filepath.Base(f.paths[file])) {
					t.Errorf("the failure is not logged with the file's name:\n%s", logs)
				}
				if err := f.st.PutGroup(ctx, &record.Group{Name: "new"}); err == nil {
					t.Error("PutGroup through the serving Store succeeded")
				}
				if _, err := filestore.Open(filestore.Options{Path: f.paths["store"], Getenv: env(nil)}); err == nil {
					t.Error("a fresh Open succeeded")
				}
				if after := f.contents(t); !equalContents(before, after) {
					t.Errorf("the files changed:\nbefore %q\nafter  %q", before, after)
				}
			})
		}
	}
}

func equalContents(a, b map[string][]byte) bool {
	for k, v := range a {
		if !bytes.Equal(v, b[k]) || (v == nil) != (b[k] == nil) {
			return false
		}
	}
	return len(a) == len(b)
}

var _ = errors.Is
