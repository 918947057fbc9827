package vault_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
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
	// read is true for gets and lists: an invalid name is not found too.
	read bool
	// valid is the rule the open name or id must follow.
	valid func(string) bool
	do    func(ctx context.Context, st *vault.Store, name string) error
	// may lists the records the method may change for a valid name, the
	// change marker aside: exact paths, or folders ending in "/".
	may func(name string) []string
}

func validName(n string) bool { return record.ValidateName("x", n) == nil }

// nameOps covers every public method that puts a name or id into a path,
// each name or id in its own entry. They act on the fixture.
func nameOps() map[string]nameOp {
	type doFunc = func(context.Context, *vault.Store, string) error
	read := func(valid func(string) bool, f doFunc) nameOp { return nameOp{read: true, valid: valid, do: f} }
	write := func(valid func(string) bool, f doFunc, may func(string) []string) nameOp {
		return nameOp{valid: valid, do: f, may: may}
	}
	paths := func(format ...string) func(string) []string {
		return func(n string) []string {
			out := make([]string, len(format))
			for i, f := range format {
				out[i] = strings.ReplaceAll(f, "{}", n)
			}
			return out
		}
	}
	now := time.Now()
	cred := func(user, id string) *record.Credential {
		return &record.Credential{ID: id, User: user, Name: "x", Provider: "openai", Key: "sk-x", Created: now}
	}
	// update is a read-modify-write: an invalid name is missing too.
	update := func(valid func(string) bool, f doFunc, may func(string) []string) nameOp {
		return nameOp{read: true, valid: valid, do: f, may: may}
	}
	const newToken, newAPIToken = "DDDDDDDDDDDDDDDD", "CCCCCCCCCCCCCCCC"
	return map[string]nameOp{
		"CreateUser": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.CreateUser(ctx, &record.User{Name: n})
		}, paths("users/{}")),
		"CreateGroup": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.CreateGroup(ctx, &record.Group{Name: n})
		}, paths("groups/{}")),
		"UpdateUser": update(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return second(st.UpdateUser(ctx, n, func(*record.User) error { return nil }))
		}, paths("users/{}")),
		"UpdateGroup": update(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return second(st.UpdateGroup(ctx, n, func(*record.Group) error { return nil }))
		}, paths("groups/{}")),
		"UpdateToken": update(token.ValidID, func(ctx context.Context, st *vault.Store, n string) error {
			return second(st.UpdateToken(ctx, n, func(*record.Token) error { return nil }))
		}, paths("tokens/{}")),
		"UpdateAPIToken": update(token.ValidID, func(ctx context.Context, st *vault.Store, n string) error {
			return second(st.UpdateAPIToken(ctx, n, func(*record.APIToken) error { return nil }))
		}, paths("api-tokens/{}")),
		"CreateToken user": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.CreateToken(ctx, &record.Token{ID: newToken, User: n, Group: fixGroup}, func(*record.User, []*record.Token) error { return nil })
		}, paths("tokens/"+newToken, "users/{}/tokens/"+newToken, "users/{}")),
		"CreateAPIToken user": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.CreateAPIToken(ctx, &record.APIToken{ID: newAPIToken, User: n}, func(*record.User) error { return nil })
		}, paths("api-tokens/"+newAPIToken, "users/{}")),
		"Token":       read(token.ValidID, func(ctx context.Context, st *vault.Store, n string) error { return second(st.Token(ctx, n)) }),
		"User":        read(validName, func(ctx context.Context, st *vault.Store, n string) error { return second(st.User(ctx, n)) }),
		"Group":       read(validName, func(ctx context.Context, st *vault.Store, n string) error { return second(st.Group(ctx, n)) }),
		"Provider":    read(validName, func(ctx context.Context, st *vault.Store, n string) error { return second(st.Provider(ctx, n)) }),
		"APIToken":    read(token.ValidID, func(ctx context.Context, st *vault.Store, n string) error { return second(st.APIToken(ctx, n)) }),
		"UserTokens":  read(validName, func(ctx context.Context, st *vault.Store, n string) error { return second(st.UserTokens(ctx, n)) }),
		"Credentials": read(validName, func(ctx context.Context, st *vault.Store, n string) error { return second(st.Credentials(ctx, n)) }),
		"Credential user": read(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return second(st.Credential(ctx, n, fixCredential))
		}),
		"Credential id": read(record.ValidCredentialID, func(ctx context.Context, st *vault.Store, n string) error {
			return second(st.Credential(ctx, fixUser, n))
		}),
		"PutGroup": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutGroup(ctx, &record.Group{Name: n})
		},
			paths("groups/{}")),
		"DeleteGroup": write(validName, func(ctx context.Context, st *vault.Store, n string) error { return st.DeleteGroup(ctx, n) },
			paths("groups/{}")),
		"PutUser": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutUser(ctx, &record.User{Name: n})
		},
			paths("users/{}")),
		"DeleteUser": write(validName, func(ctx context.Context, st *vault.Store, n string) error { return st.DeleteUser(ctx, n) },
			func(n string) []string {
				may := []string{"users/" + n, "users/" + n + "/"}
				if n == fixUser {
					may = append(may, "tokens/"+fixToken, "api-tokens/"+fixAPIToken)
				}
				return may
			}),
		"DeleteToken": write(token.ValidID, func(ctx context.Context, st *vault.Store, n string) error { return st.DeleteToken(ctx, n) },
			paths("tokens/{}", "users/"+fixUser+"/tokens/{}")),
		"DeleteCredential user": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.DeleteCredential(ctx, n, fixCredential)
		},
			// The owner's record is rewritten with check-and-set, as a
			// fence against the owner's deletion (see ownedWrite).
			paths("users/{}/credentials/"+fixCredential, "users/{}")),
		"DeleteCredential id": write(record.ValidCredentialID, func(ctx context.Context, st *vault.Store, n string) error {
			return st.DeleteCredential(ctx, fixUser, n)
		},
			paths("users/"+fixUser+"/credentials/{}", "users/"+fixUser)),
		"PutCredential user": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutCredential(ctx, cred(n, "c2"))
		},
			paths("users/{}/credentials/c2", "users/{}")),
		"PutCredential id": write(record.ValidCredentialID, func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutCredential(ctx, cred(fixUser, n))
		},
			paths("users/"+fixUser+"/credentials/{}", "users/"+fixUser)),
		"PutAPIToken id": write(token.ValidID, func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutAPIToken(ctx, &record.APIToken{ID: n, User: fixUser})
		}, paths("api-tokens/{}")),
		"PutAPIToken user": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutAPIToken(ctx, &record.APIToken{ID: newAPIToken, User: n})
		}, paths("api-tokens/"+newAPIToken)),
		"PutToken id": write(token.ValidID, func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutToken(ctx, &record.Token{ID: n, User: fixUser, Group: fixGroup})
		}, paths("tokens/{}", "users/"+fixUser+"/tokens/{}")),
		"PutToken user (index)": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutToken(ctx, &record.Token{ID: newToken, User: n, Group: fixGroup})
		}, paths("tokens/"+newToken, "users/{}/tokens/"+newToken)),
		"Identity": read(validName, func(ctx context.Context, st *vault.Store, n string) error { return second(st.Identity(ctx, n)) }),
		"CreateIdentity name": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.CreateIdentity(ctx, identity(n, fixUser, fixGroup), anyIdentity)
		}, paths("identities/{}", "identity-principals/", "users/"+fixUser)),
		"CreateIdentity user": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.CreateIdentity(ctx, identity("new-identity", n, fixGroup), anyIdentity)
		}, paths("identities/new-identity", "identity-principals/", "users/{}")),
		"CreateIdentity group": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.CreateIdentity(ctx, identity("new-identity", fixUser, n), anyIdentity)
		}, paths("identities/new-identity", "identity-principals/", "users/"+fixUser)),
		"UpdateIdentity": update(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return second(st.UpdateIdentity(ctx, n, func(*record.Identity) error { return nil }))
		}, paths("identities/{}")),
		"DeleteIdentity": write(validName, func(ctx context.Context, st *vault.Store, n string) error { return st.DeleteIdentity(ctx, n) },
			paths("identities/{}")),
		"PutToken group": write(validName, func(ctx context.Context, st *vault.Store, n string) error {
			return st.PutToken(ctx, &record.Token{ID: newToken, User: fixUser, Group: n})
		}, paths("tokens/"+newToken, "users/"+fixUser+"/tokens/"+newToken)),
	}
}

// identity is a principal mapping of user in group named name.
func identity(name, user, group string) *record.Identity {
	return &record.Identity{Name: name, Principal: "spiffe://td/ns/x/sa/" + name, User: user, Group: group}
}

// anyIdentity is a CreateIdentity check that accepts everything.
func anyIdentity(*record.User, []*record.Identity) error { return nil }

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
