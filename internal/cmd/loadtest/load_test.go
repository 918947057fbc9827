package main

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/token"
)

// denyOdd allows requests whose token ends in an even digit and denies the
// rest with a keyward-shaped body.
type denyOdd struct {
	authv3.UnimplementedAuthorizationServer
	allow *authv3.CheckResponse
}

func (d *denyOdd) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	auth := req.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"]
	if (auth[len(auth)-1]-'0')%2 == 0 {
		return d.allow, nil
	}
	return &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Body: `{"error":{"message":"no","type":"invalid_request_error","code":"invalid_token"}}`,
	}}}, nil
}

func TestLoaderCountsDenials(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, &denyOdd{allow: newAllowAll().resp})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	reqs := checkRequests([]string{"tok0", "tok1", "tok2", "tok3"})
	l, err := newLoader(lis.Addr().String(), loadSpec{concurrency: 4, conns: 2, warmup: 20 * time.Millisecond, duration: 200 * time.Millisecond}, reqs)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	measured := false
	r, err := l.run(t.Context(), func() func() { measured = true; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !measured {
		t.Error("onMeasure was not called")
	}
	if r.errors != 0 || r.allowed == 0 || r.denied == 0 {
		t.Fatalf("allowed %d, denied %d, errors %d (%v); want both answers and no errors", r.allowed, r.denied, r.errors, r.errSamples)
	}
	if r.hist.count() != r.allowed+r.denied || r.throughput() <= 0 {
		t.Errorf("histogram holds %d, want %d answers; throughput %v", r.hist.count(), r.allowed+r.denied, r.throughput())
	}
	if r.denyReasons["invalid_token"] != r.denied {
		t.Errorf("deny reasons %v, want all %d as invalid_token", r.denyReasons, r.denied)
	}
	rep := &report{Keyward: figuresOf(r)}
	if err := rep.failure(); err == nil || !strings.Contains(err.Error(), "invalid_token=") {
		t.Errorf("failure() = %v, want the denial reason", err)
	}
}

func TestFixtureLoads(t *testing.T) {
	t.Parallel()
	spec := fixtureSpec{tokens: 300, groups: 7, users: 3}
	f, err := writeFixture(t.Context(), t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.tokens) != spec.tokens {
		t.Fatalf("%d tokens returned, want %d", len(f.tokens), spec.tokens)
	}
	// The file is written without filestore: filestore must read it back
	// exactly, and every token must be one keyward would allow.
	st, err := filestore.Open(filestore.Options{Path: f.storePath, Getenv: func(string) string { return providerKey }})
	if err != nil {
		t.Fatal(err)
	}
	d, err := st.Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(f.storePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(t.Context(), func(*filestore.Data) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(f.storePath); string(again) != string(raw) {
		t.Error("filestore rewrote the fixture: its encoding differs from filestore's")
	}
	if d.Tokens.Len() != spec.tokens || len(d.Groups) != spec.groups || len(d.Users) != spec.users {
		t.Fatalf("store has %d tokens, %d groups, %d users; want %+v", d.Tokens.Len(), len(d.Groups), len(d.Users), spec)
	}
	for _, tok := range f.tokens {
		id := tok[len(token.Prefix) : len(token.Prefix)+token.IDLen]
		td, ok := d.Tokens.Get(id)
		if !ok {
			t.Fatalf("token %s not in the store", id)
		}
		u := d.Users[td.User]
		if u == nil || !contains(u.Groups, td.Group) {
			t.Fatalf("token %s: user %q may not use group %q", id, td.User, td.Group)
		}
		if g := d.Groups[td.Group]; g == nil || !contains(g.Providers, providerName) {
			t.Fatalf("token %s: group %q does not allow %s", id, td.Group, providerName)
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
	m, err := readMem(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if m.rss == 0 || m.hwm < m.rss {
		t.Fatalf("VmRSS %d, VmHWM %d: want 0 < RSS <= HWM", m.rss, m.hwm)
	}
}
