package filestore_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/record"
)

// credKey is the secret part of every test credential's key: no error,
// file other than the credentials file, or String may show it.
const credKey = "SECRETSECRET"

func newCredential(user, name string) *record.Credential {
	return &record.Credential{
		ID: record.NewCredentialID(), User: user, Name: name, Provider: "openai", Model: "gpt-4o",
		BaseURL: "https://llm.example.com/v1", Key: "sk-" + credKey + "-" + name,
		Extra: json.RawMessage(`{"organization":"org-1","retries":2}`), Created: time.Now().UTC().Truncate(time.Microsecond),
	}
}

// withUsers opens a fresh store with users ann and bob.
func withUsers(t *testing.T) (*filestore.Store, string) {
	t.Helper()
	path := storePath(t)
	st := open(t, path, "", nil)
	for _, u := range []string{"ann", "bob"} {
		if err := st.PutUser(t.Context(), &record.User{Name: u, Role: record.RoleUser}); err != nil {
			t.Fatal(err)
		}
	}
	return st, path
}

func noKey(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), credKey) {
		t.Errorf("%s: error shows the key: %v", what, err)
	}
}

func TestCredentialsRoundTrip(t *testing.T) {
	ctx := t.Context()
	st, path := withUsers(t)
	want := newCredential("ann", "personal")
	if err := st.PutCredential(ctx, want); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*filestore.Store{"writer": st, "reopened": open(t, path, "", nil)} {
		got, err := s.Credential(ctx, "ann", want.ID)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !sameCredential(got, want) {
			t.Errorf("%s: got %#v %s, want %#v %s", name, got, got.Extra, want, want.Extra)
		}
		if s := fmt.Sprintf("%v %+v %#v", got, got, got); strings.Contains(s, credKey) {
			t.Errorf("printing a credential shows its key: %s", s)
		}
		list, err := s.Credentials(ctx, "ann")
		if err != nil || len(list) != 1 || list[0].ID != want.ID {
			t.Errorf("%s: Credentials(ann) = %v, %v", name, list, err)
		}
	}
	// Replacing keeps one record.
	changed := *want
	changed.Model, changed.Key = "gpt-4.1", "sk-"+credKey+"-new"
	if err := st.PutCredential(ctx, &changed); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Credential(ctx, "ann", want.ID); err != nil || got.Key != changed.Key || got.Model != "gpt-4.1" {
		t.Fatalf("after replace: %v, %v", got, err)
	}
	if list, _ := st.Credentials(ctx, "ann"); len(list) != 1 {
		t.Fatalf("after replace: %d credentials", len(list))
	}

	// The keys are in the credentials file, mode 0600, and nowhere else.
	credPath := filestore.DefaultCredentialsPath(path)
	if credPath != filepath.Join(filepath.Dir(path), "keyward-store.credentials.jsonl") {
		t.Errorf("DefaultCredentialsPath = %s", credPath)
	}
	fi, err := os.Stat(credPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, %v; want mode 0600", fi, err)
	}
	if !strings.Contains(string(readFile(t, credPath)), changed.Key) {
		t.Error("the credentials file does not hold the key")
	}
	for _, p := range []string{path, filestore.DefaultTokensPath(path)} {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), credKey) {
			t.Errorf("%s holds a credential key", p)
		}
	}
}

func sameCredential(a, b *record.Credential) bool {
	var ea, eb map[string]any
	_ = json.Unmarshal(a.Extra, &ea)
	_ = json.Unmarshal(b.Extra, &eb)
	return a.ID == b.ID && a.User == b.User && a.Name == b.Name && a.Provider == b.Provider &&
		a.Model == b.Model && a.BaseURL == b.BaseURL && a.Key == b.Key && a.Created.Equal(b.Created) &&
		fmt.Sprint(ea) == fmt.Sprint(eb)
}

