package servertls_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/internal/testlog"
	"github.com/keyward/keyward/internal/testpki"
	"github.com/keyward/keyward/servertls"
)

const envoyID = "spiffe://mesh.test/ns/gateway/sa/envoy"

// pki is a CA, keyward's server certificate and its files.
type pki struct {
	dir   string
	ca    *testpki.CA
	files servertls.Files
}

func newPKI(t *testing.T, allowed ...string) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), ca: testpki.NewCA(t, "keyward test CA")}
	p.files.CertFile, p.files.KeyFile = p.ca.Issue(t, "keyward.test").WriteFiles(t, p.dir, "server")
	p.files.ClientCAFile = filepath.Join(p.dir, "clients.pem")
	testpki.WriteAtomic(t, p.files.ClientCAFile, p.ca.PEM)
	p.files.AllowedClients = allowed
	return p
}

func load(t *testing.T, f servertls.Files, log *slog.Logger) *servertls.Source {
	t.Helper()
	src, err := servertls.Load(f, servertls.Options{Name: "test", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// handshake connects a client with the given certificate (none when nil),
// trusting roots, and returns the server's certificate and the server's
// handshake error.
func handshake(t *testing.T, src *servertls.Source, roots *x509.CertPool, client *testpki.Leaf) (*x509.Certificate, error) {
	t.Helper()
	// Loopback TCP rather than net.Pipe: a TLS alert must not wait for a
	// reader.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	srvErr := make(chan error, 1)
	go func() {
		sc, err := lis.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer sc.Close()
		srv := tls.Server(sc, src.Config())
		err = srv.Handshake()
		if err == nil {
			// TLS 1.3 clients finish before the server has checked their
			// certificate: the server's verdict is in this read.
			_, err = srv.Read(make([]byte, 1))
		}
		srvErr <- err
	}()
	cfg := &tls.Config{RootCAs: roots, ServerName: "keyward.test"}
	if client != nil {
		cfg.Certificates = []tls.Certificate{client.TLS}
	}
	c, err := tls.Dial("tcp", lis.Addr().String(), cfg)
	var served *x509.Certificate
	if err == nil {
		served = c.ConnectionState().PeerCertificates[0]
		c.Write([]byte{0})
		defer c.Close()
	}
	return served, <-srvErr
}

func pool(cas ...*testpki.CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

func TestClientAuthentication(t *testing.T) {
	p := newPKI(t, envoyID, "Envoy.Internal")
	other := testpki.NewCA(t, "another CA")
	src := load(t, p.files, nil)
	cases := map[string]struct {
		client  *testpki.Leaf
		wantErr bool
		notOnly bool // the error is ErrClientNotAllowed
	}{
		"spiffe id on the list":            {client: p.ca.Issue(t, envoyID)},
		"dns name on the list, other case": {client: p.ca.Issue(t, "envoy.internal")},
		"listed among others":              {client: p.ca.Issue(t, "spiffe://mesh.test/ns/x/sa/y", envoyID)},
		"no certificate":                   {wantErr: true},
		"identity not on the list":         {client: p.ca.Issue(t, "spiffe://mesh.test/ns/apps/sa/curl"), wantErr: true, notOnly: true},
		"spiffe id differs by a suffix":    {client: p.ca.Issue(t, envoyID+"x"), wantErr: true, notOnly: true},
		"listed id as a dns name":          {client: p.ca.Issue(t, "mesh.test"), wantErr: true, notOnly: true},
		"listed id from an unknown CA":     {client: other.Issue(t, envoyID), wantErr: true},
		"common name only is not identity": {client: p.ca.Issue(t), wantErr: true, notOnly: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			served, err := handshake(t, src, pool(p.ca), tc.client)
			if (err != nil) != tc.wantErr {
				t.Fatalf("server handshake error %v, want error %v", err, tc.wantErr)
			}
			if tc.notOnly && !errors.Is(err, servertls.ErrClientNotAllowed) {
				t.Fatalf("error %v, want ErrClientNotAllowed", err)
			}
			if !tc.wantErr && served.SerialNumber.Cmp(src.Leaf().SerialNumber) != 0 {
				t.Fatal("served another certificate than Leaf")
			}
		})
	}
}

// TestNoClientCA: without a client CA no client certificate is asked for
// (the management and metrics listeners' default).
func TestNoClientCA(t *testing.T) {
	p := newPKI(t)
	p.files.ClientCAFile = ""
	if _, err := handshake(t, load(t, p.files, nil), pool(p.ca), nil); err != nil {
		t.Fatal(err)
	}
}

func TestReload(t *testing.T) {
	p := newPKI(t, envoyID)
	logs := &testlog.Buffer{}
	src := load(t, p.files, slog.New(slog.NewJSONHandler(logs, nil)))
	envoy := p.ca.Issue(t, envoyID)
	first := src.Leaf().SerialNumber

	if changed, err := src.Reload(); changed || err != nil {
		t.Fatalf("Reload of unchanged files: %v %v", changed, err)
	}

	// Half a rotation: the new key is in place, the certificate not yet.
	next := p.ca.Issue(t, "keyward.test")
	testpki.WriteAtomic(t, p.files.KeyFile, next.KeyPEM)
	for range 2 {
		if changed, err := src.Reload(); changed || err == nil {
			t.Fatalf("Reload of a mismatched pair: %v %v", changed, err)
		}
	}
	if n := strings.Count(logs.String(), "tls files unusable"); n != 1 {
		t.Errorf("the same unusable files were logged %d times, want once", n)
	}
	if served, err := handshake(t, src, pool(p.ca), envoy); err != nil || served.SerialNumber.Cmp(first) != 0 {
		t.Fatalf("during a half rotation: served %v, err %v; want the previous certificate", served.SerialNumber, err)
	}

	testpki.WriteAtomic(t, p.files.CertFile, next.CertPEM)
	if changed, err := src.Reload(); !changed || err != nil {
		t.Fatalf("Reload of the finished rotation: %v %v", changed, err)
	}
	if served, err := handshake(t, src, pool(p.ca), envoy); err != nil || served.SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("after the rotation: served %v, err %v; want %v", served.SerialNumber, err, next.Cert.SerialNumber)
	}
	if src.Reloads() != 1 {
		t.Errorf("Reloads = %d, want 1", src.Reloads())
	}
	if !strings.Contains(logs.String(), "tls certificate reloaded") {
		t.Error("no reload event logged")
	}
	for _, secret := range [][]byte{next.KeyPEM, bytes.TrimSpace(bytes.Split(next.KeyPEM, []byte("\n"))[1])} {
		if bytes.Contains([]byte(logs.String()), secret) {
			t.Error("the log holds the private key")
		}
	}
}

// TestReloadClientCA: a new client CA bundle admits clients of the new CA
// and, once the old CA is gone from it, refuses the old CA's.
func TestReloadClientCA(t *testing.T) {
	p := newPKI(t, envoyID)
	src := load(t, p.files, nil)
	newCA := testpki.NewCA(t, "next CA")
	oldEnvoy, newEnvoy := p.ca.Issue(t, envoyID), newCA.Issue(t, envoyID)
	if _, err := handshake(t, src, pool(p.ca), newEnvoy); err == nil {
		t.Fatal("a client of a CA not in the bundle was admitted")
	}
	testpki.WriteAtomic(t, p.files.ClientCAFile, newCA.PEM)
	if changed, err := src.Reload(); !changed || err != nil {
		t.Fatalf("Reload: %v %v", changed, err)
	}
	if _, err := handshake(t, src, pool(p.ca), newEnvoy); err != nil {
		t.Fatalf("new CA's client after the reload: %v", err)
	}
	if _, err := handshake(t, src, pool(p.ca), oldEnvoy); err == nil {
		t.Fatal("the removed CA's client is still admitted")
	}
}

// TestWatch: the polling loop picks a rotation up by itself and says so.
func TestWatch(t *testing.T) {
	p := newPKI(t)
	reloaded := make(chan struct{}, 1)
	src, err := servertls.Load(p.files, servertls.Options{OnReload: func() { reloaded <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { src.Watch(ctx, time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	next := p.ca.Issue(t, "keyward.test")
	next.WriteFiles(t, p.dir, "server")
	select {
	case <-reloaded:
	case <-time.After(time.Minute): // a hang guard
		t.Fatal("Watch did not pick up the rotated certificate")
	}
	if src.Leaf().SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatal("reloaded, but not the rotated certificate")
	}
}

func TestLoadErrors(t *testing.T) {
	p := newPKI(t)
	missing := filepath.Join(p.dir, "missing.pem")
	garbage := filepath.Join(p.dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		edit func(*servertls.Files)
		want string
	}{
		"missing cert":          {func(f *servertls.Files) { f.CertFile = missing }, "cert_file"},
		"missing key":           {func(f *servertls.Files) { f.KeyFile = missing }, "key_file"},
		"missing client CA":     {func(f *servertls.Files) { f.ClientCAFile = missing }, "client_ca_file"},
		"client CA not PEM":     {func(f *servertls.Files) { f.ClientCAFile = garbage }, "client_ca_file"},
		"key is not a key":      {func(f *servertls.Files) { f.KeyFile = garbage }, "key_file"},
		"allow-list without CA": {func(f *servertls.Files) { f.ClientCAFile, f.AllowedClients = "", []string{envoyID} }, "allowed_clients"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := p.files
			tc.edit(&f)
			_, err := servertls.Load(f, servertls.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want it to name %s", err, tc.want)
			}
		})
	}
}

// TestReloadMissingFile: a file that vanishes keeps the last good
// material, is logged once however many polls see it gone, and its
// return is picked up.
func TestReloadMissingFile(t *testing.T) {
	p := newPKI(t)
	logs := &testlog.Buffer{}
	src := load(t, p.files, slog.New(slog.NewJSONHandler(logs, nil)))
	cert, err := os.ReadFile(p.files.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p.files.CertFile); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if changed, err := src.Reload(); changed || err == nil || !strings.Contains(err.Error(), "cert_file") {
			t.Fatalf("Reload without the certificate file: %v %v", changed, err)
		}
	}
	if n := strings.Count(logs.String(), "tls files unusable"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
	if _, err := handshake(t, src, pool(p.ca), p.ca.Issue(t, "client")); err != nil {
		t.Fatalf("the last good certificate no longer serves: %v", err)
	}
	testpki.WriteAtomic(t, p.files.CertFile, cert)
	if changed, err := src.Reload(); !changed || err != nil {
		t.Fatalf("Reload after the file came back: %v %v", changed, err)
	}
}

func TestValidate(t *testing.T) {
	ok := servertls.Files{CertFile: "c", KeyFile: "k", ClientCAFile: "ca", AllowedClients: []string{envoyID, "envoy.internal"}}
	cases := map[string]struct {
		edit func(*servertls.Files)
		want []string // fields named; none for valid
	}{
		"valid":                 {edit: func(*servertls.Files) {}},
		"no client CA":          {edit: func(f *servertls.Files) { f.ClientCAFile, f.AllowedClients = "", nil }},
		"no files":              {edit: func(f *servertls.Files) { f.CertFile, f.KeyFile = "", "" }, want: []string{"cert_file", "key_file"}},
		"allow-list without CA": {edit: func(f *servertls.Files) { f.ClientCAFile = "" }, want: []string{"allowed_clients"}},
		"wildcard":              {edit: func(f *servertls.Files) { f.AllowedClients = []string{"*.internal"} }, want: []string{"allowed_clients[0]"}},
		"uri without host":      {edit: func(f *servertls.Files) { f.AllowedClients = []string{envoyID, "spiffe:///x"} }, want: []string{"allowed_clients[1]"}},
		"empty identity":        {edit: func(f *servertls.Files) { f.AllowedClients = []string{""} }, want: []string{"allowed_clients[0]"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := ok
			f.AllowedClients = append([]string(nil), ok.AllowedClients...)
			tc.edit(&f)
			err := f.Validate("")
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if got := field.Paths(err); !slices.Equal(got, tc.want) {
				t.Errorf("Validate: %v, want problems with %v", err, tc.want)
			}
		})
	}
}
