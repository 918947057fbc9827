package filestore_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/record"
)

const zeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// tokenLine is a valid token file line for id.
func tokenLine(id, user, group string) string {
	return fmt.Sprintf(`{"id":%q,"user":%q,"group":%q,"hash":%q,"created":"2025-01-01T00:00:00Z"}`+"\n", id, user, group, zeroHash)
}

func TestDefaultTokensPath(t *testing.T) {
	tests := map[string]string{
		"keyward-store.yaml":         "keyward-store.tokens.jsonl",
		"/etc/keyward/store.yml":     "/etc/keyward/store.tokens.jsonl",
		"store":                      "store.tokens.jsonl",
		"a.b/store":                  "a.b/store.tokens.jsonl",
		"dir/my.store.yaml":          "dir/my.store.tokens.jsonl",
		"/var/lib/keyward/.hidden":   "/var/lib/keyward/.tokens.jsonl",
		"relative/dir/keyward.yaml":  "relative/dir/keyward.tokens.jsonl",
		"store.tokens.jsonl.yaml":    "store.tokens.jsonl.tokens.jsonl",
		"/srv/keyward/store.d/x.yml": "/srv/keyward/store.d/x.tokens.jsonl",
	}
	for in, want := range tests {
		if got := filestore.DefaultTokensPath(in); got != want {
			t.Errorf("DefaultTokensPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTokensPathOption(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "store.yaml")
	tokensPath := filepath.Join(dir, "elsewhere", "tokens.jsonl")
	if err := os.Mkdir(filepath.Dir(tokensPath), 0o700); err != nil {
		t.Fatal(err)
	}
	opts := filestore.Options{Path: path, TokensPath: tokensPath, Getenv: env(nil)}
	st, err := filestore.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	tk := newToken(t, "ann", "team")
	if err := st.PutToken(ctx, tk); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readFile(t, tokensPath)), tk.ID) {
		t.Errorf("token not written to %s", tokensPath)
	}
	if _, err := os.Stat(filestore.DefaultTokensPath(path)); !os.IsNotExist(err) {
		t.Errorf("token file written at the default path too: %v", err)
	}
	re, err := filestore.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := re.Token(ctx, tk.ID); err != nil {
		t.Errorf("reopened with the same TokensPath: %v", err)
	}
	// Opened with the default token path, the store lacks its token file.
	if _, err := filestore.Open(filestore.Options{Path: path, Getenv: env(nil)}); !errors.Is(err, filestore.ErrFileLost) {
		t.Errorf("Open with the default token path = %v, want ErrFileLost", err)
	}
}

// TestTokenFileRoundTrip writes tokens through Update and reads them back
// through Read, a reopened Store and the writing Store.
func TestTokenFileRoundTrip(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	tokensPath := filestore.DefaultTokensPath(path)
	st := open(t, path, "", nil)
	expires := time.Date(2026, 1, 1, 0, 0, 0, 5e8, time.UTC)
	want := map[string]filestore.TokenData{
		"AAAAAAAAAAAAAAAA": {User: "ann", Group: "team", Name: "laptop", Hash: zeroHash, Created: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), Expires: &expires, Revoked: true, Last4: "a-_9", ReplacedBy: "BBBBBBBBBBBBBBBB"},
		"BBBBBBBBBBBBBBBB": {User: "ann", Group: "other", Hash: strings.Repeat("ab", 32), Created: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)},
		"CCCCCCCCCCCCCCCC": {User: "bob", Group: "team", Name: `quote " and <tag> & ünïcode`, Hash: strings.Repeat("f", 64)},
	}
	must(t, st.Update(ctx, func(d *filestore.Data) error {
		for id, td := range want {
			d.Tokens.Set(id, td)
		}
		return nil
	}))
	check := func(t *testing.T, got *filestore.Tokens) {
		t.Helper()
		if got.Len() != len(want) {
			t.Errorf("got %d tokens, want %d", got.Len(), len(want))
		}
		for id, w := range want {
			g, ok := got.Get(id)
			if !ok {
				t.Errorf("token %s missing", id)
				continue
			}
			if g.User != w.User || g.Group != w.Group || g.Name != w.Name || g.Hash != w.Hash || g.Revoked != w.Revoked || g.Last4 != w.Last4 || g.ReplacedBy != w.ReplacedBy ||
				!g.Created.Equal(w.Created) || (g.Expires == nil) != (w.Expires == nil) || g.Expires != nil && !g.Expires.Equal(*w.Expires) {
				t.Errorf("token %s = %+v, want %+v", id, g, w)
			}
		}
	}
	d, err := st.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check(t, &d.Tokens)
	// The header, and the tokens written whole into a new file.
	if n := bytes.Count(readFile(t, tokensPath), []byte("\n")); n != 1+len(want) {
		t.Errorf("token file has %d lines, want %d", n, 1+len(want))
	}
	for name, s := range map[string]*filestore.Store{"writer": st, "reopened": open(t, path, "", nil)} {
		for id, w := range want {
			got, err := s.Token(ctx, id)
			if err != nil {
				t.Errorf("%s: Token(%s): %v", name, id, err)
				continue
			}
			if got.User != w.User || got.Name != w.Name || got.Revoked != w.Revoked || filestore.HashString(got.Hash) != w.Hash || got.Last4 != w.Last4 || got.ReplacedBy != w.ReplacedBy {
				t.Errorf("%s: Token(%s) = %+v, want %+v", name, id, got, w)
			}
			// The record by value is the same record, made without
			// allocating.
			if v, err := s.ResidentToken(ctx, id); err != nil || v != *got {
				t.Errorf("%s: ResidentToken(%s) = %+v, %v; want %+v", name, id, v, err, *got)
			}
			if n := testing.AllocsPerRun(100, func() { _, _ = s.ResidentToken(ctx, id) }); n != 0 {
				t.Errorf("%s: ResidentToken(%s): %v allocations, want 0", name, id, n)
			}
		}
	}

	// Revoke one and delete another, through Update: two lines appended
	// as one batch. A copy changed without Set changes nothing.
	before := readFile(t, tokensPath)
	must(t, st.Update(ctx, func(d *filestore.Data) error {
		b, _ := d.Tokens.Get("BBBBBBBBBBBBBBBB")
		b.Revoked = true
		d.Tokens.Set("BBBBBBBBBBBBBBBB", b)
		a, _ := d.Tokens.Get("AAAAAAAAAAAAAAAA")
		a.Name = "changed without Set"
		*a.Expires = time.Time{}
		if !d.Tokens.Delete("CCCCCCCCCCCCCCCC") || d.Tokens.Delete("CCCCCCCCCCCCCCCC") {
			t.Error("Delete does not report what it deleted")
		}
		if d.Tokens.Len() != 2 {
			t.Errorf("Len() = %d after a delete, want 2", d.Tokens.Len())
		}
		return nil
	}))
	b := want["BBBBBBBBBBBBBBBB"]
	b.Revoked = true
	want["BBBBBBBBBBBBBBBB"] = b
	delete(want, "CCCCCCCCCCCCCCCC")
	after := readFile(t, tokensPath)
	if !bytes.HasPrefix(after, before) || bytes.Count(after[len(before):], []byte("\n")) != 3 {
		t.Errorf("the change was not appended as a batch of two:\n%s", after[min(len(before), len(after)):])
	}
	d, err = open(t, path, "", nil).Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check(t, &d.Tokens)
	if got, err := st.Token(ctx, "BBBBBBBBBBBBBBBB"); err != nil || !got.Revoked {
		t.Errorf("revoked token = %+v, %v", got, err)
	}
	if got, err := st.ResidentToken(ctx, "BBBBBBBBBBBBBBBB"); err != nil || !got.Revoked {
		t.Errorf("revoked token by value = %+v, %v", got, err)
	}
	if _, err := st.ResidentToken(ctx, "CCCCCCCCCCCCCCCC"); !errors.Is(err, record.ErrNotFound) {
		t.Errorf("deleted token by value: %v, want ErrNotFound", err)
	}
	if _, err := st.ResidentToken(ctx, "../x"); !errors.Is(err, record.ErrNotFound) || !errors.Is(err, record.ErrInvalidName) {
		t.Errorf("a path as a token id: %v, want ErrNotFound and ErrInvalidName", err)
	}

	// Deleting every token leaves a token file that is an empty set, and
	// not an empty file.
	must(t, st.Update(ctx, func(d *filestore.Data) error {
		for id := range d.Tokens.All() {
			d.Tokens.Delete(id)
		}
		return nil
	}))
	if b := readFile(t, tokensPath); len(bytes.TrimSpace(b)) == 0 {
		t.Errorf("token file after deleting every token = %q", b)
	}
	if ts, err := open(t, path, "", nil).Tokens(ctx); err != nil || len(ts) != 0 {
		t.Errorf("Tokens() = %v, %v; want none", ts, err)
	}
}

