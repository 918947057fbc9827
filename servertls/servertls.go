// Package servertls is the TLS of keyward's listeners, read from PEM files
// and reloaded when they change, so that certificates rotated on disk by
// cert-manager or SPIRE take effect without a restart: a server
// certificate and key, and optionally a client CA bundle with an
// allow-list of client identities.
//
// A reload that cannot be used (a file missing or half-written, a key that
// does not match its certificate) never replaces the material in use: the
// last good one keeps serving and the problem is logged once.
package servertls

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/keyward/keyward/field"
)

// Files name the PEM files of one listener; the yaml names are the
// configuration's.
type Files struct {
	// CertFile is the server certificate chain, leaf first.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the server certificate's private key.
	KeyFile string `yaml:"key_file"`
	// ClientCAFile, when set, makes client certificates required: a
	// client must present one that chains to a CA in this bundle.
	ClientCAFile string `yaml:"client_ca_file"`
	// AllowedClients, when not empty, admits only client certificates
	// that carry one of these identities: "spiffe://…" (any URI) is
	// compared with the certificate's URI SANs, anything else with its
	// DNS SANs (without regard to case). Needs ClientCAFile.
	AllowedClients []string `yaml:"allowed_clients"`
}

// Enabled reports whether any file is named: TLS is then on.
func (f Files) Enabled() bool {
	return f.CertFile != "" || f.KeyFile != "" || f.ClientCAFile != "" || len(f.AllowedClients) > 0
}

// Validate checks the fields without reading the files; each problem is a
// *field.Error naming its field as written in YAML, under prefix (see
// field.Prefix) when prefix is set.
func (f Files) Validate(prefix string) error {
	var l field.List
	if f.CertFile == "" {
		l.Add("cert_file", "required with TLS")
	}
	if f.KeyFile == "" {
		l.Add("key_file", "required with TLS")
	}
	if len(f.AllowedClients) > 0 && f.ClientCAFile == "" {
		l.Add("allowed_clients", "needs client_ca_file, which verifies them")
	}
	for i, id := range f.AllowedClients {
		l.Merge(fmt.Sprintf("allowed_clients[%d]", i), ValidateIdentity(id))
	}
	return field.Prefix(prefix, l.Err())
}

// ValidateIdentity checks one identity of an allow-list: a URI with a
// scheme and a host ("spiffe://trust.domain/path"), or a DNS name.
// Wildcards are not identities: they would admit names no one chose.
func ValidateIdentity(id string) error {
	if IsURI(id) {
		u, err := url.Parse(id)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("%q is not a URI with a scheme and a host", id)
		}
		return nil
	}
	if id == "" || strings.ContainsAny(id, "*/:@ \t") {
		return fmt.Errorf("%q is not a DNS name or a spiffe:// URI", id)
	}
	return nil
}

// ErrClientNotAllowed is the handshake error of a client certificate whose
// identities are not on the allow-list.
var ErrClientNotAllowed = errors.New("client certificate identity not allowed")

// Options tune a Source.
type Options struct {
	// Name says which listener this is, in log events.
	Name string
	// Log receives reloads and refused clients. Default: discarded.
	Log *slog.Logger
	// NextProtos are the ALPN protocols offered (gRPC adds h2 itself).
	NextProtos []string
	// OnReload, when set, is called after each reload that replaced the
	// material, before Reload returns.
	OnReload func()
}

// Source holds the current TLS material of one listener. Config's
// GetConfigForClient hands every new connection the latest good material.
type Source struct {
	files   Files
	opts    Options
	allowed allowList
	cur     atomic.Pointer[material]
	refused rate.Sometimes // log refused clients at most once a second
	reloads atomic.Uint64

	mu       sync.Mutex        // serialises Reload
	tried    [sha256.Size]byte // digest of the files last read
	triedErr error             // why they could not be used, if they could not
}

// material is one loaded set of files.
type material struct {
	config *tls.Config
	leaf   *x509.Certificate
}

// Load reads the files and returns a Source serving them; an error here is
// a configuration error.
func Load(f Files, opts Options) (*Source, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if err := f.Validate(""); err != nil {
		return nil, err
	}
	s := &Source{files: f, opts: opts, allowed: newAllowList(f.AllowedClients), refused: rate.Sometimes{Interval: time.Second}}
	raw, sum, err := s.read()
	if err != nil {
		return nil, err
	}
	m, err := s.parse(raw)
	if err != nil {
		return nil, err
	}
	s.tried = sum
	s.cur.Store(m)
	s.logLoaded("tls certificate loaded", m)
	return s, nil
}

// Config returns the server configuration: each handshake gets the
// material current at that moment.
func (s *Source) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load().config, nil
		},
	}
}

// Leaf returns the server certificate in use.
func (s *Source) Leaf() *x509.Certificate { return s.cur.Load().leaf }

