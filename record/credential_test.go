package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/keyward/keyward/field"
)

const testKey = "sk-test-SECRET-0123456789"

func validCredential() *Credential {
	return &Credential{
		ID: NewCredentialID(), User: "alice", Name: "personal", Provider: "openai",
		Model: "gpt-4o", BaseURL: "https://api.example.com/v1", Key: testKey, Extra: json.RawMessage(`{"org":"o-1"}`),
	}
}

func TestNewCredentialID(t *testing.T) {
	seen := map[string]bool{}
	// 5000 draws: an id starting with '-' (a flag on a command line)
	// would turn up about 78 times if it were not drawn again.
	for range 5000 {
		id := NewCredentialID()
		if len(id) != 16 || !ValidCredentialID(id) || id[0] == '-' {
			t.Fatalf("NewCredentialID() = %q, want 16 URL-safe characters, not starting with '-'", id)
		}
		if seen[id] {
			t.Fatalf("NewCredentialID repeated %q", id)
		}
		seen[id] = true
	}
}

func TestCredentialValidate(t *testing.T) {
	if err := validCredential().Validate(); err != nil {
		t.Fatalf("valid credential: %v", err)
	}
	for name, tc := range map[string]struct {
		change func(*Credential)
		field  string
	}{
		"no id":             {func(c *Credential) { c.ID = "" }, "id"},
		"id with slash":     {func(c *Credential) { c.ID = "a/../b" }, "id"},
		"no user":           {func(c *Credential) { c.User = "" }, "user"},
		"user path":         {func(c *Credential) { c.User = "../bob" }, "user"},
		"no name":           {func(c *Credential) { c.Name = "" }, "name"},
		"name with space":   {func(c *Credential) { c.Name = "my key" }, "name"},
		"no provider":       {func(c *Credential) { c.Provider = "" }, "provider"},
		"model newline":     {func(c *Credential) { c.Model = "gpt\n4" }, "model"},
		"model too long":    {func(c *Credential) { c.Model = strings.Repeat("m", MaxCredentialModel+1) }, "model"},
		"base url ftp":      {func(c *Credential) { c.BaseURL = "ftp://example.com" }, "base_url"},
		"base url relative": {func(c *Credential) { c.BaseURL = "/v1" }, "base_url"},
		"base url no host":  {func(c *Credential) { c.BaseURL = "https://" }, "base_url"},
		"base url password": {func(c *Credential) { c.BaseURL = "https://u:" + testKey + "@example.com" }, "base_url"},
		"base url query":    {func(c *Credential) { c.BaseURL = "https://example.com/?key=" + testKey }, "base_url"},
		"key newline":       {func(c *Credential) { c.Key = testKey + "\r\nx-evil: 1" }, "key"},
		"key too long":      {func(c *Credential) { c.Key = strings.Repeat(testKey, MaxCredentialKey) }, "key"},
		"extra array":       {func(c *Credential) { c.Extra = json.RawMessage(`[1]`) }, "extra"},
		"extra string":      {func(c *Credential) { c.Extra = json.RawMessage(`"x"`) }, "extra"},
		"extra invalid":     {func(c *Credential) { c.Extra = json.RawMessage(`{"a":`) }, "extra"},
		"extra two objects": {func(c *Credential) { c.Extra = json.RawMessage(`{}{}`) }, "extra"},
		"extra null":        {func(c *Credential) { c.Extra = json.RawMessage(`null`) }, "extra"},
		"extra too long": {func(c *Credential) {
			c.Extra = json.RawMessage(`{"a":"` + strings.Repeat("x", MaxCredentialExtra) + `"}`)
		}, "extra"},
		"base url http fine": {func(c *Credential) { c.BaseURL = "http://127.0.0.1:8080/v1" }, ""},
		"optional fields":    {func(c *Credential) { c.Model, c.BaseURL, c.Extra = "", "", nil }, ""},
		"empty key":          {func(c *Credential) { c.Key = "" }, ""},
	} {
		t.Run(name, func(t *testing.T) {
			c := validCredential()
			tc.change(c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if got := field.Paths(err); !slices.Equal(got, []string{tc.field}) {
				t.Fatalf("Validate() = %v: fields %q, want %s", err, got, tc.field)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Fatalf("Validate() error shows the key: %v", err)
			}
		})
	}
}

func TestCredentialValidateReportsAll(t *testing.T) {
	c := validCredential()
	c.User, c.BaseURL, c.Key = "", "https://u:"+testKey+"@example.com", testKey+"\n"
	err := c.Validate()
	if got, want := field.Paths(err), []string{"user", "base_url", "key"}; !slices.Equal(got, want) {
		t.Fatalf("Validate() = %v: fields %q, want %q", err, got, want)
	}
	var fe *field.Error
	if !errors.As(err, &fe) || fe.Error() != "user: "+fe.Msg || strings.Contains(err.Error(), testKey) {
		t.Fatalf("Validate() = %v: want \"field: message\" without the key", err)
	}
}

func TestCredentialStringHidesKey(t *testing.T) {
	c := validCredential()
	for _, format := range []string{"%v", "%+v", "%s", "%#v"} {
		for _, v := range []any{c, *c, []*Credential{c}, map[string]Credential{"a": *c}} {
			if s := fmt.Sprintf(format, v); strings.Contains(s, testKey) || strings.Contains(s, "SECRET") {
				t.Errorf("Sprintf(%q) shows the key: %s", format, s)
			}
		}
	}
	b, err := json.Marshal(c)
	if err != nil || strings.Contains(string(b), "SECRET") {
		t.Errorf("json.Marshal shows the key: %s, %v", b, err)
	}
	if s := c.String(); !strings.Contains(s, c.ID) || !strings.Contains(s, "alice") {
		t.Errorf("String() = %q, want the owner and id", s)
	}
}
