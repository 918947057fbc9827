package filestore

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

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
		if unsafe.SliceData(after.shards[i].slots) != unsafe.SliceData(before.shards[i].slots) {
			copied++
		}
	}
	if copied != 1 || after.len() != before.len()+1 {
		t.Errorf("the reload copied %d shards (want 1) and holds %d tokens (want %d)", copied, after.len(), before.len()+1)
	}
}

// storeFileOf returns a store file of n groups and n users, each user a
// member of two groups, as keyward writes it.
func storeFileOf(tb testing.TB, n int) []byte {
	tb.Helper()
	d := &Data{
		Providers: map[string]*ProviderData{"openai": {Kind: record.KindOpenAI, Keys: []KeyData{{ID: "k1", Env: "OPENAI_KEY"}}}},
		Groups:    make(map[string]*GroupData, n),
		Users:     make(map[string]*UserData, n),
	}
	for i := range n {
		d.Groups[fmt.Sprintf("group-%06d", i)] = &GroupData{Providers: []string{"openai"}, Models: []string{"gpt-4o*"}}
		d.Users[fmt.Sprintf("user-%06d", i)] = &UserData{Role: record.RoleUser, Groups: []string{fmt.Sprintf("group-%06d", i), fmt.Sprintf("group-%06d", (i+1)%n)}}
	}
	raw, err := d.marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

// BenchmarkStoreFileLoad measures what a load does with the store file
// (decode it strictly, then validate and build its records) at 5,000 and
// at 50,000 groups and as many users. The time per record must stay about
// the same: it reports each and their ratio, and logs a line for the
// record. (The YAML library's own decoding compared every name with every
// other: 10 times the records took 100 times as long.)
func BenchmarkStoreFileLoad(b *testing.B) {
	sizes := []int{5_000, 50_000}
	raws := make([][]byte, len(sizes))
	for i, n := range sizes {
		raws[i] = storeFileOf(b, n)
	}
	took := make([]time.Duration, len(sizes))
	getenv := func(string) string { return "sk-bench" }
	ops := 0
	for b.Loop() {
		for i, raw := range raws {
			start := time.Now()
			d, _, err := parseStoreFile(raw)
			if err != nil {
				b.Fatal(err)
			}
			p, err := d.buildPolicy(getenv)
			if err != nil || len(p.groups) != sizes[i] || len(p.users) != sizes[i] {
				b.Fatalf("%d groups, %d users, %v; want %d of each", len(p.groups), len(p.users), err, sizes[i])
			}
			took[i] += time.Since(start)
		}
		ops++
	}
	perRecord := func(i int) float64 { return float64(took[i].Nanoseconds()) / float64(ops*2*sizes[i]) }
	b.ReportMetric(perRecord(0), "ns/record-10k")
	b.ReportMetric(perRecord(1), "ns/record-100k")
	b.ReportMetric(perRecord(1)/perRecord(0), "per-record-ratio")
	b.Logf("store file load (%d ops): %v for 10,000 records (%.0f ns each), %v for 100,000 (%.0f ns each, x%.2f)",
		ops, took[0]/time.Duration(ops), perRecord(0), took[1]/time.Duration(ops), perRecord(1), perRecord(1)/perRecord(0))
}
