package manage_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/keyward/keyward/internal/storetest"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
)

// callers is how many run at once in the race tests.
const callers = 20

// raceSuite is what must hold with callers writers at once, on every store.
var raceSuite = map[string]func(t *testing.T, w *world){
	"OneSuccessorPerRotation":    testOneSuccessor,
	"DeletedUserLeavesNothing":   testDeletedUserLeavesNothing,
	"CapHoldsUnderConcurrency":   testCapHolds,
	"NameUniqueUnderConcurrency": testNameUnique,
	"OneMappingPerPrincipal":     testOneMappingPerPrincipal,
	"OneMappingAcrossUsers":      testOneMappingAcrossUsers,
}

func TestRacesOnFileStore(t *testing.T) {
	for name, test := range raceSuite {
		t.Run(name, func(t *testing.T) { test(t, fileWorld(t, manage.Options{MaxActiveTokens: 5})) })
	}
}

func TestRacesOnVault(t *testing.T) {
	v := storetest.NewVaults(t)
	for name, test := range raceSuite {
		t.Run(name, func(t *testing.T) {
			st := v.Store(t)
			_, err := st.KV.Put(context.Background(), "providers/openai", map[string]any{"kind": "openai", "key_k": "sk-test"})
			must(t, err)
			test(t, seed(t, st.Store, manage.Options{MaxActiveTokens: 5}))
		})
	}
}

// together runs f(i) for i in [0, callers) at once, released together, and
// returns their errors.
func together(f func(i int) error) []error {
	errs := make([]error, callers)
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	for i := range callers {
		ready.Add(1)
		done.Go(func() {
			ready.Done()
			<-start
			errs[i] = f(i)
		})
	}
	ready.Wait()
	close(start)
	done.Wait()
	return errs
}

// count tallies errors: nil as "ok", else the first of wants that matches,
// else "other: <err>".
func count(errs []error, wants ...error) map[string]int {
	out := map[string]int{}
	for _, err := range errs {
		key := "ok"
		if err != nil {
			key = "other: " + err.Error()
			for _, w := range wants {
				if errors.Is(err, w) {
					key = w.Error()
					break
				}
			}
		}
		out[key]++
	}
	return out
}

func testOneSuccessor(t *testing.T, w *world) {
	ctx := context.Background()
	iss, err := w.m.CreateToken(ctx, manage.TokenRequest{User: "alice", Group: "eng", Name: "app"})
	must(t, err)
	errs := together(func(int) error { return second(w.m.RotateToken(ctx, "alice", iss.Record.ID, nil)) })
	got := count(errs, manage.ErrConflict, manage.ErrInvalid)
	if got["ok"] != 1 || got["ok"]+got[manage.ErrConflict.Error()]+got[manage.ErrInvalid.Error()] != callers {
		t.Fatalf("%d rotations at once: %v, want one success and the rest refused", callers, got)
	}
	tokens, err := w.m.Tokens(ctx, "alice")
	must(t, err)
	old, err := w.m.Token(ctx, "alice", iss.Record.ID)
	must(t, err)
	if len(tokens) != 2 || old.ReplacedBy == "" {
		t.Fatalf("after the rotations alice holds %d tokens (want the old one and one successor), old replaced by %q", len(tokens), old.ReplacedBy)
	}
}

func testDeletedUserLeavesNothing(t *testing.T, w *world) {
	ctx := context.Background()
	str := func(s string) *string { return &s }
	// One mapping surely there before the deletion: the sweep must take it.
	must(t, second(w.m.CreateIdentity(ctx, manage.IdentityRequest{Name: "bob-first", Principal: "spiffe://mesh.test/ns/bob/sa/first", User: "bob", Group: "ops"})))
	errs := together(func(i int) error {
		switch {
		case i == callers/2:
			return w.m.DeleteUser(ctx, "bob")
		case i%4 == 3:
			return second(w.m.CreateIdentity(ctx, manage.IdentityRequest{Name: fmt.Sprint("m", i), Principal: fmt.Sprint("spiffe://mesh.test/ns/bob/sa/w", i), User: "bob", Group: "ops"}))
		case i%3 == 0:
			_, _, err := w.m.IssueAPIToken(ctx, "bob")
			return err
		case i%3 == 1:
			return second(w.m.CreateCredential(ctx, "bob", manage.CredentialPatch{Name: str(fmt.Sprint("c", i)), Provider: str("openai"), Key: str("sk-bob-0123456789")}))
		}
		return second(w.m.CreateToken(ctx, manage.TokenRequest{User: "bob", Group: "ops", Name: fmt.Sprint("t", i)}))
	})
	if errs[callers/2] != nil {
		t.Fatalf("DeleteUser: %v", errs[callers/2])
	}
	t.Logf("writes during the deletion: %v", count(errs, record.ErrNotFound, manage.ErrInvalid, manage.ErrLimit))
	// bob comes back under the same name: he inherits nothing.
	must(t, second(w.m.CreateUser(ctx, record.User{Name: "bob", Groups: []string{"ops"}})))
	tokens, err := w.m.Tokens(ctx, "")
	must(t, err)
	for _, tk := range tokens {
		if tk.User == "bob" {
			t.Errorf("token %s of the deleted bob survived (%s)", tk.ID, tk.Name)
		}
	}
	creds, err := w.m.Credentials(ctx, "bob")
	must(t, err)
	if len(creds) > 0 {
		t.Errorf("%d credentials of the deleted bob survived", len(creds))
	}
	assertNoAPITokens(t, w, "bob")
	ids, err := w.m.Identities(ctx)
	must(t, err)
	for _, id := range ids {
		if id.User == "bob" {
			t.Errorf("identity %s of the deleted bob survived", id.Name)
		}
	}
}

