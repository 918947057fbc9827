package filestore_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/record"
)

// tokenStores is a writer (the CLI, or the management API) and a serving
// Store that polls, over one store.
type tokenStores struct {
	path, tokensPath string
	writer, serving  *filestore.Store
	poll             func()
	changes          *int
}

func newTokenStores(t *testing.T) *tokenStores {
	t.Helper()
	path := storePath(t)
	ts := &tokenStores{path: path, tokensPath: filestore.DefaultTokensPath(path), writer: open(t, path, "", nil), changes: new(int)}
	must(t, ts.writer.PutGroup(t.Context(), &record.Group{Name: "team"}))
	ts.serving = open(t, path, "", nil)
	log, _ := newLogger()
	ts.poll = ts.serving.Poller(log, func() { *ts.changes++ })
	return ts
}

// appended returns what was appended to the token file since before, and
// fails if the file was replaced or changed before its end.
func (ts *tokenStores) appended(t *testing.T, before []byte, fi os.FileInfo) string {
	t.Helper()
	after := readFile(t, ts.tokensPath)
	if now := statFiles(t, ts.tokensPath)[ts.tokensPath]; !os.SameFile(fi, now) || !bytes.HasPrefix(after, before) {
		t.Fatalf("the token file was rewritten, not appended to:\n%s", after)
	}
	return string(after[len(before):])
}

// TestTokenAppend checks that token writes append the records they change
// and nothing else, and that a serving Store picks each up.
func TestTokenAppend(t *testing.T) {
	ctx := t.Context()
	ts := newTokenStores(t)
	a, b := newToken(t, "ann", "team"), newToken(t, "bob", "team")
	must(t, ts.writer.PutToken(ctx, a))
	ts.poll()
	storeFile := statFiles(t, ts.path)[ts.path]

	steps := []struct {
		name  string
		write func() error
		lines int    // lines appended
		want  string // the serving Store's view of a and b after a poll
	}{
		{"create", func() error { return ts.writer.PutToken(ctx, b) }, 1, "active active"},
		{"revoke", func() error { revoked := *a; revoked.Revoked = true; return ts.writer.PutToken(ctx, &revoked) }, 1, "revoked active"},
		{"rotate-like: two records at once", func() error {
			return ts.writer.Update(ctx, func(d *filestore.Data) error {
				for _, id := range []string{a.ID, b.ID} {
					td, _ := d.Tokens.Get(id)
					td.Revoked = !td.Revoked
					d.Tokens.Set(id, td)
				}
				return nil
			})
		}, 3, "active revoked"},
		{"delete", func() error { return ts.writer.DeleteToken(ctx, b.ID) }, 1, "active missing"},
		{"the same record again", func() error { return ts.writer.PutToken(ctx, a) }, 0, "active missing"},
	}
	for _, step := range steps {
		before, fi := readFile(t, ts.tokensPath), statFiles(t, ts.tokensPath)[ts.tokensPath]
		changes := *ts.changes
		must(t, step.write())
		if got := ts.appended(t, before, fi); strings.Count(got, "\n") != step.lines {
			t.Errorf("%s: appended %q, want %d lines", step.name, got, step.lines)
		}
		ts.poll()
		if got := tokenStates(ctx, ts.serving, a, b); got != step.want {
			t.Errorf("%s: the serving Store sees %s, want %s", step.name, got, step.want)
		}
		if want := map[bool]int{true: 1}[step.lines > 0]; *ts.changes-changes != want {
			t.Errorf("%s: onChange called %d times, want %d", step.name, *ts.changes-changes, want)
		}
	}
	unchanged(t, "token writes", ts.path, storeFile, readFile(t, ts.path))
}

// tokenStates is how st sees each token: active, revoked or missing.
func tokenStates(ctx context.Context, st *filestore.Store, toks ...*record.Token) string {
	var out []string
	for _, tk := range toks {
		got, err := st.Token(ctx, tk.ID)
		switch {
		case err != nil:
			out = append(out, "missing")
		case got.Revoked:
			out = append(out, "revoked")
		default:
			out = append(out, "active")
		}
	}
	return strings.Join(out, " ")
}

// TestTokenFileCompaction checks that a token file with more superseded
// lines than records is written whole, holding the records alone, and
// that a serving Store reads the new file.
func TestTokenFileCompaction(t *testing.T) {
	ctx := t.Context()
	ts := newTokenStores(t)
	ts.writer.SetCompactMin(4)
	toks := []*record.Token{newToken(t, "ann", "team"), newToken(t, "ann", "team")}
	for _, tk := range toks {
		must(t, ts.writer.PutToken(ctx, tk))
	}
	replaced := 0
	for i := range 8 {
		fi := statFiles(t, ts.tokensPath)[ts.tokensPath]
		tk := *toks[0]
		tk.Revoked = i%2 == 0
		must(t, ts.writer.PutToken(ctx, &tk))
		if now := statFiles(t, ts.tokensPath)[ts.tokensPath]; !os.SameFile(fi, now) {
			replaced++
			// Header and the two records: nothing superseded is left.
			if lines := strings.Count(string(readFile(t, ts.tokensPath)), "\n"); lines != 3 {
				t.Errorf("after a rewrite the token file has %d lines, want 3", lines)
			}
		}
		ts.poll()
		want := map[bool]string{true: "revoked active", false: "active active"}[tk.Revoked]
		if got := tokenStates(ctx, ts.serving, toks...); got != want {
			t.Errorf("write %d: the serving Store sees %s, want %s", i, got, want)
		}
	}
	// Superseded lines reach the minimum (4), past the records (2), at
	// every fourth write: written whole twice in the eight.
	if replaced != 2 {
		t.Errorf("the token file was written whole %d times, want twice", replaced)
	}
}

