package vault_test

import (
	"errors"
	"testing"
	"time"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/vault"
	"github.com/keyward/keyward/vault/vaulttest"
)

// TestUserTokens: a user's tokens are listed through their index, without
// anyone else's; a deleted token leaves no index entry behind.
func TestUserTokens(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	st := newStore(t, srv, vault.Config{})
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Second)
	put := func(id, user string) {
		t.Helper()
		if err := st.PutToken(ctx, &record.Token{ID: id, User: user, Group: "g", Created: now}); err != nil {
			t.Fatal(err)
		}
	}
	put("AAAAAAAAAAAAAAAA", "ann")
	put("BBBBBBBBBBBBBBBB", "ann")
	put("CCCCCCCCCCCCCCCC", "bob")
	ids := func(user string) []string {
		t.Helper()
		ts, err := st.UserTokens(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, tk := range ts {
			out = append(out, tk.ID)
		}
		return out
	}
	if got := ids("ann"); len(got) != 2 {
		t.Fatalf("ann's tokens: %v", got)
	}
	if got := ids("bob"); len(got) != 1 || got[0] != "CCCCCCCCCCCCCCCC" {
		t.Fatalf("bob's tokens: %v", got)
	}
	if got, err := st.UserTokens(ctx, "../ann"); !errors.Is(err, record.ErrInvalidName) || len(got) != 0 {
		t.Fatalf("a path as a user name: %v, %v; want none and ErrInvalidName", got, err)
	}
	if err := st.DeleteToken(ctx, "AAAAAAAAAAAAAAAA"); err != nil {
		t.Fatal(err)
	}
	if got := ids("ann"); len(got) != 1 || got[0] != "BBBBBBBBBBBBBBBB" {
		t.Fatalf("ann's tokens after a delete: %v", got)
	}
	if err := st.DeleteToken(ctx, "AAAAAAAAAAAAAAAA"); !errors.Is(err, record.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	sec, err := srv.Client(t, srv.RootToken).Logical().ListWithContext(ctx, "keyward/metadata/users/ann/tokens/")
	if err != nil || sec == nil || len(sec.Data["keys"].([]any)) != 1 {
		t.Fatalf("ann's index after a delete: %v %v", sec, err)
	}
	if err := st.PutToken(ctx, &record.Token{ID: "DDDDDDDDDDDDDDDD", User: "a/b", Group: "g"}); err == nil {
		t.Fatal("a token for user a/b was stored")
	}
}
