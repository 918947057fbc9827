// Package oidc verifies the JWTs of one OpenID Connect issuer for the
// management API: the signature against the issuer's key set (JWKS:
// asymmetric algorithms only, never none or HMAC), iss exactly, aud
// containing the audience, exp, nbf and iat within a bounded clock skew;
// then it reads the keyward role and user from configured claims.
//
// The key set is fetched with a timeout and cached, fetched again when a
// token names a key id it lacks (the issuer rotated its keys), at most
// once per MinRefetchInterval, so that forged tokens cannot make keyward
// hammer the issuer. Nothing here runs in the background: fetches happen
// on the requests that need them.
package oidc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyward/keyward/field"
)

// Errors of Verify, for errors.Is. The wrapped detail names the check that
// failed, never a claim of an unverified token.
var (
	// ErrInvalid is a token that is malformed, not signed by the
	// issuer's keys with an allowed algorithm, or not for this issuer and
	// audience, or not valid yet.
	ErrInvalid = errors.New("oidc token not valid")
	// ErrExpired is a genuine token for this audience past its exp.
	ErrExpired = errors.New("oidc token expired")
	// ErrNoRole is a genuine token whose role claim holds none of the
	// admin or user values.
	ErrNoRole = errors.New("oidc token grants no keyward role")
	// ErrUnavailable is the issuer's key set never loaded: the token
	// cannot be checked.
	ErrUnavailable = errors.New("the oidc issuer's keys are unavailable")
)

// algorithms are the signature algorithms accepted: asymmetric only. none
// is never accepted by go-jose; HMAC is left out so that a public key can
// never serve as a shared secret.
var algorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// Defaults of Options.
const (
	DefaultFetchTimeout       = 5 * time.Second
	DefaultMinRefetchInterval = 10 * time.Second
	DefaultMaxKeyAge          = time.Hour
)

// maxSubject bounds the sub claim, which goes into the audit log.
const maxSubject = 255

// Options are what New needs besides the configuration.
type Options struct {
	// Log receives key set fetches and failures. Default: discarded.
	Log *slog.Logger
	// Now is the clock tokens are checked against. Default time.Now.
	Now func() time.Time
	// Client fetches discovery and keys. Default: a client that trusts
	// Config.CAFile (else the system roots) and follows no redirects.
	Client *http.Client
	// FetchTimeout bounds one fetch of the key set (discovery
	// included). Default 5s.
	FetchTimeout time.Duration
	// MinRefetchInterval is the least time between two fetches of the
	// key set, whatever tokens arrive. Default 10s.
	MinRefetchInterval time.Duration
	// MaxKeyAge is how long a fetched key set is used before the next
	// token has it fetched again (a key the issuer withdrew stops
	// working). Default 1h.
	MaxKeyAge time.Duration
}

// Identity is who a verified token names.
type Identity struct {
	// Subject is the token's sub.
	Subject string
	// Who names the caller in audit events: oidc:<issuer host>:<sub>.
	Who string
	// Admin is a token whose role claim holds an admin value; otherwise
	// it holds a user value.
	Admin bool
	// User is the user claim's value ("" when absent or not a string):
	// the keyward user a user-role token acts as.
	User string
}

// Verifier verifies the tokens of the configured issuer. It is safe for
// concurrent use.
type Verifier struct {
	cfg  Config
	host string
	now  func() time.Time
	keys *keySet
}

// New returns a Verifier for cfg, which must be enabled and valid. It
// reads ca_file and jwks_file now, so that a bad path fails at start, but
// fetches nothing from the issuer: an issuer that is down must not keep
// keyward from serving.
func New(cfg Config, opts Options) (*Verifier, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, field.Errorf("issuer", "required")
	}
	iss, _ := url.Parse(cfg.Issuer)
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ks := &keySet{
		now:         opts.Now,
		timeout:     orDefault(opts.FetchTimeout, DefaultFetchTimeout),
		minInterval: orDefault(opts.MinRefetchInterval, DefaultMinRefetchInterval),
		maxAge:      orDefault(opts.MaxKeyAge, DefaultMaxKeyAge),
		log:         opts.Log,
	}
	if cfg.JWKSFile != "" {
		ks.fetch = fileKeys(cfg.JWKSFile)
		if _, err := ks.fetch(context.Background()); err != nil {
			return nil, field.Errorf("jwks_file", "%v", err)
		}
	} else {
		client := opts.Client
		if client == nil {
			var err error
			if client, err = newClient(cfg.CAFile); err != nil {
				return nil, field.Errorf("ca_file", "%v", err)
			}
		}
		ks.fetch = (&remoteKeys{client: client, issuer: cfg.Issuer, jwksURI: cfg.JWKSURI}).fetch
	}
	return &Verifier{cfg: cfg, host: iss.Host, now: opts.Now, keys: ks}, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// newClient is the HTTP client of the key fetches: caFile's roots when
