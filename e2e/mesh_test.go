package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testpki"
)

// The workloads of the mesh tests: SPIFFE IDs in their client
// certificates, signed by the test's mesh CA.
const (
	payments = "spiffe://mesh.test/ns/payments/sa/api"
	web      = "spiffe://mesh.test/ns/web/sa/front"
	// placeholder is the API key an SDK sends when the mesh is the
	// identity: the SDKs insist on one.
	placeholder = "sk-mesh-placeholder-0000"
)

// workloadPKI is a mesh CA and the files Envoy and the workloads use.
type workloadPKI struct {
	ca                 *testpki.CA
	caFile             string
	envoyCert, envoyKy string
	certs              map[string][2]string // workload → cert, key files
	leaves             map[string]*testpki.Leaf
}

func newWorkloadPKI(t *testing.T, workloads ...string) *workloadPKI {
	t.Helper()
	dir := t.TempDir()
	p := &workloadPKI{ca: testpki.NewCA(t, "e2e mesh CA"), caFile: filepath.Join(dir, "ca.crt"), certs: map[string][2]string{}, leaves: map[string]*testpki.Leaf{}}
	testpki.WriteAtomic(t, p.caFile, p.ca.PEM)
	p.envoyCert, p.envoyKy = p.ca.Issue(t, "localhost", "127.0.0.1").WriteFiles(t, dir, "envoy")
	for i, w := range workloads {
		leaf := p.ca.Issue(t, w)
		cert, key := leaf.WriteFiles(t, dir, fmt.Sprint("workload", i))
		p.certs[w], p.leaves[w] = [2]string{cert, key}, leaf
	}
	return p
}

// downstreamTLS is the envoy section's downstream_tls for keyward.yaml,
// indented to follow the stack's envoy block.
func (p *workloadPKI) downstreamTLS() string {
	return fmt.Sprintf("  downstream_tls: {cert_file: %s, key_file: %s, client_ca_file: %s, require_client_cert: true}\n", p.envoyCert, p.envoyKy, p.caFile)
}

// client is an HTTPS client that presents workload's certificate.
func (p *workloadPKI) client(workload string) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.Cert)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{p.leaves[workload].TLS}, MinVersion: tls.VersionTLS12,
	}}}
}

// sdkEnv is the environment that makes sdk_client.py present workload's
// certificate.
func (p *workloadPKI) sdkEnv(workload string) []string {
	return []string{"KW_CERT=" + p.certs[workload][0], "KW_KEY=" + p.certs[workload][1], "KW_CA=" + p.caFile}
}

// meshStack is a stack whose Envoy takes LLM calls over mutual TLS.
func meshStack(t *testing.T, p *workloadPKI, opts stackOptions) *stack {
	t.Helper()
	opts.extra = p.downstreamTLS() + opts.extra
	s := newStack(t, opts)
	s.envoyURL = strings.Replace(s.envoyURL, "http://", "https://", 1)
	return s
}

// meshCall sends a chat completion through Envoy as workload, with
// headers, and returns the status and error code.
func (s *stack) meshCall(t *testing.T, c *http.Client, headers map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", s.envoyURL+"/openai/v1/chat/completions", strings.NewReader(chatBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("content-type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, response{status: resp.StatusCode, body: b}.errorCode()
}

// TestMeshIdentity runs workloads with SPIFFE client certificates through
// real Envoy (downstream mTLS from keyward envoy-config): the official
// SDKs with a placeholder API key and no keyward token get the mapped
// user's group and keyward's key at the provider, never the placeholder;
// an unmapped workload is refused; a token bound to one workload is
// refused from another.
func TestMeshIdentity(t *testing.T) {
	p := newWorkloadPKI(t, payments, web)
	s := meshStack(t, p, stackOptions{env: []string{"KEYWARD_DISABLE_CUSTOM_KEYS=true"}})
	s.kw("group", "add", "mesh")
	s.kw("user", "add", "svc-payments", "-groups", "mesh")
	s.kw("identity", "add", "payments", "-principal", "spiffe://mesh.test/ns/payments/*", "-user", "svc-payments", "-group", "mesh")
	pay, webClient := p.client(payments), p.client(web)
	// The file store is polled: wait until keyward serves the mapping.
	waitFor(t, 10*time.Second, func() bool {
		status, _ := s.meshCall(t, pay, map[string]string{"authorization": "Bearer " + placeholder})
		return status == 200
	})
	secrets := []string{openaiKey, anthropicKey, placeholder}

	// The SDK's placeholder never reaches the provider.
	s.sdkAsIdentity(t, placeholder, "svc-payments", "mesh", p.sdkEnv(payments), placeholder)

	t.Run("unmapped", func(t *testing.T) {
		r := s.pythonSDK(t, "openai", placeholder, p.sdkEnv(web)...)
		if r.OK || r.Status != 401 || r.Code != "principal_not_mapped" {
			t.Fatalf("unmapped workload: %+v", r)
		}
		if status, code := s.meshCall(t, webClient, nil); status != 401 || code != "principal_not_mapped" {
			t.Fatalf("unmapped workload without a key: %d %s", status, code)
		}
	})

	t.Run("bound token", func(t *testing.T) {
		tok := strings.TrimSpace(s.kw(tokenCreate("alice", "eng", "-principal", payments)...))
		secrets = append(secrets, tok)
		if l := s.kw("token", "list", "-user", "alice"); !strings.Contains(l, payments) {
			t.Fatalf("token list does not show the binding:\n%s", l)
		}
		bearer := map[string]string{"authorization": "Bearer " + tok}
		waitFor(t, 10*time.Second, func() bool {
			status, _ := s.meshCall(t, pay, bearer)
			return status == 200
		})
		if req, _ := s.provider.Last(); req.Header.Get("x-keyward-user") != "alice" {
			t.Errorf("the bound token went out as %q", req.Header.Get("x-keyward-user"))
		}
		if status, code := s.meshCall(t, webClient, bearer); status != 403 || code != "token_bound_elsewhere" {
			t.Fatalf("bound token from the wrong peer: %d %s", status, code)
		}
		r := s.pythonSDK(t, "anthropic", tok, p.sdkEnv(web)...)
		if r.OK || r.Code != "token_bound_elsewhere" {
			t.Fatalf("bound token from the wrong peer, by the SDK: %+v", r)
		}
	})

	t.Run("disabled then deleted", func(t *testing.T) {
		s.kw("identity", "disable", "payments")
		waitFor(t, 10*time.Second, func() bool {
			_, code := s.meshCall(t, pay, nil)
			return code == "principal_disabled"
		})
		s.kw("identity", "delete", "payments")
		waitFor(t, 10*time.Second, func() bool {
			_, code := s.meshCall(t, pay, nil)
			return code == "principal_not_mapped"
		})
	})

	assertNoSecrets(t, "keyward's log", s.logs.String(), secrets...)
	assertNoSecrets(t, "Envoy's log", s.envoy.Log(), secrets...)
}
