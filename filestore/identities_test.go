package filestore_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/keyward/keyward/record"
)

// TestIdentities stores principal mappings and a bound token, reads them
// back in another process's view of the files, and refuses a hand-edited
// mapping with a bad principal.
func TestIdentities(t *testing.T) {
	f := newFullStore(t)
	ctx := t.Context()
	id := &record.Identity{Name: "payments", Principal: "spiffe://td/ns/payments/*", User: "ann", Group: "team"}
	must(t, f.st.CreateIdentity(ctx, id, anyIdentity))
	if err := f.st.CreateIdentity(ctx, id, anyIdentity); !errors.Is(err, record.ErrExists) {
		t.Errorf("second create: %v", err)
	}
	if err := f.st.CreateIdentity(ctx, ident("x", "nobody", "team"), anyIdentity); !errors.Is(err, record.ErrNotFound) {
		t.Errorf("create for a missing user: %v", err)
	}
	bad := ident("bad", "ann", "team")
	bad.Principal = "spiffe://td/ns/../x"
	if err := f.st.CreateIdentity(ctx, bad, anyIdentity); err == nil {
		t.Error("a bad principal was stored")
	}
	tok := newToken(t, "ann", "team")
	tok.Principal = "spiffe://td/ns/ci/sa/runner"
	must(t, f.st.PutToken(ctx, tok))

	other := open(t, f.paths["store"], "", nil)
	all, err := other.Identities(ctx)
	must(t, err)
	if len(all) != 1 || all[0].Principal != id.Principal || all[0].User != "ann" {
		t.Fatalf("read back %+v", all)
	}
	got, err := other.Token(ctx, tok.ID)
	must(t, err)
	if got.Principal != tok.Principal {
		t.Fatalf("token binding read back as %q", got.Principal)
	}
	up, err := f.st.UpdateIdentity(ctx, "payments", func(i *record.Identity) error { i.Disabled, i.User = true, "mallory"; return nil })
	must(t, err)
	if !up.Disabled || up.User != "ann" {
		t.Fatalf("update: %+v", up)
	}

	raw, err := os.ReadFile(f.paths["store"])
	must(t, err)
	edited := strings.Replace(string(raw), "spiffe://td/ns/payments/*", "spiffe://td/ns/payments/../*", 1)
	if edited == string(raw) {
		t.Fatal("the store file does not hold the principal")
	}
	must(t, os.WriteFile(f.paths["store"], []byte(edited), 0o600))
	if err := f.st.DeleteIdentity(ctx, "payments"); err == nil || !strings.Contains(err.Error(), "identities.payments.principal") {
		t.Fatalf("write over a hand-edited bad principal: %v", err)
	}
	must(t, os.WriteFile(f.paths["store"], raw, 0o600))
	must(t, f.st.DeleteUser(ctx, "ann"))
	if all, _ := f.st.Identities(ctx); len(all) != 0 {
		t.Fatalf("the deleted user's mapping survived: %+v", all)
	}
}
