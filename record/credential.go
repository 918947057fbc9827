package record

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/keyward/keyward/field"
)

// Credential is a user's own provider credential: a key the user brought,
// with where and how to use it. It belongs to exactly one user, and every
// store method that reads or changes one takes that user alongside the id,
// so that one user cannot reach another's credential by its id.
type Credential struct {
	// ID identifies the credential within its user's credentials; see
	// NewCredentialID.
	ID string
	// User owns the credential.
	User string
	// Name is what the user calls it ("personal-openai").
	Name string
	// Provider is the provider the credential is for.
	Provider string
	// Model is the model to use with it, if any.
	Model string
	// BaseURL is the API's base URL, if not the provider's own.
	BaseURL string
	// Key is the secret. It is never shown back: reads show MaskKey(Key).
	// The json tag keeps a Credential marshalled by mistake from leaking it.
	Key string `json:"-"`
	// Extra is further configuration: a JSON object, or empty.
	Extra json.RawMessage
	// Created is when the credential was first stored.
	Created time.Time
}

// String hides the key, so that a Credential printed by mistake (%v, %+v,
// %s, a log line) leaks nothing.
func (c Credential) String() string {
	return fmt.Sprintf("credential %s/%s (%s, provider %s)", c.User, c.ID, c.Name, c.Provider)
}

// GoString hides the key from %#v as well.
func (c Credential) GoString() string { return c.String() }

// credentialIDBytes random bytes make a 16 character id.
const credentialIDBytes = 12

// NewCredentialID returns a random credential id: 16 URL-safe base64
// characters (about 96 bits), safe in URLs, file records, Vault paths and
// command lines (never starting with '-').
func NewCredentialID() string {
	b := make([]byte, credentialIDBytes)
	for {
		// crypto/rand.Read never returns an error: it crashes the
		// program rather than hand out predictable bytes.
		_, _ = rand.Read(b)
		// An id starting with '-' (1 in 64) reads as a flag on command
		// lines (keyward api credentials get ID): draw again.
		if id := base64.RawURLEncoding.EncodeToString(b); id[0] != '-' {
			return id
		}
	}
}

var credentialIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidCredentialID reports whether id may be a credential id: 1 to 64
// URL-safe base64 characters. Stores refuse any other id before it reaches
// a path.
func ValidCredentialID(id string) bool { return credentialIDPattern.MatchString(id) }

// Limits on a credential's free-form fields.
const (
	// MaxCredentialModel bounds Credential.Model, in bytes.
	MaxCredentialModel = 256
	// MaxCredentialBaseURL bounds Credential.BaseURL, in bytes.
	MaxCredentialBaseURL = 2048
	// MaxCredentialKey bounds Credential.Key, in bytes.
	MaxCredentialKey = 8192
	// MaxCredentialExtra bounds Credential.Extra, in bytes.
	MaxCredentialExtra = 16 << 10
)

// Validate checks every field of the credential and reports all problems at
// once, each a *field.Error whose Path is the field's name (id, user, name,
// provider, model, base_url, key, extra). Model, BaseURL, Key and Extra may
// be empty. No error ever quotes the key, nor the base URL (which could
// carry a password).
func (c *Credential) Validate() error {
	var l field.List
	if !ValidCredentialID(c.ID) {
		l.Add("id", "%q is not 1-64 letters, digits, '-' or '_'", c.ID)
	}
	l.Merge("user", ValidateName("user", c.User))
	l.Merge("name", ValidateName("credential", c.Name))
	l.Merge("provider", ValidateName("provider", c.Provider))
	if len(c.Model) > MaxCredentialModel || strings.IndexFunc(c.Model, unicode.IsControl) >= 0 || strings.TrimSpace(c.Model) != c.Model {
		l.Add("model", "must be at most %d bytes, without control characters or surrounding spaces", MaxCredentialModel)
	}
	l.Merge("base_url", validateBaseURL(c.BaseURL))
	// The key goes out in a header: a control character would break it.
	if len(c.Key) > MaxCredentialKey || strings.IndexFunc(c.Key, unicode.IsControl) >= 0 {
		l.Add("key", "must be at most %d bytes, without control characters", MaxCredentialKey)
	}
	l.Merge("extra", validateExtra(c.Extra))
	return l.Err()
}

func validateBaseURL(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > MaxCredentialBaseURL {
		return fmt.Errorf("longer than %d bytes", MaxCredentialBaseURL)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return errors.New("must be an absolute http or https URL")
	}
	if u.User != nil {
		return errors.New("must not carry a user or password: put secrets in key")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must not have a query or fragment")
	}
	return nil
}

func validateExtra(extra json.RawMessage) error {
	if len(extra) == 0 {
		return nil
	}
	if len(extra) > MaxCredentialExtra {
		return fmt.Errorf("longer than %d bytes", MaxCredentialExtra)
	}
	trimmed := bytes.TrimSpace(extra)
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return errors.New("must be a JSON object")
	}
	return nil
}
