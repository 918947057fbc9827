package serve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/internal/testpki"
)

const envoyID = "spiffe://mesh.test/ns/gateway/sa/envoy"

// pki is a CA, keyward's server certificate files and clients.
type pki struct {
	dir string
	ca  *testpki.CA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), ca: testpki.NewCA(t, "serve test CA")}
	testpki.WriteAtomic(t, p.caFile(), p.ca.PEM)
	return p
}

func (p *pki) caFile() string { return filepath.Join(p.dir, "ca.crt") }

// serverTLS issues a server certificate into files and returns the
// listener settings for it; mutual adds the client CA and allow-list.
func (p *pki) serverTLS(t *testing.T, name string, mutual bool) config.TLS {
	t.Helper()
	var c config.TLS
	c.CertFile, c.KeyFile = p.ca.Issue(t, "keyward.test").WriteFiles(t, p.dir, name)
	c.ReloadInterval = 10 * time.Millisecond
	if mutual {
		c.ClientCAFile, c.AllowedClients = p.caFile(), []string{envoyID}
	}
	return c
}

// clientTLS is a client configuration trusting the CA, with the client
// certificate when there is one.
func (p *pki) clientTLS(client *testpki.Leaf) *tls.Config {
	c := &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "keyward.test"}
	c.RootCAs.AddCert(p.ca.Cert)
	if client != nil {
		c.Certificates = []tls.Certificate{client.TLS}
	}
	return c
}

// TestMutualTLS: over mutual TLS only a client certificate of the CA with
// an identity on the allow-list obtains a key; no other caller even gets
// an answer.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	f := newFixture(t, func(c *config.Config) { c.TLS = p.serverTLS(t, "server", true) })
	r := start(t, f)
	foreign := testpki.NewCA(t, "another CA")
	cases := map[string]struct {
		creds credentials.TransportCredentials
		want  bool
	}{
		"envoy":                    {creds: credentials.NewTLS(p.clientTLS(p.ca.Issue(t, envoyID))), want: true},
		"no client certificate":    {creds: credentials.NewTLS(p.clientTLS(nil))},
		"identity not on the list": {creds: credentials.NewTLS(p.clientTLS(p.ca.Issue(t, "spiffe://mesh.test/ns/apps/sa/curl")))},
		"envoy's id, another CA":   {creds: credentials.NewTLS(p.clientTLS(foreign.Issue(t, envoyID)))},
		"plaintext":                {},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ok, err := check(context.Background(), r.dial(tc.creds), f.token)
			if ok != tc.want || (err == nil) != tc.want {
				t.Fatalf("got the key: %v (err %v), want %v", ok, err, tc.want)
			}
		})
	}
}

// servedSerial is the serial of the certificate the ext_authz listener
// presents to a new connection.
func servedSerial(t *testing.T, r *running, client *tls.Config) *big.Int {
	t.Helper()
	client = client.Clone()
	client.NextProtos = []string{"h2"}
	c, err := tls.Dial("tcp", r.addrs["listen"].String(), client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestCertificateRotation: a certificate replaced on disk is served to new
// connections without a restart; connections made before keep working.
func TestCertificateRotation(t *testing.T) {
	p := newPKI(t)
	f := newFixture(t, func(c *config.Config) { c.TLS = p.serverTLS(t, "server", true) })
	r := start(t, f)
	client := p.clientTLS(p.ca.Issue(t, envoyID))
	before := r.dial(credentials.NewTLS(client))
	if ok, err := check(context.Background(), before, f.token); !ok {
		t.Fatalf("before the rotation: %v", err)
	}
	old := servedSerial(t, r, client)

	next := p.ca.Issue(t, "keyward.test")
	next.WriteFiles(t, p.dir, "server")
	select {
	case name := <-r.reloaded:
		if name != "ext_authz" {
			t.Fatalf("reloaded %s", name)
		}
	case <-time.After(hangGuard):
		t.Fatal("the rotated certificate was not reloaded")
	}
	if got := servedSerial(t, r, client); got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("serving %x after the rotation (was %x, want %x)", got, old, next.Cert.SerialNumber)
	}
	if !strings.Contains(r.logs.String(), "tls certificate reloaded") {
		t.Error("the reload was not logged")
	}
	for name, conn := range map[string]*grpc.ClientConn{"new connection": r.dial(credentials.NewTLS(client)), "connection from before": before} {
		if ok, err := check(context.Background(), conn, f.token); !ok {
			t.Errorf("%s after the rotation: %v", name, err)
		}
	}
}

// TestHTTPListenersTLS: the management API over TLS asking for client
// certificates, the metrics endpoint over TLS without.
func TestHTTPListenersTLS(t *testing.T) {
	p := newPKI(t)
	f := newFixture(t, func(c *config.Config) {
		c.Management.Listen, c.Management.TLS = "127.0.0.1:0", p.serverTLS(t, "management", false)
		c.Management.TLS.ClientCAFile = p.caFile()
		c.Metrics.Listen, c.Metrics.TLS = "127.0.0.1:0", p.serverTLS(t, "metrics", false)
	})
	r := start(t, f)
	get := func(url string, c *tls.Config) (int, error) {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: c}, Timeout: hangGuard}
		defer client.CloseIdleConnections()
		resp, err := client.Get(url)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	mgmtURL, metricsURL := "https://"+r.addrs["management.listen"].String(), "https://"+r.addrs["metrics.listen"].String()
	cases := map[string]struct {
		url    string
		tls    *tls.Config
		status int // 0: the request fails
	}{
		"management, client certificate":    {url: mgmtURL + "/v1/me", tls: p.clientTLS(p.ca.Issue(t, "admin.test")), status: http.StatusUnauthorized},
		"management, no client certificate": {url: mgmtURL + "/v1/me", tls: p.clientTLS(nil)},
		"metrics over TLS":                  {url: metricsURL + "/healthz", tls: p.clientTLS(nil), status: http.StatusOK},
		"metrics in plaintext":              {url: "http://" + r.addrs["metrics.listen"].String() + "/healthz", status: http.StatusBadRequest},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			status, err := get(tc.url, tc.tls)
			if status != tc.status {
				t.Fatalf("status %d (%v), want %d", status, err, tc.status)
			}
		})
	}
}
