// Package record holds the data keyward keeps about providers, groups, users
// and tokens: plain values shared by the stores that persist them and the
// decision that reads them. Records are immutable once published: a store
// replaces a record, it never edits one in place, so the hot path can hold
// pointers without locks.
package record

import (
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
)

// ErrNotFound reports that a record does not exist (or no longer exists).
// Stores wrap it with the record's kind and name; callers use errors.Is.
var ErrNotFound = errors.New("not found")

// ErrExists reports a create of a record that exists already.
var ErrExists = errors.New("already exists")

// ErrNotAnnounced reports a change that is stored but that the other
// keyward replicas could not be told of (a lost Vault leader, a policy
// without the change marker): they may keep serving the old record until
// its cache TTL. Running the same change again announces it.
var ErrNotAnnounced = errors.New("stored, but not announced to the other replicas; run the change again")

// Kind is a provider's wire convention: which header carries the key.
type Kind string

// The provider conventions keyward knows.
const (
	// KindOpenAI is OpenAI and every OpenAI-compatible API: Authorization: Bearer <key>.
	KindOpenAI Kind = "openai"
	// KindAnthropic is Anthropic: x-api-key: <key>, plus anthropic-version
	// when the client sent none.
	KindAnthropic Kind = "anthropic"
	// KindAzure is Azure OpenAI: api-key: <key>.
	KindAzure Kind = "azure"
	// KindGemini is Google Gemini: x-goog-api-key: <key>.
	KindGemini Kind = "gemini"
	// KindCustom takes the header name and a value template from the
	// provider record.
	KindCustom Kind = "custom"
)

// Valid reports whether k is one of the known kinds.
func (k Kind) Valid() bool {
	switch k {
	case KindOpenAI, KindAnthropic, KindAzure, KindGemini, KindCustom:
		return true
	}
	return false
}

// KeyPlaceholder is replaced by the provider key in a custom value template.
const KeyPlaceholder = "{key}"

// DefaultAnthropicVersion is sent as anthropic-version when neither the
// client nor the provider record names one.
const DefaultAnthropicVersion = "2023-06-01"

// Provider is an upstream LLM API and its pool of server-held keys.
type Provider struct {
	// Name identifies the provider in routes, policies and metadata.
	Name string
	// Kind selects the header convention.
	Kind Kind
	// Header is the header that carries the key (KindCustom only).
	Header string
	// ValueTemplate is the header value with KeyPlaceholder where the key
	// goes (KindCustom only), e.g. "Token {key}".
	ValueTemplate string
	// AnthropicVersion overrides DefaultAnthropicVersion (KindAnthropic only).
	AnthropicVersion string
	// Keys is the pool of server-held keys; requests are spread across them.
	Keys []Key
}

// Key is one server-held provider key. Secret never leaves keyward except
// in the header sent upstream; ID is what logs and metadata show.
type Key struct {
	ID     string
	Secret string
}

// String hides the secret, so that a Key printed by mistake leaks nothing.
func (k Key) String() string { return "key " + k.ID }

// GoString hides the secret from %#v as well.
func (k Key) GoString() string { return k.String() }

// Group is a policy that tokens belong to.
type Group struct {
	Name     string
	Disabled bool
	// Providers the group may call; empty means every provider.
	Providers []string
	// Models the group may use; empty means every model. An entry ending in
	// "*" matches by prefix ("gpt-4o*").
	Models []string
	// DisableCustomKeys refuses provider keys that members send themselves,
	// even where the global switch allows them.
	DisableCustomKeys bool
	// RequestsPerMinute limits each of the group's users, all their tokens
	// together, to this many requests a minute, per keyward replica; 0
	// means no limit. Negative values are invalid.
	RequestsPerMinute int
}

// AllowsProvider reports whether the group may call provider.
func (g *Group) AllowsProvider(provider string) bool {
	return len(g.Providers) == 0 || slices.Contains(g.Providers, provider)
}

// AllowsModel reports whether the group may use model. An empty model is
// allowed only when the group does not restrict models.
func (g *Group) AllowsModel(model string) bool {
	if len(g.Models) == 0 {
		return true
	}
	for _, m := range g.Models {
		if prefix, ok := strings.CutSuffix(m, "*"); ok {
			if model != "" && strings.HasPrefix(model, prefix) {
				return true
			}
		} else if m == model {
			return true
		}
	}
	return false
}

// Role is a user's management role.
type Role string

// The roles.
const (
	RoleUser  Role = "user"
	RoleAdmin Role = "admin"
)

// User owns tokens and may use a set of groups.
type User struct {
	Name     string
	Role     Role
	Disabled bool
	// Groups the user may create tokens for and use.
	Groups []string
}

