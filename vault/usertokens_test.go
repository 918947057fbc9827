package vault_test

import (
	"errors"
	"fmt"
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

// TestImportTokens: imported tokens read back as written and are listed
// under their owners; readers learn of a small import token by token and
// drop everything for one larger than the marker keeps; a batch with one
// bad token writes none.
func TestImportTokens(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	st := newStore(t, srv, vault.Config{})
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Second)
	rec := &recorder{}
	p := st.Poller()
	p.Poll(ctx, rec, func() {}) // learns where the marker is

	tokens := []*record.Token{
		{ID: "AAAAAAAAAAAAAAAA", User: "ann", Group: "g", Name: "one", Created: now, Hash: [32]byte{1}},
		{ID: "BBBBBBBBBBBBBBBB", User: "ann", Group: "h", Created: now, Expires: now.Add(time.Hour), Last4: "wxyz"},
		{ID: "CCCCCCCCCCCCCCCC", User: "bob", Group: "g", Created: now, Revoked: true},
	}
	if err := st.ImportTokens(ctx, tokens, 2); err != nil {
		t.Fatal(err)
	}
	for _, want := range tokens {
		got, err := st.Token(ctx, want.ID)
		if err != nil || !got.Created.Equal(want.Created) || !got.Expires.Equal(want.Expires) {
			t.Fatalf("token %s: got %+v, %v; want %+v", want.ID, got, err, want)
		}
		got.Created, got.Expires = want.Created, want.Expires
		if *got != *want {
			t.Fatalf("token %s: got %+v; want %+v", want.ID, got, want)
		}
	}
	if ts, err := st.UserTokens(ctx, "ann"); err != nil || len(ts) != 2 {
		t.Fatalf("ann's tokens: %v, %v", ts, err)
	}
	p.Poll(ctx, rec, func() {})
	for _, tk := range tokens {
		rec.has(t, string(record.TypeToken)+"/"+tk.ID)
	}

	// More tokens than the marker keeps: readers drop everything.
	var many []*record.Token
	for i := range 300 {
		many = append(many, &record.Token{ID: fmt.Sprintf("D%015d", i), User: "cy", Group: "g", Created: now})
	}
	if err := st.ImportTokens(ctx, many, 8); err != nil {
		t.Fatal(err)
	}
	p.Poll(ctx, rec, func() {})
	rec.has(t, "purge")
	if ts, err := st.UserTokens(ctx, "cy"); err != nil || len(ts) != len(many) {
		t.Fatalf("cy's tokens: %d, %v; want %d", len(ts), err, len(many))
	}

	bad := []*record.Token{{ID: "EEEEEEEEEEEEEEEE", User: "dee", Group: "g"}, {ID: "FFFFFFFFFFFFFFFF", User: "../dee", Group: "g"}}
	if err := st.ImportTokens(ctx, bad, 2); !errors.Is(err, record.ErrInvalidName) {
		t.Fatalf("a batch with a path as a user name: %v, want ErrInvalidName", err)
	}
	if _, err := st.Token(ctx, "EEEEEEEEEEEEEEEE"); !errors.Is(err, record.ErrNotFound) {
		t.Fatalf("a token of a refused batch was written: %v", err)
	}
}
