package vault_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
	"github.com/keyward/keyward/vault"
	"github.com/keyward/keyward/vault/vaulttest"
)

// The Vault store is a management API store. The check sits in a test so
// that the store never depends on the HTTP layer.
var _ manage.Store = (*vault.Store)(nil)

// newAPIToken returns a management token record for user with a real
// token id and a random hash, every byte of which must survive Vault.
func newAPIToken(t *testing.T, user string) *record.APIToken {
	t.Helper()
	k, err := token.NewSigningKey(1)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := token.NewKeyring([]token.SigningKey{k})
	if err != nil {
		t.Fatal(err)
	}
	m, err := ring.Management().Mint()
	if err != nil {
		t.Fatal(err)
	}
	a := &record.APIToken{ID: m.ID, User: user, Created: time.Now().UTC()}
	if _, err := rand.Read(a.Hash[:]); err != nil {
		t.Fatal(err)
	}
	return a
}

func sameAPIToken(a, b *record.APIToken) bool {
	return a.ID == b.ID && a.Hash == b.Hash && a.User == b.User && a.Created.Equal(b.Created) && a.Revoked == b.Revoked
}

// TestAPITokens covers one server: round trip, revocation, not found, the
// change marker, the stored shape, DeleteUser, and the example policies.
func TestAPITokens(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	st := newStore(t, srv, vault.Config{})
	ctx := t.Context()
	for _, u := range []string{"ann", "bob"} {
		if err := st.PutUser(ctx, &record.User{Name: u, Role: record.RoleAdmin}); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{}
	p := st.Poller()
	p.Poll(ctx, rec, func() {}) // the first poll only learns where the marker is

	ann, ann2, bob := newAPIToken(t, "ann"), newAPIToken(t, "ann"), newAPIToken(t, "bob")
	for _, a := range []*record.APIToken{ann, ann2, bob} {
		if err := st.PutAPIToken(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	p.Poll(ctx, rec, func() {})
	rec.has(t, string(record.TypeAPIToken)+"/"+ann.ID)

	t.Run("round trip", func(t *testing.T) {
		got, err := st.APIToken(ctx, ann.ID)
		if err != nil || !sameAPIToken(got, ann) {
			t.Fatalf("got %+v, %v; want %+v", got, err, ann)
		}
		// The LLM token lookup does not reach it.
		if _, err := st.Token(ctx, ann.ID); !errors.Is(err, record.ErrNotFound) {
			t.Errorf("Token(API token id) = %v, want ErrNotFound", err)
		}
		sec, err := srv.Client(t, srv.RootToken).KVv2("keyward").Get(ctx, "api-tokens/"+ann.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"user": "ann", "hash": hex.EncodeToString(ann.Hash[:]), "created": ann.Created.Format(time.RFC3339Nano), "revoked": false}
		for k, v := range want {
			if sec.Data[k] != v {
				t.Errorf("stored %s = %v, want %v", k, sec.Data[k], v)
			}
		}
		if len(sec.Data) != len(want) {
			t.Errorf("stored record %v has fields beyond %v", sec.Data, want)
		}
	})

	t.Run("revoked persists", func(t *testing.T) {
		revoked := *ann2
		revoked.Revoked = true
		if err := st.PutAPIToken(ctx, &revoked); err != nil {
			t.Fatal(err)
		}
		got, err := st.APIToken(ctx, ann2.ID)
		if err != nil || !sameAPIToken(got, &revoked) {
			t.Fatalf("got %+v, %v; want %+v", got, err, &revoked)
		}
	})

	t.Run("not found", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			err  error
		}{
			{"missing", second(st.APIToken(ctx, newAPIToken(t, "ann").ID))},
			{"path in the id", second(st.APIToken(ctx, "../tokens/"+ann.ID))},
			{"unknown user", st.PutAPIToken(ctx, newAPIToken(t, "nobody"))},
		} {
			if !errors.Is(tc.err, record.ErrNotFound) {
				t.Errorf("%s: %v, want ErrNotFound", tc.name, tc.err)
			}
		}
		// A write with a path for a name is the caller's mistake, not a
		// missing record.
		if err := st.PutAPIToken(ctx, newAPIToken(t, "../system")); !errors.Is(err, record.ErrInvalidName) || errors.Is(err, record.ErrNotFound) {
			t.Errorf("path in the user: %v, want ErrInvalidName only", err)
		}
		bad := newAPIToken(t, "ann")
		bad.ID = "../../system/changes"
		if err := st.PutAPIToken(ctx, bad); err == nil {
			t.Error("PutAPIToken with a path for an id succeeded")
		}
	})

	t.Run("example policies", func(t *testing.T) {
		for _, name := range []string{"keyward", "keyward-admin"} {
			hcl, err := os.ReadFile("../examples/vault/" + name + ".hcl")
			if err != nil {
				t.Fatal(err)
			}
			srv.WritePolicy(t, name, string(hcl))
		}
		admin := newStore(t, srv, vault.Config{}, "keyward-admin")
		extra := newAPIToken(t, "bob")
		if err := admin.PutAPIToken(ctx, extra); err != nil {
			t.Fatalf("admin policy: PutAPIToken: %v", err)
		}
		serve := newStore(t, srv, vault.Config{}, "keyward")
		if got, err := serve.APIToken(ctx, extra.ID); err != nil || !sameAPIToken(got, extra) {
			t.Fatalf("serve policy: APIToken: %+v, %v", got, err)
		}
	})

	t.Run("DeleteUser removes them", func(t *testing.T) {
		if err := st.DeleteUser(ctx, "ann"); err != nil {
			t.Fatal(err)
		}
		for _, a := range []*record.APIToken{ann, ann2} {
			if _, err := st.APIToken(ctx, a.ID); !errors.Is(err, record.ErrNotFound) {
				t.Errorf("ann's API token after DeleteUser: %v", err)
			}
		}
		if got, err := st.APIToken(ctx, bob.ID); err != nil || !sameAPIToken(got, bob) {
			t.Errorf("bob's API token: %+v, %v", got, err)
		}
	})
}
