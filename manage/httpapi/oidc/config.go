package oidc

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/field"
)

// Defaults of Config.
const (
	DefaultRoleClaim = "keyward_role"
	DefaultUserClaim = "sub"
	DefaultClockSkew = 30 * time.Second
	// MaxClockSkew bounds clock_skew: past it an expired token stays
	// good for too long.
	MaxClockSkew = 5 * time.Minute
)

// Config is management.oidc: which issuer's JWTs the management API
// accepts, and how a token's claims become a keyward role and user.
type Config struct {
	// Issuer is the issuer's URL, compared exactly with a token's iss.
	// Empty, the default, turns OIDC off. https, or http on a loopback
	// address (for tests).
	Issuer string `yaml:"issuer"`
	// Audience must be among a token's aud. Required.
	Audience string `yaml:"audience"`
	// JWKSURI is where the issuer's signing keys are. Default: the
	// jwks_uri of the issuer's discovery document
	// (ISSUER/.well-known/openid-configuration).
	JWKSURI string `yaml:"jwks_uri"`
	// JWKSFile is a file holding the issuer's key set instead (air-gapped
	// set-ups); it is re-read when a token names a key it lacks. Set
	// jwks_uri or jwks_file, not both.
	JWKSFile string `yaml:"jwks_file"`
	// CAFile is the PEM bundle the issuer's TLS certificate must chain
	// to. Default: the system's roots.
	CAFile string `yaml:"ca_file"`
	// RoleClaim is the claim that gives the role: a string or a list of
	// strings (a groups claim). A name with dots that is not a claim of
	// its own is a path into nested objects (realm_access.roles). Default
	// keyward_role.
	RoleClaim string `yaml:"role_claim"`
	// AdminValues are the role claim's values that make an admin.
	// Default [admin].
	AdminValues []string `yaml:"admin_values"`
	// UserValues are the values that make a user. Default [user].
	UserValues []string `yaml:"user_values"`
	// UserClaim is the string claim that names the keyward user a
	// user-role token acts as. Default sub.
	UserClaim string `yaml:"user_claim"`
	// ClockSkew is how far the issuer's clock and keyward's may differ
	// when exp, nbf and iat are checked. Default 30s; at most 5m.
	ClockSkew time.Duration `yaml:"clock_skew"`
}

// Enabled reports whether OIDC is configured.
func (c Config) Enabled() bool { return c.Issuer != "" }

// WithDefaults fills the defaults of an enabled configuration; a disabled
// one is returned as is, so that Validate can tell fields set without an
// issuer.
func (c Config) WithDefaults() Config {
	if !c.Enabled() {
		return c
	}
	if c.RoleClaim == "" {
		c.RoleClaim = DefaultRoleClaim
	}
	if c.UserClaim == "" {
		c.UserClaim = DefaultUserClaim
	}
	if len(c.AdminValues) == 0 {
		c.AdminValues = []string{"admin"}
	}
	if len(c.UserValues) == 0 {
		c.UserValues = []string{"user"}
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = DefaultClockSkew
	}
	return c
}

// Validate checks the section; errors are *field.Error with paths
// relative to it ("audience"). Files are opened by New, not here.
func (c Config) Validate() error {
	var l field.List
	if !c.Enabled() {
		if c.Audience != "" || c.JWKSURI != "" || c.JWKSFile != "" || c.CAFile != "" || c.RoleClaim != "" || c.UserClaim != "" ||
			len(c.AdminValues) > 0 || len(c.UserValues) > 0 || c.ClockSkew != 0 {
			l.Add("issuer", "required when any other oidc field is set")
		}
		return l.Err()
	}
	if u, err := checkURL(c.Issuer); err != nil {
		l.Add("issuer", "%v", err)
	} else if u.RawQuery != "" || u.Fragment != "" {
		l.Add("issuer", "%q: no query or fragment", c.Issuer)
	}
	if c.Audience == "" {
		l.Add("audience", "required: the audience keyward's tokens are issued for")
	}
	if c.JWKSURI != "" {
		if _, err := checkURL(c.JWKSURI); err != nil {
			l.Add("jwks_uri", "%v", err)
		}
		if c.JWKSFile != "" {
			l.Add("jwks_file", "set jwks_uri or jwks_file, not both")
		}
	}
	if c.RoleClaim == "" {
		l.Add("role_claim", "required")
	}
	if c.UserClaim == "" {
		l.Add("user_claim", "required")
	}
	checkValues(&l, "admin_values", c.AdminValues)
	checkValues(&l, "user_values", c.UserValues)
	for _, v := range c.AdminValues {
		if slices.Contains(c.UserValues, v) {
			l.Add("user_values", "%q is also in admin_values", v)
		}
	}
	switch {
	case c.ClockSkew < 0:
		l.Add("clock_skew", "must not be negative")
	case c.ClockSkew > MaxClockSkew:
		l.Add("clock_skew", "%s is more than %s", c.ClockSkew, MaxClockSkew)
	}
	return l.Err()
}

func checkValues(l *field.List, path string, values []string) {
	if len(values) == 0 {
		l.Add(path, "at least one value")
	}
	for i, v := range values {
		if strings.TrimSpace(v) == "" {
			l.Add(fmt.Sprintf("%s[%d]", path, i), "empty")
		}
	}
}

// checkURL parses an issuer or JWKS URL: https with a host, or http on a
// loopback address (a test issuer): anything else would let the network
// swap the keys.
func checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%q is not an https URL with a host", raw)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return nil, fmt.Errorf("%q: must be https (http only on a loopback address)", raw)
	}
	return u, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
