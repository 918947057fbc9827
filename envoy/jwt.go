package envoy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/record"
)

// JWTFilter is the jwt_authn HTTP filter's name, which is also the
// metadata namespace it files verified payloads under and ext_authz
// passes to keyward (metadata_context_namespaces).
const JWTFilter = "envoy.filters.http.jwt_authn"

// JWKSClusterPrefix prefixes a provider's index to name the cluster its
// remote JWKS is fetched through.
const JWKSClusterPrefix = "jwks_"

// Defaults of a JWT issuer's optional fields.
const (
	DefaultJWKSTimeout  = time.Second
	DefaultJWTUserClaim = "sub"
	// DefaultJWTGroupClaim is the claim whose value (a string or a list
	// of strings) names the group.
	DefaultJWTGroupClaim = "groups"
)

// JWTHeader is a header Envoy looks for a JWT in, and the prefix before
// the JWT in its value ("Bearer ").
type JWTHeader struct {
	Name        string `yaml:"name"`
	ValuePrefix string `yaml:"value_prefix"`
}

// DefaultJWTHeaders are where clients put a JWT by default: where the
// SDKs put their api key (Authorization: Bearer for OpenAI's, x-api-key
// for Anthropic's), so that a client passes the JWT as its api_key.
func DefaultJWTHeaders() []JWTHeader {
	return []JWTHeader{{Name: "authorization", ValuePrefix: "Bearer "}, {Name: "x-api-key"}}
}

// RemoteJWKS is where Envoy fetches an issuer's keys.
type RemoteJWKS struct {
	// URI is the JWKS URL, http or https.
	URI string `yaml:"uri"`
	// Timeout bounds a fetch. Default 1s.
	Timeout time.Duration `yaml:"timeout"`
	// CacheDuration is how long fetched keys are kept. Default: Envoy's
	// (10 minutes).
	CacheDuration time.Duration `yaml:"cache_duration"`
}

// JWTIssuer is an issuer whose JWTs Envoy's jwt_authn verifies and whose
// verified claims keyward maps to a user and group.
type JWTIssuer struct {
	// Issuer is the exact "iss" of its JWTs. Required, unique.
	Issuer string `yaml:"issuer"`
	// Audiences, when set, are the "aud" values accepted (one must match).
	Audiences []string `yaml:"audiences"`
	// LocalJWKS is a JWKS file, an absolute path as Envoy sees it; set it
	// or RemoteJWKS.
	LocalJWKS string `yaml:"local_jwks"`
	// RemoteJWKS is a JWKS URL Envoy fetches.
	RemoteJWKS RemoteJWKS `yaml:"remote_jwks"`
	// FromHeaders are where the JWT is looked for. Default
	// DefaultJWTHeaders. Each must be a header keyward reads credentials
	// from (so that keyward removes it).
	FromHeaders []JWTHeader `yaml:"from_headers"`
	// UserClaim names the claim whose value is the keyward user. Default
	// "sub".
	UserClaim string `yaml:"user_claim"`
	// GroupClaim names the claim whose value (a string or a list) names
	// the group. Default "groups".
	GroupClaim string `yaml:"group_claim"`
}

// WithDefaults returns j with its zero optional fields set.
func (j JWTIssuer) WithDefaults() JWTIssuer {
	if len(j.FromHeaders) == 0 {
		j.FromHeaders = DefaultJWTHeaders()
	}
	if j.UserClaim == "" {
		j.UserClaim = DefaultJWTUserClaim
	}
	if j.GroupClaim == "" {
		j.GroupClaim = DefaultJWTGroupClaim
	}
	if j.RemoteJWKS.URI != "" && j.RemoteJWKS.Timeout == 0 {
		j.RemoteJWKS.Timeout = DefaultJWKSTimeout
	}
	return j
}

