package filestore

import (
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// benchStore is a store of n tokens with a writer and a serving Store
// that has loaded it.
type benchStore struct {
	n               int
	writer, serving *Store
	ring            *token.Keyring
	// create and reload add up what the measured writes and reloads took.
	create, reload time.Duration
}

// benchUsers is how many users hold a bench store's tokens.
const benchUsers = 100

func newBenchStore(tb testing.TB, n int) *benchStore {
	tb.Helper()
	k, err := token.NewSigningKey(1)
	if err != nil {
		tb.Fatal(err)
	}
	ring, err := token.NewKeyring([]token.SigningKey{k})
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "store.yaml")
	opts := Options{Path: path, Getenv: func(string) string { return "" }}
	w, err := Open(opts)
	if err != nil {
		tb.Fatal(err)
	}
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	err = w.Update(tb.Context(), func(d *Data) error {
		// The tokens belong to benchUsers users (as a user holds at most
		// 100 active ones); the measured ones to ann, who has none.
		d.Users = map[string]*UserData{"ann": {Groups: []string{"team"}}}
		for u := range benchUsers {
			d.Users[fmt.Sprint("u", u)] = &UserData{Groups: []string{"team"}}
		}
		d.Groups = map[string]*GroupData{"team": {}}
		for i := range n {
			m, err := ring.Mint()
			if err != nil {
				return err
			}
			d.Tokens.Set(m.ID, TokenData{User: fmt.Sprint("u", i%benchUsers), Group: "team", Name: fmt.Sprint("t", i), Hash: HashString(m.Hash), Created: created})
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	serving, err := Open(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return &benchStore{n: n, writer: w, serving: serving, ring: ring}
}

// newToken mints a token record for the store.
func (bs *benchStore) newToken(tb testing.TB) *record.Token {
	m, err := bs.ring.Mint()
	if err != nil {
		tb.Fatal(err)
	}
	return &record.Token{ID: m.ID, Hash: m.Hash, User: "ann", Group: "team", Name: "bench", Created: time.Now().UTC()}
}

// BenchmarkTokenWrite measures what one new token costs on the file store
// at 100 and at 100,000 stored tokens: its creation through the store as
// package manage makes it (CreateToken: lock, load what changed, the
// owner's tokens for the per-user cap and name rules, append one line,
// sync) and the
// reload a serving process then makes (read the appended line, copy the
// index shard it falls in). Both must cost about the same at both sizes:
// it reports each and their ratios, and logs a line for the record.
func BenchmarkTokenWrite(b *testing.B) {
	stores := []*benchStore{newBenchStore(b, 100), newBenchStore(b, 100_000)}
	ctx := b.Context()
	ops := 0
	for b.Loop() {
		for _, bs := range stores {
			tk := bs.newToken(b)
			start := time.Now()
			if err := bs.writer.CreateToken(ctx, tk, ownerCheck); err != nil {
				b.Fatal(err)
			}
			written := time.Now()
			if changed, err := bs.serving.reload(); err != nil || !changed {
				b.Fatalf("reload: changed %v, %v", changed, err)
			}
			bs.create += written.Sub(start)
			bs.reload += time.Since(written)
		}
		ops++
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(ops) }
	small, large := stores[0], stores[1]
	b.ReportMetric(per(small.create), "create-100-ns/op")
	b.ReportMetric(per(large.create), "create-100k-ns/op")
	b.ReportMetric(per(large.create)/per(small.create), "create-ratio")
	b.ReportMetric(per(small.reload), "reload-100-ns/op")
	b.ReportMetric(per(large.reload), "reload-100k-ns/op")
	b.ReportMetric(per(large.reload)/per(small.reload), "reload-ratio")
	b.Logf("file store, one new token (%d ops): created in %v at 100 tokens, %v at 100,000 (x%.2f); serving reload %v and %v (x%.2f)",
		ops, time.Duration(per(small.create)), time.Duration(per(large.create)), per(large.create)/per(small.create),
		time.Duration(per(small.reload)), time.Duration(per(large.reload)), per(large.reload)/per(small.reload))
}

// ownerCheck reads what manage's check reads: the owner's tokens.
func ownerCheck(_ *record.User, owned []*record.Token) error {
	for _, t := range owned {
		if t.User != "ann" {
			return fmt.Errorf("token %s of %s among ann's", t.ID, t.User)
		}
	}
	return nil
}

// TestReloadCopiesOneShard checks what makes a reload after a new token
// cost the same at any size: the new index shares every shard but the
// one the token falls in with the last.
func TestReloadCopiesOneShard(t *testing.T) {
	bs := newBenchStore(t, 5000)
	before := bs.serving.snap.Load().tokens
	if err := bs.writer.PutToken(t.Context(), bs.newToken(t)); err != nil {
		t.Fatal(err)
	}
	if changed, err := bs.serving.reload(); err != nil || !changed {
		t.Fatalf("reload: changed %v, %v", changed, err)
	}
	after := bs.serving.snap.Load().tokens
	copied := 0
	for i := range after.shards {
		if reflect.ValueOf(after.shards[i]).UnsafePointer() != reflect.ValueOf(before.shards[i]).UnsafePointer() {
			copied++
		}
	}
	if copied != 1 || after.len() != before.len()+1 {
		t.Errorf("the reload copied %d shards (want 1) and holds %d tokens (want %d)", copied, after.len(), before.len()+1)
	}
}
