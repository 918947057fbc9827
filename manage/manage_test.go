package manage_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/internal/storetest"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
)

var (
	_ manage.Store = (*filestore.Store)(nil)
	_ manage.Store = storetest.VaultStore{}
)

// clock is a settable clock for a Manager.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// world is a Manager over st seeded with groups eng, ops and off
// (disabled), users alice (eng), bob (eng, ops) and carol (disabled, eng),
// and an openai provider.
type world struct {
	m     *manage.Manager
	st    manage.Store
	clock *clock
}

func seed(t testing.TB, st manage.Store, opts manage.Options) *world {
	t.Helper()
	w := &world{st: st, clock: &clock{}}
	w.clock.ns.Store(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	opts.Now = w.clock.now
	m, err := manage.New(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	w.m = m
	ctx := context.Background()
	must(t, st.EnsureSigningKey(ctx))
	for _, g := range []record.Group{{Name: "eng"}, {Name: "ops"}, {Name: "off", Disabled: true}} {
		must(t, second(m.CreateGroup(ctx, g)))
	}
	for _, u := range []record.User{
		{Name: "alice", Groups: []string{"eng"}},
		{Name: "bob", Groups: []string{"eng", "ops"}},
		{Name: "carol", Groups: []string{"eng"}, Disabled: true},
	} {
		must(t, second(m.CreateUser(ctx, u)))
	}
	return w
}

func fileWorld(t testing.TB, opts manage.Options) *world {
	st := storetest.File(t, func(k string) string { return map[string]string{"OPENAI_KEY": "sk-test"}[k] })
	must(t, st.PutProvider(context.Background(), "openai", &filestore.ProviderData{Kind: record.KindOpenAI, Keys: []filestore.KeyData{{ID: "k", Env: "OPENAI_KEY"}}}))
	return seed(t, st, opts)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func second[V any](_ V, err error) error { return err }

// is reports whether err is want (nil: no error).
func is(err, want error) bool {
	if want == nil {
		return err == nil
	}
	return errors.Is(err, want)
}

func TestCreateToken(t *testing.T) {
	w := fileWorld(t, manage.Options{MaxActiveTokens: 3})
	ctx := context.Background()
	for _, c := range []struct {
		name string
		req  manage.TokenRequest
		want error
	}{
		{"ok", manage.TokenRequest{User: "alice", Group: "eng", Name: "app"}, nil},
		{"same name", manage.TokenRequest{User: "alice", Group: "eng", Name: "app"}, record.ErrExists},
		{"same name, other user", manage.TokenRequest{User: "bob", Group: "eng", Name: "app"}, nil},
		{"no name", manage.TokenRequest{User: "alice", Group: "eng"}, manage.ErrInvalid},
		{"control character in the name", manage.TokenRequest{User: "alice", Group: "eng", Name: "a\nb"}, manage.ErrInvalid},
		{"negative ttl", manage.TokenRequest{User: "alice", Group: "eng", Name: "x", TTL: -time.Hour}, manage.ErrInvalid},
		{"group not usable", manage.TokenRequest{User: "alice", Group: "ops", Name: "x"}, manage.ErrInvalid},
		{"group missing", manage.TokenRequest{User: "alice", Group: "nope", Name: "x"}, manage.ErrInvalid},
		{"group disabled", manage.TokenRequest{User: "alice", Group: "off", Name: "x"}, manage.ErrInvalid},
		{"user disabled", manage.TokenRequest{User: "carol", Group: "eng", Name: "x"}, manage.ErrInvalid},
		{"user missing", manage.TokenRequest{User: "dave", Group: "eng", Name: "x"}, manage.ErrInvalid},
		{"user name is a path", manage.TokenRequest{User: "../groups/eng", Group: "eng", Name: "x"}, manage.ErrInvalid},
		{"second", manage.TokenRequest{User: "alice", Group: "eng", Name: "app2", TTL: time.Hour}, nil},
		{"third", manage.TokenRequest{User: "alice", Group: "eng", Name: "app3"}, nil},
		{"past the cap", manage.TokenRequest{User: "alice", Group: "eng", Name: "app4"}, manage.ErrLimit},
	} {
		t.Run(c.name, func(t *testing.T) {
			iss, err := w.m.CreateToken(ctx, c.req)
			if !is(err, c.want) {
				t.Fatalf("CreateToken: %v, want %v", err, c.want)
			}
			if err != nil {
				return
			}
			got, err := w.st.Token(ctx, iss.Record.ID)
			if err != nil || got.User != c.req.User || got.Name != c.req.Name || got.State(w.clock.now()) != record.TokenActive {
				t.Fatalf("stored %+v, %v", got, err)
			}
			if c.req.TTL > 0 && !got.Expires.Equal(w.clock.now().Add(c.req.TTL)) {
				t.Fatalf("expires %v", got.Expires)
			}
		})
	}
	// A revoked token frees its name and its place under the cap.
	tokens, err := w.m.Tokens(ctx, "alice")
	must(t, err)
	must(t, w.m.RevokeToken(ctx, "alice", tokens[0].ID))
	must(t, second(w.m.CreateToken(ctx, manage.TokenRequest{User: "alice", Group: "eng", Name: tokens[0].Name})))
}

func TestRotateAndRevokeToken(t *testing.T) {
	w := fileWorld(t, manage.Options{RotationGrace: time.Hour})
	ctx := context.Background()
	iss, err := w.m.CreateToken(ctx, manage.TokenRequest{User: "bob", Group: "ops", Name: "app", TTL: 48 * time.Hour})
	must(t, err)
	id := iss.Record.ID
	zero, tooLong := time.Duration(0), manage.MaxRotationGrace+time.Second
	for _, c := range []struct {
		name         string
		owner, id    string
		grace        *time.Duration
		want         error
		wantStillFor time.Duration // the old token's grace left after the rotation
	}{
		{"grace too long", "bob", id, &tooLong, manage.ErrInvalid, 0},
		{"someone else's", "alice", id, nil, record.ErrNotFound, 0},
		{"missing", "bob", "AAAAAAAAAAAAAAAA", nil, record.ErrNotFound, 0},
		{"default grace", "bob", id, nil, nil, time.Hour},
		{"rotated already", "bob", id, nil, manage.ErrInvalid, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			rot, err := w.m.RotateToken(ctx, c.owner, c.id, c.grace)
			if !is(err, c.want) {
				t.Fatalf("RotateToken: %v, want %v", err, c.want)
			}
			if err != nil {
				return
			}
			if rot.Old.ReplacedBy != rot.New.ID || !rot.Old.Expires.Equal(w.clock.now().Add(c.wantStillFor)) {
				t.Fatalf("old %+v", rot.Old)
			}
			if rot.New.Name != "app" || rot.New.Group != "ops" || !rot.New.Expires.Equal(w.clock.now().Add(48*time.Hour)) {
				t.Fatalf("new %+v", rot.New)
			}
			id = rot.New.ID
		})
	}
	// Grace zero stops the old token at once; an expired token is not
	// rotated again.
	rot, err := w.m.RotateToken(ctx, "", id, &zero)
	must(t, err)
	if rot.Old.State(w.clock.now()) != record.TokenRotated {
		t.Fatalf("old token after a zero grace: %s", rot.Old.State(w.clock.now()))
	}
	w.clock.advance(49 * time.Hour)
	if _, err := w.m.RotateToken(ctx, "bob", rot.New.ID, nil); !errors.Is(err, manage.ErrInvalid) {
		t.Fatalf("rotating an expired token: %v", err)
	}
	// Revocation: only the owner (or anyone, ""), again without error.
	if err := w.m.RevokeToken(ctx, "alice", rot.New.ID); !errors.Is(err, record.ErrNotFound) {
		t.Fatalf("revoking someone else's token: %v", err)
	}
	for range 2 {
		must(t, w.m.RevokeToken(ctx, "bob", rot.New.ID))
	}
	if _, err := w.m.RotateToken(ctx, "bob", rot.New.ID, nil); !errors.Is(err, manage.ErrInvalid) {
		t.Fatalf("rotating a revoked token: %v", err)
	}
}

func TestUsersAndGroups(t *testing.T) {
	w := fileWorld(t, manage.Options{})
	ctx := context.Background()
	admin, yes, neg := record.RoleAdmin, true, -1
	bad := record.Role("root")
	for _, c := range []struct {
		name string
		run  func() error
		want error
	}{
		{"user exists", func() error { return second(w.m.CreateUser(ctx, record.User{Name: "alice"})) }, record.ErrExists},
		{"reserved name", func() error { return second(w.m.CreateUser(ctx, record.User{Name: manage.ReservedUser})) }, manage.ErrInvalid},
		{"bad name", func() error { return second(w.m.CreateUser(ctx, record.User{Name: "a/b"})) }, manage.ErrInvalid},
		{"bad role", func() error { return second(w.m.UpdateUser(ctx, "alice", manage.UserPatch{Role: &bad})) }, manage.ErrInvalid},
		{"bad group name", func() error { return second(w.m.CreateUser(ctx, record.User{Name: "dan", Groups: []string{".."}})) }, manage.ErrInvalid},
		{"update missing", func() error { return second(w.m.UpdateUser(ctx, "zed", manage.UserPatch{Role: &admin})) }, record.ErrNotFound},
		{"promote", func() error { return second(w.m.UpdateUser(ctx, "alice", manage.UserPatch{Role: &admin})) }, nil},
		{"group exists", func() error { return second(w.m.CreateGroup(ctx, record.Group{Name: "eng"})) }, record.ErrExists},
		{"negative rate", func() error {
			return second(w.m.UpdateGroup(ctx, "eng", manage.GroupPatch{RequestsPerMinute: &neg}))
		}, manage.ErrInvalid},
		{"bad provider name", func() error {
			return second(w.m.CreateGroup(ctx, record.Group{Name: "x", Providers: []string{"a b"}}))
		}, manage.ErrInvalid},
		{"disable group", func() error { return second(w.m.UpdateGroup(ctx, "eng", manage.GroupPatch{Disabled: &yes})) }, nil},
		{"delete missing group", func() error { return w.m.DeleteGroup(ctx, "zed") }, record.ErrNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.run(); !is(err, c.want) {
				t.Fatalf("%v, want %v", err, c.want)
			}
		})
	}
	// A patch changes what it names and keeps the rest.
	u, err := w.m.User(ctx, "alice")
	must(t, err)
	if u.Role != record.RoleAdmin || len(u.Groups) != 1 || u.Groups[0] != "eng" {
		t.Fatalf("alice after promotion: %+v", u)
	}
	g, err := w.m.Group(ctx, "eng")
	must(t, err)
	if !g.Disabled {
		t.Fatalf("eng after disabling: %+v", g)
	}
}

func TestCredentials(t *testing.T) {
	w := fileWorld(t, manage.Options{})
	ctx := context.Background()
	str := func(s string) *string { return &s }
	c, err := w.m.CreateCredential(ctx, "alice", manage.CredentialPatch{Name: str("mine"), Provider: str("openai"), Key: str("sk-alice-0123456789")})
	must(t, err)
	for _, tc := range []struct {
		name string
		run  func() error
		want error
	}{
		{"same name", func() error {
			return second(w.m.CreateCredential(ctx, "alice", manage.CredentialPatch{Name: str("mine"), Provider: str("openai"), Key: str("k")}))
		}, record.ErrExists},
		{"same name, other user", func() error {
			return second(w.m.CreateCredential(ctx, "bob", manage.CredentialPatch{Name: str("mine"), Provider: str("openai"), Key: str("k")}))
		}, nil},
		{"unknown provider", func() error {
			return second(w.m.CreateCredential(ctx, "alice", manage.CredentialPatch{Name: str("x"), Provider: str("nope"), Key: str("k")}))
		}, manage.ErrInvalid},
		{"no user record", func() error {
			return second(w.m.CreateCredential(ctx, manage.ReservedUser, manage.CredentialPatch{Name: str("x"), Provider: str("openai"), Key: str("k")}))
		}, manage.ErrInvalid},
		{"bad base url", func() error {
			return second(w.m.UpdateCredential(ctx, "alice", c.ID, manage.CredentialPatch{BaseURL: str("ftp://x")}))
		}, manage.ErrInvalid},
		{"someone else's", func() error {
			return second(w.m.UpdateCredential(ctx, "bob", c.ID, manage.CredentialPatch{Model: str("m")}))
		}, record.ErrNotFound},
		{"read someone else's", func() error { return second(w.m.Credential(ctx, "bob", c.ID)) }, record.ErrNotFound},
		{"delete someone else's", func() error { return w.m.DeleteCredential(ctx, "bob", c.ID) }, record.ErrNotFound},
		{"update", func() error {
			return second(w.m.UpdateCredential(ctx, "alice", c.ID, manage.CredentialPatch{Model: str("gpt-4o")}))
		}, nil},
		{"delete", func() error { return w.m.DeleteCredential(ctx, "alice", c.ID) }, nil},
		{"update deleted", func() error {
			return second(w.m.UpdateCredential(ctx, "alice", c.ID, manage.CredentialPatch{Model: str("m")}))
		}, record.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); !is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
}

func TestAPITokens(t *testing.T) {
	w := fileWorld(t, manage.Options{})
	ctx := context.Background()
	tok, rec, err := w.m.IssueAPIToken(ctx, "alice")
	must(t, err)
	if len(tok) < 20 || rec.User != "alice" {
		t.Fatalf("issued %q %+v", tok[:4], rec)
	}
	for _, c := range []struct {
		name string
		run  func() error
		want error
	}{
		{"disabled user", func() error { _, _, err := w.m.IssueAPIToken(ctx, "carol"); return err }, manage.ErrInvalid},
		{"no such user", func() error { _, _, err := w.m.IssueAPIToken(ctx, "zed"); return err }, record.ErrNotFound},
		{"revoke someone else's", func() error { return w.m.RevokeAPIToken(ctx, "bob", rec.ID) }, record.ErrNotFound},
		{"revoke", func() error { return w.m.RevokeAPIToken(ctx, "alice", rec.ID) }, nil},
		{"revoke again", func() error { return w.m.RevokeAPIToken(ctx, "alice", rec.ID) }, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.run(); !is(err, c.want) {
				t.Fatalf("%v, want %v", err, c.want)
			}
		})
	}
}

func TestNewOptions(t *testing.T) {
	st := storetest.File(t, nil)
	for name, opts := range map[string]manage.Options{
		"negative grace":  {RotationGrace: -time.Second},
		"grace too long":  {RotationGrace: manage.MaxRotationGrace + time.Second},
		"negative tokens": {MaxActiveTokens: -1},
	} {
		if _, err := manage.New(st, opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	m, err := manage.New(st, manage.Options{})
	must(t, err)
	if m.RotationGrace() != manage.DefaultRotationGrace {
		t.Fatalf("default grace %v", m.RotationGrace())
	}
}
