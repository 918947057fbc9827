package filestore_test

import (
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
)

// The file store is a management API store. The check sits in a test so
// that the store never depends on the HTTP layer.
var _ manage.Store = (*filestore.Store)(nil)

// newAPIToken returns a management token record for user with a random
// hash, every byte of which must survive the file.
func newAPIToken(t *testing.T, user string) *record.APIToken {
	t.Helper()
	id := newToken(t, user, "g").ID
	a := &record.APIToken{ID: id, User: user, Created: time.Now().UTC().Truncate(time.Microsecond)}
	if _, err := rand.Read(a.Hash[:]); err != nil {
		t.Fatal(err)
	}
	return a
}

func sameAPIToken(a, b *record.APIToken) bool {
	return a.ID == b.ID && a.Hash == b.Hash && a.User == b.User && a.Created.Equal(b.Created) && a.Revoked == b.Revoked
}

func TestAPITokensRoundTrip(t *testing.T) {
	ctx := t.Context()
	st, path := withUsers(t)
	want := newAPIToken(t, "ann")
	if err := st.PutAPIToken(ctx, want); err != nil {
		t.Fatal(err)
	}
	revoked := *want
	revoked.Revoked = true
	for _, step := range []struct {
		name string
		put  *record.APIToken
	}{
		{"issued", nil},
		{"revoked", &revoked},
	} {
		if step.put != nil {
			if err := st.PutAPIToken(ctx, step.put); err != nil {
				t.Fatal(err)
			}
			want = step.put
		}
		for name, s := range map[string]*filestore.Store{"writer": st, "reopened": open(t, path, "", nil)} {
			got, err := s.APIToken(ctx, want.ID)
			if err != nil {
				t.Fatalf("%s, %s: %v", step.name, name, err)
			}
			if !sameAPIToken(got, want) {
				t.Errorf("%s, %s: got %+v, want %+v", step.name, name, got, want)
			}
		}
	}
	// The LLM token lookup and the management token lookup are apart.
	if _, err := st.Token(ctx, want.ID); !errors.Is(err, record.ErrNotFound) {
		t.Errorf("Token(API token id) = %v, want ErrNotFound", err)
	}
}

func TestAPITokenErrors(t *testing.T) {
	ctx := t.Context()
	st, _ := withUsers(t)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"missing", second(st.APIToken(ctx, newAPIToken(t, "ann").ID))},
		{"not an id", second(st.APIToken(ctx, "../x"))},
		{"unknown user", st.PutAPIToken(ctx, newAPIToken(t, "nobody"))},
	} {
		if !errors.Is(tc.err, record.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", tc.name, tc.err)
		}
	}
	bad := newAPIToken(t, "ann")
	bad.ID = "not-a-token-id"
	if err := st.PutAPIToken(ctx, bad); err == nil {
		t.Error("PutAPIToken with a malformed id succeeded")
	}
}

func TestDeleteUserRemovesAPITokens(t *testing.T) {
	ctx := t.Context()
	st, path := withUsers(t)
	ann, ann2, bob := newAPIToken(t, "ann"), newAPIToken(t, "ann"), newAPIToken(t, "bob")
	for _, a := range []*record.APIToken{ann, ann2, bob} {
		if err := st.PutAPIToken(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.DeleteUser(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*filestore.Store{"writer": st, "reopened": open(t, path, "", nil)} {
		for _, a := range []*record.APIToken{ann, ann2} {
			if _, err := s.APIToken(ctx, a.ID); !errors.Is(err, record.ErrNotFound) {
				t.Errorf("%s: ann's API token after DeleteUser: %v", name, err)
			}
		}
		if got, err := s.APIToken(ctx, bob.ID); err != nil || !sameAPIToken(got, bob) {
			t.Errorf("%s: bob's API token: %+v, %v", name, got, err)
		}
	}
}

func TestAPITokenFile(t *testing.T) {
	ctx := t.Context()
	st, path := withUsers(t)
	a := newAPIToken(t, "ann")
	if err := st.PutAPIToken(ctx, a); err != nil {
		t.Fatal(err)
	}
	file := filestore.DefaultAPITokensPath(path)
	if want := strings.TrimSuffix(path, ".yaml") + ".api-tokens.jsonl"; file != want {
		t.Errorf("DefaultAPITokensPath = %s, want %s", file, want)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("API token file: %v, %v; want mode 0600", fi, err)
	}
	raw := string(readFile(t, file))
	if !strings.HasPrefix(raw, `{"format":"keyward-api-tokens/1"}`+"\n") || !strings.Contains(raw, filestore.HashString(a.Hash)) || strings.Count(raw, "\n") != 2 {
		t.Errorf("API token file is not its header and one line with the hash: %s", raw)
	}
	for _, f := range []string{path, filestore.DefaultTokensPath(path)} {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), a.ID) {
			t.Errorf("%s holds the API token", f)
		}
	}

	// A broken file refuses to open: a line that does not parse names the
	// file and the line, a bad record names the record and field.
	other := newAPIToken(t, "ann").ID
	for _, tc := range []struct{ name, line, want, field string }{
		{"unknown field", `{"id":"` + other + `","user":"ann","role":"admin"}`, file + ": API token file line 3", ""},
		{"bad hash", `{"id":"` + other + `","user":"ann","hash":"zz","created":"2025-01-01T00:00:00Z"}`, "must be 64 hex digits", "api_tokens." + other + ".hash"},
		{"no user", `{"id":"` + other + `","hash":"` + filestore.HashString(a.Hash) + `","created":"2025-01-01T00:00:00Z"}`, "must be set", "api_tokens." + other + ".user"},
		{"listed twice", `{"id":"` + a.ID + `","user":"ann","hash":"` + filestore.HashString(a.Hash) + `","created":"2025-01-01T00:00:00Z"}`, "listed twice", ""},
	} {
		writeFile(t, file, raw+tc.line+"\n")
		_, err := filestore.Open(filestore.Options{Path: path})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Open: %v, want an error with %q", tc.name, err, tc.want)
		}
		if tc.field != "" {
			wantFields(t, err, tc.field)
		}
	}
}

func TestAPITokensPathOption(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path, file := filepath.Join(dir, "s.yaml"), filepath.Join(dir, "elsewhere.jsonl")
	st, err := filestore.Open(filestore.Options{Path: path, APITokensPath: file})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutUser(ctx, &record.User{Name: "ann"}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutAPIToken(ctx, newAPIToken(t, "ann")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("API token file not at the option's path: %v", err)
	}
	if _, err := os.Stat(filestore.DefaultAPITokensPath(path)); !os.IsNotExist(err) {
		t.Errorf("API token file at the default path too: %v", err)
	}
}

func TestWatchReloadsAPITokens(t *testing.T) {
	ctx := t.Context()
	writer, path := withUsers(t)
	reader := open(t, path, "", nil)
	poll := reader.Poller(slog.New(slog.DiscardHandler), func() {})
	a := newAPIToken(t, "ann")
	if err := writer.PutAPIToken(ctx, a); err != nil {
		t.Fatal(err)
	}
	poll()
	if _, err := reader.APIToken(ctx, a.ID); err != nil {
		t.Fatalf("the API token after a poll: %v", err)
	}
	a.Revoked = true
	if err := writer.PutAPIToken(ctx, a); err != nil {
		t.Fatal(err)
	}
	poll()
	if got, err := reader.APIToken(ctx, a.ID); err != nil || !got.Revoked {
		t.Errorf("the revocation after a poll: %+v, %v", got, err)
	}
}
