package loadrig

import (
	"os"
	"slices"
	"testing"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/token"
)

func TestFixtureLoads(t *testing.T) {
	t.Parallel()
	spec := Spec{Tokens: 300, Groups: 7, Users: 3}
	f, err := WriteFixture(t.Context(), t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tokens) != spec.Tokens {
		t.Fatalf("%d tokens returned, want %d", len(f.Tokens), spec.Tokens)
	}
	// filestore must read the store back and write it unchanged, and every token must be one keyward would allow.
	st, err := filestore.Open(filestore.Options{Path: f.StorePath, Getenv: func(string) string { return ProviderKey }})
	if err != nil {
		t.Fatal(err)
	}
	d, err := st.Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(f.StorePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(t.Context(), func(*filestore.Data) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(f.StorePath); string(again) != string(raw) {
		t.Error("filestore rewrote the fixture: its encoding differs from filestore's")
	}
	if d.Tokens.Len() != spec.Tokens || len(d.Groups) != spec.Groups || len(d.Users) != spec.Users {
		t.Fatalf("store has %d tokens, %d groups, %d users; want %+v", d.Tokens.Len(), len(d.Groups), len(d.Users), spec)
	}
	for _, tok := range f.Tokens {
		id := tok[len(token.Prefix) : len(token.Prefix)+token.IDLen]
		td, ok := d.Tokens.Get(id)
		if !ok {
			t.Fatalf("token %s not in the store", id)
		}
		u := d.Users[td.User]
		if u == nil || !slices.Contains(u.Groups, td.Group) {
			t.Fatalf("token %s: user %q may not use group %q", id, td.User, td.Group)
		}
		if g := d.Groups[td.Group]; g == nil || !slices.Contains(g.Providers, ProviderName) {
			t.Fatalf("token %s: group %q does not allow %s", id, td.Group, ProviderName)
		}
	}
}

func TestFindListener(t *testing.T) {
	t.Parallel()
	const table = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A5E2 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 100 0 0 10 0
   2: 0100007F:A5E2 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 20 4 30 10 -1
`
	cases := map[string]struct {
		inodes map[string]bool
		port   int
		ok     bool
	}{
		"own listener":          {map[string]bool{"222": true}, 0xA5E2, true},
		"other's listener":      {map[string]bool{"999": true}, 0, false},
		"established not count": {map[string]bool{"333": true}, 0, false},
		"no sockets":            {map[string]bool{}, 0, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			port, ok := findListener([]byte(table), c.inodes)
			if port != c.port || ok != c.ok {
				t.Fatalf("findListener = %d, %v; want %d, %v", port, ok, c.port, c.ok)
			}
		})
	}
}

func TestReadMemSelf(t *testing.T) {
	t.Parallel()
	m, err := ReadMem(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if m.RSS == 0 || m.HWM < m.RSS {
		t.Fatalf("VmRSS %d, VmHWM %d: want 0 < RSS <= HWM", m.RSS, m.HWM)
	}
}
