package serve

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/vault"
)

// TestOpenStore: the configuration's store.kind picks the store, for
// serve and for every command alike.
func TestOpenStore(t *testing.T) {
	f := newFixture(t)
	st, err := OpenStore(f.cfg, nil, f.getenv)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Records().(*filestore.Store); !ok {
		t.Fatalf("store.kind file opened %T", st.Records())
	}
	if fs, err := st.Files(); err != nil || fs == nil {
		t.Fatalf("Files on the file store: %v", err)
	}
	if err := st.Start(context.Background()); err != nil {
		t.Fatalf("Start on the file store: %v", err)
	}
	if u, err := st.Records().User(context.Background(), "alice"); err != nil || u.Name != "alice" {
		t.Fatalf("reading the file store: %v %v", u, err)
	}

	vc := config.Default()
	vc.Store.Kind = "vault"
	vc.Vault.Address, vc.Vault.Mount = "http://127.0.0.1:1", "kw-test"
	vs, err := OpenStore(vc, nil, func(k string) string { return map[string]string{"VAULT_TOKEN": "root"}[k] })
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := vs.Records().(*vault.Store); !ok {
		t.Fatalf("store.kind vault opened %T", vs.Records())
	}
	if _, err := vs.Files(); !errors.Is(err, ErrNotFileStore) || !strings.Contains(err.Error(), "kw-test/providers/") {
		t.Fatalf("Files on Vault: %v, want ErrNotFileStore with the vault kv hint", err)
	}
}

// TestOpenFilesGCPercent: the file store loads with the collector at
// loadGCPercent, and the operator's GOGC is back once it has loaded; a
// lower one, or none (off), is left as it is. Not parallel: GOGC is the
// process's.
func TestOpenFilesGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, gogc := range []int{200, 100, 30, -1} {
		debug.SetGCPercent(gogc)
		path := filepath.Join(t.TempDir(), "store.yaml")
		if err := os.WriteFile(path, []byte("providers:\n  openai: {kind: openai, keys: [{id: k, env: K}]}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		during := 1000
		st, err := openFiles(filestore.Options{Path: path, Getenv: func(string) string {
			// Called while the store loads, for the provider's key.
			during = debug.SetGCPercent(-1)
			debug.SetGCPercent(during)
			return ""
		}})
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		after := debug.SetGCPercent(100)
		if want := min(gogc, loadGCPercent); during != want && !(gogc < 0 && during < 0) {
			t.Errorf("GOGC %d: %d while loading, want %d", gogc, during, want)
		}
		if after != gogc {
			t.Errorf("GOGC %d: %d after loading", gogc, after)
		}
	}
}