// testOneMappingPerPrincipal: of many mappings of one principal created at
// once, exactly one is stored.
func testOneMappingPerPrincipal(t *testing.T, w *world) {
	ctx := context.Background()
	errs := together(func(i int) error {
		return second(w.m.CreateIdentity(ctx, manage.IdentityRequest{Name: fmt.Sprint("m", i), Principal: "spiffe://mesh.test/ns/pay/*", User: "alice", Group: "eng"}))
	})
	if got := count(errs, record.ErrExists); got["ok"] != 1 || got[record.ErrExists.Error()] != callers-1 {
		t.Fatalf("%d mappings of one principal at once: %v, want one stored", callers, got)
	}
	ids, err := w.m.Identities(ctx)
	must(t, err)
	if len(ids) != 1 {
		t.Fatalf("%d mappings stored", len(ids))
	}
}

// testOneMappingAcrossUsers: of many mappings of one principal created at
// once, each to another user (so that no one user's owned write orders
// them), exactly one is stored.
func testOneMappingAcrossUsers(t *testing.T, w *world) {
	ctx := context.Background()
	for i := range callers {
		must(t, second(w.m.CreateUser(ctx, record.User{Name: fmt.Sprint("u", i), Groups: []string{"eng"}})))
	}
	errs := together(func(i int) error {
		return second(w.m.CreateIdentity(ctx, manage.IdentityRequest{Name: fmt.Sprint("m", i), Principal: "spiffe://mesh.test/ns/pay/sa/api", User: fmt.Sprint("u", i), Group: "eng"}))
	})
	ids, err := w.m.Identities(ctx)
	must(t, err)
	if got := count(errs, record.ErrExists); got["ok"] != 1 || got[record.ErrExists.Error()] != callers-1 || len(ids) != 1 {
		t.Fatalf("%d mappings of one principal to %d users at once: %v, %d stored; want one", callers, callers, got, len(ids))
	}
}

// assertNoAPITokens checks that user holds no management token, by trying
// every id a token issued now could collide with: none, so through the
// store's listing where it has one.
func assertNoAPITokens(t *testing.T, w *world, user string) {
	t.Helper()
	type lister interface {
		APITokens(ctx context.Context) ([]*record.APIToken, error)
	}
	l, ok := w.st.(lister)
	if !ok {
		t.Fatalf("%T lists no management tokens", w.st)
	}
	all, err := l.APITokens(context.Background())
	must(t, err)
	for _, a := range all {
		if a.User == user {
			t.Errorf("management token %s of the deleted %s survived", a.ID, user)
		}
	}
}

func testCapHolds(t *testing.T, w *world) {
	ctx := context.Background()
	errs := together(func(i int) error {
		return second(w.m.CreateToken(ctx, manage.TokenRequest{User: "alice", Group: "eng", Name: fmt.Sprint("t", i)}))
	})
	got := count(errs, manage.ErrLimit)
	tokens, err := w.m.Tokens(ctx, "alice")
	must(t, err)
	if got["ok"] == 0 || got["ok"] > 5 || got["ok"]+got[manage.ErrLimit.Error()] != callers || len(tokens) != got["ok"] {
		t.Fatalf("%d creations at once under a cap of 5: %v, %d stored", callers, got, len(tokens))
	}
}

func testNameUnique(t *testing.T, w *world) {
	ctx := context.Background()
	errs := together(func(int) error {
		return second(w.m.CreateToken(ctx, manage.TokenRequest{User: "bob", Group: "eng", Name: "same"}))
	})
	got := count(errs, record.ErrExists)
	tokens, err := w.m.Tokens(ctx, "bob")
	must(t, err)
	if got["ok"] != 1 || got[record.ErrExists.Error()] != callers-1 || len(tokens) != 1 {
		t.Fatalf("%d creations of one name at once: %v, %d stored", callers, got, len(tokens))
	}
}
