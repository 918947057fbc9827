package oidc

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/internal/testoidc"
)

const audience = "keyward-mgmt"

// clock is a test clock the tests move.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// claims are a valid token's claims at now, changed by edit.
func claims(iss string, now time.Time, edit func(map[string]any)) map[string]any {
	c := map[string]any{
		"iss": iss, "aud": []string{"other", audience}, "sub": "u-1234",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"keyward_role": "admin", "preferred_username": "alice",
	}
	if edit != nil {
		edit(c)
	}
	return c
}

func TestVerify(t *testing.T) {
	rsaKey := testoidc.NewKey(t, "rsa-1", jose.RS256)
	ecKey := testoidc.NewKey(t, "ec-1", jose.ES256)
	edKey := testoidc.NewKey(t, "ed-1", jose.EdDSA)
	iss := testoidc.NewTLS(t, rsaKey, ecKey, edKey)
	clk := newClock()
	v, err := New(Config{Issuer: iss.URL, Audience: audience, CAFile: iss.CAFile(t, t.TempDir()), UserClaim: "preferred_username", RoleClaim: "keyward_role"},
		Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	now := clk.now()
	set := func(k string, val any) func(map[string]any) { return func(c map[string]any) { c[k] = val } }
	forger := testoidc.NewKey(t, "rsa-1", jose.RS256) // the issuer's key id, not its key
	for name, c := range map[string]struct {
		tok       string
		want      error
		wantAdmin bool
		wantUser  string
	}{
		"admin, RS256":                 {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, nil)), wantAdmin: true, wantUser: "alice"},
		"admin, ES256":                 {tok: testoidc.Sign(t, ecKey, claims(iss.URL, now, nil)), wantAdmin: true, wantUser: "alice"},
		"admin, EdDSA":                 {tok: testoidc.Sign(t, edKey, claims(iss.URL, now, nil)), wantAdmin: true, wantUser: "alice"},
		"user":                         {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, set("keyward_role", "user"))), wantUser: "alice"},
		"user among groups":            {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, set("keyward_role", []string{"staff", "user"}))), wantUser: "alice"},
		"audience as a string":         {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, set("aud", audience))), wantAdmin: true, wantUser: "alice"},
		"expired within skew":          {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, set("exp", now.Add(-20*time.Second).Unix()))), wantAdmin: true, wantUser: "alice"},
		"expired":                      {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, set("exp", now.Add(-31*time.Second).Unix()))), want: ErrExpired},
		"not yet valid within skew":    {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, set("nbf", now.Add(20*time.Second).Unix()))), wantAdmin: true, wantUser: "alice"},
		"not yet valid":                {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, set("nbf", now.Add(31*time.Second).Unix()))), want: ErrInvalid},
		"issued in the future":         {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, set("iat", now.Add(time.Minute).Unix()))), want: ErrInvalid},
		"no exp":                       {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, func(c map[string]any) { delete(c, "exp") })), want: ErrInvalid},
		"no sub":                       {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, set("sub", ""))), want: ErrInvalid},
		"sub with a newline":           {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, set("sub", "a\nwho=root"))), want: ErrInvalid},
		"wrong issuer":                 {tok: testoidc.Sign(t, rsaKey, claims(iss.URL+"/other", now, nil)), want: ErrInvalid},
		"wrong audience":               {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, set("aud", "someone-else"))), want: ErrInvalid},
		"wrong key, known kid":         {tok: testoidc.Sign(t, forger, claims(iss.URL, now, nil)), want: ErrInvalid},
		"unknown kid":                  {tok: testoidc.Sign(t, testoidc.NewKey(t, "nope", jose.ES256), claims(iss.URL, now, nil)), want: ErrInvalid},
		"alg none":                     {tok: testoidc.Unsigned(t, "rsa-1", claims(iss.URL, now, nil)), want: ErrInvalid},
		"HS256 with the public key":    {tok: testoidc.HMACWithPublicKey(t, rsaKey, claims(iss.URL, now, nil)), want: ErrInvalid},
		"HS256 with the EC public key": {tok: testoidc.HMACWithPublicKey(t, ecKey, claims(iss.URL, now, nil)), want: ErrInvalid},
		"no role claim":                {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, func(c map[string]any) { delete(c, "keyward_role") })), want: ErrNoRole},
		"unmapped role":                {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, set("keyward_role", "root"))), want: ErrNoRole},
		"role of the wrong type":       {tok: testoidc.Sign(t, rsaKey, claims(iss.URL, now, set("keyward_role", map[string]any{"admin": true}))), want: ErrNoRole},
		"garbage":                      {tok: "a.b.c", want: ErrInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), c.tok)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("Verify: %+v, %v; want %v", id, err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), c.tok) {
				t.Fatal("the error holds the token")
			}
			if c.want != nil {
				return
			}
			if id.Admin != c.wantAdmin || id.User != c.wantUser || id.Subject != "u-1234" || id.Who != "oidc:"+strings.TrimPrefix(iss.URL, "https://")+":u-1234" {
				t.Fatalf("identity %+v", id)
			}
		})
	}
	if n := iss.DiscoveryRequests(); n != 1 {
		t.Fatalf("%d discovery requests, want 1 (the jwks_uri is kept)", n)
	}
}

