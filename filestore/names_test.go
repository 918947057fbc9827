package filestore_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// nameOp is one Store method called with a name or id from the test.
type nameOp struct {
	name string
	// write is set for writes and deletes; a read changes nothing.
	write bool
	// update is set for read-modify-writes: an invalid name is a missing
	// record too, as for a read.
	update bool
	call   func(ctx context.Context, st *filestore.Store) error
	// valid reports whether the name given is valid where it goes.
	valid bool
	// may reports whether the call may change the record key, whose
	// owner is owner (for tokens, credentials and API tokens).
	may func(key, owner string) bool
}

// keyIs allows exactly one key.
func keyIs(want string) func(string, string) bool {
	return func(key, _ string) bool { return key == want }
}

// nameOps returns every Store method that takes a name or id, given n
// where a name or id goes, and the full store's own records elsewhere.
func nameOps(f *fullStore, n string) []nameOp {
	valid := func(kind string) bool { return record.ValidateName(kind, n) == nil }
	user, group, prov, tok, cred := valid("user"), valid("group"), valid("provider"), token.ValidID(n), record.ValidCredentialID(n)
	newTok := func(id, user, group string) *record.Token {
		return &record.Token{ID: id, Hash: f.tok.Hash, User: user, Group: group, Created: time.Unix(1, 0)}
	}
	newCred := func(id, user, name, provider string) *record.Credential {
		return &record.Credential{ID: id, User: user, Name: name, Provider: provider, Key: "k", Created: time.Unix(1, 0)}
	}
	api := func(id, user string) *record.APIToken { return &record.APIToken{ID: id, User: user, Hash: f.tok.Hash} }
	const other = "ZZZZZZZZZZZZZZZZ" // a valid id the store does not hold
	read := func(name string, valid bool, get func(context.Context, *filestore.Store) error) nameOp {
		return nameOp{name: name, call: get, valid: valid}
	}
	write := func(name string, valid bool, may func(string, string) bool, call func(context.Context, *filestore.Store) error) nameOp {
		return nameOp{name: name, write: true, call: call, valid: valid, may: may}
	}
	update := func(name string, valid bool, may func(string, string) bool, call func(context.Context, *filestore.Store) error) nameOp {
		return nameOp{name: name, write: true, update: true, call: call, valid: valid, may: may}
	}
	accept := func(*record.User, []*record.Token) error { return nil }
	return []nameOp{
		write("CreateUser", user, keyIs("user/"+n), func(ctx context.Context, st *filestore.Store) error { return st.CreateUser(ctx, &record.User{Name: n}) }),
		write("CreateGroup", group, keyIs("group/"+n), func(ctx context.Context, st *filestore.Store) error {
			return st.CreateGroup(ctx, &record.Group{Name: n})
		}),
		write("CreateToken user", user, keyIs("token/"+other), func(ctx context.Context, st *filestore.Store) error {
			return st.CreateToken(ctx, newTok(other, n, "team"), accept)
		}),
		write("CreateAPIToken user", user, keyIs("api/"+other), func(ctx context.Context, st *filestore.Store) error {
			return st.CreateAPIToken(ctx, api(other, n), func(*record.User) error { return nil })
		}),
		write("SaveCredential id", cred, keyIs("credential/ann/"+n), func(ctx context.Context, st *filestore.Store) error {
			return st.SaveCredential(ctx, newCred(n, "ann", "mine", "openai"), func(*record.User, []*record.Credential) error { return nil })
		}),
		update("UpdateUser", user, keyIs("user/"+n), func(ctx context.Context, st *filestore.Store) error {
			_, err := st.UpdateUser(ctx, n, func(*record.User) error { return nil })
			return err
		}),
		update("UpdateGroup", group, keyIs("group/"+n), func(ctx context.Context, st *filestore.Store) error {
			_, err := st.UpdateGroup(ctx, n, func(*record.Group) error { return nil })
			return err
		}),
		update("UpdateToken", tok, keyIs("token/"+n), func(ctx context.Context, st *filestore.Store) error {
			_, err := st.UpdateToken(ctx, n, func(*record.Token) error { return nil })
			return err
		}),
		update("UpdateAPIToken", tok, keyIs("api/"+n), func(ctx context.Context, st *filestore.Store) error {
			_, err := st.UpdateAPIToken(ctx, n, func(*record.APIToken) error { return nil })
			return err
		}),
		write("PutProvider", prov, keyIs("provider/"+n), func(ctx context.Context, st *filestore.Store) error {
			return st.PutProvider(ctx, n, &filestore.ProviderData{Kind: record.KindOpenAI})
		}),
		write("DeleteProvider", prov, keyIs("provider/"+n), func(ctx context.Context, st *filestore.Store) error { return st.DeleteProvider(ctx, n) }),
		write("PutGroup", group, keyIs("group/"+n), func(ctx context.Context, st *filestore.Store) error { return st.PutGroup(ctx, &record.Group{Name: n}) }),
		write("PutGroup providers", prov, keyIs("group/team"), func(ctx context.Context, st *filestore.Store) error {
			return st.PutGroup(ctx, &record.Group{Name: "team", Providers: []string{"openai", n}})
		}),
		write("DeleteGroup", group, keyIs("group/"+n), func(ctx context.Context, st *filestore.Store) error { return st.DeleteGroup(ctx, n) }),
		write("PutUser", user, keyIs("user/"+n), func(ctx context.Context, st *filestore.Store) error { return st.PutUser(ctx, &record.User{Name: n}) }),
		write("PutUser groups", group, keyIs("user/ann"), func(ctx context.Context, st *filestore.Store) error {
			return st.PutUser(ctx, &record.User{Name: "ann", Groups: []string{"team", n}})
		}),
		write("DeleteUser", user, func(key, owner string) bool { return key == "user/"+n || owner == n },
			func(ctx context.Context, st *filestore.Store) error { return st.DeleteUser(ctx, n) }),
		write("PutToken", tok, keyIs("token/"+n), func(ctx context.Context, st *filestore.Store) error {
			return st.PutToken(ctx, newTok(n, "ann", "team"))
		}),
		write("PutToken user", user, keyIs("token/"+other), func(ctx context.Context, st *filestore.Store) error {
			return st.PutToken(ctx, newTok(other, n, "team"))
		}),
		write("PutToken group", group, keyIs("token/"+other), func(ctx context.Context, st *filestore.Store) error { return st.PutToken(ctx, newTok(other, "ann", n)) }),
		write("PutToken replaced_by", tok || n == "", keyIs("token/"+other), func(ctx context.Context, st *filestore.Store) error {
			t := newTok(other, "ann", "team")
			t.ReplacedBy = n
			return st.PutToken(ctx, t)
		}),
		write("DeleteToken", tok, keyIs("token/"+n), func(ctx context.Context, st *filestore.Store) error { return st.DeleteToken(ctx, n) }),
		write("PutCredential id", cred, keyIs("credential/ann/"+n), func(ctx context.Context, st *filestore.Store) error {
			return st.PutCredential(ctx, newCred(n, "ann", "c", "openai"))
		}),
		write("PutCredential user", user, keyIs("credential/"+n+"/c1"), func(ctx context.Context, st *filestore.Store) error {
			return st.PutCredential(ctx, newCred("c1", n, "c", "openai"))
		}),
		write("PutCredential name", valid("credential"), keyIs("credential/ann/c1"), func(ctx context.Context, st *filestore.Store) error {
			return st.PutCredential(ctx, newCred("c1", "ann", n, "openai"))
		}),
		write("PutCredential provider", prov, keyIs("credential/ann/c1"), func(ctx context.Context, st *filestore.Store) error {
			return st.PutCredential(ctx, newCred("c1", "ann", "c", n))
		}),
		write("DeleteCredential id", cred, keyIs("credential/ann/"+n), func(ctx context.Context, st *filestore.Store) error { return st.DeleteCredential(ctx, "ann", n) }),
		write("DeleteCredential user", user, keyIs("credential/"+n+"/"+f.cred.ID), func(ctx context.Context, st *filestore.Store) error {
			return st.DeleteCredential(ctx, n, f.cred.ID)
		}),
		write("PutAPIToken id", tok, keyIs("api/"+n), func(ctx context.Context, st *filestore.Store) error { return st.PutAPIToken(ctx, api(n, "ann")) }),
		write("PutAPIToken user", user, keyIs("api/"+other), func(ctx context.Context, st *filestore.Store) error { return st.PutAPIToken(ctx, api(other, n)) }),
		read("Token", tok, func(ctx context.Context, st *filestore.Store) error { _, err := st.Token(ctx, n); return err }),
		read("User", user, func(ctx context.Context, st *filestore.Store) error { _, err := st.User(ctx, n); return err }),
		read("Group", group, func(ctx context.Context, st *filestore.Store) error { _, err := st.Group(ctx, n); return err }),
		read("Provider", prov, func(ctx context.Context, st *filestore.Store) error { _, err := st.Provider(ctx, n); return err }),
		read("UserTokens", user, func(ctx context.Context, st *filestore.Store) error { _, err := st.UserTokens(ctx, n); return err }),
		read("Credential id", cred, func(ctx context.Context, st *filestore.Store) error {
			_, err := st.Credential(ctx, "ann", n)
			return err
		}),
		read("Credential user", user, func(ctx context.Context, st *filestore.Store) error {
			_, err := st.Credential(ctx, n, f.cred.ID)
			return err
		}),
		read("Credentials", user, func(ctx context.Context, st *filestore.Store) error { _, err := st.Credentials(ctx, n); return err }),
		read("APIToken", tok, func(ctx context.Context, st *filestore.Store) error { _, err := st.APIToken(ctx, n); return err }),
		read("Identity", valid("identity"), func(ctx context.Context, st *filestore.Store) error { _, err := st.Identity(ctx, n); return err }),
		write("CreateIdentity name", valid("identity"), keyIs("identity/"+n), func(ctx context.Context, st *filestore.Store) error {
			return st.CreateIdentity(ctx, ident(n, "ann", "team"), anyIdentity)
		}),
		write("CreateIdentity user", user, keyIs("identity/new-identity"), func(ctx context.Context, st *filestore.Store) error {
			return st.CreateIdentity(ctx, ident("new-identity", n, "team"), anyIdentity)
		}),
		write("CreateIdentity group", group, keyIs("identity/new-identity"), func(ctx context.Context, st *filestore.Store) error {
			return st.CreateIdentity(ctx, ident("new-identity", "ann", n), anyIdentity)
		}),
		update("UpdateIdentity", valid("identity"), keyIs("identity/"+n), func(ctx context.Context, st *filestore.Store) error {
			_, err := st.UpdateIdentity(ctx, n, func(*record.Identity) error { return nil })
			return err
		}),
		write("DeleteIdentity", valid("identity"), keyIs("identity/"+n), func(ctx context.Context, st *filestore.Store) error { return st.DeleteIdentity(ctx, n) }),
	}
}

