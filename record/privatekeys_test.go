package record

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestPrivateKeysFor(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cred := func(id, provider, model, key string, age time.Duration) *Credential {
		return &Credential{ID: id, User: "ann", Name: "n-" + id, Provider: provider, Model: model, Key: key, Created: t0.Add(-age)}
	}
	tests := map[string]struct {
		creds    []*Credential
		provider string
		model    string
		want     string // credential id, "" for none
	}{
		"no credentials":                {provider: "openai", model: "gpt-4o"},
		"other provider only":           {creds: []*Credential{cred("a", "anthropic", "", "k", 0)}, provider: "openai", model: "gpt-4o"},
		"any model":                     {creds: []*Credential{cred("a", "openai", "", "k", 0)}, provider: "openai", model: "gpt-4o", want: "a"},
		"any model, request names none": {creds: []*Credential{cred("a", "openai", "", "k", 0)}, provider: "openai", want: "a"},
		"exact model":                   {creds: []*Credential{cred("a", "openai", "gpt-4o", "k", 0)}, provider: "openai", model: "gpt-4o", want: "a"},
		"other model never used":        {creds: []*Credential{cred("a", "openai", "o3", "k", 0)}, provider: "openai", model: "gpt-4o"},
		"model set, request names none": {creds: []*Credential{cred("a", "openai", "o3", "k", 0)}, provider: "openai"},
		"model match is exact":          {creds: []*Credential{cred("a", "openai", "gpt-4o", "k", 0)}, provider: "openai", model: "gpt-4o-mini"},
		"exact beats newer any": {
			creds:    []*Credential{cred("old-exact", "openai", "gpt-4o", "k", time.Hour), cred("new-any", "openai", "", "k", 0)},
			provider: "openai", model: "gpt-4o", want: "old-exact",
		},
		"any when exact is for another model": {
			creds:    []*Credential{cred("exact", "openai", "o3", "k", 0), cred("any", "openai", "", "k", time.Hour)},
			provider: "openai", model: "gpt-4o", want: "any",
		},
		"newest exact wins": {
			creds:    []*Credential{cred("older", "openai", "gpt-4o", "k", time.Hour), cred("newer", "openai", "gpt-4o", "k", time.Minute)},
			provider: "openai", model: "gpt-4o", want: "newer",
		},
		"newest any wins, whatever the order": {
			creds:    []*Credential{cred("newer", "openai", "", "k", time.Minute), cred("older", "openai", "", "k", time.Hour)},
			provider: "openai", model: "gpt-4o", want: "newer",
		},
		"tie on created: larger id": {
			creds:    []*Credential{cred("b", "openai", "", "k", 0), cred("c", "openai", "", "k", 0), cred("a", "openai", "", "k", 0)},
			provider: "openai", want: "c",
		},
		"without a key never used": {
			creds:    []*Credential{cred("empty", "openai", "gpt-4o", "", 0), cred("any", "openai", "", "k", time.Hour)},
			provider: "openai", model: "gpt-4o", want: "any",
		},
		"nil entries skipped":     {creds: []*Credential{nil, cred("a", "openai", "", "k", 0)}, provider: "openai", want: "a"},
		"provider match is exact": {creds: []*Credential{cred("a", "openai", "", "k", 0)}, provider: "OpenAI"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := NewPrivateKeys(tc.creds)
			got := p.For(tc.provider, tc.model)
			switch {
			case tc.want == "" && got != nil:
				t.Fatalf("For(%q, %q) = %s, want none", tc.provider, tc.model, got.Credential)
			case tc.want == "":
				return
			case got == nil:
				t.Fatalf("For(%q, %q) = nil, want %s", tc.provider, tc.model, tc.want)
			case got.Credential.ID != tc.want:
				t.Fatalf("For(%q, %q) = %s, want %s", tc.provider, tc.model, got.Credential.ID, tc.want)
			}
			if got.Key.ID != PrivateKeyPrefix+tc.want || got.Key.Secret != got.Credential.Key {
				t.Errorf("key %s, secret taken from the credential: %v", got.Key.ID, got.Key.Secret == got.Credential.Key)
			}
			// Built once: every call hands out the same *Key, which is what
			// the responder's caches key on.
			if again := p.For(tc.provider, tc.model); &again.Key != &got.Key {
				t.Error("For returned a new key for the same request")
			}
		})
	}
}

func TestPrivateKeysNil(t *testing.T) {
	var p *PrivateKeys
	if got := p.For("openai", "gpt-4o"); got != nil {
		t.Fatalf("nil PrivateKeys: For = %v", got)
	}
	if got := NewPrivateKeys(nil).For("openai", ""); got != nil {
		t.Fatalf("empty PrivateKeys: For = %v", got)
	}
	if p.Has("openai") || NewPrivateKeys(nil).Has("openai") {
		t.Fatal("Has on a nil or empty PrivateKeys")
	}
	keyless := NewPrivateKeys([]*Credential{{ID: "a", Provider: "openai"}})
	if keyless.Has("openai") {
		t.Fatal("Has counts a credential without a key")
	}
	if !NewPrivateKeys([]*Credential{{ID: "a", Provider: "openai", Key: "sk-x"}}).Has("openai") {
		t.Fatal("Has misses a credential")
	}
}

func TestPrivateKeysHideSecret(t *testing.T) {
	p := NewPrivateKeys([]*Credential{{ID: "a", User: "ann", Name: "n", Provider: "openai", Key: testKey}})
	k := p.For("openai", "")
	for _, s := range []string{fmt.Sprint(k.Key), fmt.Sprintf("%+v", k.Key), fmt.Sprintf("%#v", k.Key), fmt.Sprint(*k.Credential)} {
		if strings.Contains(s, testKey) {
			t.Fatalf("printing a private key shows the secret: %s", s)
		}
	}
}

func TestPrivateKeysForDoesNotAllocate(t *testing.T) {
	p := NewPrivateKeys([]*Credential{
		{ID: "a", Provider: "openai", Model: "gpt-4o", Key: "k"},
		{ID: "b", Provider: "openai", Key: "k"},
	})
	if n := testing.AllocsPerRun(100, func() {
		p.For("openai", "gpt-4o")
		p.For("openai", "o3")
		p.For("anthropic", "")
	}); n != 0 {
		t.Fatalf("For allocates %v times", n)
	}
}
