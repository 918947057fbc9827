// Package testoidc is an OpenID Connect issuer for tests, in process on
// loopback: it serves a discovery document and a key set (JWKS), counts
// the requests for each, signs tokens with keys the test makes, and
// rotates its keys on demand. Nothing here is fit for anything but tests.
package testoidc

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// Key is a signing key of the issuer (or, unpublished, of a forger).
type Key struct {
	ID     string
	Alg    jose.SignatureAlgorithm
	Signer crypto.Signer
}

// NewKey makes a key for alg (RS256, ES256 or EdDSA) named id.
func NewKey(t testing.TB, id string, alg jose.SignatureAlgorithm) Key {
	t.Helper()
	var s crypto.Signer
	var err error
	switch alg {
	case jose.RS256:
		s, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		s, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.EdDSA:
		_, s, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("testoidc: no key for %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return Key{ID: id, Alg: alg, Signer: s}
}

// Issuer is the test issuer.
type Issuer struct {
	// URL is the issuer's URL (iss), https when made by NewTLS.
	URL string
	srv *httptest.Server

	mu        sync.Mutex
	published []Key

	jwks, discovery atomic.Int64
}

// New starts an issuer over plain http on 127.0.0.1 that publishes keys.
func New(t testing.TB, keys ...Key) *Issuer {
	return start(t, httptest.NewUnstartedServer(nil), false, keys)
}

// NewTLS starts an issuer over https on 127.0.0.1; CAFile writes the
// certificate a client must trust.
func NewTLS(t testing.TB, keys ...Key) *Issuer {
	return start(t, httptest.NewUnstartedServer(nil), true, keys)
}

func start(t testing.TB, srv *httptest.Server, tls bool, keys []Key) *Issuer {
	t.Helper()
	i := &Issuer{srv: srv, published: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		i.discovery.Add(1)
		writeJSON(w, map[string]any{"issuer": i.URL, "jwks_uri": i.URL + "/keys", "id_token_signing_alg_values_supported": []string{"RS256", "ES256", "EdDSA"}})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, _ *http.Request) {
		i.jwks.Add(1)
		w.Write(i.JWKS())
	})
	srv.Config.Handler = mux
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	i.URL = srv.URL
	return i
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// JWKS is the key set the issuer publishes now.
func (i *Issuer) JWKS() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	return JWKS(i.published...)
}

// JWKS is the key set that publishes keys (their public halves): what a
// local JWKS file holds.
func JWKS(keys ...Key) []byte {
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Signer.Public(), KeyID: k.ID, Algorithm: string(k.Alg), Use: "sig"})
	}
	raw, err := json.Marshal(set)
	if err != nil {
		panic(err) // the keys are the test's own
	}
	return raw
}

// Publish replaces the published keys: a rotation.
func (i *Issuer) Publish(keys ...Key) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.published = keys
}

// Close stops the issuer: it is down from now on.
func (i *Issuer) Close() { i.srv.Close() }

// JWKSRequests counts the key set requests served.
func (i *Issuer) JWKSRequests() int64 { return i.jwks.Load() }

// DiscoveryRequests counts the discovery requests served.
func (i *Issuer) DiscoveryRequests() int64 { return i.discovery.Load() }

// CAFile writes the issuer's TLS certificate (it is its own CA) into dir
// and returns the path.
func (i *Issuer) CAFile(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "oidc-ca.pem")
	raw := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: i.srv.Certificate().Raw})
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Client is an HTTP client that trusts the issuer's certificate.
func (i *Issuer) Client() *http.Client { return i.srv.Client() }

// Sign signs claims with k, its id in the header.
func Sign(t testing.TB, k Key, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.Alg, Key: jose.JSONWebKey{Key: k.Signer, KeyID: k.ID}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Unsigned is a token with header alg none (and a junk signature segment,
// so that it has a JWT's shape).
func Unsigned(t testing.TB, kid string, claims map[string]any) string {
	t.Helper()
	return compact(t, map[string]any{"alg": "none", "kid": kid, "typ": "JWT"}, claims, []byte("junk"))
}

// HMACWithPublicKey is the algorithm confusion attack: HS256 with k's
// public key, as published in the JWKS, for the shared secret.
func HMACWithPublicKey(t testing.TB, k Key, claims map[string]any) string {
	t.Helper()
	jwk, err := json.Marshal(jose.JSONWebKey{Key: k.Signer.Public(), KeyID: k.ID})
	if err != nil {
		t.Fatal(err)
	}
	header := map[string]any{"alg": "HS256", "kid": k.ID, "typ": "JWT"}
	h, p := segment(t, header), segment(t, claims)
	mac := hmac.New(sha256.New, jwk)
	mac.Write([]byte(h + "." + p))
	return h + "." + p + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func compact(t testing.TB, header, claims map[string]any, sig []byte) string {
	return segment(t, header) + "." + segment(t, claims) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func segment(t testing.TB, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}
