// Package storetest opens real record stores for tests: the file store in
// a test's temporary folder, and the Vault store on an OpenBao dev server
// started by vaulttest, each on a KV v2 mount of its own.
package storetest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/vault"
	"github.com/keyward/keyward/vault/vaulttest"
)

// File opens a file store in a new temporary folder, reading provider keys
// from getenv (nil: none).
func File(t testing.TB, getenv func(string) string) *filestore.Store {
	t.Helper()
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	st, err := filestore.Open(filestore.Options{Path: filepath.Join(t.TempDir(), "store.yaml"), Getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Vaults hands out Vault stores on one OpenBao dev server, each on a fresh
// KV v2 mount, so that tests sharing the server share nothing else.
type Vaults struct {
	Server *vaulttest.Server
	root   *api.Client
	n      atomic.Int32
}

// NewVaults starts the dev server (skipping, or failing in CI, without the
// bao binary).
func NewVaults(t testing.TB) *Vaults {
	t.Helper()
	srv := vaulttest.Start(t, "")
	return &Vaults{Server: srv, root: srv.Client(t, srv.RootToken)}
}

// VaultStore is a started Vault store and root access to its mount, for
// what keyward does not write itself (provider records).
type VaultStore struct {
	*vault.Store
	KV *api.KVv2
}

// Store returns a started Vault store, logged in as root, on a new mount.
func (v *Vaults) Store(t testing.TB) VaultStore {
	t.Helper()
	ctx := context.Background()
	mount := "kw" + string(rune('a'+v.n.Add(1)))
	if err := v.root.Sys().MountWithContext(ctx, mount, &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		t.Fatal(err)
	}
	// A fresh KV v2 mount answers "upgrading" for a moment; the deadline
	// only guards against a hang.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := v.root.KVv2(mount).Put(ctx, "system/ready", map[string]any{"ok": true}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("mount %s: %v", mount, err)
		}
	}
	file := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(file, []byte(v.Server.RootToken), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := vault.New(vault.Config{Address: v.Server.Addr, Mount: mount, Auth: vault.AuthConfig{Method: "token", TokenFile: file}}, slog.New(slog.DiscardHandler), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	if err := st.Start(sctx); err != nil {
		t.Fatal(err)
	}
	return VaultStore{Store: st, KV: v.root.KVv2(mount)}
}
