package vault_test

import (
	"errors"
	"os"
	"testing"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/vault"
	"github.com/keyward/keyward/vault/vaulttest"
)

// TestIdentities stores principal mappings and a bound token with the
// admin's rights, reads them back with the serve policy as shipped (which
// must list the mappings), and checks the owner fence and sweep.
func TestIdentities(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	ctx := t.Context()
	writer := newStore(t, srv, vault.Config{})
	must(t, writer.PutGroup(ctx, &record.Group{Name: "mesh"}))
	must(t, writer.PutUser(ctx, &record.User{Name: "svc", Groups: []string{"mesh"}}))
	policy, err := os.ReadFile("../examples/vault/keyward.hcl")
	must(t, err)
	srv.WritePolicy(t, "keyward", string(policy))
	reader := newStore(t, srv, vault.Config{}, "keyward")

	id := &record.Identity{Name: "payments", Principal: "spiffe://td/ns/payments/*", User: "svc", Group: "mesh"}
	var seen []*record.Identity
	must(t, writer.CreateIdentity(ctx, id, func(u *record.User, all []*record.Identity) error {
		if u.Name != "svc" {
			t.Errorf("check got user %q", u.Name)
		}
		seen = all
		return nil
	}))
	if len(seen) != 0 {
		t.Errorf("check saw %d mappings before the first", len(seen))
	}
	if err := writer.CreateIdentity(ctx, id, func(*record.User, []*record.Identity) error { return nil }); !errors.Is(err, record.ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}
	refused := errors.New("refused")
	if err := writer.CreateIdentity(ctx, &record.Identity{Name: "x", Principal: "spiffe://td/x", User: "svc", Group: "mesh"}, func(*record.User, []*record.Identity) error { return refused }); !errors.Is(err, refused) {
		t.Errorf("refused create: %v", err)
	}
	if err := writer.CreateIdentity(ctx, &record.Identity{Name: "y", Principal: "spiffe://td/y", User: "nobody", Group: "mesh"}, func(*record.User, []*record.Identity) error { return nil }); !errors.Is(err, record.ErrNotFound) {
		t.Errorf("create for a missing user: %v, want ErrNotFound", err)
	}
	if err := writer.CreateIdentity(ctx, &record.Identity{Name: "z", Principal: "spiffe://td/../z", User: "svc", Group: "mesh"}, nil); err == nil {
		t.Error("a bad principal was stored")
	}

	all, err := reader.Identities(ctx)
	must(t, err)
	if len(all) != 1 || *all[0] != *id {
		t.Fatalf("serve policy reads %+v, want %+v", all, id)
	}
	up, err := writer.UpdateIdentity(ctx, "payments", func(i *record.Identity) error {
		i.Disabled, i.Principal, i.User = true, "spiffe://td/other", "mallory"
		return nil
	})
	must(t, err)
	if !up.Disabled || up.Principal != id.Principal || up.User != "svc" {
		t.Fatalf("update: %+v", up)
	}

	tok := &record.Token{ID: "BBBBBBBBBBBBBBBB", User: "svc", Group: "mesh", Principal: "spiffe://td/ns/ci/sa/runner"}
	must(t, writer.PutToken(ctx, tok))
	got, err := reader.Token(ctx, tok.ID)
	must(t, err)
	if got.Principal != tok.Principal {
		t.Fatalf("token binding read back as %q", got.Principal)
	}

	must(t, writer.DeleteUser(ctx, "svc"))
	if all, err := reader.Identities(ctx); err != nil || len(all) != 0 {
		t.Fatalf("after the user's deletion: %v %v", all, err)
	}
	if err := writer.DeleteIdentity(ctx, "payments"); !errors.Is(err, record.ErrNotFound) {
		t.Errorf("delete of a swept mapping: %v", err)
	}
}
