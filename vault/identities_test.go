package vault_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"testing"

	"github.com/hashicorp/vault/api"

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

// TestPrincipalClaims checks the claim that keeps one mapping per
// principal across users: a claim naming a live mapping refuses a second
// one, a claim left over (its mapping missing) is taken over, and a
// delete or the user's sweep gives the claim up. It runs with the
// management API's policy as shipped, which must allow the claims.
func TestPrincipalClaims(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	ctx := t.Context()
	policy, err := os.ReadFile("../examples/vault/keyward-management.hcl")
	must(t, err)
	srv.WritePolicy(t, "keyward-management", string(policy))
	st := newStore(t, srv, vault.Config{}, "keyward-management")
	kv := srv.Client(t, srv.RootToken).KVv2("keyward")
	must(t, st.PutGroup(ctx, &record.Group{Name: "mesh"}))
	for _, u := range []string{"svc", "other"} {
		must(t, st.PutUser(ctx, &record.User{Name: u, Groups: []string{"mesh"}}))
	}
	const principal = "spiffe://td/ns/pay/sa/api"
	sum := sha256.Sum256([]byte(principal))
	claimPath := "identity-principals/" + hex.EncodeToString(sum[:])
	accept := func(*record.User, []*record.Identity) error { return nil }
	// claimed reads the claim: the mapping it names, "" when given up.
	claimed := func() string {
		t.Helper()
		sec, err := kv.Get(ctx, claimPath)
		if errors.Is(err, api.ErrSecretNotFound) {
			return ""
		}
		must(t, err)
		if sec.Data == nil || sec.Data["deleted"] == true {
			return ""
		}
		if sec.Data["principal"] != principal {
			t.Errorf("claim holds principal %v", sec.Data["principal"])
		}
		name, _ := sec.Data["identity"].(string)
		return name
	}

	// Left over by a create that stopped before its mapping: taken over.
	_, err = kv.Put(ctx, claimPath, map[string]any{"identity": "gone", "user": "other", "principal": principal})
	must(t, err)
	must(t, st.CreateIdentity(ctx, &record.Identity{Name: "pay", Principal: principal, User: "svc", Group: "mesh"}, accept))
	if got := claimed(); got != "pay" {
		t.Fatalf("after taking over a stale claim, the claim names %q", got)
	}
	// The store refuses a second mapping even when the check lets it by.
	err = st.CreateIdentity(ctx, &record.Identity{Name: "pay2", Principal: principal, User: "other", Group: "mesh"}, accept)
	if !errors.Is(err, record.ErrExists) {
		t.Fatalf("second mapping of the principal for another user: %v, want ErrExists", err)
	}
	if _, err := st.Identity(ctx, "pay2"); !errors.Is(err, record.ErrNotFound) {
		t.Fatalf("the refused mapping was stored: %v", err)
	}

	must(t, st.DeleteIdentity(ctx, "pay"))
	if got := claimed(); got != "" {
		t.Fatalf("after the delete, the claim names %q", got)
	}
	// A claim given up is taken again; the user's deletion gives it up.
	must(t, st.CreateIdentity(ctx, &record.Identity{Name: "pay2", Principal: principal, User: "other", Group: "mesh"}, accept))
	if got := claimed(); got != "pay2" {
		t.Fatalf("after a create over a given-up claim, the claim names %q", got)
	}
	must(t, st.DeleteUser(ctx, "other"))
	if got := claimed(); got != "" {
		t.Fatalf("after the user's deletion, the claim names %q", got)
	}

	// A delete that stopped between the mapping and the claim: the next
	// create takes the claim over.
	must(t, st.CreateIdentity(ctx, &record.Identity{Name: "pay3", Principal: principal, User: "svc", Group: "mesh"}, accept))
	must(t, kv.DeleteMetadata(ctx, "identities/pay3"))
	must(t, st.CreateIdentity(ctx, &record.Identity{Name: "pay4", Principal: principal, User: "svc", Group: "mesh"}, accept))
	if got := claimed(); got != "pay4" {
		t.Fatalf("after a half-done delete and a create, the claim names %q", got)
	}
}
