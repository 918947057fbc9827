package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/record"
)

// alice's own provider keys. Tests grep keyward's log for them.
const (
	ownOpenAIKey      = "sk-proj-alice-own-openai-c0ffee42"
	ownOpenAIModelKey = "sk-proj-alice-own-gpt4o-d00d5e"
	ownAnthropicKey   = "sk-ant-alice-own-anthropic-feed11"
)

const anthropicBody = `{"model":"claude-sonnet-4","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`

// credentialWriter opens the stack's store file from the test process, as
// another keyward process (the management API, the CLI) would write it:
// keyward serve picks up what it writes within poll_interval.
func (s *stack) credentialWriter() *filestore.Store {
	s.t.Helper()
	st, err := filestore.Open(filestore.Options{Path: filepath.Join(s.dir, "store.yaml"), EnvPath: filepath.Join(s.dir, ".env")})
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

// putCredential stores one of user's own credentials and returns it.
func putCredential(t *testing.T, st *filestore.Store, user, provider, model, key string) *record.Credential {
	t.Helper()
	c := &record.Credential{
		ID: record.NewCredentialID(), User: user, Name: "own-" + provider + model, Provider: provider, Model: model, Key: key,
		Created: time.Now().UTC(),
	}
	if err := st.PutCredential(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// sent makes one allowed call through Envoy and returns the value of
// header that the provider received.
func (s *stack) sent(t *testing.T, path, tok, header string, extra map[string]string) string {
	t.Helper()
	body := chatBody
	switch {
	case strings.HasPrefix(path, "/anthropic/"):
		body = anthropicBody
	case strings.HasPrefix(path, "/gemini/"):
		body = `{"contents":[{"parts":[{"text":"hi"}]}]}`
	}
	headers := map[string]string{"authorization": "Bearer " + tok}
	for k, v := range extra {
		headers[k] = v
	}
	s.provider.Reset()
	r := s.do("POST", path, headers, body)
	if r.status != http.StatusOK {
		t.Fatalf("POST %s: %d %s", path, r.status, r.body)
	}
	req, ok := s.provider.Last()
	if !ok {
		t.Fatalf("POST %s: the provider received nothing", path)
	}
	return req.Header.Get(header)
}

const openaiPath = "/openai/v1/chat/completions"

// TestPrivateCredentials: where the global switch and the group allow
// custom keys, a user's requests go out on their own stored credential;
// another user's, a restricting group's, and (after the credential is
// deleted) the user's own go out on the server key.
func TestPrivateCredentials(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.kw("group", "add", "locked", "-disable-custom-keys")
	s.kw("user", "set", "alice", "-groups", "eng,locked")
	s.kw("user", "add", "bob", "-groups", "eng")
	alice, bob := s.token("alice", "eng"), s.token("bob", "eng")
	aliceLocked := s.token("alice", "locked")
	server := "Bearer " + openaiKey
	if got := s.sent(t, openaiPath, alice, "authorization", nil); got != server {
		t.Fatalf("before any credential alice sent %q, want the server key", got)
	}

	st := s.credentialWriter()
	anyModel := putCredential(t, st, "alice", "openai", "", ownOpenAIKey)
	took := waitFor(t, 2*time.Second, func() bool {
		return s.sent(t, openaiPath, alice, "authorization", nil) == "Bearer "+ownOpenAIKey
	})
	t.Logf("alice's new credential in use %v after it was written (poll_interval 200ms)", took)

	t.Run("who gets which key", func(t *testing.T) {
		model := map[string]string{"x-ai-eg-model": "gpt-4o"}
		// Written in this order, so that once keyward serves the last
		// one it serves both: each write replaces the file whole.
		putCredential(t, st, "alice", "anthropic", "", ownAnthropicKey)
		gpt4o := putCredential(t, st, "alice", "openai", "gpt-4o", ownOpenAIModelKey)
		waitFor(t, 2*time.Second, func() bool {
			return s.sent(t, openaiPath, alice, "authorization", model) == "Bearer "+ownOpenAIModelKey
		})
		tests := map[string]struct {
			path, tok, header string
			extra             map[string]string
			want              string
		}{
			"alice, any model":             {openaiPath, alice, "authorization", nil, "Bearer " + ownOpenAIKey},
			"alice, model of a credential": {openaiPath, alice, "authorization", model, "Bearer " + ownOpenAIModelKey},
			"alice, another model":         {openaiPath, alice, "authorization", map[string]string{"x-ai-eg-model": "o3"}, "Bearer " + ownOpenAIKey},
			"alice, anthropic":             {"/anthropic/v1/messages", alice, "x-api-key", nil, ownAnthropicKey},
			"alice, gemini (none of hers)": {"/gemini/v1beta/models/gemini-2.0-flash:generateContent", alice, "x-goog-api-key", nil, geminiKey},
			"bob, same group":              {openaiPath, bob, "authorization", model, server},
			"bob, anthropic":               {"/anthropic/v1/messages", bob, "x-api-key", nil, anthropicKey},
			"alice, group without custom":  {openaiPath, aliceLocked, "authorization", model, server},
			"alice, group, anthropic":      {"/anthropic/v1/messages", aliceLocked, "x-api-key", nil, anthropicKey},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				if got := s.sent(t, tc.path, tc.tok, tc.header, tc.extra); got != tc.want {
					t.Errorf("provider saw %s = %q, want %q", tc.header, got, tc.want)
				}
			})
		}
		if err := st.DeleteCredential(context.Background(), "alice", gpt4o.ID); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, func() bool {
			return s.sent(t, openaiPath, alice, "authorization", model) == "Bearer "+ownOpenAIKey
		})
	})

	t.Run("deleted credential", func(t *testing.T) {
		if err := st.DeleteCredential(context.Background(), "alice", anyModel.ID); err != nil {
			t.Fatal(err)
		}
		took := waitFor(t, 2*time.Second, func() bool {
			return s.sent(t, openaiPath, alice, "authorization", nil) == server
		})
		t.Logf("alice back on the server key %v after her credential was deleted (poll_interval 200ms)", took)
	})

	t.Run("no own key in the log", func(t *testing.T) {
		if err := s.stopKeyward(); err != nil {
			t.Fatalf("keyward exit: %v", err)
		}
		logs := s.logs.String()
		assertNoSecrets(t, "keyward's log", logs, ownOpenAIKey, ownOpenAIModelKey, ownAnthropicKey, openaiKey, alice, bob, aliceLocked)
		if !strings.Contains(logs, "store reloaded") {
			t.Error("the log never says the store was reloaded")
		}
	})
}

// TestPrivateCredentialsDisabled: with KEYWARD_DISABLE_CUSTOM_KEYS=true a
// stored credential is never used.
func TestPrivateCredentialsDisabled(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"KEYWARD_DISABLE_CUSTOM_KEYS=true"}})
	putCredential(t, s.credentialWriter(), "alice", "openai", "", ownOpenAIKey)
	// The token is written after the credential, and s.token waits until
	// keyward knows it: keyward has read the credential by then.
	tok := s.token("alice", "eng")
	for range 3 {
		if got := s.sent(t, openaiPath, tok, "authorization", nil); got != "Bearer "+openaiKey {
			t.Fatalf("provider saw %q, want the server key", got)
		}
	}
	if err := s.stopKeyward(); err != nil {
		t.Fatalf("keyward exit: %v", err)
	}
	assertNoSecrets(t, "keyward's log", s.logs.String(), ownOpenAIKey, tok)
}
