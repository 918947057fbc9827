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
	return newFullStoreAt(t, storePath(t))
}

func newFullStoreAt(t *testing.T, path string) *fullStore {
	t.Helper()
	ctx := t.Context()
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
	return readAll(t, f.paths)
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
				good := f.contents(t)
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
				if n := f.st.FailedLoads(); n != 1 {
					t.Errorf("FailedLoads() = %d, want 1", n)
				}
				if err := f.st.PutGroup(ctx, &record.Group{Name: "new"}); !errors.Is(err, filestore.ErrFileLost) {
					t.Errorf("PutGroup through the serving Store = %v, want ErrFileLost", err)
				}
				if _, err := filestore.Open(filestore.Options{Path: f.paths["store"], Getenv: env(nil)}); !errors.Is(err, filestore.ErrFileLost) {
					t.Errorf("a fresh Open = %v, want ErrFileLost", err)
				}
				if after := f.contents(t); !equalContents(before, after) {
					t.Errorf("the files changed:\nbefore %q\nafter  %q", before, after)
				}
				// Put back, the file is loaded again.
				writeFile(t, f.paths[file], string(good[file]))
				poll()
				if lost := f.intact(t, f.st); len(lost) > 0 {
					t.Errorf("after the file came back the Store lacks its %v", lost)
				}
				if err := f.st.PutGroup(ctx, &record.Group{Name: "new"}); err != nil {
					t.Errorf("PutGroup after the file came back: %v", err)
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

// TestFreshProcessRefuses opens stores that lost a file before the process
// started, as a CLI command does: Open fails with ErrFileLost, and a write
// never replaces what is there.
func TestFreshProcessRefuses(t *testing.T) {
	hand := "groups:\n  team: {}\n"
	tokens := `{"format":"keyward-tokens/1"}` + "\n" + tokenLine("AAAAAAAAAAAAAAAA", "ann", "team")
	tests := map[string]struct {
		files    map[string]string // by file: store, tokens, credentials, api, lock; absent: no file
		complete bool              // make the store with keyward, then apply files
	}{
		"empty store file":                         {files: map[string]string{"store": ""}},
		"store file of spaces":                     {files: map[string]string{"store": " \n\n"}},
		"store file cut to its comments":           {files: map[string]string{"store": "# keyward store file: providers, groups, users and token signing keys.\n"}},
		"no store file beside a token file":        {files: map[string]string{"tokens": tokens}},
		"empty token file":                         {files: map[string]string{"store": hand, "tokens": ""}},
		"empty credentials file":                   {files: map[string]string{"store": hand, "credentials": "\n"}},
		"empty API token file":                     {files: map[string]string{"store": hand, "api": ""}},
		"token file missing from a complete store": {complete: true, files: map[string]string{"tokens": "-"}},
		"every file but the lock file gone":        {complete: true, files: map[string]string{"store": "-", "tokens": "-", "credentials": "-", "api": "-"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := storePath(t)
			paths := map[string]string{
				"store": path, "tokens": filestore.DefaultTokensPath(path), "credentials": filestore.DefaultCredentialsPath(path),
				"api": filestore.DefaultAPITokensPath(path), "lock": path + ".lock",
			}
			if tc.complete {
				newFullStoreAt(t, path)
			}
			for file, content := range tc.files {
				if content == "-" {
					must(t, os.Remove(paths[file]))
					continue
				}
				writeFile(t, paths[file], content)
			}
			before := readAll(t, paths)
			_, err := filestore.Open(filestore.Options{Path: path, Getenv: env(nil)})
			if !errors.Is(err, filestore.ErrFileLost) {
				t.Fatalf("Open = %v, want ErrFileLost", err)
			}
			if !strings.Contains(err.Error(), filepath.Dir(path)) {
				t.Errorf("error %q does not name the file", err)
			}
			if after := readAll(t, paths); !equalContents(before, after) {
				t.Errorf("Open changed the files:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
}

// TestFirstRun starts with no file: the store is empty, the first write
// creates every file of it, none of them empty, and marks the lock file,
// so that a file lost later is told from a store that never had it.
func TestFirstRun(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	st := open(t, path, "", nil)
	must(t, st.PutGroup(ctx, &record.Group{Name: "team"}))
	paths := []string{path, filestore.DefaultTokensPath(path), filestore.DefaultCredentialsPath(path), filestore.DefaultAPITokensPath(path), path + ".lock"}
	for _, p := range paths {
		if b := readFile(t, p); len(bytes.TrimSpace(b)) == 0 {
			t.Errorf("%s is empty after the first write", p)
		}
	}
	if _, err := open(t, path, "", nil).Group(ctx, "team"); err != nil {
		t.Errorf("a fresh Store: %v", err)
	}
}

// TestHandWrittenStore opens a store file written by hand (or by an older
// keyward), with no other file: it loads, and the first write completes
// it.
func TestHandWrittenStore(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	writeFile(t, path, "groups:\n  team: {}\n")
	st := open(t, path, "", nil)
	if _, err := st.Group(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	tk := newToken(t, "ann", "team")
	must(t, st.PutToken(ctx, tk))
	re := open(t, path, "", nil)
	if _, err := re.Token(ctx, tk.ID); err != nil {
		t.Errorf("token after the first write: %v", err)
	}
	must(t, os.Remove(filestore.DefaultCredentialsPath(path)))
	if _, err := filestore.Open(filestore.Options{Path: path, Getenv: env(nil)}); !errors.Is(err, filestore.ErrFileLost) {
		t.Errorf("Open after the completed store lost a file = %v, want ErrFileLost", err)
	}
}

// TestShrunkTokenFile cuts the token file in place to a shorter file that
// still reads: lines that were read are gone, and the Store keeps them.
func TestShrunkTokenFile(t *testing.T) {
	ctx := t.Context()
	f := newFullStore(t)
	log, _ := newLogger()
	poll := f.st.Poller(log, func() {})
	raw := readFile(t, f.paths["tokens"])
	header, _, _ := bytes.Cut(raw, []byte("\n"))
	must(t, os.Truncate(f.paths["tokens"], int64(len(header)+1)))
	poll()
	if _, err := f.st.Token(ctx, f.tok.ID); err != nil || f.st.FailedLoads() != 1 {
		t.Errorf("after the token file shrank: %v, %d failed loads", err, f.st.FailedLoads())
	}
	if err := f.st.PutGroup(ctx, &record.Group{Name: "x"}); !errors.Is(err, filestore.ErrFileLost) {
		t.Errorf("PutGroup = %v, want ErrFileLost", err)
	}
}

// TestLostEnvFile empties the .env file a serving Store read provider keys
// from: the keys stay.
func TestLostEnvFile(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path, envPath := filepath.Join(dir, "store.yaml"), filepath.Join(dir, ".env")
	writeFile(t, path, "providers:\n  openai: {kind: openai, keys: [{id: k1, env: KEY}]}\n")
	writeFile(t, envPath, "KEY="+secret+"\n")
	st := open(t, path, envPath, nil)
	log, logs := newLogger()
	poll := st.Poller(log, func() {})
	for how, lose := range losses {
		must(t, lose(envPath))
		poll()
		if p, err := st.Provider(ctx, "openai"); err != nil || len(p.Keys) != 1 {
			t.Errorf("%s .env file: provider = %+v, %v; want its key", how, p, err)
		}
		writeFile(t, envPath, "KEY="+secret+"\n")
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the log holds the key:\n%s", logs)
	}
}

func readAll(t *testing.T, paths map[string]string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for name, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		out[name] = b
	}
	return out
}
