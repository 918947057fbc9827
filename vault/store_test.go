package vault_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
	"github.com/keyward/keyward/vault"
	"github.com/keyward/keyward/vault/vaulttest"
)

// newStore starts a store logged in with a token of the given policies
// ("" for the root token).
func newStore(t *testing.T, srv *vaulttest.Server, cfg vault.Config, policies ...string) *vault.Store {
	t.Helper()
	tok := srv.RootToken
	if len(policies) > 0 {
		tok = srv.Token(t, policies, time.Hour)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Address = srv.Addr
	cfg.Mount = "keyward"
	cfg.Auth = vault.AuthConfig{Method: "token", TokenFile: file}
	st, err := vault.New(cfg, slog.New(slog.DiscardHandler), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestRecordsRoundTrip(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	st := newStore(t, srv, vault.Config{})
	ctx := context.Background()

	g := &record.Group{Name: "eng", Providers: []string{"openai"}, Models: []string{"gpt-4o*"}, DisableCustomKeys: true}
	u := &record.User{Name: "alice", Role: record.RoleUser, Groups: []string{"eng"}}
	tk := &record.Token{ID: "AAAAAAAAAAAAAAAA", User: "alice", Group: "eng", Name: "ci", Created: time.Now().UTC().Truncate(time.Second)}
	tk.Hash[5] = 9
	for _, err := range []error{st.PutGroup(ctx, g), st.PutUser(ctx, u), st.PutToken(ctx, tk)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, err := st.Group(ctx, "eng"); err != nil || !got.DisableCustomKeys || got.Models[0] != "gpt-4o*" {
		t.Fatalf("group %+v, %v", got, err)
	}
	if got, err := st.User(ctx, "alice"); err != nil || got.Groups[0] != "eng" {
		t.Fatalf("user %+v, %v", got, err)
	}
	if got, err := st.Token(ctx, tk.ID); err != nil || got.Hash != tk.Hash || !got.Created.Equal(tk.Created) {
		t.Fatalf("token %+v, %v", got, err)
	}
	for name, err := range map[string]error{
		"missing group":  second(st.Group(ctx, "nope")),
		"bad name":       second(st.Group(ctx, "../sys")),
		"missing token":  second(st.Token(ctx, "BBBBBBBBBBBBBBBB")),
		"not a token id": second(st.Token(ctx, "x/../../y")),
	} {
		if !errors.Is(err, record.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", name, err)
		}
	}
	if groups, err := st.Groups(ctx); err != nil || len(groups) != 1 {
		t.Fatalf("Groups: %v, %v", groups, err)
	}
	if err := st.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Token(ctx, tk.ID); !errors.Is(err, record.ErrNotFound) {
		t.Fatalf("deleting the user left its token: %v", err)
	}
	if err := st.DeleteGroup(ctx, "eng"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Group(ctx, "eng"); !errors.Is(err, record.ErrNotFound) {
		t.Fatalf("deleted group: %v", err)
	}
	// A deleted group is buried, not gone: deleting it again announces
	// the deletion again (a delete whose announcement failed can be run
	// again), and a group that never was is still not found.
	if err := st.DeleteGroup(ctx, "eng"); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
	if err := st.DeleteGroup(ctx, "never"); !errors.Is(err, record.ErrNotFound) {
		t.Fatalf("deleting a group that never was: %v", err)
	}
}

func second[V any](_ V, err error) error { return err }

// TestProviderFromVaultCLI reads a provider record as `vault kv put`
// writes it: strings only.
func TestProviderFromVaultCLI(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	root := srv.Client(t, srv.RootToken)
	ctx := context.Background()
	if _, err := root.KVv2("keyward").Put(ctx, "providers/openai", map[string]any{"kind": "openai", "key_b": "sk-b", "key_a": "sk-a"}); err != nil {
		t.Fatal(err)
	}
	st := newStore(t, srv, vault.Config{})
	p, err := st.Provider(ctx, "openai")
	if err != nil || p.Kind != record.KindOpenAI || len(p.Keys) != 2 || p.Keys[0].ID != "a" {
		t.Fatalf("provider %+v, %v", p, err)
	}
}

func TestSigningKeyCreatedOnce(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	ctx := context.Background()
	a, b := newStore(t, srv, vault.Config{}), newStore(t, srv, vault.Config{})
	var wg sync.WaitGroup
	for _, st := range []*vault.Store{a, b, a, b} {
		wg.Go(func() {
			if err := st.EnsureSigningKey(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	ka, err := a.SigningKeys(ctx)
	if err != nil || len(ka) != 1 {
		t.Fatalf("keys %v, %v", ka, err)
	}
	kb, _ := b.SigningKeys(ctx)
	if !slices.Equal(ka[0].Secret, kb[0].Secret) {
		t.Fatal("the stores disagree on the signing key")
	}
	if _, err := token.NewKeyring(ka); err != nil {
		t.Fatal(err)
	}
}

// recorder is an Invalidator that remembers what it was told.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) Invalidate(kind, name string) { r.add(kind + "/" + name) }
func (r *recorder) Purge()                       { r.add("purge") }
func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) waitFor(t *testing.T, event string) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		r.mu.Lock()
		found := slices.Contains(r.events, event)
		r.mu.Unlock()
		if found {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Fatalf("no %q within 5s; got %v", event, r.events)
	return 0
}

func TestWatchInvalidates(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	writer := newStore(t, srv, vault.Config{})
	if err := writer.PutGroup(ctx, &record.Group{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	root := srv.Client(t, srv.RootToken)
	if _, err := root.KVv2("keyward").Put(ctx, "providers/openai", map[string]any{"kind": "openai", "key_a": "sk-a"}); err != nil {
		t.Fatal(err)
	}

	policy, err := os.ReadFile("../examples/vault/keyward.hcl")
	if err != nil {
		t.Fatal(err)
	}
	srv.WritePolicy(t, "keyward", string(policy))
	reader := newStore(t, srv, vault.Config{PollInterval: 100 * time.Millisecond}, "keyward")
	if _, err := reader.Provider(ctx, "openai"); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	keys := make(chan struct{}, 10)
	go reader.Watch(ctx, rec, func() { keys <- struct{}{} })
	time.Sleep(300 * time.Millisecond) // the first poll only learns where the marker is

	if err := writer.PutGroup(ctx, &record.Group{Name: "before", Disabled: true}); err != nil {
		t.Fatal(err)
	}
	t.Logf("group change seen after %v", rec.waitFor(t, "group/before"))
	tk := &record.Token{ID: "CCCCCCCCCCCCCCCC", User: "u", Group: "g"}
	if err := writer.PutToken(ctx, tk); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "token/CCCCCCCCCCCCCCCC")
	// A rotation written straight into Vault, past keyward.
	if _, err := root.KVv2("keyward").Put(ctx, "providers/openai", map[string]any{"kind": "openai", "key_b": "sk-b"}); err != nil {
		t.Fatal(err)
	}
	t.Logf("direct provider change seen after %v", rec.waitFor(t, "provider/openai"))
	if err := writer.EnsureSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-keys:
	case <-time.After(5 * time.Second):
		t.Fatal("signing key change not reported")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if slices.Contains(rec.events, "purge") {
		t.Fatalf("purged without cause: %v", rec.events)
	}

}

// TestWatchResyncsAfterOutage: while Vault is down nothing is dropped; when
// it answers again, everything is.
func TestWatchResyncsAfterOutage(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The dev server forgets its tokens on restart, but not its root token.
	reader := newStore(t, srv, vault.Config{PollInterval: 100 * time.Millisecond})
	rec := &recorder{}
	go reader.Watch(ctx, rec, func() {})
	time.Sleep(300 * time.Millisecond)
	srv.Stop()
	time.Sleep(500 * time.Millisecond)
	rec.mu.Lock()
	if len(rec.events) != 0 {
		t.Errorf("dropped records while Vault was down: %v", rec.events)
	}
	rec.mu.Unlock()
	srv.Restart(t)
	t.Logf("resynced %v after Vault came back", rec.waitFor(t, "purge"))
}

// TestIdleRequestsConstant: an idle replica's traffic does not grow with
// the number of records.
func TestIdleRequestsConstant(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	writer := newStore(t, srv, vault.Config{})
	perPoll := func() float64 {
		reader := newStore(t, srv, vault.Config{PollInterval: 50 * time.Millisecond})
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		go reader.Watch(wctx, &recorder{}, func() {})
		time.Sleep(200 * time.Millisecond)
		start := reader.Requests()
		time.Sleep(time.Second)
		return float64(reader.Requests()-start) / 20 // polls in a second
	}
	small := perPoll()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < 400; i += 8 {
				if err := writer.PutGroup(ctx, &record.Group{Name: fmt.Sprintf("g%04d", i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	large := perPoll()
	t.Logf("requests per poll: %.2f with 1 group, %.2f with 400 more", small, large)
	if small > 1.5 || large > 1.5 {
		t.Fatalf("idle polling costs %.2f and %.2f requests per poll; want about 1", small, large)
	}
}

// TestConcurrentWritersLoseNothing: every change reaches the marker once,
// however many writers race (check-and-set with backoff).
func TestConcurrentWritersLoseNothing(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reader := newStore(t, srv, vault.Config{PollInterval: 50 * time.Millisecond})
	rec := &recorder{}
	go reader.Watch(ctx, rec, func() {})
	time.Sleep(200 * time.Millisecond)

	const writers, each = 6, 20
	var wg sync.WaitGroup
	for w := range writers {
		st := newStore(t, srv, vault.Config{})
		wg.Go(func() {
			for i := range each {
				if err := st.PutGroup(ctx, &record.Group{Name: fmt.Sprintf("w%d-%d", w, i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for w := range writers {
		for i := range each {
			rec.waitFor(t, fmt.Sprintf("group/w%d-%d", w, i))
		}
	}
}
