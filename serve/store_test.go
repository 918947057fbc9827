package serve

import (
	"context"
	"errors"
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
