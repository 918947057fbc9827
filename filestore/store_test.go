package filestore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/internal/testlog"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// wantFields fails t unless err reports a problem at each of paths (a
// *field.Error), and at no other field.
func wantFields(t *testing.T, err error, paths ...string) {
	t.Helper()
	if got := field.Paths(err); !slices.Equal(got, paths) {
		t.Errorf("error %v: fields %q, want %q", err, got, paths)
	}
}

// env returns a getenv backed by a map, so that tests never read the
// process environment.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// storePath returns the path of a store file, not yet created, in a fresh
// folder.
func storePath(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "keyward-store.yaml")
}

// open opens the store file at path, with its token file at the default
// place beside it.
func open(t *testing.T, path, envPath string, vars map[string]string) *filestore.Store {
	t.Helper()
	st, err := filestore.Open(filestore.Options{Path: path, EnvPath: envPath, Getenv: env(vars)})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newToken returns a token record with a real id and hash.
func newToken(t *testing.T, user, group string) *record.Token {
	t.Helper()
	k, err := token.NewSigningKey(1)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := token.NewKeyring([]token.SigningKey{k})
	if err != nil {
		t.Fatal(err)
	}
	m, err := ring.Mint()
	if err != nil {
		t.Fatal(err)
	}
	return &record.Token{
		ID: m.ID, Hash: m.Hash, User: user, Group: group, Name: "laptop",
		Created: time.Now().Truncate(time.Microsecond),
	}
}

func newLogger() (*slog.Logger, *testlog.Buffer) {
	buf := &testlog.Buffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// replaceFile writes data to path as an editor that saves safely does: a
// new file renamed over the old one, so that a reader sees the old or the
// new file whole, never half of one.
func replaceFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".edit")
	writeFile(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestOpenMissingFile(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	st := open(t, path, filepath.Join(filepath.Dir(path), "absent.env"), nil)
	if st.Path() != path {
		t.Errorf("Path() = %q, want %q", st.Path(), path)
	}
	for name, list := range map[string]func() (int, error){
		"Groups": func() (int, error) { v, err := st.Groups(ctx); return len(v), err },
		"Users":  func() (int, error) { v, err := st.Users(ctx); return len(v), err },
		"Tokens": func() (int, error) { v, err := st.Tokens(ctx); return len(v), err },
		"SigningKeys": func() (int, error) {
			v, err := st.SigningKeys(ctx)
			return len(v), err
		},
	} {
		if n, err := list(); err != nil || n != 0 {
			t.Errorf("%s() = %d records, %v; want none", name, n, err)
		}
	}
	d, err := st.Read(ctx)
	if err != nil || len(d.Providers)+len(d.Groups)+len(d.Users)+d.Tokens.Len()+len(d.SigningKeys) != 0 {
		t.Errorf("Read() = %+v, %v; want empty data", d, err)
	}
	for _, p := range []string{path, filestore.DefaultTokensPath(path)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("Open created %s: %v", p, err)
		}
	}
}

func TestNotFound(t *testing.T) {
	ctx := t.Context()
	st := open(t, storePath(t), "", nil)
	if err := st.PutGroup(ctx, &record.Group{Name: "team"}); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		get  func() error
		want string
	}{
		"token":    {get: func() error { _, err := st.Token(ctx, "AAAAAAAAAAAAAAAA"); return err }, want: `token "AAAAAAAAAAAAAAAA"`},
		"user":     {get: func() error { _, err := st.User(ctx, "ann"); return err }, want: `user "ann"`},
		"group":    {get: func() error { _, err := st.Group(ctx, "other"); return err }, want: `group "other"`},
		"provider": {get: func() error { _, err := st.Provider(ctx, "openai"); return err }, want: `provider "openai"`},
		"delete token": {
			get: func() error { return st.DeleteToken(ctx, "AAAAAAAAAAAAAAAA") }, want: `token "AAAAAAAAAAAAAAAA"`,
		},
		"delete user":     {get: func() error { return st.DeleteUser(ctx, "ann") }, want: `user "ann"`},
		"delete group":    {get: func() error { return st.DeleteGroup(ctx, "other") }, want: `group "other"`},
		"delete provider": {get: func() error { return st.DeleteProvider(ctx, "openai") }, want: `provider "openai"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.get()
			if !errors.Is(err, record.ErrNotFound) {
				t.Fatalf("err = %v, want record.ErrNotFound", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}
}

func TestRecordsRoundTrip(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	vars := map[string]string{"OPENAI_KEY_1": "sk-one", "OPENAI_KEY_2": "sk-two", "GW_KEY": "gw-secret"}
	st := open(t, path, "", vars)

	providers := map[string]*filestore.ProviderData{
		"openai":    {Kind: record.KindOpenAI, Keys: []filestore.KeyData{{ID: "k1", Env: "OPENAI_KEY_1"}, {ID: "k2", Env: "OPENAI_KEY_2"}}},
		"anthropic": {Kind: record.KindAnthropic, AnthropicVersion: "2024-01-01", Keys: []filestore.KeyData{}},
		"gateway": {
			Kind: record.KindCustom, Header: "X-Gateway-Key", ValueTemplate: "Token {key}",
			Keys: []filestore.KeyData{{ID: "main", Env: "GW_KEY"}},
		},
	}
	groups := []*record.Group{
		{Name: "team", Providers: []string{"openai"}, Models: []string{"gpt-4o*"}, DisableCustomKeys: true, RequestsPerMinute: 30},
		{Name: "off", Disabled: true},
	}
	users := []*record.User{
		{Name: "ann", Role: record.RoleAdmin, Groups: []string{"team"}},
		{Name: "bob", Role: record.RoleUser, Disabled: true, Groups: []string{"team", "off"}},
	}
	tok := newToken(t, "ann", "team")
	tok.Expires = tok.Created.Add(24 * time.Hour)
	forever := newToken(t, "bob", "off")
	forever.Revoked = true

	for name, p := range providers {
		if err := st.PutProvider(ctx, name, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range groups {
		if err := st.PutGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range users {
		if err := st.PutUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	for _, tk := range []*record.Token{tok, forever} {
		if err := st.PutToken(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}

	raw := string(readFile(t, path))
	tokens := string(readFile(t, filestore.DefaultTokensPath(path)))
	for _, v := range vars {
		if strings.Contains(raw+tokens, v) {
			t.Errorf("store or token file holds key material %q:\n%s\n%s", v, raw, tokens)
		}
	}
	// The rate limit is written when set, and only then.
	if strings.Count(raw, "requests_per_minute") != 1 || !strings.Contains(raw, "requests_per_minute: 30") {
		t.Errorf("store file: want exactly team's requests_per_minute: 30:\n%s", raw)
	}
	// Token records are in the token file only.
	for _, tk := range []*record.Token{tok, forever} {
		if strings.Contains(raw, tk.ID) || strings.Contains(raw, filestore.HashString(tk.Hash)) {
			t.Errorf("store file holds token %s:\n%s", tk.ID, raw)
		}
		if !strings.Contains(tokens, `"id":"`+tk.ID+`"`) {
			t.Errorf("token file does not hold token %s:\n%s", tk.ID, tokens)
		}
	}

	// Both the writing Store and a fresh one see the records.
	for name, s := range map[string]*filestore.Store{"writer": st, "reopened": open(t, path, "", vars)} {
		t.Run(name, func(t *testing.T) {
			wantProviders := map[string]*record.Provider{
				"openai":    {Name: "openai", Kind: record.KindOpenAI, Keys: []record.Key{{ID: "k1", Secret: "sk-one"}, {ID: "k2", Secret: "sk-two"}}},
				"anthropic": {Name: "anthropic", Kind: record.KindAnthropic, AnthropicVersion: "2024-01-01"},
				"gateway": {
					Name: "gateway", Kind: record.KindCustom, Header: "x-gateway-key", ValueTemplate: "Token {key}",
					Keys: []record.Key{{ID: "main", Secret: "gw-secret"}},
				},
			}
			for name, want := range wantProviders {
				got, err := s.Provider(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("Provider(%s) = %+v, want %+v", name, got, want)
				}
			}
			for _, want := range groups {
				got, err := s.Group(ctx, want.Name)
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Errorf("Group(%s) = %+v, %v; want %+v", want.Name, got, err, want)
				}
			}
			for _, want := range users {
				got, err := s.User(ctx, want.Name)
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Errorf("User(%s) = %+v, %v; want %+v", want.Name, got, err, want)
				}
			}
			for _, want := range []*record.Token{tok, forever} {
				got, err := s.Token(ctx, want.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.Hash != want.Hash || got.User != want.User || got.Group != want.Group || got.Name != want.Name ||
					got.Revoked != want.Revoked || !got.Created.Equal(want.Created) || !got.Expires.Equal(want.Expires) {
					t.Errorf("Token(%s) = %+v, want %+v", want.ID, got, want)
				}
			}
			if gs, _ := s.Groups(ctx); len(gs) != 2 {
				t.Errorf("Groups() = %d records, want 2", len(gs))
			}
			if us, _ := s.Users(ctx); len(us) != 2 {
				t.Errorf("Users() = %d records, want 2", len(us))
			}
			if ts, _ := s.Tokens(ctx); len(ts) != 2 {
				t.Errorf("Tokens() = %d records, want 2", len(ts))
			}
		})
	}

	// Replacing a record keeps one of it.
	if err := st.PutGroup(ctx, &record.Group{Name: "team", Models: []string{"o3"}}); err != nil {
		t.Fatal(err)
	}
	if g, err := open(t, path, "", vars).Group(ctx, "team"); err != nil || !reflect.DeepEqual(g.Models, []string{"o3"}) || g.DisableCustomKeys {
		t.Errorf("replaced group = %+v, %v", g, err)
	}

	// Deletes go through the file as well.
	deletes := []struct {
		del func() error
		get func(*filestore.Store) error
	}{
		{func() error { return st.DeleteProvider(ctx, "gateway") }, func(s *filestore.Store) error { _, err := s.Provider(ctx, "gateway"); return err }},
		{func() error { return st.DeleteGroup(ctx, "off") }, func(s *filestore.Store) error { _, err := s.Group(ctx, "off"); return err }},
		{func() error { return st.DeleteToken(ctx, tok.ID) }, func(s *filestore.Store) error { _, err := s.Token(ctx, tok.ID); return err }},
		{func() error { return st.DeleteUser(ctx, "ann") }, func(s *filestore.Store) error { _, err := s.User(ctx, "ann"); return err }},
	}
	for i, d := range deletes {
		if err := d.del(); err != nil {
			t.Fatalf("delete %d: %v", i, err)
		}
		for name, s := range map[string]*filestore.Store{"writer": st, "reopened": open(t, path, "", vars)} {
			if err := d.get(s); !errors.Is(err, record.ErrNotFound) {
				t.Errorf("delete %d, %s: read after delete = %v, want ErrNotFound", i, name, err)
			}
		}
	}
	// The group's token stays (and is denied elsewhere).
	if _, err := open(t, path, "", vars).Token(ctx, forever.ID); err != nil {
		t.Errorf("token of a deleted group: %v", err)
	}
}

func TestDeleteUserRemovesTokens(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	st := open(t, path, "", nil)
	for _, u := range []string{"ann", "bob"} {
		if err := st.PutUser(ctx, &record.User{Name: u, Role: record.RoleUser}); err != nil {
			t.Fatal(err)
		}
	}
	ann1, ann2, bob := newToken(t, "ann", "g"), newToken(t, "ann", "h"), newToken(t, "bob", "g")
	for _, tk := range []*record.Token{ann1, ann2, bob} {
		if err := st.PutToken(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.DeleteUser(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	re := open(t, path, "", nil)
	for _, tk := range []*record.Token{ann1, ann2} {
		if _, err := re.Token(ctx, tk.ID); !errors.Is(err, record.ErrNotFound) {
			t.Errorf("ann's token %s: %v, want ErrNotFound", tk.ID, err)
		}
	}
	if _, err := re.Token(ctx, bob.ID); err != nil {
		t.Errorf("bob's token: %v", err)
	}
	if _, err := re.User(ctx, "bob"); err != nil {
		t.Errorf("bob: %v", err)
	}
}

func TestTokenFileFormat(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	tokensPath := filestore.DefaultTokensPath(path)
	st := open(t, path, "", nil)
	loc := time.FixedZone("UTC+2", 2*60*60)
	created := time.Date(2025, 3, 1, 12, 30, 45, 123456789, loc)
	expires := created.Add(90 * 24 * time.Hour)
	tk := &record.Token{
		ID: "abcdefghijklmnop", Hash: sha256.Sum256([]byte("secret part")), User: "ann", Group: "team",
		Name: "laptop", Created: created, Expires: expires, Revoked: true,
	}
	if err := st.PutToken(ctx, tk); err != nil {
		t.Fatal(err)
	}
	// One JSON object on one line, times in UTC.
	raw := readFile(t, tokensPath)
	want := `{"format":"keyward-tokens/1"}` + "\n" + `{"id":"abcdefghijklmnop","user":"ann","group":"team","name":"laptop","hash":"` + filestore.HashString(tk.Hash) +
		`","created":"2025-03-01T10:30:45.123456789Z","expires":"2025-05-30T10:30:45.123456789Z","revoked":true}` + "\n"
	if string(raw) != want {
		t.Errorf("token file =\n%s\nwant\n%s", raw, want)
	}
	d, err := st.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	td, ok := d.Tokens.Get(tk.ID)
	if !ok || td.Hash != filestore.HashString(tk.Hash) || td.Expires == nil || !td.Expires.Equal(expires) || !td.Created.Equal(created) {
		t.Errorf("Read() token = %+v", td)
	}
	got, err := open(t, path, "", nil).Token(ctx, tk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash != tk.Hash || !got.Created.Equal(created) || !got.Expires.Equal(expires) || !got.Revoked || got.Name != "laptop" {
		t.Errorf("Token() = %+v, want hash %x, created %v, expires %v, revoked", got, tk.Hash, created, expires)
	}

	// No expiry stays none, and unset fields are left out.
	tk.Expires, tk.Name, tk.Revoked = time.Time{}, "", false
	if err := st.PutToken(ctx, tk); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(readFile(t, tokensPath))), "\n")
	for _, field := range []string{"expires", "name", "revoked"} {
		if last := lines[len(lines)-1]; strings.Contains(last, `"`+field+`"`) {
			t.Errorf("a token without %s was written with one:\n%s", field, last)
		}
	}
	if got, err := open(t, path, "", nil).Token(ctx, tk.ID); err != nil || !got.Expires.IsZero() || got.Revoked {
		t.Errorf("Token() = %+v, %v; want no expiry, not revoked", got, err)
	}
}

func TestUpdateFailureWritesNothing(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	tokensPath := filestore.DefaultTokensPath(path)
	st := open(t, path, "", nil)
	if err := st.PutGroup(ctx, &record.Group{Name: "team"}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutToken(ctx, newToken(t, "ann", "team")); err != nil {
		t.Fatal(err)
	}
	files := []string{path, tokensPath}
	before := map[string][]byte{}
	statBefore := map[string]os.FileInfo{}
	for _, p := range files {
		before[p] = readFile(t, p)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		statBefore[p] = fi
	}
	errChange := errors.New("changed my mind")
	tests := map[string]struct {
		update func() error
		want   string // substring of the error
		field  string // the field it names, if a record's
	}{
		"bad group name": {update: func() error { return st.PutGroup(ctx, &record.Group{Name: "bad name"}) }, want: `group name "bad name"`},
		"bad user name":  {update: func() error { return st.PutUser(ctx, &record.User{Name: "-ann"}) }, want: `user name "-ann"`},
		"bad role": {
			update: func() error { return st.PutUser(ctx, &record.User{Name: "ann", Role: "root"}) }, field: "users.ann.role",
		},
		"bad provider kind": {
			update: func() error { return st.PutProvider(ctx, "x", &filestore.ProviderData{Kind: "openia"}) }, field: "providers.x",
		},
		"key without env": {
			update: func() error {
				return st.PutProvider(ctx, "openai", &filestore.ProviderData{Kind: record.KindOpenAI, Keys: []filestore.KeyData{{ID: "k1"}}})
			},
			field: "providers.openai.keys[0].env",
		},
		"duplicate key id": {
			update: func() error {
				return st.PutProvider(ctx, "openai", &filestore.ProviderData{
					Kind: record.KindOpenAI, Keys: []filestore.KeyData{{ID: "k", Env: "A"}, {ID: "k", Env: "B"}},
				})
			},
			field: "providers.openai.keys[1].id",
		},
		"bad token id": {
			update: func() error { return st.PutToken(ctx, &record.Token{ID: "short", User: "a", Group: "g"}) }, want: `token id "short"`,
		},
		"token without user": {
			update: func() error { return st.PutToken(ctx, &record.Token{ID: "AAAAAAAAAAAAAAAA", Group: "g"}) },
			want:   `user name ""`,
		},
		"bad token hash": {
			update: func() error {
				return st.Update(ctx, func(d *filestore.Data) error {
					d.Tokens.Set("AAAAAAAAAAAAAAAA", filestore.TokenData{User: "a", Group: "g", Hash: "abc"})
					return nil
				})
			},
			field: "tokens.AAAAAAAAAAAAAAAA.hash",
		},
		"token without group": {
			update: func() error {
				return st.Update(ctx, func(d *filestore.Data) error {
					d.Tokens.Set("AAAAAAAAAAAAAAAA", filestore.TokenData{User: "a", Hash: strings.Repeat("0", 64)})
					return nil
				})
			},
			field: "tokens.AAAAAAAAAAAAAAAA.group",
		},
		"tokens and group fail together": {
			update: func() error {
				return st.Update(ctx, func(d *filestore.Data) error {
					for id := range d.Tokens.All() {
						d.Tokens.Delete(id)
					}
					d.Groups["bad name"] = &filestore.GroupData{}
					return nil
				})
			},
			field: "groups.bad name",
		},
		"negative rate limit": {
			update: func() error { return st.PutGroup(ctx, &record.Group{Name: "team", RequestsPerMinute: -1}) },
			field:  "groups.team.requests_per_minute",
		},
		"short signing key": {
			update: func() error {
				return st.Update(ctx, func(d *filestore.Data) error {
					d.SigningKeys = append(d.SigningKeys, filestore.SigningKeyData{ID: 1, Secret: base64.StdEncoding.EncodeToString([]byte("short"))})
					return nil
				})
			},
			field: "signing_keys[0].secret",
		},
		"change fails": {
			update: func() error {
				return st.Update(ctx, func(d *filestore.Data) error {
					delete(d.Groups, "team")
					return errChange
				})
			},
			want: errChange.Error(),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.update()
			if err == nil {
				t.Fatal("update succeeded, want an error")
			}
			if tc.field != "" {
				wantFields(t, err, tc.field)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			for _, p := range files {
				if after := readFile(t, p); !bytes.Equal(after, before[p]) {
					t.Errorf("%s changed:\n%s", p, after)
				}
				statAfter, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if !os.SameFile(statBefore[p], statAfter) || !statAfter.ModTime().Equal(statBefore[p].ModTime()) {
					t.Errorf("%s was rewritten", p)
				}
			}
			if _, err := st.Group(ctx, "team"); err != nil {
				t.Errorf("loaded records changed: %v", err)
			}
		})
	}
	if errors.Is(tests["change fails"].update(), errChange) == false {
		t.Error("Update does not return the change's error")
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".keyward-store.*"))
	if len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestUpdateNoChangeKeepsFile(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	tokensPath := filestore.DefaultTokensPath(path)
	st := open(t, path, "", nil)
	g := &record.Group{Name: "team", Models: []string{"a"}}
	tk := newToken(t, "ann", "team")
	if err := st.PutGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	if err := st.PutToken(ctx, tk); err != nil {
		t.Fatal(err)
	}
	before := statFiles(t, path, tokensPath)
	if err := st.PutGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	if err := st.PutToken(ctx, tk); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	after := statFiles(t, path, tokensPath)
	if !os.SameFile(before[tokensPath], after[tokensPath]) {
		t.Error("updates that changed no token replaced the token file")
	}
	// The first EnsureSigningKey added a key; the file holds it.
	if os.SameFile(before[path], after[path]) {
		t.Error("the store file was not written with the new signing key")
	}
	again := statFiles(t, path, tokensPath)
	if err := st.PutGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	if now := statFiles(t, path, tokensPath); !os.SameFile(again[path], now[path]) {
		t.Error("an update that changed nothing replaced the store file")
	}
}

// statFiles stats each path.
func statFiles(t *testing.T, paths ...string) map[string]os.FileInfo {
	t.Helper()
	out := map[string]os.FileInfo{}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		out[p] = fi
	}
	return out
}

func TestFileMode(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	tokensPath := filestore.DefaultTokensPath(path)
	// Files made readable by others by hand are tightened by the next write.
	writeFile(t, path, "groups:\n  old: {}\n")
	writeFile(t, tokensPath, `{"format":"keyward-tokens/1"}`+"\n")
	for _, p := range []string{path, tokensPath} {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st := open(t, path, "", nil)
	if err := st.PutGroup(ctx, &record.Group{Name: "team"}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutToken(ctx, newToken(t, "ann", "team")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, tokensPath} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", p, fi.Mode().Perm())
		}
	}
	fresh := storePath(t)
	st = open(t, fresh, "", nil)
	if err := st.EnsureSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.PutToken(ctx, newToken(t, "ann", "team")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fresh, filestore.DefaultTokensPath(fresh)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("new file %s mode = %v, want 0600", p, fi.Mode().Perm())
		}
	}
}

func TestProviderKeysFromEnvironment(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "store.yaml")
	envPath := filepath.Join(dir, ".env")
	writeFile(t, path, `providers:
  openai:
    kind: openai
    keys:
      - {id: both, env: KEY_BOTH}
      - {id: proc, env: KEY_PROC}
      - {id: file, env: KEY_FILE}
      - {id: none, env: KEY_NONE}
`)
	writeFile(t, envPath, "KEY_BOTH=from-file\nKEY_FILE=file-only\nKEY_PROC=\n")
	proc := map[string]string{"KEY_BOTH": "from-process", "KEY_PROC": "process-only"}
	st := open(t, path, envPath, proc)
	p, err := st.Provider(ctx, "openai")
	if err != nil {
		t.Fatal(err)
	}
	want := []record.Key{{ID: "both", Secret: "from-process"}, {ID: "proc", Secret: "process-only"}, {ID: "file", Secret: "file-only"}}
	if !reflect.DeepEqual(p.Keys, want) {
		t.Errorf("keys = %#v, want %#v", p.Keys, want)
	}

	// Without the .env file only the process environment counts.
	p, err = open(t, path, "", proc).Provider(ctx, "openai")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Keys) != 2 {
		t.Errorf("keys without .env = %v, want both and proc", p.Keys)
	}
}

