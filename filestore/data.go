package filestore

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Data is the content of the store: the YAML store file (providers,
// groups, users, signing keys) and the token file (one JSON record per
// line). Together they mirror the Vault layout.
type Data struct {
	Providers   map[string]*ProviderData `yaml:"providers,omitempty"`
	Groups      map[string]*GroupData    `yaml:"groups,omitempty"`
	Users       map[string]*UserData     `yaml:"users,omitempty"`
	SigningKeys []SigningKeyData         `yaml:"signing_keys,omitempty"`
	// Tokens live in the token file, keyed here by token id.
	Tokens map[string]*TokenData `yaml:"-"`
	// credentials live in the credentials file, keyed here by user, then
	// by credential id: a lookup without the user cannot find one. They
	// are unexported so that they are changed only through the Store's
	// credential methods, which take the owner.
	credentials map[string]map[string]*credentialData
	// apiTokens live in the API token file, keyed here by token id. They
	// are unexported so that they are changed only through the Store's
	// API token methods.
	apiTokens map[string]*apiTokenData
}

// ProviderData is a provider record. Keys name environment variables; the
// keys themselves never sit in this file.
type ProviderData struct {
	Kind             record.Kind `yaml:"kind"`
	Header           string      `yaml:"header,omitempty"`
	ValueTemplate    string      `yaml:"value_template,omitempty"`
	AnthropicVersion string      `yaml:"anthropic_version,omitempty"`
	Keys             []KeyData   `yaml:"keys"`
}

// KeyData names the environment variable that holds one provider key.
type KeyData struct {
	ID  string `yaml:"id"`
	Env string `yaml:"env"`
}

// GroupData is a group record.
type GroupData struct {
	Disabled          bool     `yaml:"disabled,omitempty"`
	Providers         []string `yaml:"providers,omitempty"`
	Models            []string `yaml:"models,omitempty"`
	DisableCustomKeys bool     `yaml:"disable_custom_keys,omitempty"`
	// RequestsPerMinute is the per-token rate limit; 0 or absent means none.
	RequestsPerMinute int `yaml:"requests_per_minute,omitempty"`
}

// UserData is a user record.
type UserData struct {
	Role     record.Role `yaml:"role,omitempty"`
	Disabled bool        `yaml:"disabled,omitempty"`
	Groups   []string    `yaml:"groups,omitempty"`
}

// TokenData is a token record: the SHA-256 of the token's secret, never the
// token.
type TokenData struct {
	User    string     `json:"user"`
	Group   string     `json:"group"`
	Name    string     `json:"name,omitempty"`
	Hash    string     `json:"hash"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires,omitempty"`
	Revoked bool       `json:"revoked,omitempty"`
	// Last4 are the token string's last four characters, for listings.
	Last4 string `json:"last4,omitempty"`
	// ReplacedBy is the id of the token that replaced this one.
	ReplacedBy string `json:"replaced_by,omitempty"`
}

// tokenLine is one line of the token file.
type tokenLine struct {
	ID string `json:"id"`
	TokenData
}

// credentialData is a user's provider credential, key included: it lives
// only in the credentials file, which is written with mode 0600.
type credentialData struct {
	Name     string          `json:"name"`
	Provider string          `json:"provider"`
	Model    string          `json:"model,omitempty"`
	BaseURL  string          `json:"base_url,omitempty"`
	Key      string          `json:"key"`
	Extra    json.RawMessage `json:"extra,omitempty"`
	Created  time.Time       `json:"created"`
}

// credentialLine is one line of the credentials file.
type credentialLine struct {
	ID   string `json:"id"`
	User string `json:"user"`
	credentialData
}

func (c *credentialData) record(user, id string) *record.Credential {
	return &record.Credential{
		ID: id, User: user, Name: c.Name, Provider: c.Provider, Model: c.Model,
		BaseURL: c.BaseURL, Key: c.Key, Extra: c.Extra, Created: c.Created,
	}
}

func newCredentialData(c *record.Credential) *credentialData {
	return &credentialData{
		Name: c.Name, Provider: c.Provider, Model: c.Model, BaseURL: c.BaseURL,
		Key: c.Key, Extra: slices.Clone(c.Extra), Created: c.Created.UTC(),
	}
}

// apiTokenData is a management token record: the SHA-256 of the token's
// secret, never the token.
type apiTokenData struct {
	User    string    `json:"user"`
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
	Revoked bool      `json:"revoked,omitempty"`
}

// apiTokenLine is one line of the API token file.
type apiTokenLine struct {
	ID string `json:"id"`
	apiTokenData
}

// SigningKeyData is one token signing key, base64-encoded.
type SigningKeyData struct {
	ID     uint8  `yaml:"id"`
	Secret string `yaml:"secret"`
}

// parseData decodes the store file and the token file strictly: unknown
// fields are errors, so a typo (disable: true) cannot silently leave a
// group enabled.
func parseData(raw, tokens []byte) (*Data, error) {
	d := &Data{}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(d); err != nil && !errors.Is(err, io.EOF) {
		if strings.Contains(err.Error(), "field tokens not found") {
			return nil, fmt.Errorf("%w (token records now live in the token file beside the store file, one JSON record per line)", err)
		}
		return nil, err
	}
	var err error
	if d.Tokens, err = parseTokens(tokens); err != nil {
		return nil, &lineFileError{file: tokenFile, err: err}
	}
	return d, nil
}

// parseAll decodes the store file and the JSON lines files beside it.
func parseAll(f files) (*Data, error) {
	d, err := parseData(f.store, f.tokens)
	if err != nil {
		return nil, err
	}
	if d.credentials, err = parseCredentials(f.credentials); err != nil {
		return nil, &lineFileError{file: credentialsFile, err: err}
	}
	if d.apiTokens, err = parseAPITokens(f.apiTokens); err != nil {
		return nil, &lineFileError{file: apiTokensFile, err: err}
	}
	return d, nil
}

// The JSON lines files beside the store file.
const (
	tokenFile       = "token file"
	credentialsFile = "credentials file"
	apiTokensFile   = "API token file"
)

// lineFileError marks an error in one of the JSON lines files, so that it
// is reported with that file's path rather than the store file's.
type lineFileError struct {
	file string // tokenFile, credentialsFile or apiTokensFile
	err  error
}

func (e *lineFileError) Error() string { return e.err.Error() }
func (e *lineFileError) Unwrap() error { return e.err }

// parseLines decodes a JSON lines file, one record per line, strictly:
// unknown fields are errors. A JSON lines file rather than YAML because it
// holds up to hundreds of thousands of records written by the CLI, and a
// YAML mapping that large decodes in quadratic time. Blank lines are
// skipped; errors give the file and the line number. add takes each record
// and may refuse it.
func parseLines[T any](raw []byte, file string, add func(*T) error) error {
	for n := 1; len(raw) > 0; n++ {
		var line []byte
		line, raw, _ = bytes.Cut(raw, []byte("\n"))
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		v := new(T)
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("%s line %d: %w", file, n, err)
		}
		if dec.More() {
			return fmt.Errorf("%s line %d: more than one record", file, n)
		}
		// More misses a stray ] or } after the record.
		if len(bytes.TrimSpace(line[dec.InputOffset():])) > 0 {
			return fmt.Errorf("%s line %d: text after the record", file, n)
		}
		if err := add(v); err != nil {
			return fmt.Errorf("%s line %d: %w", file, n, err)
		}
	}
	return nil
}