// Reloads counts the reloads that replaced the material since Load.
func (s *Source) Reloads() uint64 { return s.reloads.Load() }

// Reload reads the files and, if they changed and are usable, serves them
// from the next handshake on. It reports whether the material was
// replaced. Files that cannot be used are reported as the error, and
// logged when they first show; the previous material stays.
func (s *Source) Reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	raw, sum, err := s.read()
	if err != nil {
		sum = [sha256.Size]byte{} // files that cannot be read: logged when it starts
	}
	if sum == s.tried {
		return false, s.triedErr // nothing new since the last read
	}
	s.tried = sum
	if err == nil {
		var m *material
		if m, err = s.parse(raw); err == nil {
			s.triedErr = nil
			s.cur.Store(m)
			s.reloads.Add(1)
			s.logLoaded("tls certificate reloaded", m)
			if s.opts.OnReload != nil {
				s.opts.OnReload()
			}
			return true, nil
		}
	}
	s.triedErr = err
	// A rotation that renames the key and the certificate one after the
	// other shows a mismatched pair for a moment: the next poll finds the
	// finished pair.
	s.opts.Log.Warn("tls files unusable; keeping the previous certificate", "listener", s.opts.Name, "err", err)
	return false, err
}

// Watch calls Reload every interval until ctx is done.
func (s *Source) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = s.Reload() // logged by Reload
		}
	}
}

// read returns the files' contents in order (certificate, key, client CA)
// and a digest of them all, which tells a change.
func (s *Source) read() ([3][]byte, [sha256.Size]byte, error) {
	var raw [3][]byte
	paths := [3]struct{ field, path string }{{"cert_file", s.files.CertFile}, {"key_file", s.files.KeyFile}, {"client_ca_file", s.files.ClientCAFile}}
	h := sha256.New()
	for i, p := range paths {
		if p.path == "" {
			continue
		}
		b, err := os.ReadFile(p.path)
		if err != nil {
			return raw, [sha256.Size]byte{}, fmt.Errorf("%s: %w", p.field, err)
		}
		raw[i] = b
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	return raw, [sha256.Size]byte(h.Sum(nil)), nil
}

// parse builds the server configuration from the files' contents. Errors
// name the file's field and never quote its contents.
func (s *Source) parse(raw [3][]byte) (*material, error) {
	pair, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		return nil, fmt.Errorf("cert_file %s, key_file %s: %w", s.files.CertFile, s.files.KeyFile, err)
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		NextProtos:   s.opts.NextProtos,
	}
	if s.files.ClientCAFile != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(raw[2]) {
			return nil, fmt.Errorf("client_ca_file %s: no PEM certificates", s.files.ClientCAFile)
		}
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
		if len(s.allowed) > 0 {
			c.VerifyConnection = s.verifyClient
		}
	}
	return &material{config: c, leaf: pair.Leaf}, nil
}

// verifyClient admits a verified client certificate only if one of its
// identities is on the allow-list.
func (s *Source) verifyClient(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return ErrClientNotAllowed // RequireAndVerifyClientCert ensures one; fail closed regardless
	}
	leaf := cs.PeerCertificates[0]
	if s.allowed.admits(leaf) {
		return nil
	}
	ids := identities(leaf)
	s.refused.Do(func() {
		s.opts.Log.Warn("tls client refused: identity not in allowed_clients", "listener", s.opts.Name, "identities", ids)
	})
	return fmt.Errorf("%w: %s", ErrClientNotAllowed, strings.Join(ids, ", "))
}

func (s *Source) logLoaded(msg string, m *material) {
	s.opts.Log.Info(msg, "listener", s.opts.Name, "serial", fmt.Sprintf("%x", m.leaf.SerialNumber),
		"identities", identities(m.leaf), "not_after", m.leaf.NotAfter.UTC().Format(time.RFC3339))
}

// allowList is a set of identities: URIs exactly, DNS names in lower case.
type allowList map[string]bool

func newAllowList(ids []string) allowList {
	a := allowList{}
	for _, id := range ids {
		a[normalise(id)] = true
	}
	return a
}

func (a allowList) admits(leaf *x509.Certificate) bool {
	for _, id := range identities(leaf) {
		if a[normalise(id)] {
			return true
		}
	}
	return false
}

// normalise lower-cases DNS names, which compare without regard to case,
// and leaves URIs as they are.
func normalise(id string) string {
	if IsURI(id) {
		return id
	}
	return strings.ToLower(id)
}

// IsURI reports whether an identity is a URI (compared with URI SANs)
// rather than a DNS name.
func IsURI(id string) bool { return strings.Contains(id, "://") }

// identities lists a certificate's URI and DNS SANs.
func identities(c *x509.Certificate) []string {
	ids := make([]string, 0, len(c.URIs)+len(c.DNSNames))
	for _, u := range c.URIs {
		ids = append(ids, u.String())
	}
	return append(ids, c.DNSNames...)
}
