package serve

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/manage/httpapi/oidc"
)

func TestCheckPlaintext(t *testing.T) {
	tls := config.TLS{}
	tls.CertFile, tls.KeyFile = "c", "k"
	cases := map[string]struct {
		edit    func(*config.Config)
		refused []string // fields refused
		warned  []string // fields allowed in plaintext, warned about
	}{
		"loopback":                {edit: func(c *config.Config) { c.Listen = "127.0.0.1:9191" }},
		"loopback v6":             {edit: func(c *config.Config) { c.Listen = "[::1]:9191" }},
		"localhost":               {edit: func(c *config.Config) { c.Listen = "localhost:9191" }},
		"loopback /8":             {edit: func(c *config.Config) { c.Listen = "127.0.0.2:9191" }},
		"unix socket":             {edit: func(c *config.Config) { c.Listen = "unix:/run/keyward.sock" }},
		"all interfaces with tls": {edit: func(c *config.Config) { c.Listen, c.TLS = "0.0.0.0:9191", tls }},
		"all interfaces":          {edit: func(c *config.Config) { c.Listen = "0.0.0.0:9191" }, refused: []string{"listen"}},
		"no host":                 {edit: func(c *config.Config) { c.Listen = ":9191" }, refused: []string{"listen"}},
		"a name":                  {edit: func(c *config.Config) { c.Listen = "keyward.svc:9191" }, refused: []string{"listen"}},
		"pod ip":                  {edit: func(c *config.Config) { c.Listen = "10.1.2.3:9191" }, refused: []string{"listen"}},
		"allowed":                 {edit: func(c *config.Config) { c.Listen, c.AllowPlaintext = "0.0.0.0:9191", true }, warned: []string{"listen"}},
		"management and metrics": {
			edit: func(c *config.Config) {
				c.Management.Listen, c.Metrics.Listen, c.Metrics.AllowPlaintext = "0.0.0.0:9292", "0.0.0.0:9464", true
			},
			refused: []string{"management.listen"}, warned: []string{"metrics.listen"},
		},
		"management with tls": {edit: func(c *config.Config) { c.Management.Listen, c.Management.TLS = "0.0.0.0:9292", tls }},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := config.Default()
			tc.edit(c)
			warned, err := checkPlaintext(c)
			var got []string
			for _, w := range warned {
				got = append(got, w.field)
			}
			if !slices.Equal(got, tc.warned) {
				t.Errorf("warned about %v, want %v", got, tc.warned)
			}
			if (err != nil) != (len(tc.refused) > 0) || (err != nil && !errors.Is(err, ErrPlaintext)) {
				t.Fatalf("error %v, want refusals of %v", err, tc.refused)
			}
			for _, f := range tc.refused {
				prefix := strings.TrimSuffix(f, "listen")
				if !strings.Contains(err.Error(), f+": ") || !strings.Contains(err.Error(), prefix+"allow_plaintext") {
					t.Errorf("error %q does not name %s and %sallow_plaintext", err, f, prefix)
				}
			}
		})
	}
}

// TestRunRefusesPlaintext: Run refuses before it opens anything.
func TestRunRefusesPlaintext(t *testing.T) {
	f := newFixture(t, func(c *config.Config) { c.Listen = "0.0.0.0:0" })
	if err := Run(context.Background(), f.cfg, Options{Getenv: f.getenv}); !errors.Is(err, ErrPlaintext) {
		t.Fatalf("Run: %v, want ErrPlaintext", err)
	}
}

