package vault

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Records are KV v2 data maps. keyward writes native JSON types; people
// writing with `vault kv put k=v` write strings, so every reader accepts
// both ("true" for true, "a,b" for ["a","b"]). Errors name the record and
// the field, never a value that could be a secret.

// keyPrefix starts the fields that hold provider keys and signing keys:
// key_<id>=<key>, so that `vault kv put` can write several.
const keyPrefix = "key_"

type fields struct {
	path string
	m    map[string]any
	errs []error
}

func (f *fields) bad(field, msg string) {
	f.errs = append(f.errs, fmt.Errorf("%s: field %s: %s", f.path, field, msg))
}

func (f *fields) err() error { return errors.Join(f.errs...) }

func (f *fields) str(name string) string {
	switch v := f.m[name].(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		f.bad(name, "want a string")
		return ""
	}
}

// hash reads a token secret's SHA-256 written by record.FormatHash.
func (f *fields) hash(name string) [32]byte {
	h, ok := record.ParseHash(f.str(name))
	if !ok {
		f.bad(name, "want 64 hex digits (SHA-256)")
	}
	return h
}

func (f *fields) boolean(name string) bool {
	switch v := f.m[name].(type) {
	case nil:
		return false
	case bool:
		return v
	case string:
		if v == "" {
			return false
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.bad(name, "want true or false")
		}
		return b
	default:
		f.bad(name, "want true or false")
		return false
	}
}

func (f *fields) list(name string) []string {
	switch v := f.m[name].(type) {
	case nil:
		return nil
	case string:
		var out []string
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				f.bad(name, "want a list of strings")
				return nil
			}
			out = append(out, s)
		}
		return out
	default:
		f.bad(name, "want a list of strings or a comma-separated string")
		return nil
	}
}

func (f *fields) time(name string) time.Time {
	s := f.str(name)
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		f.bad(name, "want an RFC 3339 time")
	}
	return t
}

func (f *fields) integer(name string) int {
	switch v := f.m[name].(type) {
	case nil:
		return 0
	case json.Number:
		n, err := v.Int64()
		if err != nil {
			f.bad(name, "want an integer")
		}
		return int(n)
	case float64:
		if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
			f.bad(name, "want an integer")
		}
		return int(v)
	case string:
		n, err := strconv.Atoi(v)
		if err != nil {
			f.bad(name, "want an integer")
		}
		return n
	default:
		f.bad(name, "want an integer")
		return 0
	}
}