// TestUnfinishedBatchWaits appends a batch by hand, one line at a time: a
// serving Store applies none of it until all of it is there.
func TestUnfinishedBatchWaits(t *testing.T) {
	ctx := t.Context()
	ts := newTokenStores(t)
	a, b := newToken(t, "ann", "team"), newToken(t, "ann", "team")
	must(t, ts.writer.PutToken(ctx, a))
	ts.poll()
	line := func(tk *record.Token, revoked bool) string {
		return fmt.Sprintf(`{"id":%q,"user":"ann","group":"team","hash":%q,"created":"2025-01-01T00:00:00Z","revoked":%v}`+"\n",
			tk.ID, filestore.HashString(tk.Hash), revoked)
	}
	for i, part := range []string{`{"batch":2}` + "\n", line(a, true), line(b, false)[:40], line(b, false)[40:]} {
		appendTo(t, ts.tokensPath, part)
		ts.poll()
		want := map[bool]string{true: "revoked active", false: "active missing"}[i == 3]
		if got := tokenStates(ctx, ts.serving, a, b); got != want {
			t.Errorf("after part %d: %s, want %s", i, got, want)
		}
	}
	if n := ts.serving.FailedLoads(); n != 0 {
		t.Errorf("FailedLoads() = %d while the batch was written", n)
	}
}

// TestCutShortAppend leaves half a line at the end of the token file, as a
// writer that crashed would: readers ignore it, and the next write
// rewrites the file without it.
func TestCutShortAppend(t *testing.T) {
	ctx := t.Context()
	ts := newTokenStores(t)
	a := newToken(t, "ann", "team")
	must(t, ts.writer.PutToken(ctx, a))
	appendTo(t, ts.tokensPath, `{"id":"BBBBBBBBBBBBBBBB","user":"a`)
	ts.poll()
	fresh := open(t, ts.path, "", nil)
	if ts.serving.FailedLoads() != 0 || tokenStates(ctx, ts.serving, a) != "active" || tokenStates(ctx, fresh, a) != "active" {
		t.Fatal("half a line at the end of the token file is not ignored")
	}
	b := newToken(t, "ann", "team")
	must(t, fresh.PutToken(ctx, b))
	raw := string(readFile(t, ts.tokensPath))
	if strings.Contains(raw, "BBBBBBBBBBBBBBBB") || !strings.HasSuffix(raw, "\n") {
		t.Errorf("the write kept the half line:\n%s", raw)
	}
	ts.poll()
	if got := tokenStates(ctx, ts.serving, a, b); got != "active active" {
		t.Errorf("after the rewrite the serving Store sees %s", got)
	}
}

// TestTokenFileEditedInPlace revokes a token by editing its line in place,
// as a person might: the serving Store notices that the file is not the
// one it read plus new lines, and reads it whole.
func TestTokenFileEditedInPlace(t *testing.T) {
	ctx := t.Context()
	ts := newTokenStores(t)
	a, b := newToken(t, "ann", "team"), newToken(t, "ann", "team")
	must(t, ts.writer.PutToken(ctx, a))
	must(t, ts.writer.PutToken(ctx, b))
	ts.poll()
	raw := string(readFile(t, ts.tokensPath))
	edited := strings.Replace(raw, `"id":"`+a.ID+`",`, `"id":"`+a.ID+`","revoked":true,`, 1)
	if edited == raw {
		t.Fatalf("token %s not found:\n%s", a.ID, raw)
	}
	writeFile(t, ts.tokensPath, edited)
	ts.poll()
	if got := tokenStates(ctx, ts.serving, a, b); got != "revoked active" {
		t.Errorf("after the edit the serving Store sees %s", got)
	}
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// TestReadsDuringReloads reads tokens while a serving Store takes in new
// ones: reloads extend arrays the published index shares, which the race
// detector checks here.
func TestReadsDuringReloads(t *testing.T) {
	ctx := t.Context()
	ts := newTokenStores(t)
	first := newToken(t, "ann", "team")
	must(t, ts.writer.PutToken(ctx, first))
	ts.poll()
	done := make(chan struct{})
	read := make(chan error)
	go func() {
		for {
			select {
			case <-done:
				close(read)
				return
			default:
			}
			// Each read may see a newer snapshot than the last, never an
			// older one: ann's tokens are all of them.
			all, _ := ts.serving.Tokens(ctx)
			mine, _ := ts.serving.UserTokens(ctx, "ann")
			if _, err := ts.serving.Token(ctx, first.ID); err != nil || len(all) == 0 || len(mine) < len(all) {
				read <- fmt.Errorf("a read during reloads: %v, %d tokens, %d of ann's", err, len(all), len(mine))
			}
		}
	}()
	for i := range 50 {
		tk := newToken(t, "ann", "team")
		tk.Name, tk.Group = strings.Repeat("n", i), fmt.Sprint("group-", i) // new names too
		must(t, ts.writer.PutToken(ctx, tk))
		ts.poll()
	}
	close(done)
	for err := range read {
		t.Error(err)
	}
	if all, _ := ts.serving.Tokens(ctx); len(all) != 51 {
		t.Errorf("%d tokens after the reloads, want 51", len(all))
	}
}