func TestBrokenEnvFile(t *testing.T) {
	dir := t.TempDir()
	envPath := filepath.Join(dir, ".env")
	writeFile(t, envPath, "GOOD=1\nKEY=\""+secret+"\n")
	_, err := filestore.Open(filestore.Options{Path: filepath.Join(dir, "store.yaml"), EnvPath: envPath, Getenv: env(nil)})
	if err == nil {
		t.Fatal("Open succeeded with a broken .env file")
	}
	if !strings.Contains(err.Error(), envPath) || !strings.Contains(err.Error(), "line 2 (KEY)") {
		t.Errorf("error %q does not name the file and line", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error %q contains the value", err)
	}
}

func TestWarnMissing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "store.yaml")
	envPath := filepath.Join(dir, ".env")
	writeFile(t, path, `providers:
  openai:
    kind: openai
    keys: [{id: a, env: KEY_SET}, {id: b, env: KEY_MISSING_B}]
  anthropic:
    kind: anthropic
    keys: [{id: a, env: KEY_IN_FILE}, {id: b, env: KEY_MISSING_A}]
`)
	writeFile(t, envPath, "KEY_IN_FILE="+secret+"\n")
	st := open(t, path, envPath, map[string]string{"KEY_SET": secret + "-proc"})
	log, buf := newLogger()
	st.WarnMissing(log)
	out := buf.String()
	for _, want := range []string{"level=WARN", "KEY_MISSING_A", "KEY_MISSING_B"} {
		if !strings.Contains(out, want) {
			t.Errorf("log does not contain %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "KEY_MISSING_A") > strings.Index(out, "KEY_MISSING_B") {
		t.Errorf("missing variables are not sorted:\n%s", out)
	}
	for _, leak := range []string{secret, "KEY_SET", "KEY_IN_FILE"} {
		if strings.Contains(out, leak) {
			t.Errorf("log contains %q:\n%s", leak, out)
		}
	}

	// Nothing missing, nothing logged.
	writeFile(t, envPath, "KEY_IN_FILE=x\nKEY_MISSING_A=y\nKEY_MISSING_B=z\n")
	log, buf = newLogger()
	open(t, path, envPath, map[string]string{"KEY_SET": "w"}).WarnMissing(log)
	if buf.String() != "" {
		t.Errorf("WarnMissing logged with every key set:\n%s", buf)
	}
}

func TestStrictStoreFile(t *testing.T) {
	tests := map[string]struct {
		yaml   string
		want   []string // substrings of the error
		fields []string // the records' fields it names
	}{
		"unknown group field": {
			yaml: "groups:\n  team:\n    disable: true\n", want: []string{"line 3", "disable", "GroupData"},
		},
		"unknown top-level field": {yaml: "group:\n  team: {}\n", want: []string{"line 1", "group"}},
		// Tokens are in the token file: a tokens key left in the store
		// file (hand-copied from an older one) must not be ignored.
		"tokens key": {
			yaml: "groups:\n  g: {}\ntokens:\n  AAAAAAAAAAAAAAAA:\n    user: a\n    group: g\n    hash: " + strings.Repeat("0", 64) + "\n",
			want: []string{"line 3", "field tokens not found"},
		},
		"empty tokens key": {yaml: "tokens: {}\n", want: []string{"line 1", "tokens"}},
		"unknown key field": {
			yaml: "providers:\n  openai:\n    kind: openai\n    keys: [{id: a, env: A, secret: x}]\n",
			want: []string{"line 4", "secret"},
		},
		// A record given twice would shadow the first: refused, naming
		// the record and both places.
		"group twice": {
			yaml: "groups:\n  team: {}\n  ops: {}\n  team:\n    disabled: true\n",
			want: []string{"line 4", `"team"`, "already defined at line 2"},
		},
		"user twice": {
			yaml: "users:\n  ann: {role: admin}\n  ann: {role: user}\n",
			want: []string{"line 3", `"ann"`, "already defined at line 2"},
		},
		"provider twice": {
			yaml: "providers:\n  openai: {kind: openai}\n  anthropic: {kind: anthropic}\n  openai: {kind: custom}\n",
			want: []string{"line 4", `"openai"`, "already defined at line 2"},
		},
		"user twice, quoted once": {
			yaml: "users:\n  '1': {}\n  1: {}\n",
			want: []string{"line 3", `"1"`, "already defined at line 2"},
		},
		"group twice, once in binary": {
			yaml: "groups:\n  a: {}\n  !!binary YQ==: {disabled: true}\n",
			want: []string{"line 3", `"a"`, "already defined at line 2"},
		},
		"unknown field in a merged mapping": {
			yaml: "groups:\n  base: &b {disabled: true}\n  team:\n    <<: {disable: true}\n",
			want: []string{"line 4", "field disable not found", "GroupData"},
		},
		"unknown field in an aliased record": {
			yaml: "users:\n  ann: &a {role: user, group: [x]}\n  bob: *a\n",
			want: []string{"line 2", "field group not found", "UserData"},
		},
		"wrong type":   {yaml: "groups:\n  team:\n    disabled: maybe\n", want: []string{"line 3"}},
		"syntax error": {yaml: "groups: [\n", want: []string{"yaml"}},
		"bad name and record": {
			yaml:   "providers:\n  open ai: {kind: openai}\n  empty:\nusers:\n  ann: {role: root}\n",
			want:   []string{"empty record"},
			fields: []string{"providers.empty", "providers.open ai", "users.ann.role"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := storePath(t)
			writeFile(t, path, tc.yaml)
			_, err := filestore.Open(filestore.Options{Path: path, Getenv: env(nil)})
			if err == nil {
				t.Fatal("Open succeeded, want an error")
			}
			if tc.fields != nil {
				wantFields(t, err, tc.fields...)
				// A bad name is the caller's mistake, whatever else is wrong.
				if !errors.Is(err, record.ErrInvalidName) {
					t.Errorf("error %v is not record.ErrInvalidName", err)
				}
			}
			for _, w := range append(tc.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestStoreFileAnchors checks that a hand-written store file's anchors,
// aliases and merge keys read as they always did: records are decoded
// one at a time, not by the YAML library's decoding of the whole file.
func TestStoreFileAnchors(t *testing.T) {
	path := storePath(t)
	writeFile(t, path, `providers:
  openai: &p {kind: openai, keys: [{id: k1, env: OPENAI_KEY}]}
  other: *p
groups:
  base: &base
    providers: [openai]
    models: [gpt-4o]
  team:
    <<: *base
    disabled: true
  copy: *base
users:
  ann: {groups: [team]}
  ~: {role: admin}
`)
	st := open(t, path, "", map[string]string{"OPENAI_KEY": "sk-x"})
	ctx := t.Context()
	team, err := st.Group(ctx, "team")
	if err != nil || !team.Disabled || !slices.Equal(team.Providers, []string{"openai"}) || !slices.Equal(team.Models, []string{"gpt-4o"}) {
		t.Errorf("team = %+v, %v; want base's providers and models, disabled", team, err)
	}
	if cp, err := st.Group(ctx, "copy"); err != nil || cp.Disabled || !slices.Equal(cp.Models, []string{"gpt-4o"}) {
		t.Errorf("copy = %+v, %v; want base", cp, err)
	}
	if p, err := st.Provider(ctx, "other"); err != nil || p.Kind != record.KindOpenAI || len(p.Keys) != 1 {
		t.Errorf("other = %+v, %v; want openai's record", p, err)
	}
	users, err := st.Users(ctx)
	if err != nil || len(users) != 1 || users[0].Name != "ann" {
		t.Errorf("users = %v, %v; want ann alone (a record without a name is skipped)", users, err)
	}

	// Records merged into the mapping of groups: the YAML library decodes
	// that file whole, as it always did.
	writeFile(t, path, "groups:\n  team: {}\n  <<: {merged: {requests_per_minute: 7}, team: {disabled: true}}\n")
	st = open(t, path, "", nil)
	if m, err := st.Group(ctx, "merged"); err != nil || m.RequestsPerMinute != 7 {
		t.Errorf("merged = %+v, %v; want the group merged into groups", m, err)
	}
	if g, err := st.Group(ctx, "team"); err != nil || g.Disabled {
		t.Errorf("team = %+v, %v; want the file's own, not the merged one", g, err)
	}
}

func TestUpdateOnBrokenFile(t *testing.T) {
	path := storePath(t)
	st := open(t, path, "", nil)
	broken := "groups:\n  team:\n    disable: true\n"
	writeFile(t, path, broken)
	err := st.PutGroup(t.Context(), &record.Group{Name: "other"})
	if err == nil || !strings.Contains(err.Error(), "disable") {
		t.Fatalf("PutGroup on a broken file = %v, want an error naming the field", err)
	}
	if got := string(readFile(t, path)); got != broken {
		t.Errorf("broken file was rewritten:\n%s", got)
	}
}

func TestNullRecords(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	writeFile(t, path, "groups:\n  team:\nusers:\n  ann:\n")
	st := open(t, path, "", nil)
	if g, err := st.Group(ctx, "team"); err != nil || g.Name != "team" || g.Disabled {
		t.Errorf("Group(team) = %+v, %v", g, err)
	}
	if u, err := st.User(ctx, "ann"); err != nil || u.Role != record.RoleUser {
		t.Errorf("User(ann) = %+v, %v; want role user", u, err)
	}
}

func TestEnsureSigningKey(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	st := open(t, path, "", nil)
	for i := range 3 {
		if err := st.EnsureSigningKey(ctx); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	keys, err := st.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || len(keys[0].Secret) < token.KeySize {
		t.Fatalf("SigningKeys() = %d keys, want one of %d bytes", len(keys), token.KeySize)
	}
	first := readFile(t, path)

	// Another process sees the key and adds none.
	other := open(t, path, "", nil)
	if err := other.EnsureSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); !bytes.Equal(got, first) {
		t.Errorf("second EnsureSigningKey changed the file:\n%s", got)
	}
	d, err := other.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.SigningKeys) != 1 {
		t.Fatalf("file holds %d signing keys, want 1", len(d.SigningKeys))
	}
	okeys, _ := other.SigningKeys(ctx)
	if len(okeys) != 1 || okeys[0].ID != keys[0].ID || !bytes.Equal(okeys[0].Secret, keys[0].Secret) {
		t.Error("a reopened store reads a different signing key")
	}
	if _, err := token.NewKeyring(okeys); err != nil {
		t.Errorf("the stored key does not make a keyring: %v", err)
	}
}

// TestConcurrentWriters runs writers as concurrent CLI processes would: each
// with its own Store on the same files, half of them writing groups (the
// store file) and half tokens (the token file). The file lock keeps every
// write.
func TestConcurrentWriters(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	const n = 20
	toks := make([]*record.Token, n)
	for i := range toks {
		toks[i] = newToken(t, "ann", "team")
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			st, err := filestore.Open(filestore.Options{Path: path, Getenv: env(nil)})
			if err != nil {
				errs <- err
				return
			}
			if i%2 == 0 {
				err = st.PutGroup(ctx, &record.Group{Name: fmt.Sprintf("group-%02d", i)})
			} else {
				err = st.PutToken(ctx, toks[i])
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := open(t, path, "", nil)
	gs, err := st.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range gs {
		names = append(names, g.Name)
	}
	slices.Sort(names)
	if len(names) != n/2 {
		t.Errorf("final file has %d groups, want %d: %v", len(names), n/2, names)
	}
	for i := 1; i < n; i += 2 {
		if _, err := st.Token(ctx, toks[i].ID); err != nil {
			t.Errorf("token %d: %v", i, err)
		}
	}
}

// TestWatch drives Watch's polls one at a time through the changes a
// serving process sees: every step is followed by two polls, so that a
// second look at the same files must neither call onChange again nor log
// the same failure twice.
func TestWatch(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "store.yaml")
	tokensPath := filestore.DefaultTokensPath(path)
	envPath := filepath.Join(dir, ".env")
	replaceFile(t, envPath, "OPENAI_KEY=sk-old\n")
	st := open(t, path, envPath, nil)
	other := open(t, path, envPath, nil) // another process: the CLI
	log, logs := newLogger()
	changes := 0
	poll := st.Poller(log, func() { changes++ })

	hasGroup := func(name string) bool { _, err := st.Group(ctx, name); return err == nil }
	key := func() string {
		p, err := st.Provider(ctx, "openai")
		if err != nil || len(p.Keys) != 1 {
			return ""
		}
		return p.Keys[0].Secret
	}
	tk := newToken(t, "ann", "third")
	tokenState := func() string {
		got, err := st.Token(ctx, tk.ID)
		switch {
		case err != nil:
			return "missing"
		case got.Revoked:
			return "revoked"
		}
		return "active"
	}
	handEdit := `groups:
  first: {}
  second:
    models: [gpt-4o]
providers:
  openai:
    kind: openai
    keys: [{id: k1, env: OPENAI_KEY}]
`
	steps := []struct {
		name    string
		act     func(t *testing.T)
		changed bool
		holds   func() bool // the records in force after the step
		logged  string      // a failure logged once, if any
	}{{
		name:    "another Store's write",
		act:     func(t *testing.T) { must(t, other.PutGroup(ctx, &record.Group{Name: "first"})) },
		changed: true,
		holds:   func() bool { return hasGroup("first") },
	}, {
		// Written in place, as some editors save. The new content has
		// another size, so the change shows however coarse the file
		// system's clock is.
		name: "hand edit in place",
		act: func(t *testing.T) {
			if int64(len(handEdit)) == statFiles(t, path)[path].Size() {
				t.Fatal("the hand edit must change the file's size")
			}
			writeFile(t, path, handEdit)
		},
		changed: true,
		holds:   func() bool { return hasGroup("second") && key() == "sk-old" },
	}, {
		name:    "a new key in the .env file",
		act:     func(t *testing.T) { replaceFile(t, envPath, "# rotated\nOPENAI_KEY=sk-newer\n") },
		changed: true,
		holds:   func() bool { return key() == "sk-newer" },
	}, {
		name:   "a broken store file keeps the last good records",
		act:    func(t *testing.T) { replaceFile(t, path, "groups: [\n") },
		holds:  func() bool { return hasGroup("second") && key() == "sk-newer" },
		logged: "store reload failed",
	}, {
		name:    "the store file fixed",
		act:     func(t *testing.T) { replaceFile(t, path, "groups:\n  third: {}\n") },
		changed: true,
		holds:   func() bool { return hasGroup("third") && !hasGroup("second") },
	}, {
		name:    "a token another Store wrote",
		act:     func(t *testing.T) { must(t, other.PutToken(ctx, tk)) },
		changed: true,
		holds:   func() bool { return tokenState() == "active" },
	}, {
		// The management API writes through the watched Store itself:
		// Update reloads at once, and onChange must still follow, since
		// the caches in front of the store hold the old record.
		name: "the watched Store's own write",
		act: func(t *testing.T) {
			revoked := *tk
			revoked.Revoked = true
			must(t, st.PutToken(ctx, &revoked))
		},
		changed: true,
		holds:   func() bool { return tokenState() == "revoked" },
	}, {
		name:   "a broken token file keeps the last good tokens",
		act:    func(t *testing.T) { replaceFile(t, tokensPath, "{\"id\":\n") },
		holds:  func() bool { return tokenState() == "revoked" },
		logged: "token file line 1",
	}, {
		name: "a token revived by hand",
		act: func(t *testing.T) {
			replaceFile(t, tokensPath, fmt.Sprintf(`{"id":%q,"user":"ann","group":"third","hash":%q,"created":"2025-01-01T00:00:00Z"}`+"\n",
				tk.ID, filestore.HashString(tk.Hash)))
		},
		changed: true,
		holds:   func() bool { return tokenState() == "active" },
	}}
	for _, step := range steps {
		before, logBefore := changes, logs.String()
		step.act(t)
		poll()
		poll()
		if got := changes - before; got != map[bool]int{true: 1}[step.changed] {
			t.Errorf("%s: onChange called %d times", step.name, got)
		}
		if !step.holds() {
			t.Errorf("%s: the records in force are not as expected", step.name)
		}
		newLogs := strings.TrimPrefix(logs.String(), logBefore)
		if step.logged != "" && strings.Count(newLogs, step.logged) != 1 {
			t.Errorf("%s: %q logged %d times, want once:\n%s", step.name, step.logged, strings.Count(newLogs, step.logged), newLogs)
		}
		if step.logged == "" && strings.Contains(newLogs, "level=ERROR") {
			t.Errorf("%s: logged an error:\n%s", step.name, newLogs)
		}
	}
	if strings.Contains(logs.String(), "sk-") {
		t.Errorf("the log holds a key:\n%s", logs)
	}
}

// TestWatchLoop checks Watch's loop: it polls at each tick and returns
// when its context is done.
func TestWatchLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	path := storePath(t)
	st := open(t, path, "", nil)
	ticks := make(chan time.Time)
	changed := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.WatchTicks(ctx, ticks, slog.New(slog.DiscardHandler), func() { changed <- struct{}{} })
	}()
	must(t, open(t, path, "", nil).PutGroup(ctx, &record.Group{Name: "team"}))
	ticks <- time.Now()
	<-changed
	if _, err := st.Group(ctx, "team"); err != nil {
		t.Errorf("after a tick: %v", err)
	}
	cancel()
	<-done
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestClose: a closed Store answers reads from what it loaded, and refuses
// to load or write.
func TestClose(t *testing.T) {
	ctx := t.Context()
	st := open(t, storePath(t), "", nil)
	must(t, st.PutGroup(ctx, &record.Group{Name: "team"}))
	must(t, st.Close())
	if _, err := st.Group(ctx, "team"); err != nil {
		t.Errorf("Group after Close: %v", err)
	}
	if err := st.PutGroup(ctx, &record.Group{Name: "other"}); !errors.Is(err, filestore.ErrClosed) {
		t.Errorf("PutGroup after Close = %v, want ErrClosed", err)
	}
	log, logs := newLogger()
	st.Poller(log, func() {})()
	if !strings.Contains(logs.String(), "closed") {
		t.Errorf("a poll after Close logged %q", logs)
	}
}
