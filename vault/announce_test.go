package vault_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/vault"
	"github.com/keyward/keyward/vault/vaulttest"
)

// noMarker is an admin policy that may write every record but not the
// change marker: a marker write fails after the record is written, as it
// does when the Raft leader is lost between the two writes.
const noMarker = `
path "keyward/data/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "keyward/metadata/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "keyward/data/system/changes" { capabilities = ["read"] }
`

// TestUnannouncedChangeFailsAndRetries: a change whose announcement fails
// is reported as record.ErrNotAnnounced, not as a success, and running the
// same change again announces it, for a revocation and for a deletion.
func TestUnannouncedChangeFailsAndRetries(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	srv.WritePolicy(t, "no-marker", noMarker)
	ctx := context.Background()
	good := manager(t, newStore(t, srv, vault.Config{}))
	broken := manager(t, newStore(t, srv, vault.Config{}, "no-marker"))

	must(t, good.EnsureSigningKey(ctx))
	_, err := good.CreateGroup(ctx, record.Group{Name: "eng"})
	must(t, err)
	_, err = good.CreateUser(ctx, record.User{Name: "alice", Groups: []string{"eng"}})
	must(t, err)
	iss, err := good.CreateToken(ctx, manage.TokenRequest{User: "alice", Group: "eng", Name: "app"})
	must(t, err)
	marker := func() string {
		sec, err := srv.Client(t, srv.RootToken).KVv2("keyward").Get(ctx, "system/changes")
		must(t, err)
		s, _ := sec.Data["changes"].(string)
		return s
	}
	for _, c := range []struct {
		name, announced string
		run             func(m *manage.Manager) error
	}{
		{"revoke", " token " + iss.Record.ID + "\n", func(m *manage.Manager) error { return m.RevokeToken(ctx, "", iss.Record.ID) }},
		{"delete group", " group eng\n", func(m *manage.Manager) error { return m.DeleteGroup(ctx, "eng") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := strings.Count(marker(), c.announced)
			if err := c.run(broken); !errors.Is(err, record.ErrNotAnnounced) {
				t.Fatalf("with the marker unwritable: %v, want ErrNotAnnounced", err)
			}
			if n := strings.Count(marker(), c.announced); n != before {
				t.Fatalf("announced without a marker write? %d -> %d", before, n)
			}
			if err := c.run(good); err != nil {
				t.Fatalf("run again: %v", err)
			}
			if n := strings.Count(marker(), c.announced); n != before+1 {
				t.Fatalf("run again: announced %d times, want %d", n, before+1)
			}
		})
	}
	tk, err := good.Token(ctx, "", iss.Record.ID)
	if err != nil || !tk.Revoked {
		t.Fatalf("token after the revocations: %+v, %v", tk, err)
	}
}

func manager(t *testing.T, st manage.Store) *manage.Manager {
	t.Helper()
	m, err := manage.New(st, manage.Options{Now: func() time.Time { return time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) }})
	must(t, err)
	return m
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
