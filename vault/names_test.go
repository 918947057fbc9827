package vault_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/vault"
	"github.com/keyward/keyward/vault/vaulttest"
)

// Fixture records every name test starts from.
const (
	fixUser       = "alice"
	fixGroup      = "eng"
	fixToken      = "AAAAAAAAAAAAAAAA"
	fixAPIToken   = "BBBBBBBBBBBBBBBB"
	fixCredential = "c1"
)

// seedFixture writes one record of each kind, a provider among them, so
// that a path trick has something to hit.
func seedFixture(t testing.TB, srv *vaulttest.Server, st *vault.Store) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	cred := &record.Credential{ID: fixCredential, User: fixUser, Name: "mine", Provider: "openai", Key: "sk-fixture-key", Created: now}
	for _, err := range []error{
		st.PutGroup(ctx, &record.Group{Name: fixGroup}),
		st.PutUser(ctx, &record.User{Name: fixUser, Role: record.RoleAdmin, Groups: []string{fixGroup}}),
		st.PutToken(ctx, &record.Token{ID: fixToken, User: fixUser, Group: fixGroup, Created: now}),
		st.PutAPIToken(ctx, &record.APIToken{ID: fixAPIToken, User: fixUser, Created: now}),
		st.PutCredential(ctx, cred),
		st.EnsureSigningKey(ctx),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.Client(t, srv.RootToken).KVv2("keyward").Put(ctx, "providers/openai", map[string]any{"kind": "openai", "key_a": "sk-a"}); err != nil {
		t.Fatal(err)
	}
}

// nameOp is one public store method with one name or id left open.
type nameOp struct {
	read bool
	do   func(ctx context.Context, st *vault.Store, name string) error
}

// nameOps covers every public method that puts a name or id into a path,
// each name or id in its own entry.
func nameOps() map[string]nameOp {
	read := func(f func(context.Context, *vault.Store, string) error) nameOp { return nameOp{read: true, do: f} }
	write := func(f func(context.Context, *vault.Store, string) error) nameOp { return nameOp{do: f} }
	now := time.Now()
	cred := func(user, id string) *record.Credential {
		return &record.Credential{ID: id, User: user, Name: "x", Provider: "openai", Key: "sk-x", Created: now}
	}
	return map[string]nameOp{
		"Token":       read(func(ctx context.Context, st *vault.Store, n string) error { return second(st.Token(ctx, n)) }),
		"User":        read(func(ctx context.Context, st *vault.Store, n string) error { return second(st.User(ctx, n)) }),
		"Group":       read(func(ctx context.Context, st *vault.Store, n string) error { return second(st.Group(ctx, n)) }),
		"Provider":    read(func(ctx context.Context, st *vault.Store, n string) error { return second(st.Provider(ctx, n)) }),
		"APIToken":    read(func(ctx context.Context, st *vault.Store, n string) error { return second(st.APIToken(ctx, n)) }),
		"UserTokens":  read(func(ctx context.Context, st *vault.Store, n string) error { return second(st.UserTokens(ctx, n)) }),
		"Credentials": read(func(ctx context.Context, st *vault.Store, n string) error { return second(st.Credentials(ctx, n)) }),
		"Credential user": read(func(ctx context.Context, st *vault.Store, n string) error {
			return second(st.Credential(ctx, n, fixCredential))
		}),
		"Credential id": read(func(ctx context.Context, st *vault.Store, n string) error {
			return second(st.Credential(ctx, fixUser, n))
		}),
		"PutGroup": write(func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutGroup(ctx, &record.Group{Name: n})
		}),
		"DeleteGroup": write(func(ctx context.Context, st *vault.Store, n string) error { return st.DeleteGroup(ctx, n) }),
		"PutUser": write(func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutUser(ctx, &record.User{Name: n})
		}),
		"DeleteUser":  write(func(ctx context.Context, st *vault.Store, n string) error { return st.DeleteUser(ctx, n) }),
		"DeleteToken": write(func(ctx context.Context, st *vault.Store, n string) error { return st.DeleteToken(ctx, n) }),
		"DeleteCredential user": write(func(ctx context.Context, st *vault.Store, n string) error {
			return st.DeleteCredential(ctx, n, fixCredential)
		}),
		"DeleteCredential id": write(func(ctx context.Context, st *vault.Store, n string) error {
			return st.DeleteCredential(ctx, fixUser, n)
		}),
		"PutCredential user": write(func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutCredential(ctx, cred(n, "c2"))
		}),
		"PutCredential id": write(func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutCredential(ctx, cred(fixUser, n))
		}),
		"PutAPIToken id": write(func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutAPIToken(ctx, &record.APIToken{ID: n, User: fixUser})
		}),
		"PutAPIToken user": write(func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutAPIToken(ctx, &record.APIToken{ID: "CCCCCCCCCCCCCCCC", User: n})
		}),
		"PutToken id": write(func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutToken(ctx, &record.Token{ID: n, User: fixUser, Group: fixGroup})
		}),
		"PutToken user (index)": write(func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutToken(ctx, &record.Token{ID: "DDDDDDDDDDDDDDDD", User: n, Group: fixGroup})
		}),
		"PutToken group": write(func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutToken(ctx, &record.Token{ID: "DDDDDDDDDDDDDDDD", User: fixUser, Group: n})
		}),
	}
}

// trickNames are names and ids that no rule accepts: the reported path
// tricks, their encodings, separators, and a whole token where an id
// belongs.
var trickNames = []string{
	"", ".", "..", "../groups/eng", "..%2Fgroups%2Feng", "../tokens/" + fixToken, "..%2Ftokens%2F" + fixToken,
	"../../providers/openai", "eng/", "a/b", "%2e%2e", "a b", "a\nb", "a\x00b", "é",
	"kw_W643FQxPzZ67skCtAQFtLOynJMXsbIpCoR_2CcPodMIxkQdzNZ9VMmIhP7Rmqidl",
	strings.Repeat("x", 65),
}

// checkNameError wants err to be record.ErrInvalidName, also
// record.ErrNotFound exactly for reads, and never to quote the name.
func checkNameError(t *testing.T, op nameOp, name string, err error) {
	t.Helper()
	if !errors.Is(err, record.ErrInvalidName) {
		t.Fatalf("%q: %v, want record.ErrInvalidName", name, err)
	}
	if got := errors.Is(err, record.ErrNotFound); got != op.read {
		t.Fatalf("%q: %v: errors.Is(ErrNotFound) = %v, want %v (reads only)", name, err, got, op.read)
	}
	if len(name) >= 6 && strings.Contains(err.Error(), name) {
		t.Fatalf("the error quotes the invalid name: %v", err)
	}
}

// TestNamesNeverReachVault: every public method refuses every trick name
// with record.ErrInvalidName before sending any request, and nothing in
// the mount changes.
func TestNamesNeverReachVault(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	st := newStore(t, srv, vault.Config{})
	seedFixture(t, srv, st)
	root := srv.Client(t, srv.RootToken)
	before := vaulttest.Snapshot(t, root, "keyward")
	ctx := t.Context()
	for opName, op := range nameOps() {
		t.Run(opName, func(t *testing.T) {
			for _, name := range trickNames {
				sent := st.Requests()
				err := op.do(ctx, st, name)
				checkNameError(t, op, name, err)
				if n := st.Requests() - sent; n != 0 {
					t.Fatalf("%q: %d requests sent to Vault, want none", name, n)
				}
			}
		})
	}
	if after := vaulttest.Snapshot(t, root, "keyward"); !maps.Equal(before, after) {
		t.Fatalf("the mount changed:\nbefore %v\nafter  %v", before, after)
	}
}