func TestRoleClaimPath(t *testing.T) {
	k := testoidc.NewKey(t, "k", jose.ES256)
	iss := testoidc.New(t, k)
	clk := newClock()
	v, err := New(Config{Issuer: iss.URL, Audience: audience, RoleClaim: "realm_access.roles", AdminValues: []string{"kw-admin"}, UserValues: []string{"kw-user"}}, Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	tok := testoidc.Sign(t, k, claims(iss.URL, clk.now(), func(c map[string]any) {
		c["realm_access"] = map[string]any{"roles": []string{"offline", "kw-user"}}
	}))
	id, err := v.Verify(context.Background(), tok)
	if err != nil || id.Admin || id.User != "u-1234" {
		t.Fatalf("nested role: %+v %v", id, err)
	}
}

// TestKeyRotationAndRefetchLimit: a token with a key id the set lacks has
// the set fetched again — at most once per MinRefetchInterval, however
// many forged tokens with random key ids arrive.
func TestKeyRotationAndRefetchLimit(t *testing.T) {
	old := testoidc.NewKey(t, "old", jose.ES256)
	iss := testoidc.New(t, old)
	clk := newClock()
	const interval = 10 * time.Second
	v, err := New(Config{Issuer: iss.URL, Audience: audience}, Options{Now: clk.now, MinRefetchInterval: interval, MaxKeyAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	verify := func(k testoidc.Key) error {
		_, err := v.Verify(ctx, testoidc.Sign(t, k, claims(iss.URL, clk.now(), nil)))
		return err
	}
	if iss.JWKSRequests() != 0 {
		t.Fatal("New fetched the keys")
	}
	if err := verify(old); err != nil {
		t.Fatal(err)
	}
	if n := iss.JWKSRequests(); n != 1 {
		t.Fatalf("%d key set requests after the first token", n)
	}
	// 200 forged tokens, each with a random kid, within one interval:
	// no further request.
	const forged = 200
	for range forged {
		k := testoidc.Key{ID: rand.Text(), Alg: jose.ES256, Signer: old.Signer}
		if err := verify(k); !errors.Is(err, ErrInvalid) {
			t.Fatalf("forged kid: %v", err)
		}
	}
	if n := iss.JWKSRequests(); n != 1 {
		t.Fatalf("%d forged tokens cost %d key set requests, want 0", forged, n-1)
	}
	// The issuer rotates. Within the interval the new key is unknown;
	// once it has passed, the first token with it has the set fetched.
	fresh := testoidc.NewKey(t, "new", jose.EdDSA)
	iss.Publish(fresh)
	if err := verify(fresh); !errors.Is(err, ErrInvalid) {
		t.Fatalf("new key within the interval: %v", err)
	}
	clk.advance(interval)
	if err := verify(fresh); err != nil {
		t.Fatalf("new key after the interval: %v", err)
	}
	if n := iss.JWKSRequests(); n != 2 {
		t.Fatalf("%d key set requests after the rotation, want 2", n)
	}
	// The withdrawn key is refused, its kid costing no fetch within the
	// interval; an hour later the set is old and fetched again.
	if err := verify(old); !errors.Is(err, ErrInvalid) {
		t.Fatalf("withdrawn key: %v", err)
	}
	for range forged {
		verify(testoidc.Key{ID: rand.Text(), Alg: jose.ES256, Signer: old.Signer})
	}
	clk.advance(time.Hour)
	if err := verify(fresh); err != nil {
		t.Fatal(err)
	}
	if n := iss.JWKSRequests(); n != 3 {
		// the withdrawn key's and the forged kids within the interval
		// cost nothing; the hour-old set is fetched again
		t.Fatalf("%d key set requests, want 3", n)
	}
	t.Logf("%d forged tokens with random key ids per interval: 0 extra key set requests", forged)
}

// TestIssuerDown: with the issuer unreachable, a token cannot be checked
// (ErrUnavailable) and the next attempt waits for the interval.
func TestIssuerDown(t *testing.T) {
	k := testoidc.NewKey(t, "k", jose.ES256)
	iss := testoidc.New(t, k)
	clk := newClock()
	v, err := New(Config{Issuer: iss.URL, Audience: audience, JWKSURI: iss.URL + "/missing"}, Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	tok := testoidc.Sign(t, k, claims(iss.URL, clk.now(), nil))
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("issuer down: %v", err)
	}
}

func TestJWKSFile(t *testing.T) {
	k := testoidc.NewKey(t, "k", jose.RS256)
	iss := testoidc.New(t) // publishes nothing: the file is the source
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, (&testoidc.Issuer{}).JWKS(), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Issuer: iss.URL, Audience: audience, JWKSFile: path}, Options{}); err == nil {
		t.Fatal("an empty key set file accepted")
	}
	src := testoidc.New(t, k)
	if err := os.WriteFile(path, src.JWKS(), 0o600); err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	v, err := New(Config{Issuer: iss.URL, Audience: audience, JWKSFile: path}, Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), testoidc.Sign(t, k, claims(iss.URL, clk.now(), nil))); err != nil {
		t.Fatal(err)
	}
	if iss.JWKSRequests()+iss.DiscoveryRequests() != 0 {
		t.Fatal("the issuer was asked")
	}
	var fe *field.Error
	if _, err := New(Config{Issuer: iss.URL, Audience: audience, JWKSFile: path + ".nope"}, Options{}); !errors.As(err, &fe) || fe.Path != "jwks_file" {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := New(Config{Issuer: iss.URL, Audience: audience, CAFile: path}, Options{}); !errors.As(err, &fe) || fe.Path != "ca_file" {
		t.Fatalf("CA file without PEM: %v", err)
	}
}

// TestDiscoveryIssuerMismatch: a discovery document that names another
// issuer is refused.
func TestDiscoveryIssuerMismatch(t *testing.T) {
	k := testoidc.NewKey(t, "k", jose.ES256)
	iss := testoidc.New(t, k)
	clk := newClock()
	other := strings.Replace(iss.URL, "127.0.0.1", "localhost", 1)
	v, err := New(Config{Issuer: other, Audience: audience}, Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), testoidc.Sign(t, k, claims(other, clk.now(), nil))); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("discovery naming another issuer: %v", err)
	}
}

