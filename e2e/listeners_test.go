package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/keyward/keyward/envoy/envoytest"
	"github.com/keyward/keyward/internal/testpki"
)

const (
	envoyID   = "spiffe://mesh.test/ns/gateway/sa/envoy"
	keywardID = "spiffe://mesh.test/ns/keyward/sa/keyward"
)

// meshPKI is the mesh CA, keyward's and Envoy's certificates in files.
type meshPKI struct {
	dir    string
	ca     *testpki.CA
	caFile string
	// keyward's server certificate, Envoy's client certificate.
	keywardCert, keywardKey, envoyCert, envoyKey string
}

func newMeshPKI(t *testing.T) *meshPKI {
	t.Helper()
	p := &meshPKI{dir: t.TempDir(), ca: testpki.NewCA(t, "mesh CA")}
	p.caFile = filepath.Join(p.dir, "ca.crt")
	testpki.WriteAtomic(t, p.caFile, p.ca.PEM)
	p.keywardCert, p.keywardKey = p.ca.Issue(t, keywardID).WriteFiles(t, p.dir, "keyward")
	p.envoyCert, p.envoyKey = p.ca.Issue(t, envoyID).WriteFiles(t, p.dir, "envoy")
	return p
}

// clientTLS trusts roots and presents client, when there is one.
func clientTLS(roots *testpki.CA, client *testpki.Leaf) *tls.Config {
	c := &tls.Config{RootCAs: x509.NewCertPool(), NextProtos: []string{"h2"}}
	c.RootCAs.AddCert(roots.Cert)
	// keyward's certificate names a SPIFFE ID, not a host name: check the
	// chain, and that the ID is keyward's, as Envoy does.
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		opts := x509.VerifyOptions{Roots: c.RootCAs, Intermediates: x509.NewCertPool()}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			return err
		}
		for _, u := range cs.PeerCertificates[0].URIs {
			if u.String() == keywardID {
				return nil
			}
		}
		return errors.New("not keyward's certificate")
	}
	if client != nil {
		c.Certificates = []tls.Certificate{client.TLS}
	}
	return c
}

// TestMutualTLS: keyward's ext_authz listener on mutual TLS, Envoy on the
// UpstreamTlsContext from envoy-config. Through Envoy everything works; a
// caller without a certificate, with one of an identity not on the list,
// or with Envoy's identity from another CA never obtains a key; a server
// certificate rotated on disk is served without a restart.
func TestMutualTLS(t *testing.T) {
	p := newMeshPKI(t)
	extra := fmt.Sprintf(`  authz_tls: {cert_file: %q, key_file: %q, ca_file: %q, server_identities: [%q]}
tls: {cert_file: %q, key_file: %q, client_ca_file: %q, allowed_clients: [%q], reload_interval: 100ms}
`, p.envoyCert, p.envoyKey, p.caFile, keywardID, p.keywardCert, p.keywardKey, p.caFile, envoyID)
	s := newStack(t, stackOptions{extra: extra, authzTLS: clientTLS(p.ca, p.ca.Issue(t, envoyID))})
	tok := s.token("alice", "eng")

	t.Run("through-envoy", func(t *testing.T) { s.wantProviderKey(t, tok) })

	t.Run("callers-without-an-allowed-certificate", func(t *testing.T) {
		foreign := testpki.NewCA(t, "another CA")
		for name, cfg := range map[string]*tls.Config{
			"no certificate":           clientTLS(p.ca, nil),
			"identity not on the list": clientTLS(p.ca, p.ca.Issue(t, "spiffe://mesh.test/ns/apps/sa/curl")),
			"envoy's id, another CA":   clientTLS(p.ca, foreign.Issue(t, envoyID)),
		} {
			resp, err := checkOver(t, s.authz, credentials.NewTLS(cfg), tok)
			if err == nil || resp != nil {
				t.Errorf("%s: got an answer (%v), want the connection refused", name, resp.GetStatus())
			}
		}
	})

	t.Run("rotation-without-restart", func(t *testing.T) {
		// The new certificate comes from a new CA, so that only a
		// keyward serving it satisfies an Envoy that trusts that CA alone.
		next := testpki.NewCA(t, "mesh CA, next")
		nextCA := filepath.Join(p.dir, "next-ca.crt")
		testpki.WriteAtomic(t, nextCA, next.PEM)
		next.Issue(t, keywardID).WriteFiles(t, p.dir, "keyward") // key, then certificate, each renamed into place
		took := waitFor(t, 30*time.Second, func() bool {
			return servedIssuer(t, s.authz, clientTLS(next, p.ca.Issue(t, envoyID))) == "mesh CA, next"
		})
		t.Logf("rotation: keyward served the new certificate %v after it was renamed into place (reload_interval 100ms)", took.Round(time.Millisecond))
		s.wantProviderKey(t, tok) // Envoy's connection from before the rotation

		second := s.secondEnvoy(t, map[string]any{"ca_file": nextCA})
		resp := s.doAt(second, "POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + tok}, chatBody)
		if resp.status != http.StatusOK {
			t.Fatalf("an Envoy that trusts only the new CA: %d %s", resp.status, resp.body)
		}
	})
	if err := s.stopKeyward(); err != nil {
		t.Error(err)
	}
	assertNoSecrets(t, "keyward's log", s.logs.String(), tok, openaiKey)
}

// TestUnixSocket: keyward on a unix socket beside Envoy (a pipe address in
// the generated bootstrap); the socket is gone after the stop.
func TestUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "authz.sock")
	s := newStack(t, stackOptions{listen: "unix:" + sock})
	tok := s.token("alice", "eng")
	s.wantProviderKey(t, tok)
	if err := s.stopKeyward(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

// wantProviderKey sends an allowed request through Envoy and wants the
// provider to have received the provider's key.
func (s *stack) wantProviderKey(t *testing.T, tok string) {
	t.Helper()
	resp := s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + tok}, chatBody)
	if resp.status != http.StatusOK {
		t.Fatalf("through Envoy: %d %s", resp.status, resp.body)
	}
	if req, ok := s.provider.Last(); !ok || req.Header.Get("authorization") != "Bearer "+openaiKey {
		t.Fatal("the provider did not receive the provider key")
	}
}

// checkOver asks keyward directly, as Envoy would, with creds.
func checkOver(t *testing.T, target string, creds credentials.TransportCredentials, tok string) (*authv3.CheckResponse, error) {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return authv3.NewAuthorizationClient(conn).Check(ctx, checkRequest(tok))
}

// servedIssuer is the issuer of the certificate keyward presents to a new
// connection, "" when the handshake fails.
func servedIssuer(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return ""
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Issuer.CommonName
}

// secondEnvoy starts another Envoy on the bootstrap envoy-config makes of
// the stack's configuration with envoy.authz_tls fields replaced, and
// returns its listener's URL.
func (s *stack) secondEnvoy(t *testing.T, authzTLS map[string]any) string {
	t.Helper()
	raw, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	listen, admin := envoytest.FreeAddr(t), envoytest.FreeAddr(t)
	e := cfg["envoy"].(map[string]any)
	e["listen"], e["admin"] = listen, admin
	for k, v := range authzTLS {
		e["authz_tls"].(map[string]any)[k] = v
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.dir, "second-envoy.yaml")
	writeFile(t, path, string(out))
	bootstrap, err := s.kwWith(path, "envoy-config")
	if err != nil {
		t.Fatal(err)
	}
	envoytest.Start(t, []byte(bootstrap), admin)
	return "http://" + listen
}