// marshalLines writes records as a JSON lines file, in the order given.
func marshalLines[T any](records []T) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, r := range records {
		if err := enc.Encode(r); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// parseTokens decodes the token file.
func parseTokens(raw []byte) (map[string]*TokenData, error) {
	return parseByID(raw, tokenFile, "token", func(t *tokenLine) (string, *TokenData) { return t.ID, &t.TokenData })
}

// parseByID reads a JSON-lines file into a map by each line's id; an id
// listed twice is an error.
func parseByID[L, V any](raw []byte, file, what string, split func(*L) (string, *V)) (map[string]*V, error) {
	out := make(map[string]*V, bytes.Count(raw, []byte("\n")))
	err := parseLines(raw, file, func(l *L) error {
		id, v := split(l)
		if _, dup := out[id]; dup {
			return fmt.Errorf("%s %q listed twice", what, id)
		}
		out[id] = v
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// marshalTokens writes the token file, oldest first so that diffs stay
// small.
func (d *Data) marshalTokens() ([]byte, error) {
	ids := slices.Collect(maps.Keys(d.Tokens))
	slices.SortFunc(ids, func(a, b string) int {
		if c := d.Tokens[a].Created.Compare(d.Tokens[b].Created); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	lines := make([]tokenLine, len(ids))
	for i, id := range ids {
		lines[i] = tokenLine{ID: id, TokenData: *d.Tokens[id]}
	}
	return marshalLines(lines)
}

// parseCredentials decodes the credentials file into credentials by user,
// then id. Its errors name the line and never show a value.
func parseCredentials(raw []byte) (map[string]map[string]*credentialData, error) {
	creds := map[string]map[string]*credentialData{}
	err := parseLines(raw, credentialsFile, func(c *credentialLine) error {
		if _, dup := creds[c.User][c.ID]; dup {
			return fmt.Errorf("credential %q of user %q listed twice", c.ID, c.User)
		}
		if creds[c.User] == nil {
			creds[c.User] = map[string]*credentialData{}
		}
		creds[c.User][c.ID] = &c.credentialData
		return nil
	})
	if err != nil {
		return nil, err
	}
	return creds, nil
}

// marshalCredentials writes the credentials file by user, then oldest
// first.
func (d *Data) marshalCredentials() ([]byte, error) {
	var lines []credentialLine
	for user, m := range d.credentials {
		for id, c := range m {
			lines = append(lines, credentialLine{ID: id, User: user, credentialData: *c})
		}
	}
	slices.SortFunc(lines, func(a, b credentialLine) int {
		if c := strings.Compare(a.User, b.User); c != 0 {
			return c
		}
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return marshalLines(lines)
}

// parseAPITokens decodes the API token file.
func parseAPITokens(raw []byte) (map[string]*apiTokenData, error) {
	return parseByID(raw, apiTokensFile, "API token", func(t *apiTokenLine) (string, *apiTokenData) { return t.ID, &t.apiTokenData })
}

// marshalAPITokens writes the API token file, oldest first.
func (d *Data) marshalAPITokens() ([]byte, error) {
	lines := make([]apiTokenLine, 0, len(d.apiTokens))
	for id, t := range d.apiTokens {
		lines = append(lines, apiTokenLine{ID: id, apiTokenData: *t})
	}
	slices.SortFunc(lines, func(a, b apiTokenLine) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return marshalLines(lines)
}

func (d *Data) marshal() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# keyward store file: providers, groups, users and token signing keys.\n" +
		"# Written by `keyward provider|group|user`; hand edits are picked up while keyward serves.\n" +
		"# Token records are in the token file beside it.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(d); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// snapshot is an immutable, validated view of the store, with provider
// keys resolved from the environment.
type snapshot struct {
	providers   map[string]*record.Provider
	groups      map[string]*record.Group
	users       map[string]*record.User
	tokens      *tokenTable
	signingKeys []token.SigningKey
	// credentials are by user, then by credential id.
	credentials map[string]map[string]*record.Credential
	// apiTokens are management token records by id.
	apiTokens map[string]*record.APIToken
	// missingEnv lists environment variables that provider keys name but
	// that are not set, for a warning (names only).
	missingEnv []string
}

// build validates d and resolves it into a snapshot. Every error names the
// record and field.
func (d *Data) build(getenv func(string) string) (*snapshot, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	s := &snapshot{
		providers:   make(map[string]*record.Provider, len(d.Providers)),
		groups:      make(map[string]*record.Group, len(d.Groups)),
		users:       make(map[string]*record.User, len(d.Users)),
		tokens:      newTokenTable(len(d.Tokens)),
		credentials: make(map[string]map[string]*record.Credential, len(d.credentials)),
		apiTokens:   make(map[string]*record.APIToken, len(d.apiTokens)),
	}
	for name, p := range d.Providers {
		field := "providers." + name
		if err := record.ValidateName("provider", name); err != nil {
			bad(field, "%v", err)
		}
		if p == nil {
			bad(field, "empty record")
			continue
		}
		rp := &record.Provider{Name: name, Kind: p.Kind, Header: strings.ToLower(p.Header), ValueTemplate: p.ValueTemplate, AnthropicVersion: p.AnthropicVersion}
		if err := rp.ValidateConvention(); err != nil {
			bad(field, "%v", err)
		}
		seen := map[string]bool{}
		for i, k := range p.Keys {
			kf := fmt.Sprintf("%s.keys[%d]", field, i)
			if k.ID == "" || seen[k.ID] {
				bad(kf+".id", "must be set and unique within the provider")
			}
			seen[k.ID] = true
			if k.Env == "" {
				bad(kf+".env", "must name the environment variable that holds the key")
				continue
			}
			v := getenv(k.Env)
			if v == "" {
				s.missingEnv = append(s.missingEnv, k.Env)
				continue
			}
			rp.Keys = append(rp.Keys, record.Key{ID: k.ID, Secret: v})
		}
		s.providers[name] = rp
	}
	for name, g := range d.Groups {
		field := "groups." + name
		if err := record.ValidateName("group", name); err != nil {
			bad(field, "%v", err)
		}
		if g == nil {
			g = &GroupData{}
		}
		if g.RequestsPerMinute < 0 {
			bad(field+".requests_per_minute", "must be 0 (no limit) or more")
		}
		s.groups[name] = &record.Group{Name: name, Disabled: g.Disabled, Providers: g.Providers, Models: g.Models, DisableCustomKeys: g.DisableCustomKeys, RequestsPerMinute: g.RequestsPerMinute}
	}
	for name, u := range d.Users {
		field := "users." + name
		if err := record.ValidateName("user", name); err != nil {
			bad(field, "%v", err)
		}
		if u == nil {
			u = &UserData{}
		}
		role := u.Role
		if role == "" {
			role = record.RoleUser
		}
		if role != record.RoleUser && role != record.RoleAdmin {
			bad(field+".role", "%q is not user or admin", u.Role)
		}
		s.users[name] = &record.User{Name: name, Role: role, Disabled: u.Disabled, Groups: u.Groups}
	}
	for id, t := range d.Tokens {
		field := "tokens." + id
		raw, ok := token.ParseID(id)
		if !ok {
			bad(field, "not a token id")
		}
		if t == nil {
			bad(field, "empty record")
			continue
		}
		rt := &record.Token{ID: id, User: t.User, Group: t.Group, Name: t.Name, Created: t.Created, Revoked: t.Revoked, Last4: t.Last4, ReplacedBy: t.ReplacedBy}
		if t.Last4 != "" && len(t.Last4) != last4Len {
			bad(field+".last4", "must be %d characters", last4Len)
		}
		if t.ReplacedBy != "" && !token.ValidID(t.ReplacedBy) {
			bad(field+".replaced_by", "not a token id")
		}
		if t.Expires != nil {
			rt.Expires = *t.Expires
		}
		if rt.Hash, ok = record.ParseHash(t.Hash); !ok {
			bad(field+".hash", "must be 64 hex digits (SHA-256)")
		}
		if t.User == "" {
			bad(field+".user", "must be set")
		}
		if t.Group == "" {
			bad(field+".group", "must be set")
		}
		if len(t.Name) > record.MaxTokenName {
			bad(field+".name", "longer than %d bytes", record.MaxTokenName)
		}
		s.tokens.add(raw, rt)
	}
	s.tokens.done()
	for user, m := range d.credentials {
		byID := make(map[string]*record.Credential, len(m))
		for id, c := range m {
			field := "credentials." + user + "/" + id
			if c == nil {
				bad(field, "empty record")
				continue
			}
			rc := c.record(user, id)
			if err := rc.Validate(); err != nil {
				bad(field, "%v", err)
			}
			byID[id] = rc
		}
		s.credentials[user] = byID
	}
	for id, t := range d.apiTokens {
		field := "api_tokens." + id
		if !token.ValidID(id) {
			bad(field, "not a token id")
		}
		if t == nil {
			bad(field, "empty record")
			continue
		}
		rt := &record.APIToken{ID: id, User: t.User, Created: t.Created, Revoked: t.Revoked}
		var ok bool
		if rt.Hash, ok = record.ParseHash(t.Hash); !ok {
			bad(field+".hash", "must be 64 hex digits (SHA-256)")
		}
		if t.User == "" {
			bad(field+".user", "must be set")
		}
		s.apiTokens[id] = rt
	}
	for i, k := range d.SigningKeys {
		secret, err := base64.StdEncoding.DecodeString(k.Secret)
		if err != nil || len(secret) < token.KeySize {
			bad(fmt.Sprintf("signing_keys[%d].secret", i), "must be base64 of at least %d bytes", token.KeySize)
			continue
		}
		s.signingKeys = append(s.signingKeys, token.SigningKey{ID: k.ID, Secret: secret})
	}
	slices.Sort(s.missingEnv)
	// Sorting makes the report stable whatever the map order was.
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return s, errors.Join(errs...)
}