func TestCredentialsPathOption(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	opts := filestore.Options{Path: filepath.Join(dir, "store.yaml"), CredentialsPath: filepath.Join(dir, "secrets", "creds.jsonl")}
	if err := os.Mkdir(filepath.Dir(opts.CredentialsPath), 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := filestore.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutUser(ctx, &record.User{Name: "ann"}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutCredential(ctx, newCredential("ann", "c")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(opts.CredentialsPath); err != nil {
		t.Fatalf("credentials file not at CredentialsPath: %v", err)
	}
	if _, err := os.Stat(filestore.DefaultCredentialsPath(opts.Path)); !os.IsNotExist(err) {
		t.Fatalf("credentials file written at the default path too: %v", err)
	}
}

// TestCredentialIsolation: bob reaches none of ann's credentials by id,
// and gets not found, the same as for an id nobody has.
func TestCredentialIsolation(t *testing.T) {
	ctx := t.Context()
	st, path := withUsers(t)
	ann := newCredential("ann", "mine")
	bob := newCredential("bob", "bobs")
	// The same id under another user is another credential.
	sameID := newCredential("bob", "same-id")
	sameID.ID = ann.ID
	for _, c := range []*record.Credential{ann, bob, sameID} {
		if err := st.PutCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	other := newCredential("ann", "other")
	if err := st.PutCredential(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Credential(ctx, "bob", other.ID); !errors.Is(err, record.ErrNotFound) {
		t.Errorf("bob reads ann's credential: %v, want ErrNotFound", err)
	}
	if err := st.DeleteCredential(ctx, "bob", other.ID); !errors.Is(err, record.ErrNotFound) {
		t.Errorf("bob deletes ann's credential: %v, want ErrNotFound", err)
	}
	for name, err := range map[string]error{
		"unknown id":   second(st.Credential(ctx, "ann", record.NewCredentialID())),
		"unknown user": second(st.Credential(ctx, "carl", ann.ID)),
		"empty user":   second(st.Credential(ctx, "", ann.ID)),
	} {
		if !errors.Is(err, record.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", name, err)
		}
	}
	re := open(t, path, "", nil)
	if got, err := re.Credential(ctx, "ann", ann.ID); err != nil || got.Key != ann.Key {
		t.Fatalf("ann's credential after bob's attempts: %v, %v", got, err)
	}
	if got, err := re.Credential(ctx, "bob", ann.ID); err != nil || got.Key != sameID.Key {
		t.Fatalf("bob's credential with ann's id: %v, %v", got, err)
	}
	list, err := re.Credentials(ctx, "bob")
	if err != nil || len(list) != 2 {
		t.Fatalf("Credentials(bob) = %v, %v", list, err)
	}
	for _, c := range list {
		if c.User != "bob" || c.Key == ann.Key || c.Key == other.Key {
			t.Errorf("bob's list holds %v", c)
		}
	}
	if err := st.DeleteCredential(ctx, "bob", ann.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Credential(ctx, "ann", ann.ID); err != nil {
		t.Errorf("deleting bob's credential removed ann's with the same id: %v", err)
	}
	if err := st.DeleteCredential(ctx, "bob", ann.ID); !errors.Is(err, record.ErrNotFound) {
		t.Errorf("deleting twice: %v", err)
	}
}

func second[V any](_ V, err error) error { return err }

func TestDeleteUserRemovesCredentials(t *testing.T) {
	ctx := t.Context()
	st, path := withUsers(t)
	a1, a2, b := newCredential("ann", "one"), newCredential("ann", "two"), newCredential("bob", "one")
	for _, c := range []*record.Credential{a1, a2, b} {
		if err := st.PutCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.DeleteUser(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*filestore.Store{st, open(t, path, "", nil)} {
		if list, err := s.Credentials(ctx, "ann"); err != nil || len(list) != 0 {
			t.Errorf("ann's credentials after DeleteUser: %v, %v", list, err)
		}
		if _, err := s.Credential(ctx, "ann", a1.ID); !errors.Is(err, record.ErrNotFound) {
			t.Errorf("ann's credential after DeleteUser: %v", err)
		}
		if _, err := s.Credential(ctx, "bob", b.ID); err != nil {
			t.Errorf("bob's credential after deleting ann: %v", err)
		}
	}
	// A credential for a user that does not exist is refused.
	if err := st.PutCredential(ctx, newCredential("ann", "again")); !errors.Is(err, record.ErrNotFound) {
		t.Errorf("credential for a deleted user: %v, want ErrNotFound", err)
	}
}

// TestCredentialErrorsHideKey: invalid credentials, and credentials files
// broken by hand, are reported by field and line, never with the key.
func TestCredentialErrorsHideKey(t *testing.T) {
	ctx := t.Context()
	st, path := withUsers(t)
	if err := st.PutCredential(ctx, newCredential("ann", "bad name")); !errors.Is(err, record.ErrInvalidName) {
		t.Errorf("PutCredential(bad name) = %v, want record.ErrInvalidName", err)
	}
	bad := newCredential("ann", "bad")
	bad.Key = "sk-" + credKey + "\n"
	bad.Extra = json.RawMessage(`["` + credKey + `"]`)
	err := st.PutCredential(ctx, bad)
	wantFields(t, err, "key", "extra")
	noKey(t, "PutCredential", err)
	if raw := readFile(t, filestore.DefaultCredentialsPath(path)); strings.Contains(string(raw), bad.ID) {
		t.Errorf("an invalid credential was written:\n%s", raw)
	}

	credPath := filestore.DefaultCredentialsPath(path)
	good := `{"id":"AAAAAAAAAAAAAAAA","user":"ann","name":"n","provider":"openai","key":"sk-` + credKey + `","created":"2026-01-01T00:00:00Z"}`
	for name, tc := range map[string]struct{ file, want, field string }{
		"control character in key": {strings.Replace(good, credKey, credKey+`\u0007`, 1) + "\n", "control characters", "credentials.ann.AAAAAAAAAAAAAAAA.key"},
		"listed twice":             {good + "\n" + good + "\n", "credentials file line 2: credential \"AAAAAAAAAAAAAAAA\" of user \"ann\" listed twice", ""},
		"unknown field":            {strings.Replace(good, `"key"`, `"secret"`, 1) + "\n", `credentials file line 1: json: unknown field "secret"`, ""},
		"bad id":                   {strings.Replace(good, "AAAAAAAAAAAAAAAA", "../x", 1) + "\n", "not 1-64 letters", "credentials.ann.../x.id"},
		"key not a string":         {`{"id":"AAAAAAAAAAAAAAAA","user":"ann","key":123}` + "\n", "credentials file line 1: json: cannot unmarshal", ""},
	} {
		t.Run(name, func(t *testing.T) {
			writeFile(t, credPath, tc.file)
			_, err := filestore.Open(filestore.Options{Path: path, Getenv: env(nil)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v, want %q", err, tc.want)
			}
			if tc.field != "" {
				wantFields(t, err, tc.field)
			}
			if strings.Contains(err.Error(), "line") && !strings.Contains(err.Error(), credPath) {
				t.Errorf("error %v does not name the credentials file", err)
			}
			noKey(t, "Open", err)
			noKey(t, "PutGroup", st.PutGroup(ctx, &record.Group{Name: "g"}))
		})
	}
}

func TestWatchReloadsCredentials(t *testing.T) {
	ctx := t.Context()
	writer, path := withUsers(t)
	reader := open(t, path, "", nil)
	poll := reader.Poller(slog.New(slog.DiscardHandler), func() {})
	c := newCredential("ann", "watched")
	if err := writer.PutCredential(ctx, c); err != nil {
		t.Fatal(err)
	}
	poll()
	if _, err := reader.Credential(ctx, "ann", c.ID); err != nil {
		t.Fatalf("the credential after a poll: %v", err)
	}
	if err := writer.DeleteCredential(ctx, "ann", c.ID); err != nil {
		t.Fatal(err)
	}
	poll()
	if _, err := reader.Credential(ctx, "ann", c.ID); !errors.Is(err, record.ErrNotFound) {
		t.Errorf("the deletion after a poll: %v", err)
	}
}

// TestPrivateKeys: the store indexes each user's credentials as it reads
// the credentials file, so that a check reads them without building
// anything: the same index until that file changes, an empty one for a
// user without any, and ErrInvalidName for a name that is not one.
func TestPrivateKeys(t *testing.T) {
	ctx := t.Context()
	st, _ := withUsers(t)
	c := newCredential("ann", "personal")
	if err := st.PutCredential(ctx, c); err != nil {
		t.Fatal(err)
	}
	ann, err := st.PrivateKeys(ctx, "ann")
	if err != nil || !ann.Has("openai") || ann.For("openai", "gpt-4o") == nil || ann.For("openai", "gpt-4o").Key.Secret != c.Key {
		t.Fatalf("PrivateKeys(ann) = %+v, %v; want ann's key for openai gpt-4o", ann, err)
	}
	for _, user := range []string{"bob", "nobody"} {
		if k, err := st.PrivateKeys(ctx, user); err != nil || k == nil || k.Has("openai") {
			t.Errorf("PrivateKeys(%s) = %+v, %v; want an empty index", user, k, err)
		}
	}
	if _, err := st.PrivateKeys(ctx, "../ann"); !errors.Is(err, record.ErrInvalidName) {
		t.Errorf("PrivateKeys(../ann): %v, want ErrInvalidName", err)
	}

	// Another file's change keeps the index; a credential's makes a new one.
	if err := st.PutUser(ctx, &record.User{Name: "cy", Role: record.RoleUser}); err != nil {
		t.Fatal(err)
	}
	if again, _ := st.PrivateKeys(ctx, "ann"); again != ann {
		t.Error("a user's change rebuilt ann's keys: every answer with them would be built again")
	}
	if err := st.DeleteCredential(ctx, "ann", c.ID); err != nil {
		t.Fatal(err)
	}
	if k, err := st.PrivateKeys(ctx, "ann"); err != nil || k.Has("openai") {
		t.Errorf("after the delete: %+v, %v; want an empty index", k, err)
	}
}