// given, and no redirects, which could lead anywhere.
func newClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// LooksLikeJWT reports whether s has a compact JWS's shape: three
// base64url segments, none empty. It says nothing of validity: it picks
// the check a bearer credential goes to.
func LooksLikeJWT(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.IndexFunc(p, func(r rune) bool {
			return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
		}) >= 0 {
			return false
		}
	}
	return true
}

// Verify checks raw and returns who it names. With ErrNoRole, the
// Identity is that of the genuine token that carries no role, for the
// audit log; with the other errors it is empty.
func (v *Verifier) Verify(ctx context.Context, raw string) (Identity, error) {
	tok, err := jwt.ParseSigned(raw, algorithms)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: malformed, or an algorithm not accepted", ErrInvalid)
	}
	if len(tok.Headers) != 1 {
		return Identity{}, fmt.Errorf("%w: not one signature", ErrInvalid)
	}
	h := tok.Headers[0]
	keys, err := v.keys.candidates(ctx, h.KeyID)
	if err != nil {
		return Identity{}, err
	}
	var claims jwt.Claims
	var all map[string]any
	verified := false
	for _, k := range keys {
		if k.Algorithm != "" && k.Algorithm != h.Algorithm {
			continue
		}
		if tok.Claims(k.Key, &claims, &all) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return Identity{}, fmt.Errorf("%w: not signed by a key of the issuer", ErrInvalid)
	}
	if err := v.checkClaims(&claims); err != nil {
		return Identity{}, err
	}
	id := Identity{Subject: claims.Subject, Who: "oidc:" + v.host + ":" + claims.Subject}
	if v.cfg.UserClaim == "sub" {
		id.User = claims.Subject
	} else {
		id.User, _ = all[v.cfg.UserClaim].(string)
	}
	values := roleValues(all, v.cfg.RoleClaim)
	switch {
	case slices.ContainsFunc(values, func(s string) bool { return slices.Contains(v.cfg.AdminValues, s) }):
		id.Admin = true
	case slices.ContainsFunc(values, func(s string) bool { return slices.Contains(v.cfg.UserValues, s) }):
	default:
		return id, fmt.Errorf("%w: claim %s holds no admin or user value", ErrNoRole, v.cfg.RoleClaim)
	}
	return id, nil
}

// checkClaims checks the registered claims of a token whose signature
// holds.
func (v *Verifier) checkClaims(c *jwt.Claims) error {
	switch {
	case c.Expiry == nil:
		return fmt.Errorf("%w: no exp", ErrInvalid)
	case c.Subject == "" || len(c.Subject) > maxSubject || strings.IndexFunc(c.Subject, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: sub empty, longer than %d bytes or with control characters", ErrInvalid, maxSubject)
	}
	err := c.ValidateWithLeeway(jwt.Expected{Issuer: v.cfg.Issuer, AnyAudience: jwt.Audience{v.cfg.Audience}, Time: v.now()}, v.cfg.ClockSkew)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jwt.ErrExpired):
		return fmt.Errorf("%w (beyond the %s clock skew)", ErrExpired, v.cfg.ClockSkew)
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return fmt.Errorf("%w: iss is not the issuer", ErrInvalid)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return fmt.Errorf("%w: aud does not hold the audience", ErrInvalid)
	case errors.Is(err, jwt.ErrNotValidYet):
		return fmt.Errorf("%w: nbf in the future beyond the %s clock skew", ErrInvalid, v.cfg.ClockSkew)
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return fmt.Errorf("%w: iat in the future beyond the %s clock skew", ErrInvalid, v.cfg.ClockSkew)
	}
	return fmt.Errorf("%w: claims", ErrInvalid)
}

// roleValues reads the role claim: a string or a list of strings, under
// its own name, or else, for a dotted name, under that path of nested
// objects.
func roleValues(all map[string]any, claim string) []string {
	val, ok := all[claim]
	if !ok && strings.Contains(claim, ".") {
		var cur any = all
		for _, part := range strings.Split(claim, ".") {
			m, _ := cur.(map[string]any)
			cur = m[part]
		}
		val = cur
	}
	switch val := val.(type) {
	case string:
		return []string{val}
	case []any:
		out := make([]string, 0, len(val))
		for _, v := range val {
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