func TestLooksLikeJWT(t *testing.T) {
	for s, want := range map[string]bool{
		"eyJh.eyJz.c2ln": true, "a-_.b.c": true,
		"kwm_abc": false, "a.b": false, "a.b.c.d": false, "a..c": false, "a.b.": false, "a.b.c=": false, "a b.c.d": false,
	} {
		if LooksLikeJWT(s) != want {
			t.Errorf("LooksLikeJWT(%q) = %v", s, !want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Issuer: "https://idp.example.com/realms/k", Audience: "keyward"}
	for name, c := range map[string]struct {
		edit  func(*Config)
		paths []string
	}{
		"valid":                     {edit: func(*Config) {}},
		"off":                       {edit: func(c *Config) { *c = Config{} }},
		"loopback http":             {edit: func(c *Config) { c.Issuer = "http://127.0.0.1:8080" }},
		"localhost http":            {edit: func(c *Config) { c.Issuer = "http://localhost:8080/x" }},
		"http elsewhere":            {edit: func(c *Config) { c.Issuer = "http://idp.example.com" }, paths: []string{"issuer"}},
		"no scheme":                 {edit: func(c *Config) { c.Issuer = "idp.example.com" }, paths: []string{"issuer"}},
		"issuer with query":         {edit: func(c *Config) { c.Issuer = "https://idp.example.com/?a=b" }, paths: []string{"issuer"}},
		"fields without issuer":     {edit: func(c *Config) { c.Issuer = "" }, paths: []string{"issuer"}},
		"no audience":               {edit: func(c *Config) { c.Audience = "" }, paths: []string{"audience"}},
		"jwks_uri over http":        {edit: func(c *Config) { c.JWKSURI = "http://idp.example.com/keys" }, paths: []string{"jwks_uri"}},
		"jwks_uri and jwks_file":    {edit: func(c *Config) { c.JWKSURI, c.JWKSFile = "https://idp.example.com/keys", "/keys.json" }, paths: []string{"jwks_file"}},
		"skew too long":             {edit: func(c *Config) { c.ClockSkew = 6 * time.Minute }, paths: []string{"clock_skew"}},
		"negative skew":             {edit: func(c *Config) { c.ClockSkew = -time.Second }, paths: []string{"clock_skew"}},
		"value both admin and user": {edit: func(c *Config) { c.AdminValues, c.UserValues = []string{"a", "b"}, []string{"b"} }, paths: []string{"user_values"}},
		"empty admin value":         {edit: func(c *Config) { c.AdminValues = []string{" "} }, paths: []string{"admin_values[0]"}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := ok
			c.edit(&cfg)
			err := cfg.WithDefaults().Validate()
			var got []string
			for _, e := range unjoin(err) {
				var fe *field.Error
				if !errors.As(e, &fe) {
					t.Fatalf("not a field error: %v", e)
				}
				got = append(got, fe.Path)
			}
			if strings.Join(got, ",") != strings.Join(c.paths, ",") {
				t.Fatalf("error paths %q, want %q (%v)", got, c.paths, err)
			}
		})
	}
	if d := ok.WithDefaults(); d.ClockSkew != DefaultClockSkew || d.RoleClaim != DefaultRoleClaim || d.UserClaim != "sub" || d.AdminValues[0] != "admin" || d.UserValues[0] != "user" {
		t.Fatalf("defaults: %+v", d)
	}
}

func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
