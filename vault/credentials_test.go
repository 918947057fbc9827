package vault_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/cache"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/vault"
	"github.com/keyward/keyward/vault/vaulttest"
)

// credKey is in every test credential's key: no error or String may show
// it.
const credKey = "SECRETSECRET"

func newCredential(user, name string) *record.Credential {
	return &record.Credential{
		ID: record.NewCredentialID(), User: user, Name: name, Provider: "openai", Model: "gpt-4o",
		BaseURL: "https://llm.example.com/v1", Key: "sk-" + credKey + "-" + name,
		Extra: json.RawMessage(`{"organization":"org-1","retries":2}`), Created: time.Now().UTC().Truncate(time.Microsecond),
	}
}

func noKey(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), credKey) {
		t.Errorf("%s: error shows the key: %v", what, err)
	}
}

// TestCredentials covers one server: round trip, isolation between users,
// DeleteUser, the change marker, and errors that never show a key.
func TestCredentials(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	st := newStore(t, srv, vault.Config{})
	ctx := t.Context()
	for _, u := range []string{"ann", "bob"} {
		if err := st.PutUser(ctx, &record.User{Name: u, Role: record.RoleUser}); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{}
	p := st.Poller()
	p.Poll(ctx, rec, func() {}) // the first poll only learns where the marker is

	ann, ann2, bob := newCredential("ann", "mine"), newCredential("ann", "second"), newCredential("bob", "bobs")
	sameID := newCredential("bob", "same-id")
	sameID.ID = ann.ID
	for _, c := range []*record.Credential{ann, ann2, bob, sameID} {
		if err := st.PutCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	p.Poll(ctx, rec, func() {})
	rec.has(t, "credential/ann/"+ann.ID)

	t.Run("round trip", func(t *testing.T) {
		got, err := st.Credential(ctx, "ann", ann.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != ann.Name || got.Provider != ann.Provider || got.Model != ann.Model || got.BaseURL != ann.BaseURL ||
			got.Key != ann.Key || string(got.Extra) != string(ann.Extra) || !got.Created.Equal(ann.Created) || got.User != "ann" || got.ID != ann.ID {
			t.Errorf("got %#v, want %#v", got, ann)
		}
		if s := fmt.Sprintf("%v %+v %#v", got, got, got); strings.Contains(s, credKey) {
			t.Errorf("printing a credential shows its key: %s", s)
		}
		list, err := st.Credentials(ctx, "ann")
		if err != nil || len(list) != 2 {
			t.Fatalf("Credentials(ann) = %v, %v", list, err)
		}
		// The user record is still read as a user, beside its folder.
		if users, err := st.Users(ctx); err != nil || len(users) != 2 {
			t.Fatalf("Users = %v, %v", users, err)
		}
	})

	t.Run("isolation", func(t *testing.T) {
		for name, err := range map[string]error{
			"bob reads ann's":   second(st.Credential(ctx, "bob", ann2.ID)),
			"bob deletes ann's": st.DeleteCredential(ctx, "bob", ann2.ID),
			"unknown id":        second(st.Credential(ctx, "ann", record.NewCredentialID())),
			"unknown user":      second(st.Credential(ctx, "carl", ann.ID)),
			"path in the user":  second(st.Credential(ctx, "ann/credentials", ann.ID)),
			"path in the id":    second(st.Credential(ctx, "bob", "../../ann/credentials/"+ann2.ID)),
			"list path in user": second(st.Credentials(ctx, "bob/../ann")),
		} {
			if !errors.Is(err, record.ErrNotFound) {
				t.Errorf("%s: %v, want ErrNotFound", name, err)
			}
		}
		if err := st.DeleteCredential(ctx, "bob", "../../ann/credentials/"+ann2.ID); !errors.Is(err, record.ErrInvalidName) || errors.Is(err, record.ErrNotFound) {
			t.Errorf("delete path in id: %v, want ErrInvalidName only", err)
		}
		if got, err := st.Credential(ctx, "ann", ann2.ID); err != nil || got.Key != ann2.Key {
			t.Fatalf("ann's credential after bob's attempts: %v, %v", got, err)
		}
		if got, err := st.Credential(ctx, "bob", ann.ID); err != nil || got.Key != sameID.Key {
			t.Fatalf("bob's credential with ann's id: %v, %v", got, err)
		}
		list, err := st.Credentials(ctx, "bob")
		if err != nil || len(list) != 2 {
			t.Fatalf("Credentials(bob) = %v, %v", list, err)
		}
		for _, c := range list {
			if c.User != "bob" || c.Key == ann.Key || c.Key == ann2.Key {
				t.Errorf("bob's list holds %v", c)
			}
		}
	})

	t.Run("errors hide the key", func(t *testing.T) {
		bad := newCredential("ann", "bad name")
		bad.Key = "sk-" + credKey + "\n"
		bad.BaseURL = "https://u:" + credKey + "@example.com"
		err := st.PutCredential(ctx, bad)
		for _, field := range []string{"name: ", "key: ", "base_url: "} {
			if err == nil || !strings.Contains(err.Error(), field) {
				t.Errorf("PutCredential(invalid) = %v, want an error about %s", err, field)
			}
		}
		noKey(t, "PutCredential", err)
		if err := st.PutCredential(ctx, newCredential("nobody", "x")); !errors.Is(err, record.ErrNotFound) {
			t.Errorf("credential for a missing user: %v, want ErrNotFound", err)
		}
		// A record broken past keyward is reported by field, not value.
		root := srv.Client(t, srv.RootToken)
		id := record.NewCredentialID()
		if _, err := root.KVv2("keyward").Put(ctx, "users/ann/credentials/"+id, map[string]any{
			"name": "n", "provider": "openai", "key": "sk-" + credKey + "\u0007", "extra": `["` + credKey + `"]`,
		}); err != nil {
			t.Fatal(err)
		}
		_, err = st.Credential(ctx, "ann", id)
		if err == nil || !strings.Contains(err.Error(), "key: ") || !strings.Contains(err.Error(), "extra: ") {
			t.Errorf("broken record: %v, want errors about key and extra", err)
		}
		noKey(t, "Credential", err)
		_, err = st.Credentials(ctx, "ann")
		noKey(t, "Credentials", err)
		if err := st.DeleteCredential(ctx, "ann", id); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if err := st.DeleteCredential(ctx, "ann", ann2.ID); err != nil {
			t.Fatal(err)
		}
		p.Poll(ctx, rec, func() {})
		rec.has(t, "credential/ann/"+ann2.ID)
		if _, err := st.Credential(ctx, "ann", ann2.ID); !errors.Is(err, record.ErrNotFound) {
			t.Errorf("deleted credential: %v", err)
		}
		if err := st.DeleteCredential(ctx, "ann", ann2.ID); !errors.Is(err, record.ErrNotFound) {
			t.Errorf("deleting twice: %v", err)
		}
	})

	t.Run("delete user", func(t *testing.T) {
		if err := st.DeleteUser(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		if list, err := st.Credentials(ctx, "bob"); err != nil || len(list) != 0 {
			t.Errorf("bob's credentials after DeleteUser: %v, %v", list, err)
		}
		if _, err := st.Credential(ctx, "bob", bob.ID); !errors.Is(err, record.ErrNotFound) {
			t.Errorf("bob's credential after DeleteUser: %v", err)
		}
		if got, err := st.Credential(ctx, "ann", ann.ID); err != nil || got.Key != ann.Key {
			t.Errorf("ann's credential after deleting bob: %v, %v", got, err)
		}
	})
}

// TestCredentialsWithServePolicy: keyward serve, logged in with the
// shipped read-only policy, can list and read a user's credentials (the
// decision needs them), cannot change them, and sees a change made through
// keyward by its change marker, in the record cache serving uses.
func TestCredentialsWithServePolicy(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	ctx := t.Context()
	for _, name := range []string{"keyward", "keyward-admin"} {
		hcl, err := os.ReadFile("../examples/vault/" + name + ".hcl")
		if err != nil {
			t.Fatal(err)
		}
		srv.WritePolicy(t, name, string(hcl))
	}
	admin := newStore(t, srv, vault.Config{}, "keyward-admin")
	for _, u := range []string{"ann", "bob"} {
		if err := admin.PutUser(ctx, &record.User{Name: u, Role: record.RoleUser}); err != nil {
			t.Fatal(err)
		}
	}
	ann1, ann2 := newCredential("ann", "first"), newCredential("ann", "second")
	ann2.Created = ann1.Created.Add(time.Second)
	for _, c := range []*record.Credential{ann1, ann2} {
		if err := admin.PutCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
	}

	serve := newStore(t, srv, vault.Config{}, "keyward")
	got, err := serve.Credentials(ctx, "ann")
	if err != nil || len(got) != 2 || got[0].Key != ann1.Key || got[1].Key != ann2.Key {
		t.Fatalf("serve policy: Credentials(ann) = %v, %v", got, err)
	}
	for _, u := range []string{"bob", "nobody"} {
		if got, err := serve.Credentials(ctx, u); err != nil || len(got) != 0 {
			t.Fatalf("serve policy: Credentials(%s) = %v, %v; want none", u, got, err)
		}
	}
	err = serve.PutCredential(ctx, newCredential("ann", "evil"))
	if err == nil {
		t.Fatal("serve policy: PutCredential succeeded")
	}
	noKey(t, "PutCredential", err)
	if err := serve.DeleteCredential(ctx, "ann", ann1.ID); err == nil {
		t.Fatal("serve policy: DeleteCredential succeeded")
	}

	// As serving uses it: the cache over the store, told of changes by
	// Watch. The TTL is long, so only the marker can explain a change.
	records, err := cache.NewRecords(serve, cache.Options{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p := serve.Poller()
	p.Poll(ctx, records, func() {}) // the first poll only learns where the marker is
	keyFor := func(provider string) string {
		t.Helper()
		pk, err := records.PrivateKeys(ctx, "ann")
		if err != nil {
			t.Fatal(err)
		}
		if k := pk.For(provider, "gpt-4o"); k != nil {
			return k.Key.Secret
		}
		return ""
	}
	if got := keyFor("openai"); got != ann2.Key {
		t.Fatal("the newest of ann's credentials is not the one in use")
	}
	waitKey := func(provider, want string) {
		t.Helper()
		p.Poll(ctx, records, func() {})
		if keyFor(provider) != want {
			t.Fatalf("%s: change not seen after a poll", provider)
		}
	}
	added := newCredential("ann", "added")
	added.Provider = "anthropic"
	if err := admin.PutCredential(ctx, added); err != nil {
		t.Fatal(err)
	}
	waitKey("anthropic", added.Key)
	if err := admin.DeleteCredential(ctx, "ann", ann2.ID); err != nil {
		t.Fatal(err)
	}
	waitKey("openai", ann1.Key)
}
