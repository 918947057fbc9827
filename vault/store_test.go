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
func newStore(t testing.TB, srv *vaulttest.Server, cfg vault.Config, policies ...string) *vault.Store {
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

func (r *recorder) Invalidate(t record.Type, name string) { r.add(string(t) + "/" + name) }
func (r *recorder) Purge()                                { r.add("purge") }
func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// has reports whether event was recorded, and fails the test if not.
func (r *recorder) has(t *testing.T, event string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.events, event) {
		t.Fatalf("no %q; got %v", event, r.events)
	}
}

// waitFor waits until event is recorded.
func (r *recorder) waitFor(t *testing.T, event string) {
	t.Helper()
	eventually(t, event, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return slices.Contains(r.events, event)
	})
}

// eventually polls cond every 10ms until it holds, failing the test after
// a hang guard far above anything a busy machine needs: for what a real
// loop or server does on its own schedule.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within the hang guard", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatchInvalidates(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	ctx := t.Context()
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
	reader := newStore(t, srv, vault.Config{}, "keyward")
	if _, err := reader.Provider(ctx, "openai"); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	keys := 0
	p := reader.Poller()
	poll := func() { p.Poll(ctx, rec, func() { keys++ }) }
	poll() // the first poll only learns where the marker is

	if err := writer.PutGroup(ctx, &record.Group{Name: "before", Disabled: true}); err != nil {
		t.Fatal(err)
	}
	poll()
	rec.has(t, "group/before")
	tk := &record.Token{ID: "CCCCCCCCCCCCCCCC", User: "u", Group: "g"}
	if err := writer.PutToken(ctx, tk); err != nil {
		t.Fatal(err)
	}
	poll()
	rec.has(t, "token/CCCCCCCCCCCCCCCC")
	// A rotation written straight into Vault, past keyward.
	if _, err := root.KVv2("keyward").Put(ctx, "providers/openai", map[string]any{"kind": "openai", "key_b": "sk-b"}); err != nil {
		t.Fatal(err)
	}
	poll()
	rec.has(t, "provider/openai")
	if err := writer.EnsureSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	poll()
	if keys != 1 {
		t.Fatalf("signing key changes reported %d times, want 1", keys)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if slices.Contains(rec.events, "purge") {
		t.Fatalf("purged without cause: %v", rec.events)
	}
}

// TestWatchResyncsAfterOutage runs the real loop: while Vault is down
// nothing is dropped; when it answers again, everything is.
func TestWatchResyncsAfterOutage(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	ctx, cancel := context.WithCancel(context.Background())
	// The dev server forgets its tokens on restart, but not its root token.
	reader := newStore(t, srv, vault.Config{PollInterval: 50 * time.Millisecond})
	srv.Stop()
	rec := &recorder{}
	done := make(chan struct{})
	go func() { defer close(done); reader.Watch(ctx, rec, func() {}) }()
	defer func() { cancel(); <-done }()
	// Polls are sent, and fail, while Vault is down.
	sent := reader.Requests()
	eventually(t, "failed polls", func() bool { return reader.Requests() >= sent+3 })
	rec.mu.Lock()
	if len(rec.events) != 0 {
		t.Errorf("dropped records while Vault was down: %v", rec.events)
	}
	rec.mu.Unlock()
	srv.Restart(t)
	rec.waitFor(t, "purge")
}

// TestIdleRequestsConstant: an idle replica's traffic per poll does not
// grow with the number of records. Polls are run by hand and counted
// exactly.
func TestIdleRequestsConstant(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	ctx := t.Context()
	writer := newStore(t, srv, vault.Config{})
	reader := newStore(t, srv, vault.Config{})
	p := reader.Poller()
	perPoll := func() float64 {
		const polls = 20
		p.Poll(ctx, &recorder{}, func() {})
		start := reader.Requests()
		for range polls {
			p.Poll(ctx, &recorder{}, func() {})
		}
		return float64(reader.Requests()-start) / polls
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
	if small != large || small > idleRequestsPerPoll {
		t.Fatalf("idle polling costs %.2f and %.2f requests per poll; want %d both times", small, large, idleRequestsPerPoll)
	}
}

// idleRequestsPerPoll is what an idle poll costs with no provider in use:
// the active node's health check and one read of the change marker.
const idleRequestsPerPoll = 2

// TestConcurrentWritersLoseNothing: every change reaches the marker once,
// however many writers race (check-and-set with backoff).
func TestConcurrentWritersLoseNothing(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	ctx := t.Context()
	reader := newStore(t, srv, vault.Config{})
	rec := &recorder{}
	p := reader.Poller()
	p.Poll(ctx, rec, func() {})

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
	p.Poll(ctx, rec, func() {}) // the marker keeps 256 changes: all 120 are in it
	for w := range writers {
		for i := range each {
			rec.has(t, fmt.Sprintf("group/w%d-%d", w, i))
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.events) != writers*each {
		t.Fatalf("%d events for %d changes: %v", len(rec.events), writers*each, rec.events)
	}
}
