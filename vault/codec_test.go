package vault

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/record"
)

func TestDecodeProvider(t *testing.T) {
	tests := map[string]struct {
		in      map[string]any
		want    *record.Provider
		wantErr string
	}{
		"openai two keys": {
			in:   map[string]any{"kind": "openai", "key_b": "sk-b", "key_a": "sk-a"},
			want: &record.Provider{Name: "p", Kind: record.KindOpenAI, Keys: []record.Key{{ID: "a", Secret: "sk-a"}, {ID: "b", Secret: "sk-b"}}},
		},
		"custom": {
			in:   map[string]any{"kind": "custom", "header": "X-Auth", "value_template": "Token {key}", "key_1": "s"},
			want: &record.Provider{Name: "p", Kind: record.KindCustom, Header: "x-auth", ValueTemplate: "Token {key}", Keys: []record.Key{{ID: "1", Secret: "s"}}},
		},
		"empty key skipped": {
			in:   map[string]any{"kind": "gemini", "key_old": "", "key_new": "g"},
			want: &record.Provider{Name: "p", Kind: record.KindGemini, Keys: []record.Key{{ID: "new", Secret: "g"}}},
		},
		"bad kind":       {in: map[string]any{"kind": "openia", "key_a": "sk-secret-value"}, wantErr: "kind"},
		"key not string": {in: map[string]any{"kind": "openai", "key_a": json.Number("12")}, wantErr: "field key_a"},
		"custom no {key}": {
			in: map[string]any{"kind": "custom", "header": "x", "value_template": "Token", "key_1": "sk-secret-value"}, wantErr: "value_template",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := decodeProvider("p", tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "providers/p") {
					t.Fatalf("err %v, want one naming providers/p and %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "sk-secret-value") {
					t.Fatalf("error shows a key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != tc.want.Kind || got.Header != tc.want.Header || got.ValueTemplate != tc.want.ValueTemplate || len(got.Keys) != len(tc.want.Keys) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i := range got.Keys {
				if got.Keys[i] != tc.want.Keys[i] {
					t.Fatalf("keys %v, want %v", got.Keys, tc.want.Keys)
				}
			}
		})
	}
}

// What `vault kv put groups/x disabled=true providers=a,b` writes: strings.
func TestDecodeGroupFromCLIStrings(t *testing.T) {
	g, err := decodeGroup("x", map[string]any{"disabled": "true", "providers": "openai, anthropic", "models": "gpt-4o*", "disable_custom_keys": "false", "requests_per_minute": "120"})
	if err != nil {
		t.Fatal(err)
	}
	if !g.Disabled || len(g.Providers) != 2 || g.Providers[1] != "anthropic" || g.Models[0] != "gpt-4o*" || g.DisableCustomKeys || g.RequestsPerMinute != 120 {
		t.Fatalf("got %+v", g)
	}
	if _, err := decodeGroup("x", map[string]any{"disabled": "maybe"}); err == nil || !strings.Contains(err.Error(), "field disabled") {
		t.Fatalf("bad bool: %v", err)
	}
	if _, err := decodeGroup("x", map[string]any{"providers": []any{"a", 1.0}}); err == nil {
		t.Fatal("a list with a number was accepted")
	}
	for _, v := range []any{"lots", "-5", json.Number("-1"), true, 1.5, json.Number("1.5")} {
		if _, err := decodeGroup("x", map[string]any{"requests_per_minute": v}); err == nil || !strings.Contains(err.Error(), "field requests_per_minute") {
			t.Errorf("requests_per_minute %v: %v", v, err)
		}
	}
}

func TestRoundTrips(t *testing.T) {
	// encode → JSON (as Vault stores it) → decode.
	through := func(m map[string]any) map[string]any {
		raw, _ := json.Marshal(m)
		var out map[string]any
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.UseNumber()
		if err := dec.Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	g := &record.Group{Name: "g", Disabled: true, Providers: []string{"openai"}, Models: []string{"o3"}, DisableCustomKeys: true, RequestsPerMinute: 90}
	g2, err := decodeGroup("g", through(encodeGroup(g)))
	if err != nil || g2.Disabled != g.Disabled || g2.Providers[0] != "openai" || g2.Models[0] != "o3" || !g2.DisableCustomKeys || g2.RequestsPerMinute != 90 {
		t.Fatalf("group %+v, %v", g2, err)
	}
	u := &record.User{Name: "u", Role: record.RoleAdmin, Groups: []string{"g"}, Disabled: true}
	u2, err := decodeUser("u", through(encodeUser(u)))
	if err != nil || u2.Role != record.RoleAdmin || u2.Groups[0] != "g" || !u2.Disabled {
		t.Fatalf("user %+v, %v", u2, err)
	}
	now := time.Now().UTC()
	tk := &record.Token{ID: "AAAAAAAAAAAAAAAA", User: "u", Group: "g", Name: "n", Created: now, Expires: now.Add(time.Hour), Revoked: true, Last4: "wxyz", ReplacedBy: "BBBBBBBBBBBBBBBB"}
	tk.Hash[0], tk.Hash[31] = 1, 2
	tk2, err := decodeToken(tk.ID, through(encodeToken(tk)))
	if err != nil || tk2.Hash != tk.Hash || !tk2.Created.Equal(tk.Created) || !tk2.Expires.Equal(tk.Expires) || !tk2.Revoked || tk2.Name != "n" || tk2.Last4 != "wxyz" || tk2.ReplacedBy != tk.ReplacedBy {
		t.Fatalf("token %+v, %v", tk2, err)
	}
	tk.Expires, tk.Last4, tk.ReplacedBy = time.Time{}, "", ""
	if tk3, _ := decodeToken(tk.ID, through(encodeToken(tk))); !tk3.Expires.IsZero() || tk3.Last4 != "" || tk3.ReplacedBy != "" {
		t.Fatal("absent fields came back set")
	}
	bad := encodeToken(tk)
	bad["replaced_by"] = "../x"
	if _, err := decodeToken(tk.ID, through(bad)); err == nil || !strings.Contains(err.Error(), "replaced_by") {
		t.Fatalf("bad replaced_by: %v", err)
	}
}

func TestDecodeSigningKeys(t *testing.T) {
	keys, err := decodeSigningKeys(map[string]any{"key_2": strings.Repeat("QQ", 22), "key_1": strings.Repeat("QUFB", 11)})
	if err != nil || len(keys) != 2 || keys[0].ID != 1 || keys[1].ID != 2 {
		t.Fatalf("keys %v, %v", keys, err)
	}
	for _, bad := range []map[string]any{{"key_x": strings.Repeat("QUFB", 11)}, {"key_1": "c2hvcnQ="}, {"key_300": strings.Repeat("QUFB", 11)}} {
		if _, err := decodeSigningKeys(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := map[string]struct {
		cfg  Config
		want string
	}{
		"defaults":      {Config{}, ""},
		"bad method":    {Config{Auth: AuthConfig{Method: "ldap"}}, "auth.method"},
		"approle no id": {Config{Auth: AuthConfig{Method: "approle"}}, "auth.role_id"},
		"k8s no role":   {Config{Auth: AuthConfig{Method: "kubernetes"}}, "auth.role"},
		"bad mount":     {Config{Mount: "a/b"}, "mount"},
		"fast poll":     {Config{PollInterval: time.Millisecond}, "poll_interval"},
		"addresses":     {Config{Addresses: []string{"http://10.0.0.1:8200", "https://vault-1.vault:8200/"}}, ""},
		"both":          {Config{Address: "http://a:8200", Addresses: []string{"http://b:8200"}}, "addresses"},
		"no scheme":     {Config{Addresses: []string{"http://a:8200", "b:8200"}}, "addresses[1]"},
		"path":          {Config{Addresses: []string{"http://a:8200/vault"}}, "addresses[0]"},
		"user info":     {Config{Addresses: []string{"https://u:p@a:8200"}}, "addresses[0]"},
	}
	for name, tc := range tests {
		err := tc.cfg.WithDefaults().Validate()
		var fe *field.Error
		if (err == nil) != (tc.want == "") || err != nil && (!errors.As(err, &fe) || fe.Path != tc.want) {
			t.Errorf("%s: %v, want a field.Error at %q", name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), ":p@") {
			t.Errorf("%s: the error carries the password: %v", name, err)
		}
	}
}
