package vault_test

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/vault"
)

// fakeNode is one node of a fake Vault cluster: it answers sys/health as
// its role says, and reads of group eng with its own name, so that a test
// sees which node served a read.
type fakeNode struct {
	*httptest.Server
	name string

	mu        sync.Mutex
	role      string   // "active", "standby" or "sealed"
	reads     []string // paths of the requests other than sys/health
	notActive []string // those of them that came while not active
}

func newFakeNode(t *testing.T, name, role string) *fakeNode {
	n := &fakeNode{name: name, role: role}
	n.Server = httptest.NewServer(http.HandlerFunc(n.serve))
	t.Cleanup(n.Close)
	return n
}

func (n *fakeNode) setRole(role string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.role = role
}

func (n *fakeNode) served() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.reads)
}

func (n *fakeNode) servedNotActive() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.notActive)
}

func (n *fakeNode) serve(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	role := n.role
	if r.URL.Path != "/v1/sys/health" {
		n.reads = append(n.reads, r.URL.Path)
		if role != "active" {
			n.notActive = append(n.notActive, r.URL.Path)
		}
	}
	n.mu.Unlock()
	switch {
	case r.URL.Path == "/v1/sys/health" && role == "active":
		io.WriteString(w, activeHealth)
	case r.URL.Path == "/v1/sys/health" && role == "standby":
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"initialized":true,"sealed":false,"standby":true}`)
	case r.URL.Path == "/v1/sys/health":
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"initialized":true,"sealed":true,"standby":true}`)
	case r.URL.Path == "/v1/auth/token/lookup-self":
		io.WriteString(w, `{"data":{"ttl":0,"renewable":false}}`)
	case r.URL.Path == "/v1/keyward/data/groups/eng":
		// A standby answers reads too, from its own, maybe stale, copy.
		io.WriteString(w, `{"data":{"data":{"providers":"`+n.name+`"},"metadata":{"version":1}}}`)
	default:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"errors":[]}`)
	}
}

// clusterStore is a store over the fake nodes, with the given addresses.
func clusterStore(t *testing.T, cfg vault.Config) *vault.Store {
	t.Helper()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("kwtest-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Auth = vault.AuthConfig{TokenFile: file}
	st, err := vault.New(cfg, slog.New(slog.DiscardHandler), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestActiveNodeOnly: reads go to the active node only, follow it when it
// moves, drop the caches then, and stop while no node is active; a
// standby, which would answer, never gets one.
func TestActiveNodeOnly(t *testing.T) {
	a, b := newFakeNode(t, "a", "standby"), newFakeNode(t, "b", "active")
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	st := clusterStore(t, vault.Config{Addresses: []string{a.URL, down.URL, b.URL}})
	ctx := t.Context()
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	servedBy := func() string {
		t.Helper()
		g, err := st.Group(ctx, "eng")
		if err != nil {
			t.Fatal(err)
		}
		return g.Providers[0]
	}
	rec := &recorder{}
	p := st.Poller()
	poll := func() { p.Poll(ctx, rec, func() {}) }

	poll()
	if got := servedBy(); got != "b" {
		t.Fatalf("read served by %s, want the active node b", got)
	}
	a.setRole("active") // a failover: b steps down, a takes over
	b.setRole("standby")
	poll()
	rec.has(t, "purge")
	if got := servedBy(); got != "a" {
		t.Fatalf("after the failover, read served by %s, want a", got)
	}

	a.setRole("sealed") // no active node at all
	poll()
	if _, err := st.Group(ctx, "eng"); !errors.Is(err, vault.ErrNoActiveNode) || errors.Is(err, record.ErrNotFound) {
		t.Fatalf("read without an active node: %v, want vault.ErrNoActiveNode", err)
	}

	b.setRole("active")
	poll()
	if got := servedBy(); got != "b" {
		t.Fatalf("after recovery, read served by %s, want b", got)
	}
	for _, n := range []*fakeNode{a, b} {
		if got := n.servedNotActive(); len(got) != 0 {
			t.Errorf("node %s served %v while not active", n.name, got)
		}
	}
}

// TestReadFindsNewActiveNode: when the active node dies between polls, a
// read finds the node that took over and is served there at once (a
// token created on the new leader is not refused until the next poll);
// the next poll drops the caches, as for any move.
func TestReadFindsNewActiveNode(t *testing.T) {
	a, b := newFakeNode(t, "a", "active"), newFakeNode(t, "b", "standby")
	st := clusterStore(t, vault.Config{Addresses: []string{a.URL, b.URL}})
	ctx := t.Context()
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if g, err := st.Group(ctx, "eng"); err != nil || g.Providers[0] != "a" {
		t.Fatalf("read: %v, %v; want served by a", g, err)
	}
	a.Close() // the leader dies
	b.setRole("active")
	g, err := st.Group(ctx, "eng")
	if err != nil || g.Providers[0] != "b" {
		t.Fatalf("read after the leader died: %v, %v; want served by b", g, err)
	}
	rec := &recorder{}
	st.Poller().Poll(ctx, rec, func() {})
	rec.has(t, "purge")
	if got := b.servedNotActive(); len(got) != 0 {
		t.Errorf("b served %v while standby", got)
	}
}

// TestStandbyAddressRefused: one address that reaches a standby only is
// not read from; Start says why.
func TestStandbyAddressRefused(t *testing.T) {
	standby := newFakeNode(t, "standby", "standby")
	st := clusterStore(t, vault.Config{Address: standby.URL})
	err := st.Start(t.Context())
	if !errors.Is(err, vault.ErrNoActiveNode) {
		t.Fatalf("Start on a standby: %v, want vault.ErrNoActiveNode", err)
	}
	if got := standby.served(); len(got) != 0 {
		t.Fatalf("the standby got %v", got)
	}
}
