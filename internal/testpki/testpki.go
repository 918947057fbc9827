// Package testpki makes throwaway X.509 PKIs for tests: a CA, and
// certificates it issues for identities written the way keyward's
// configuration writes them (a "spiffe://…" URI SAN, an IP address, or a
// DNS name). Keys are ECDSA P-256; nothing here is fit for anything but a
// test.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// validity is how long issued certificates are valid on either side of
// now: long enough for any test, short enough to be obviously throwaway.
const validity = 24 * time.Hour

// CA is a self-signed certificate authority.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// PEM is Cert, PEM-encoded: the client or server CA bundle.
	PEM []byte
	key *ecdsa.PrivateKey
}

// Leaf is a certificate issued by a CA, with its key.
type Leaf struct {
	// Cert is the certificate.
	Cert *x509.Certificate
	// CertPEM and KeyPEM are the certificate and its PKCS#8 key,
	// PEM-encoded, as they are written to files.
	CertPEM, KeyPEM []byte
	// TLS is the pair for a crypto/tls configuration.
	TLS tls.Certificate
}

// NewCA makes a CA named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-validity),
		NotAfter:              time.Now().Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testpki: CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: CA: %v", err)
	}
	return &CA{Cert: cert, PEM: pemBlock("CERTIFICATE", der), key: key}
}

// Issue makes a certificate for both server and client use whose subject
// alternative names are ids: "spiffe://…" (any URI with a scheme) becomes
// a URI SAN, an IP address an IP SAN, anything else a DNS name. The first
// id is also the common name.
func (ca *CA) Issue(t testing.TB, ids ...string) *Leaf {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		NotBefore:    time.Now().Add(-validity),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if len(ids) > 0 {
		tmpl.Subject.CommonName = ids[0]
	}
	for _, id := range ids {
		addSAN(t, tmpl, id)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testpki: issue %v: %v", ids, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testpki: key: %v", err)
	}
	l := &Leaf{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", pkcs8)}
	if l.Cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatalf("testpki: issue: %v", err)
	}
	if l.TLS, err = tls.X509KeyPair(l.CertPEM, l.KeyPEM); err != nil {
		t.Fatalf("testpki: issue: %v", err)
	}
	return l
}

func addSAN(t testing.TB, tmpl *x509.Certificate, id string) {
	t.Helper()
	if ip := net.ParseIP(id); ip != nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		return
	}
	if strings.Contains(id, "://") {
		u, err := url.Parse(id)
		if err != nil {
			t.Fatalf("testpki: identity %q: %v", id, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
		return
	}
	tmpl.DNSNames = append(tmpl.DNSNames, id)
}

// WriteFiles writes the certificate and key into dir as NAME.crt and
// NAME.key, each atomically (see WriteAtomic), and returns their paths.
func (l *Leaf) WriteFiles(t testing.TB, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	WriteAtomic(t, keyFile, l.KeyPEM)
	WriteAtomic(t, certFile, l.CertPEM)
	return certFile, keyFile
}

// WriteAtomic writes data to path by writing a temporary file in the same
// folder and renaming it over path, as cert-manager and SPIRE's helpers
// replace certificates: a reader sees the old file or the new one, never
// half of one.
func WriteAtomic(t testing.TB, path string, data []byte) {
	t.Helper()
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr != nil || cerr != nil {
		os.Remove(f.Name())
		t.Fatalf("testpki: write %s: %v %v", path, werr, cerr)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		t.Fatalf("testpki: %v", err)
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testpki: key: %v", err)
	}
	return key
}

// serial is a random 64-bit serial number, so that a rotated certificate
// is told apart from the one it replaces.
func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		t.Fatalf("testpki: serial: %v", err)
	}
	return n.Add(n, big.NewInt(1))
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}