// ident is a principal mapping of user in group named name.
func ident(name, user, group string) *record.Identity {
	return &record.Identity{Name: name, Principal: "spiffe://td/ns/x/sa/w", User: user, Group: group}
}

// anyIdentity is a CreateIdentity check that accepts everything.
func anyIdentity(*record.User, []*record.Identity) error { return nil }

// storedRecord is one record as the files hold it.
type storedRecord struct {
	raw   string
	owner string // the user of a token, credential or API token
}

// storedRecords reads every record of the store at f's paths as the files
// hold it, by "kind/name": provider/, group/, user/, token/ID,
// credential/USER/ID, api/ID, and the signing keys.
func storedRecords(t *testing.T, f *fullStore) map[string]storedRecord {
	t.Helper()
	st, err := filestore.Open(filestore.Options{Path: f.paths["store"], Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := st.Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]storedRecord{}
	add := func(key, owner string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out[key] = storedRecord{string(b), owner}
	}
	for n, p := range d.Providers {
		add("provider/"+n, "", p)
	}
	for n, g := range d.Groups {
		add("group/"+n, "", g)
	}
	for n, u := range d.Users {
		add("user/"+n, "", u)
	}
	for n, i := range d.Identities {
		add("identity/"+n, i.User, i)
	}
	add("signing keys", "", d.SigningKeys)
	for id, td := range d.Tokens.All() {
		add("token/"+id, td.User, td)
	}
	// Credentials and API tokens are only reached through their files.
	for _, file := range []struct{ path, prefix string }{{f.paths["credentials"], "credential/"}, {f.paths["api"], "api/"}} {
		raw, err := os.ReadFile(file.path)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Scan() // the header
		for sc.Scan() {
			var l struct{ ID, User string }
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatal(err)
			}
			key := file.prefix + l.ID
			if file.prefix == "credential/" {
				key = file.prefix + l.User + "/" + l.ID
			}
			out[key] = storedRecord{sc.Text(), l.User}
		}
	}
	return out
}