// TestUnixSocket: the ext_authz listener on a unix socket, which a killed
// predecessor left behind; the socket is the owner's and group's, and is
// removed at the stop.
func TestUnixSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "kw") // short: socket paths are limited to ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "authz.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // as SIGKILL leaves it: the file, and no one listening

	f := newFixture(t, func(c *config.Config) { c.Listen = config.UnixPrefix + path })
	r := start(t, f)
	if ok, err := check(context.Background(), r.dial(nil), f.token); !ok {
		t.Fatalf("check over the socket: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != socketMode {
		t.Fatalf("socket mode %v (%v), want %v", fi.Mode().Perm(), err, os.FileMode(socketMode))
	}
	r.cancel()
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// TestUnixSocketNotOurs: a file that is not a socket, or a socket another
// process serves, is never removed.
func TestUnixSocketNotOurs(t *testing.T) {
	dir, err := os.MkdirTemp("", "kw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	plain, live := filepath.Join(dir, "file.sock"), filepath.Join(dir, "live.sock")
	if err := os.WriteFile(plain, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, path := range []string{plain, live} {
		f := newFixture(t, func(c *config.Config) { c.Listen = config.UnixPrefix + path })
		if err := Run(context.Background(), f.cfg, Options{Getenv: f.getenv}); err == nil || !strings.Contains(err.Error(), "listen: ") {
			t.Errorf("%s: Run: %v, want a listen error", path, err)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("%s was removed: %v", path, err)
		}
	}
}

// TestStartFailureClosesEverything: when a listener cannot start, Run
// fails naming it, and the listeners already open are closed.
func TestStartFailureClosesEverything(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cases := map[string]struct {
		edit func(*config.Config)
		want string
	}{
		"management address taken": {func(c *config.Config) { c.Management.Listen = taken.Addr().String() }, "management.listen: "},
		"metrics address taken": {func(c *config.Config) {
			c.Management.Listen, c.Metrics.Listen = "127.0.0.1:0", taken.Addr().String()
		}, "metrics.listen: "},
		"metrics certificate missing": {func(c *config.Config) {
			c.Metrics.Listen = "127.0.0.1:0"
			c.Metrics.TLS.CertFile, c.Metrics.TLS.KeyFile, c.Metrics.TLS.ReloadInterval = "/nonexistent/tls.crt", "/nonexistent/tls.key", 1
		}, "metrics.tls: cert_file"},
		"management OIDC CA missing": {func(c *config.Config) {
			c.Management.Listen = "127.0.0.1:0"
			c.Management.OIDC = oidc.Config{Issuer: "https://idp.example.com", Audience: "kw", CAFile: "/nonexistent/ca.pem"}
		}, "management.oidc.ca_file: "},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, tc.edit)
			probe, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			f.cfg.Listen = probe.Addr().String() // a port known to the test
			probe.Close()
			err = Run(context.Background(), f.cfg, Options{Getenv: f.getenv})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v, want it to name %q", err, tc.want)
			}
			again, err := net.Listen("tcp", f.cfg.Listen)
			if err != nil {
				t.Fatalf("the ext_authz listener was left open: %v", err)
			}
			again.Close()
		})
	}
}

// TestListenerFailureStopsTheRest: a listener that fails while serving
// ends Run with its error, and every other listener is stopped at once.
func TestListenerFailureStopsTheRest(t *testing.T) {
	f := newFixture(t)
	st, err := OpenStore(f.cfg, nil, f.getenv)
	if err != nil {
		t.Fatal(err)
	}
	svc := f.service(t)
	boom := errors.New("accept: too many open files")
	stopped := make(chan string, 2)
	blocked := make(chan struct{})
	ls := &listeners{servers: []*server{
		{field: "listen", lis: nopListener{}, serve: func(net.Listener) error { <-blocked; return nil }, stop: func(context.Context) { stopped <- "listen"; close(blocked) }},
		{field: "metrics.listen", lis: nopListener{}, serve: func(net.Listener) error { return boom }, stop: func(context.Context) { stopped <- "metrics.listen" }},
	}}
	_, endWatches := context.WithCancel(context.Background())
	defer endWatches()
	err = svc.run(context.Background(), ls, st, f.cfg, nil, endWatches)
	if !errors.Is(err, boom) {
		t.Fatalf("run: %v, want the failing listener's error", err)
	}
	close(stopped)
	var got []string
	for s := range stopped {
		got = append(got, s)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"listen", "metrics.listen"}) {
		t.Fatalf("stopped %v, want every listener", got)
	}
}

// nopListener stands in for a listener the fake servers never use.
type nopListener struct{ net.Listener }

func (nopListener) Close() error { return nil }
