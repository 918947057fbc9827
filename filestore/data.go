package filestore

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Data is the content of the store: the YAML store file (providers,
// groups, users, signing keys), the token file, the credentials file and
// the API token file. Together they mirror the Vault layout.
type Data struct {
	Providers map[string]*ProviderData `yaml:"providers,omitempty"`
	Groups    map[string]*GroupData    `yaml:"groups,omitempty"`
	Users     map[string]*UserData     `yaml:"users,omitempty"`
	// Identities are principal mappings, by name.
	Identities  map[string]*IdentityData `yaml:"identities,omitempty"`
	SigningKeys []SigningKeyData         `yaml:"signing_keys,omitempty"`
	// Tokens live in the token file, by token id.
	Tokens Tokens `yaml:"-"`
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
	// RequestsPerMinute is the rate limit of each of the group's users,
	// all their tokens together; 0 or absent means none.
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
	// Principal binds the token to a workload (record.Token.Principal);
	// absent on unbound tokens and on tokens written before it existed.
	Principal string `json:"principal,omitempty"`
}

// IdentityData is a principal mapping (record.Identity).
type IdentityData struct {
	Principal string    `yaml:"principal"`
	User      string    `yaml:"user"`
	Group     string    `yaml:"group"`
	Disabled  bool      `yaml:"disabled,omitempty"`
	Created   time.Time `yaml:"created,omitempty"`
	Updated   time.Time `yaml:"updated,omitempty"`
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

// lineFile is one of the JSON lines files beside the store file.
type lineFile struct {
	// name is how errors call it.
	name string
	// format is its header line's: the first line keyward writes, so
	// that a file keyward wrote is never empty, and a path that names the
	// wrong file is caught.
	format string
}

// The JSON lines files beside the store file.
var (
	tokenFile       = lineFile{name: "token file", format: "keyward-tokens/1"}
	credentialsFile = lineFile{name: "credentials file", format: "keyward-credentials/1"}
	apiTokensFile   = lineFile{name: "API token file", format: "keyward-api-tokens/1"}
)

// decodeLine decodes one JSON line strictly: unknown fields, a second
// record or anything after the record are errors.
func decodeLine[T any](line []byte) (*T, error) {
	v := new(T)
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("more than one record")
	}
	// More misses a stray ] or } after the record.
	if len(bytes.TrimSpace(line[dec.InputOffset():])) > 0 {
		return nil, errors.New("text after the record")
	}
	return v, nil
}

// parseLines decodes a JSON lines file that keyward rewrites whole, one
// record per line, strictly. A JSON lines file rather than YAML because it
// may hold many records written by keyward, and a YAML mapping that large
// decodes in quadratic time. Blank lines are skipped; the first line may
// be file's header; errors give the file and the line number. add takes
// each record and may refuse it. It reports whether there was a header.
func parseLines[T any](raw []byte, file lineFile, add func(*T) error) (bool, error) {
	header := false
	for n, first := 1, true; len(raw) > 0; n++ {
		var line []byte
		line, raw, _ = bytes.Cut(raw, []byte("\n"))
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if first {
			first = false
			if h, err := decodeLine[headerLine](line); err == nil && h.Format != "" {
				if h.Format != file.format {
					return false, fmt.Errorf("%s line %d: format %q: not a %s (%q)", file.name, n, h.Format, file.name, file.format)
				}
				header = true
				continue
			}
		}
		v, err := decodeLine[T](line)
		if err != nil {
			return false, fmt.Errorf("%s line %d: %w", file.name, n, err)
		}
		if err := add(v); err != nil {
			return false, fmt.Errorf("%s line %d: %w", file.name, n, err)
		}
	}
	return header, nil
}

// marshalLines writes a JSON lines file: its header, then records in the
// order given.
func marshalLines[T any](file lineFile, records []T) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if err := enc.Encode(headerLine{Format: file.format}); err != nil {
		return nil, err
	}
	for _, r := range records {
		if err := enc.Encode(r); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// parseByID reads a JSON-lines file into a map by each line's id; an id
// listed twice is an error.
func parseByID[L, V any](raw []byte, file lineFile, what string, split func(*L) (string, *V)) (map[string]*V, bool, error) {
	out := make(map[string]*V, bytes.Count(raw, []byte("\n")))
	header, err := parseLines(raw, file, func(l *L) error {
		id, v := split(l)
		if _, dup := out[id]; dup {
			return fmt.Errorf("%s %q listed twice", what, id)
		}
		out[id] = v
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, header, nil
}

// encodeTokenFile writes a whole token file: its header, then the records,
// oldest first, so that it reads in the order the tokens were made.
func encodeTokenFile(records []tokenChange) ([]byte, error) {
	slices.SortFunc(records, byAge)
	lines := make([]tokenLine, len(records))
	for i, r := range records {
		lines[i] = tokenLine{ID: r.id, TokenData: *r.td}
	}
	return marshalLines(tokenFile, lines)
}

// encodeTokenChanges writes the lines that append changes to a token
// file: one line, or a batch line and the batch, which readers take whole
// or not at all.
func encodeTokenChanges(changes []tokenChange) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if len(changes) > 1 {
		if err := enc.Encode(batchLine{Batch: len(changes)}); err != nil {
			return nil, err
		}
	}
	for _, c := range changes {
		var line any = deletedLine{ID: c.id, Deleted: true}
		if c.td != nil {
			line = tokenLine{ID: c.id, TokenData: *c.td}
		}
		if err := enc.Encode(line); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// parseCredentials decodes the credentials file into credentials by user,
// then id. Its errors name the line and never show a value.
func parseCredentials(raw []byte) (map[string]map[string]*credentialData, bool, error) {
	creds := map[string]map[string]*credentialData{}
	header, err := parseLines(raw, credentialsFile, func(c *credentialLine) error {
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
		return nil, false, err
	}
	return creds, header, nil
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
	return marshalLines(credentialsFile, lines)
}

// parseAPITokens decodes the API token file.
func parseAPITokens(raw []byte) (map[string]*apiTokenData, bool, error) {
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
	return marshalLines(apiTokensFile, lines)
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
// keys resolved from the environment. Its parts come from different files
// and are shared between snapshots while their files do not change.
type snapshot struct {
	*policy
	tokens      *tokenIndex
	credentials *credentialSet
	// apiTokens are management token records by id.
	apiTokens map[string]*record.APIToken
}

// policy is what the store file and the environment hold.
type policy struct {
	providers   map[string]*record.Provider
	groups      map[string]*record.Group
	users       map[string]*record.User
	identities  map[string]*record.Identity
	signingKeys []token.SigningKey
	// missingEnv lists environment variables that provider keys name but
	// that are not set, for a warning (names only).
	missingEnv []string
}

// problems collects what is wrong with records: each a *field.Error whose
// Path names the record and field as the store files write them
// ("groups.eng.providers", "tokens.<id>.hash").
type problems []error

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, field.Errorf(path, format, args...))
}

// name adds a problem for the first of names that breaks k's rule; it
// wraps record.ErrInvalidName as well.
func (p *problems) name(path string, k nameKind, names ...string) {
	if err := k.check(names...); err != nil {
		*p = append(*p, &nameProblem{at: field.Errorf(path, "%v", err), err: err})
	}
}

// required is name for a name that must be set.
func (p *problems) required(path string, k nameKind, name string) {
	if name == "" {
		p.add(path, "must be set")
		return
	}
	p.name(path, k, name)
}

// hash adds a problem if s is not a SHA-256 in hex, and returns it parsed.
func (p *problems) hash(path, s string) [32]byte {
	h, ok := record.ParseHash(s)
	if !ok {
		p.add(path, "must be 64 hex digits (SHA-256)")
	}
	return h
}

// year adds a problem if t falls outside what the files can hold: they
// hold times in UTC, which JSON holds up to year 9999.
func (p *problems) year(path string, t time.Time) {
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		p.add(path, "must be within years 0 to 9999 in UTC")
	}
}

// err joins the problems, sorted so that the report is stable whatever
// the map order was.
func (p problems) err() error {
	slices.SortFunc(p, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(p...)
}

// nameProblem is a *field.Error about a name that also wraps
// record.ErrInvalidName, so that callers can branch on either.
type nameProblem struct {
	at  *field.Error
	err error // nameKind.check's
}

func (e *nameProblem) Error() string   { return e.at.Error() }
func (e *nameProblem) Unwrap() []error { return []error{e.at, e.err} }

// buildPolicy validates the store file's records and resolves provider
// keys with getenv.
func (d *Data) buildPolicy(getenv func(string) string) (*policy, error) {
	var bad problems
	s := &policy{
		providers:  make(map[string]*record.Provider, len(d.Providers)),
		groups:     make(map[string]*record.Group, len(d.Groups)),
		users:      make(map[string]*record.User, len(d.Users)),
		identities: make(map[string]*record.Identity, len(d.Identities)),
	}
	for name, p := range d.Providers {
		if rp := p.build(name, getenv, &bad, &s.missingEnv); rp != nil {
			s.providers[name] = rp
		}
	}
	for name, g := range d.Groups {
		s.groups[name] = g.build(name, &bad)
	}
	for name, u := range d.Users {
		s.users[name] = u.build(name, &bad)
	}
	for name, id := range d.Identities {
		if rid := id.build(name, &bad); rid != nil {
			s.identities[name] = rid
		}
	}
	for i, k := range d.SigningKeys {
		secret, err := base64.StdEncoding.DecodeString(k.Secret)
		if err != nil || len(secret) < token.KeySize {
			bad.add(fmt.Sprintf("signing_keys[%d].secret", i), "must be base64 of at least %d bytes", token.KeySize)
			continue
		}
		s.signingKeys = append(s.signingKeys, token.SigningKey{ID: k.ID, Secret: secret})
	}
	slices.Sort(s.missingEnv)
	return s, bad.err()
}

func (p *ProviderData) build(name string, getenv func(string) string, bad *problems, missing *[]string) *record.Provider {
	path := "providers." + name
	bad.name(path, providerName, name)
	if p == nil {
		bad.add(path, "empty record")
		return nil
	}
	rp := &record.Provider{Name: name, Kind: p.Kind, Header: strings.ToLower(p.Header), ValueTemplate: p.ValueTemplate, AnthropicVersion: p.AnthropicVersion}
	if err := rp.ValidateConvention(); err != nil {
		bad.add(path, "%v", err)
	}
	seen := map[string]bool{}
	for i, k := range p.Keys {
		kp := fmt.Sprintf("%s.keys[%d]", path, i)
		if k.ID == "" || seen[k.ID] {
			bad.add(kp+".id", "must be set and unique within the provider")
		}
		seen[k.ID] = true
		if k.Env == "" {
			bad.add(kp+".env", "must name the environment variable that holds the key")
			continue
		}
		v := getenv(k.Env)
		if v == "" {
			*missing = append(*missing, k.Env)
			continue
		}
		rp.Keys = append(rp.Keys, record.Key{ID: k.ID, Secret: v})
	}
	return rp
}

func (g *GroupData) build(name string, bad *problems) *record.Group {
	path, rg := "groups."+name, g.record(name)
	bad.name(path, groupName, name)
	bad.name(path+".providers", providerName, rg.Providers...)
	if rg.RequestsPerMinute < 0 {
		bad.add(path+".requests_per_minute", "must be 0 (no limit) or more")
	}
	return rg
}

func (u *UserData) build(name string, bad *problems) *record.User {
	path, ru := "users."+name, u.record(name)
	bad.name(path, userName, name)
	bad.name(path+".groups", groupName, ru.Groups...)
	if ru.Role != record.RoleUser && ru.Role != record.RoleAdmin {
		bad.add(path+".role", "%q is not user or admin", ru.Role)
	}
	return ru
}

func (i *IdentityData) build(name string, bad *problems) *record.Identity {
	path := "identities." + name
	bad.name(path, identityName, name)
	if i == nil {
		bad.add(path, "empty record")
		return nil
	}
	rid := i.record(name)
	if err := record.ValidatePrincipal(rid.Principal, true); err != nil {
		bad.add(path+".principal", "%v", err)
	}
	bad.required(path+".user", userName, rid.User)
	bad.required(path+".group", groupName, rid.Group)
	return rid
}

// knownNames says which of a token's names were found valid already.
type knownNames struct{ user, group bool }

// checkToken validates token id's record, but for the names known says
// were found valid already: a token file holds the same names many times
// over, and checking them each time was a tenth of a large store's load.
func checkToken(id string, t *TokenData, known knownNames) error {
	var bad problems
	path := "tokens." + id
	bad.name(path, tokenID, id)
	if t.Last4 != "" && len(t.Last4) != last4Len {
		bad.add(path+".last4", "must be %d characters", last4Len)
	}
	if t.ReplacedBy != "" {
		bad.name(path+".replaced_by", tokenID, t.ReplacedBy)
	}
	if t.Principal != "" {
		if err := record.ValidatePrincipal(t.Principal, true); err != nil {
			bad.add(path+".principal", "%v", err)
		}
	}
	bad.hash(path+".hash", t.Hash)
	if !known.user {
		bad.required(path+".user", userName, t.User)
	}
	if !known.group {
		bad.required(path+".group", groupName, t.Group)
	}
	if len(t.Name) > record.MaxTokenName {
		bad.add(path+".name", "longer than %d bytes", record.MaxTokenName)
	}
	bad.year(path+".created", t.Created)
	if t.Expires != nil {
		bad.year(path+".expires", *t.Expires)
	}
	return bad.err()
}

// credentialSet is what the credentials file holds: each user's
// credentials by id, and the same indexed for the decision
// (Store.PrivateKeys), built and replaced together.
type credentialSet struct {
	byUser map[string]map[string]*record.Credential
	keys   map[string]*record.PrivateKeys
	// none is the index of every user without credentials.
	none *record.PrivateKeys
}

// buildCredentials validates users' credentials and indexes them.
func buildCredentials(creds map[string]map[string]*credentialData) (*credentialSet, error) {
	var bad problems
	out := make(map[string]map[string]*record.Credential, len(creds))
	for user, m := range creds {
		byID := make(map[string]*record.Credential, len(m))
		for id, c := range m {
			path := "credentials." + user + "." + id
			if c == nil {
				bad.add(path, "empty record")
				continue
			}
			rc := c.record(user, id)
			if err := rc.Validate(); err != nil {
				bad = append(bad, field.Prefix(path, err))
			}
			byID[id] = rc
		}
		out[user] = byID
	}
	if err := bad.err(); err != nil {
		return nil, err
	}
	set := &credentialSet{byUser: out, keys: make(map[string]*record.PrivateKeys, len(out)), none: record.NewPrivateKeys(nil)}
	for user, byID := range out {
		set.keys[user] = record.NewPrivateKeys(oldestFirst(byID))
	}
	return set, nil
}

// buildAPITokens validates management token records.
func buildAPITokens(tokens map[string]*apiTokenData) (map[string]*record.APIToken, error) {
	var bad problems
	out := make(map[string]*record.APIToken, len(tokens))
	for id, t := range tokens {
		path := "api_tokens." + id
		bad.name(path, tokenID, id)
		if t == nil {
			bad.add(path, "empty record")
			continue
		}
		out[id] = &record.APIToken{ID: id, User: t.User, Created: t.Created, Revoked: t.Revoked, Hash: bad.hash(path+".hash", t.Hash)}
		bad.required(path+".user", userName, t.User)
	}
	return out, bad.err()
}

// validate checks everything an Update is about to write: the store
// file's records, the credentials, the management tokens, and the token
// records it changed.
func (d *Data) validate() error {
	_, errPolicy := d.buildPolicy(func(string) string { return "" })
	_, errCreds := buildCredentials(d.credentials)
	_, errAPI := buildAPITokens(d.apiTokens)
	var errTokens []error
	for _, c := range d.Tokens.written() {
		if c.td != nil {
			errTokens = append(errTokens, checkToken(c.id, c.td, knownNames{}))
		}
	}
	return errors.Join(errPolicy, errCreds, errAPI, errors.Join(errTokens...))
}