// checkNameOp calls o on f's Store, checks its answer to the name it was
// given, and that it changed no record but those it may.
func checkNameOp(t *testing.T, f *fullStore, o nameOp) {
	t.Helper()
	before := storedRecords(t, f)
	err := o.call(t.Context(), f.st)
	switch {
	case !o.valid && !errors.Is(err, record.ErrInvalidName):
		t.Errorf("%s: %v, want record.ErrInvalidName", o.name, err)
	case !o.valid && o.write && !o.update && errors.Is(err, record.ErrNotFound):
		t.Errorf("%s: %v: an invalid name is taken for a missing record", o.name, err)
	case !o.valid && (!o.write || o.update) && !errors.Is(err, record.ErrNotFound):
		t.Errorf("%s: %v, want record.ErrNotFound too: an invalid name names nothing", o.name, err)
	case o.valid && errors.Is(err, record.ErrInvalidName):
		t.Errorf("%s: %v for a valid name", o.name, err)
	}
	after := storedRecords(t, f)
	for key, r := range before {
		if a, ok := after[key]; (!ok || a != r) && !o.allows(key, r.owner) {
			t.Errorf("%s changed or removed %s", o.name, key)
		}
	}
	for key, r := range after {
		if _, ok := before[key]; !ok && !o.allows(key, r.owner) {
			t.Errorf("%s added %s", o.name, key)
		}
	}
}