// keys returns the key_<id> fields, sorted by id so that the pool's order
// (and so the spreading of requests) is stable.
func (f *fields) keys() []record.Key {
	var out []record.Key
	for name := range f.m {
		id, ok := strings.CutPrefix(name, keyPrefix)
		if !ok {
			continue
		}
		secret, isString := f.m[name].(string)
		if !isString || id == "" {
			f.bad(name, "want key_<id> = the key as a string")
			continue
		}
		if secret != "" {
			out = append(out, record.Key{ID: id, Secret: secret})
		}
	}
	slices.SortFunc(out, func(a, b record.Key) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func decodeProvider(name string, m map[string]any) (*record.Provider, error) {
	f := &fields{path: providersDir + name, m: m}
	p := &record.Provider{
		Name:             name,
		Kind:             record.Kind(f.str("kind")),
		Header:           strings.ToLower(f.str("header")),
		ValueTemplate:    f.str("value_template"),
		AnthropicVersion: f.str("anthropic_version"),
		Keys:             f.keys(),
	}
	if err := p.ValidateConvention(); err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s: %w", f.path, err))
	}
	return p, f.err()
}

func decodeGroup(name string, m map[string]any) (*record.Group, error) {
	f := &fields{path: groupsDir + name, m: m}
	g := &record.Group{
		Name:              name,
		Disabled:          f.boolean("disabled"),
		Providers:         f.list("providers"),
		Models:            f.list("models"),
		DisableCustomKeys: f.boolean("disable_custom_keys"),
		RequestsPerMinute: f.integer("requests_per_minute"),
	}
	if g.RequestsPerMinute < 0 {
		f.bad("requests_per_minute", "want 0 (no limit) or more")
	}
	return g, f.err()
}

func encodeGroup(g *record.Group) map[string]any {
	return map[string]any{
		"disabled":            g.Disabled,
		"providers":           nonNil(g.Providers),
		"models":              nonNil(g.Models),
		"disable_custom_keys": g.DisableCustomKeys,
		"requests_per_minute": g.RequestsPerMinute,
	}
}

func decodeUser(name string, m map[string]any) (*record.User, error) {
	f := &fields{path: usersDir + name, m: m}
	u := &record.User{
		Name:     name,
		Role:     record.Role(f.str("role")),
		Disabled: f.boolean("disabled"),
		Groups:   f.list("groups"),
	}
	if u.Role == "" {
		u.Role = record.RoleUser
	}
	if u.Role != record.RoleUser && u.Role != record.RoleAdmin {
		f.bad("role", "want user or admin")
	}
	return u, f.err()
}

func encodeUser(u *record.User) map[string]any {
	return map[string]any{"role": string(u.Role), "disabled": u.Disabled, "groups": nonNil(u.Groups)}
}

func decodeToken(id string, m map[string]any) (*record.Token, error) {
	f := &fields{path: tokensDir + id, m: m}
	t := &record.Token{
		ID:      id,
		User:    f.str("user"),
		Group:   f.str("group"),
		Name:    f.str("name"),
		Created: f.time("created"),
		Expires: f.time("expires"),
		Revoked: f.boolean("revoked"),
		Last4:   f.str("last4"),
		// Written by rotation; absent on tokens never rotated.
		ReplacedBy: f.str("replaced_by"),
		// Absent on unbound tokens and on tokens older than bindings.
		Principal: f.str("principal"),
	}
	t.Hash = f.hash("hash")
	if t.User == "" || t.Group == "" {
		f.bad("user/group", "must be set")
	}
	if t.ReplacedBy != "" && !token.ValidID(t.ReplacedBy) {
		f.bad("replaced_by", "want a token id")
	}
	if t.Principal != "" {
		if err := record.ValidatePrincipal(t.Principal, true); err != nil {
			f.bad("principal", err.Error())
		}
	}
	return t, f.err()
}

func encodeToken(t *record.Token) map[string]any {
	m := map[string]any{
		"user":    t.User,
		"group":   t.Group,
		"name":    t.Name,
		"hash":    record.FormatHash(t.Hash),
		"created": t.Created.UTC().Format(time.RFC3339Nano),
		"revoked": t.Revoked,
	}
	if !t.Expires.IsZero() {
		m["expires"] = t.Expires.UTC().Format(time.RFC3339Nano)
	}
	if t.Last4 != "" {
		m["last4"] = t.Last4
	}
	if t.ReplacedBy != "" {
		m["replaced_by"] = t.ReplacedBy
	}
	if t.Principal != "" {
		m["principal"] = t.Principal
	}
	return m
}

func decodeIdentity(name string, m map[string]any) (*record.Identity, error) {
	f := &fields{path: identitiesDir + name, m: m}
	id := &record.Identity{
		Name:      name,
		Principal: f.str("principal"),
		User:      f.str("user"),
		Group:     f.str("group"),
		Disabled:  f.boolean("disabled"),
		Created:   f.time("created"),
		Updated:   f.time("updated"),
	}
	if err := record.ValidatePrincipal(id.Principal, true); err != nil {
		f.bad("principal", err.Error())
	}
	if record.CheckName("user", id.User) != nil || record.CheckName("group", id.Group) != nil {
		f.bad("user/group", "want user and group names")
	}
	return id, f.err()
}

func encodeIdentity(id *record.Identity) map[string]any {
	return map[string]any{
		"principal": id.Principal,
		"user":      id.User,
		"group":     id.Group,
		"disabled":  id.Disabled,
		"created":   id.Created.UTC().Format(time.RFC3339Nano),
		"updated":   id.Updated.UTC().Format(time.RFC3339Nano),
	}
}

func decodeSigningKeys(m map[string]any) ([]token.SigningKey, error) {
	f := &fields{path: signingKeyPath, m: m}
	var out []token.SigningKey
	for _, k := range f.keys() {
		id, err := strconv.ParseUint(k.ID, 10, 8)
		secret, err2 := base64.StdEncoding.DecodeString(k.Secret)
		if err != nil || err2 != nil || len(secret) < token.KeySize {
			f.bad(keyPrefix+k.ID, fmt.Sprintf("want key_<0-255> = base64 of at least %d bytes", token.KeySize))
			continue
		}
		out = append(out, token.SigningKey{ID: uint8(id), Secret: secret})
	}
	return out, f.err()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