// MayUse reports whether the user may use group.
func (u *User) MayUse(group string) bool { return slices.Contains(u.Groups, group) }

// Token is the stored half of a keyward token: never the token itself, only
// a hash of its secret part.
type Token struct {
	// ID is the token's public identifier, part of the token string.
	ID string
	// Hash is the SHA-256 of the token's secret part.
	Hash    [32]byte
	User    string
	Group   string
	Name    string
	Created time.Time
	// Expires is zero for a token that does not expire. Rotation sets it
	// to the end of the old token's grace period.
	Expires time.Time
	Revoked bool
	// Last4 are the last four characters of the token string, kept so that
	// listings can show which token is which without keeping the token.
	// Empty for tokens made before it was recorded.
	Last4 string
	// ReplacedBy is the id of the token that replaced this one when it was
	// rotated; empty if it was not.
	ReplacedBy string
	// Principal binds the token to a workload: a SPIFFE ID or prefix
	// (see ValidatePrincipal) that the peer presenting the token must
	// match. Empty for a token usable from anywhere.
	Principal string
}

// MaxTokenName bounds Token.Name, in bytes.
const MaxTokenName = 256

// ValidateTokenName checks what a token is called: at most MaxTokenName
// bytes, no control characters (names are shown in listings and logs).
func ValidateTokenName(name string) error {
	if len(name) > MaxTokenName || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return fmt.Errorf("token name: must be at most %d bytes, without control characters", MaxTokenName)
	}
	return nil
}

// Expired reports whether the token has expired at now.
func (t *Token) Expired(now time.Time) bool {
	return !t.Expires.IsZero() && !now.Before(t.Expires)
}

// The states of a token, as Token.State reports them.
const (
	TokenActive   = "active"
	TokenRotating = "rotating"
	TokenRotated  = "rotated"
	TokenExpired  = "expired"
	TokenRevoked  = "revoked"
)

// State is how listings show the token at now: TokenRevoked, TokenRotated
// (its replacement's grace period is over), TokenExpired, TokenRotating
// (replaced, but still accepted during the grace period) or TokenActive.
func (t *Token) State(now time.Time) string {
	switch {
	case t.Revoked:
		return TokenRevoked
	case t.Expired(now) && t.ReplacedBy != "":
		return TokenRotated
	case t.Expired(now):
		return TokenExpired
	case t.ReplacedBy != "":
		return TokenRotating
	}
	return TokenActive
}

// MaxNameLen bounds provider, group and user names, in bytes.
const MaxNameLen = 63

// validName reports whether name is 1 to MaxNameLen letters, digits, '.',
// '_' or '-', starting with a letter or digit: the regular expression
// ^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$ (FuzzValidName holds them equal),
// without its machinery. A file store checks the name of every user that
// has no credentials of its own on each check, and a regexp was half a
// microsecond of it.
func validName(name string) bool {
	if len(name) == 0 || len(name) > MaxNameLen || !alnum(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !alnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func alnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// ValidateName checks a provider, group or user name: 1 to 63 letters,
// digits, '.', '_' or '-', starting with a letter or digit. Names become
// header values, metric labels and Vault paths, so they are kept plain.
func ValidateName(kind, name string) error {
	if !validName(name) {
		return fmt.Errorf("%s name %q: must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", kind, name)
	}
	return nil
}

// ValidateConvention checks that the provider's header fields fit its kind.
func (p *Provider) ValidateConvention() error {
	switch p.Kind {
	case KindOpenAI, KindAnthropic, KindAzure, KindGemini:
		if p.Header != "" || p.ValueTemplate != "" {
			return fmt.Errorf("header and value_template are only for kind %q", KindCustom)
		}
	case KindCustom:
		if p.Header == "" || strings.ContainsAny(p.Header, " :\t\r\n") || strings.ToLower(p.Header) != p.Header {
			return fmt.Errorf("header: %q is not a lower-case header name", p.Header)
		}
		if strings.Count(p.ValueTemplate, KeyPlaceholder) != 1 {
			return fmt.Errorf("value_template: %q must contain %s exactly once", p.ValueTemplate, KeyPlaceholder)
		}
	default:
		return fmt.Errorf("kind: %q is not openai, anthropic, azure, gemini or custom", p.Kind)
	}
	if p.AnthropicVersion != "" && p.Kind != KindAnthropic {
		return fmt.Errorf("anthropic_version is only for kind %q", KindAnthropic)
	}
	return nil
}

// FormatHash writes a token's secret hash as stores keep it: 64 hex digits.
func FormatHash(h [32]byte) string { return hex.EncodeToString(h[:]) }

// ParseHash reads a hash written by FormatHash.
func ParseHash(s string) ([32]byte, bool) {
	var h [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, false
	}
	copy(h[:], b)
	return h, true
}