func (o nameOp) allows(key, owner string) bool {
	return o.write && o.valid && o.may(key, owner)
}

// TestInvalidNames calls every method that takes a name or id with names
// that break the rules: each refuses it as such and changes nothing.
// ("-ann" is a valid credential id, and is stored as one.)
func TestInvalidNames(t *testing.T) {
	for _, n := range []string{"", "bad name", "../ann", "ann/../../etc", "-ann", "a\x00b", "ann\n", "ünï", "a%2Fb", string(make([]byte, 70))} {
		f := newFullStore(t)
		for _, o := range nameOps(f, n) {
			checkNameOp(t, f, o)
		}
	}
}

// FuzzStoreNamesLive calls every method that takes a name or id with an
// arbitrary one: an invalid one is refused as such, and nothing but the
// named record (and, deleting a user, what the user owns) ever changes.
//
// Its name ends in Live: every run writes and reads a whole store on disk,
// so scripts/test.sh runs it with the smaller count ($LIVE_FUZZTIME).
func FuzzStoreNamesLive(f *testing.F) {
	for _, s := range []string{"ann", "team", "openai", "bob", "new-group", "ZZZZZZZZZZZZZZZZ", "AAAAAAAAAAAAAAAA", "c1", "", "a b", "../x", "Ann", "x.y_z-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, n string) {
		fs := newFullStore(t)
		for _, o := range nameOps(fs, n) {
			checkNameOp(t, fs, o)
		}
	})
}