// ValidateJWT checks the issuers; each problem is a *field.Error whose
// path is "[i].field".
func ValidateJWT(issuers []JWTIssuer) error {
	var l field.List
	seen := map[string]int{}
	for i, j := range issuers {
		p := fmt.Sprintf("[%d]", i)
		switch {
		case j.Issuer == "":
			l.Add(p+".issuer", "required: the exact iss of the issuer's JWTs")
		case strings.TrimSpace(j.Issuer) != j.Issuer:
			l.Add(p+".issuer", "%q has surrounding spaces", j.Issuer)
		default:
			if k, dup := seen[j.Issuer]; dup {
				l.Add(p+".issuer", "%q already given as [%d]", j.Issuer, k)
			}
			seen[j.Issuer] = i
		}
		for k, a := range j.Audiences {
			if a == "" {
				l.Add(fmt.Sprintf("%s.audiences[%d]", p, k), "must not be empty")
			}
		}
		switch {
		case j.LocalJWKS != "" && j.RemoteJWKS != (RemoteJWKS{}):
			l.Add(p+".local_jwks", "set local_jwks or remote_jwks, not both")
		case j.LocalJWKS != "":
			if !strings.HasPrefix(j.LocalJWKS, "/") {
				l.Add(p+".local_jwks", "an absolute path as Envoy sees it; got %q", j.LocalJWKS)
			}
		case j.RemoteJWKS.URI == "":
			l.Add(p+".remote_jwks.uri", "required unless local_jwks is set")
		default:
			if _, err := parseJWKSURI(j.RemoteJWKS.URI); err != nil {
				l.Add(p+".remote_jwks.uri", "%v", err)
			}
		}
		if j.RemoteJWKS.Timeout < 0 {
			l.Add(p+".remote_jwks.timeout", "must not be negative")
		}
		if j.RemoteJWKS.CacheDuration < 0 {
			l.Add(p+".remote_jwks.cache_duration", "must not be negative")
		}
		for k, h := range j.FromHeaders {
			if !record.ValidHeaderName(h.Name) {
				l.Add(fmt.Sprintf("%s.from_headers[%d].name", p, k), "%q is not a lower-case header name", h.Name)
			}
		}
		for _, c := range []struct{ name, v string }{{"user_claim", j.UserClaim}, {"group_claim", j.GroupClaim}} {
			if c.v != strings.TrimSpace(c.v) || strings.Contains(c.v, ".") {
				l.Add(p+"."+c.name, "%q: a top-level claim name (no spaces, no dots)", c.v)
			}
		}
		if j.UserClaim != "" && j.UserClaim == j.GroupClaim {
			l.Add(p+".group_claim", "must differ from user_claim")
		}
	}
	return l.Err()
}

func parseJWKSURI(raw string) (upstream, error) {
	up, err := parseUpstream(schemeAndHost(raw))
	if err != nil {
		return upstream{}, err
	}
	if strings.ContainsAny(raw, "#") {
		return upstream{}, errors.New("must not contain a fragment")
	}
	return up, nil
}

// schemeAndHost is raw up to the end of its authority.
func schemeAndHost(raw string) string {
	i := strings.Index(raw, "://")
	if i < 0 {
		return raw
	}
	if j := strings.IndexAny(raw[i+3:], "/?#"); j >= 0 {
		return raw[:i+3+j]
	}
	return raw
}

// jwtAuthn is the jwt_authn filter of o's issuers, and the clusters their
// remote JWKS are fetched through. Every request may pass without a valid
// JWT (allow_missing_or_failed): keyward tokens travel in the same
// headers and are no JWTs, and keyward refuses, by itself, a request that
// carries a JWT-shaped credential without a verified payload
// (jwt_invalid). A verified payload is filed under the issuer as the key,
// in the JWTFilter namespace, which ext_authz passes on. The JWT stays on
// the request (forward): keyward removes every credential place itself.
func jwtAuthn(o Options) (*jwtv3.JwtAuthentication, []*clusterv3.Cluster, error) {
	cfg := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}}
	var clusters []*clusterv3.Cluster
	for i, j := range o.JWT {
		j = j.WithDefaults()
		p := &jwtv3.JwtProvider{
			Issuer:            j.Issuer,
			Audiences:         j.Audiences,
			Forward:           true,
			PayloadInMetadata: j.Issuer,
		}
		for _, h := range j.FromHeaders {
			p.FromHeaders = append(p.FromHeaders, &jwtv3.JwtHeader{Name: h.Name, ValuePrefix: h.ValuePrefix})
		}
		if j.LocalJWKS != "" {
			p.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
				Specifier: &corev3.DataSource_Filename{Filename: j.LocalJWKS},
			}}
		} else {
			up, err := parseJWKSURI(j.RemoteJWKS.URI)
			if err != nil {
				return nil, nil, fmt.Errorf("jwt[%d]: %w", i, err)
			}
			name := fmt.Sprintf("%s%d", JWKSClusterPrefix, i)
			c, err := upstreamCluster(name, up, o.TrustedCAFile)
			if err != nil {
				return nil, nil, err
			}
			clusters = append(clusters, c)
			remote := &jwtv3.RemoteJwks{HttpUri: &corev3.HttpUri{
				Uri:              j.RemoteJWKS.URI,
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: name},
				Timeout:          durationpb.New(j.RemoteJWKS.Timeout),
			}}
			if j.RemoteJWKS.CacheDuration > 0 {
				remote.CacheDuration = durationpb.New(j.RemoteJWKS.CacheDuration)
			}
			p.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: remote}
		}
		cfg.Providers[fmt.Sprintf("issuer_%d", i)] = p
	}
	cfg.Rules = []*jwtv3.RequirementRule{{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
			RequiresType: &jwtv3.JwtRequirement_AllowMissingOrFailed{AllowMissingOrFailed: &emptypb.Empty{}},
		}},
	}}
	return cfg, clusters, nil
}