func TestTokenFileErrors(t *testing.T) {
	a := tokenLine("AAAAAAAAAAAAAAAA", "ann", "team")
	tests := map[string]struct {
		tokens string
		want   []string // substrings of the error
		fields []string // the record's fields it names
	}{
		"bad json":      {tokens: a + "\n{\"id\": \"BBBBBBBBBBBBBBBB\",\n", want: []string{"token file line 3", "unexpected EOF"}},
		"unknown field": {tokens: "\n" + strings.Replace(a, `"user"`, `"owner"`, 1), want: []string{"token file line 2", `unknown field "owner"`}},
		"two on a line": {tokens: strings.TrimSuffix(a, "\n") + " " + tokenLine("BBBBBBBBBBBBBBBB", "ann", "team"), want: []string{"token file line 1", "more than one record"}},
		"yaml tokens":   {tokens: "AAAAAAAAAAAAAAAA:\n  user: ann\n", want: []string{"token file line 1"}},
		"bad id":        {tokens: tokenLine("nope", "ann", "team"), want: []string{"token file line 1: ", "invalid name"}, fields: []string{"tokens.nope"}},
		"no user":       {tokens: tokenLine("AAAAAAAAAAAAAAAA", "", "team"), want: []string{"must be set"}, fields: []string{"tokens.AAAAAAAAAAAAAAAA.user"}},
		"bad hash": {
			tokens: strings.Replace(a, zeroHash, "xyz", 1),
			want:   []string{"must be 64 hex digits"}, fields: []string{"tokens.AAAAAAAAAAAAAAAA.hash"},
		},
		"null record": {
			tokens: a + "null\n", want: []string{"token file line 2: ", "invalid name"},
			fields: []string{"tokens..group", "tokens..hash", "tokens..user", "tokens."},
		},
		"bad last4": {
			tokens: strings.Replace(a, `"user"`, `"last4":"abcde","user"`, 1),
			want:   []string{"must be 4 characters"}, fields: []string{"tokens.AAAAAAAAAAAAAAAA.last4"},
		},
		"bad replaced_by": {
			tokens: strings.Replace(a, `"user"`, `"replaced_by":"x/y","user"`, 1),
			want:   []string{"invalid name"}, fields: []string{"tokens.AAAAAAAAAAAAAAAA.replaced_by"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := storePath(t)
			writeFile(t, filestore.DefaultTokensPath(path), tc.tokens)
			_, err := filestore.Open(filestore.Options{Path: path, Getenv: env(nil)})
			if err == nil {
				t.Fatal("Open succeeded, want an error")
			}
			if tc.fields != nil {
				wantFields(t, err, tc.fields...)
			}
			// Parse errors name the token file, validation errors the
			// store file: both start with the store's base name.
			for _, w := range append(tc.want, strings.TrimSuffix(path, ".yaml")) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestTokenFileBlankLines(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	writeFile(t, path, "{}\n")
	writeFile(t, filestore.DefaultTokensPath(path), "\n"+tokenLine("AAAAAAAAAAAAAAAA", "ann", "team")+"\n  \r\n"+
		strings.TrimSuffix(tokenLine("BBBBBBBBBBBBBBBB", "bob", "team"), "\n")+"\r\n\n")
	st := open(t, path, "", nil)
	ts, err := st.Tokens(ctx)
	if err != nil || len(ts) != 2 {
		t.Fatalf("Tokens() = %d tokens, %v; want 2", len(ts), err)
	}
	if tk, err := st.Token(ctx, "BBBBBBBBBBBBBBBB"); err != nil || tk.User != "bob" {
		t.Errorf("Token(BBBBBBBBBBBBBBBB) = %+v, %v", tk, err)
	}
}

func TestUpdateOnBrokenTokenFile(t *testing.T) {
	path := storePath(t)
	tokensPath := filestore.DefaultTokensPath(path)
	st := open(t, path, "", nil)
	if err := st.PutGroup(t.Context(), &record.Group{Name: "team"}); err != nil {
		t.Fatal(err)
	}
	yamlBefore := readFile(t, path)
	broken := tokenLine("AAAAAAAAAAAAAAAA", "ann", "team") + `{"id":"BBBBBBBBBBBBBBBB","expiry":"x"}` + "\n"
	writeFile(t, tokensPath, broken)
	err := st.PutGroup(t.Context(), &record.Group{Name: "other"})
	if err == nil || !strings.Contains(err.Error(), "token file line 2") {
		t.Fatalf("PutGroup with a broken token file = %v, want an error naming the line", err)
	}
	if got := string(readFile(t, tokensPath)); got != broken {
		t.Errorf("broken token file was rewritten:\n%s", got)
	}
	if got := readFile(t, path); !bytes.Equal(got, yamlBefore) {
		t.Errorf("store file was written despite the broken token file:\n%s", got)
	}
}

// unchanged reports an error if the file at path was replaced or modified
// since before was taken.
func unchanged(t *testing.T, what, path string, before os.FileInfo, content []byte) {
	t.Helper()
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("%s: %s was written (inode or mtime changed)", what, path)
	}
	if got := readFile(t, path); !bytes.Equal(got, content) {
		t.Errorf("%s: %s changed:\n%s", what, path, got)
	}
}

// TestUpdateWritesOnlyChangedFile checks that a write touches only the file
// whose records changed, so that a serving process does not re-read (and a
// person does not see rewritten) the other one.
func TestUpdateWritesOnlyChangedFile(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	tokensPath := filestore.DefaultTokensPath(path)
	st := open(t, path, "", nil)
	if err := st.EnsureSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.PutGroup(ctx, &record.Group{Name: "team"}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutToken(ctx, newToken(t, "ann", "team")); err != nil {
		t.Fatal(err)
	}

	// A group change leaves the token file alone.
	fi := statFiles(t, path, tokensPath)
	tokens := readFile(t, tokensPath)
	yaml := readFile(t, path)
	if err := st.PutGroup(ctx, &record.Group{Name: "team", Models: []string{"gpt-4o"}}); err != nil {
		t.Fatal(err)
	}
	unchanged(t, "PutGroup", tokensPath, fi[tokensPath], tokens)
	if bytes.Equal(readFile(t, path), yaml) {
		t.Error("PutGroup did not write the store file")
	}

	// A new token leaves the store file alone.
	fi = statFiles(t, path, tokensPath)
	yaml = readFile(t, path)
	tk := newToken(t, "ann", "team")
	if err := st.PutToken(ctx, tk); err != nil {
		t.Fatal(err)
	}
	unchanged(t, "PutToken", path, fi[path], yaml)
	if !strings.Contains(string(readFile(t, tokensPath)), tk.ID) {
		t.Error("PutToken did not write the token file")
	}
	// So does revoking and deleting one.
	tk.Revoked = true
	if err := st.PutToken(ctx, tk); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteToken(ctx, tk.ID); err != nil {
		t.Fatal(err)
	}
	unchanged(t, "revoke and delete", path, fi[path], yaml)
}

// TestUpdateKeepsHandEditedStoreFile checks that a write that changes only
// tokens does not rewrite a store file a person wrote, with its comments
// and layout.
func TestUpdateKeepsHandEditedStoreFile(t *testing.T) {
	ctx := t.Context()
	path := storePath(t)
	hand := `# Our providers and teams. Ask #platform before changing.
providers:
  openai: {kind: openai, keys: [{id: k1, env: OPENAI_KEY}]}  # rotated monthly
groups:
  team:
    models: [gpt-4o]
users:
  ann: {role: admin, groups: [team]}
signing_keys:
  - {id: 1, secret: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=}
`
	writeFile(t, path, hand)
	fi := statFiles(t, path)[path]
	st := open(t, path, "", nil)
	// keyward serve calls this at every start.
	if err := st.EnsureSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	unchanged(t, "EnsureSigningKey with a key", path, fi, []byte(hand))
	if err := st.PutToken(ctx, newToken(t, "ann", "team")); err != nil {
		t.Fatal(err)
	}
	unchanged(t, "PutToken", path, fi, []byte(hand))
	if err := st.PutGroup(ctx, &record.Group{Name: "team", Models: []string{"gpt-4o"}}); err != nil {
		t.Fatal(err)
	}
	unchanged(t, "PutGroup with the same group", path, fi, []byte(hand))
}
