package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestModelPolicyReadsBody runs the model policy through real Envoy with
// envoy-config -forward-body: keyward checks the model the provider reads
// (the JSON body, Gemini's path, Azure's deployment), and a client-set
// x-ai-eg-model header cannot launder a forbidden one. The provider never
// sees a refused request.
func TestModelPolicyReadsBody(t *testing.T) {
	// envoy.max_request_bytes at 64 KiB (the default is 1 MiB) so that a
	// truncated body is cheap to send. The extra YAML continues the stack
	// configuration's envoy: section.
	s := newStack(t, stackOptions{forwardBody: true, extra: "  max_request_bytes: 65536\n"})
	s.kw("group", "add", "mini", "-models", "gpt-4o-mini")
	s.kw("group", "add", "flash", "-models", "gemini-1.5-flash", "-providers", "gemini")
	s.kw("user", "set", "alice", "-groups", "eng,mini,flash")
	tok := s.token("alice", "mini")
	ftok := s.token("alice", "flash")
	etok := s.token("alice", "eng")

	client := openai.NewClient(option.WithBaseURL(s.envoyURL+"/openai/v1/"), option.WithAPIKey(tok), option.WithMaxRetries(0))
	chat := func(model string) error {
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
		})
		return err
	}
	// refused checks that call is refused with code, and that nothing
	// reached the provider.
	refused := func(t *testing.T, what string, code string, call func() response) {
		t.Helper()
		before := len(s.provider.Requests())
		if r := call(); r.status != 403 || r.errorCode() != code {
			t.Errorf("%s: %d %s, want 403 %s", what, r.status, r.body, code)
		}
		if n := len(s.provider.Requests()) - before; n != 0 {
			t.Errorf("%s: the provider received %d requests", what, n)
		}
	}
	post := func(path string, headers map[string]string, body string) func() response {
		return func() response { return s.do("POST", path, headers, body) }
	}
	bearer := func(tok, model string) map[string]string {
		h := map[string]string{"authorization": "Bearer " + tok}
		if model != "" {
			h["x-ai-eg-model"] = model
		}
		return h
	}

	t.Run("sdk-allowed", func(t *testing.T) {
		// The user's new groups reach keyward within the poll interval.
		waitFor(t, 2*time.Second, func() bool { return chat("gpt-4o-mini") == nil })
		if req, ok := s.provider.Last(); !ok || !strings.Contains(string(req.Body), `"model":"gpt-4o-mini"`) {
			t.Errorf("provider saw %q", req.Body)
		}
		for _, mode := range []string{"openai", "openai-stream"} { // the script asks for gpt-4o-mini
			if r := s.pythonSDK(t, mode, tok); !r.OK || r.Text == "" {
				t.Errorf("python %s: %+v", mode, r)
			}
		}
	})

	t.Run("sdk-refused", func(t *testing.T) {
		before := len(s.provider.Requests())
		var apiErr *openai.Error
		if err := chat("gpt-4o"); !errors.As(err, &apiErr) || apiErr.StatusCode != 403 || apiErr.Code != "model_not_allowed" {
			t.Fatalf("gpt-4o: %v, want a 403 openai.Error with code model_not_allowed", err)
		}
		if n := len(s.provider.Requests()) - before; n != 0 {
			t.Errorf("the provider received %d requests", n)
		}
	})

	t.Run("header-cannot-launder-body", func(t *testing.T) {
		const path = "/openai/v1/chat/completions"
		refused(t, "header mini, body gpt-4o", "model_not_allowed", post(path, bearer(tok, "gpt-4o-mini"), `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`))
		refused(t, "duplicate model keys", "model_not_allowed", post(path, bearer(tok, "gpt-4o-mini"), `{"model":"gpt-4o-mini","messages":[],"model":"gpt-4o"}`))
		refused(t, "other letter case", "model_not_allowed", post(path, bearer(tok, ""), `{"model":"gpt-4o-mini","Model":"gpt-4o"}`))
		refused(t, "lenient JSON", "model_unknown", post(path, bearer(tok, "gpt-4o-mini"), `{"temperature":NaN,"model":"gpt-4o"}`))
		// Past envoy.max_request_bytes the rest of the body is unseen: it
		// could hold another "model".
		big := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("a", 80<<10) + `"}]}`
		refused(t, "body over 64 KiB", "model_unknown", post(path, bearer(tok, "gpt-4o-mini"), big))
		// The header never names the model alone.
		refused(t, "body without a model, header mini", "model_not_allowed", post(path, bearer(tok, "gpt-4o-mini"), `{"messages":[{"role":"user","content":"hi"}]}`))
	})

	t.Run("gemini-path", func(t *testing.T) {
		goog := func(model string) map[string]string {
			h := map[string]string{"x-goog-api-key": ftok}
			if model != "" {
				h["x-ai-eg-model"] = model
			}
			return h
		}
		const body = `{"contents":[{"parts":[{"text":"hi"}]}]}`
		waitFor(t, 2*time.Second, func() bool {
			return s.do("POST", "/gemini/v1beta/models/gemini-1.5-flash:generateContent", goog(""), body).status == 200
		})
		if r := s.do("POST", "/gemini/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse", goog(""), body); r.status != 200 {
			t.Errorf("stream: %d %s", r.status, r.body)
		}
		refused(t, "gemini-1.5-pro", "model_not_allowed", post("/gemini/v1beta/models/gemini-1.5-pro:generateContent", goog(""), body))
		refused(t, "header flash, path pro", "model_not_allowed", post("/gemini/v1beta/models/gemini-1.5-pro:generateContent", goog("gemini-1.5-flash"), body))
	})

	t.Run("azure-deployment", func(t *testing.T) {
		apiKey := map[string]string{"api-key": tok}
		if r := s.do("POST", "/azure/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21", apiKey, chatBody); r.status != 200 {
			t.Errorf("deployment gpt-4o-mini: %d %s", r.status, r.body)
		}
		refused(t, "deployment gpt-4o, body mini", "model_not_allowed", post("/azure/deployments/gpt-4o/chat/completions?api-version=2024-10-21", apiKey, chatBody))
	})

	t.Run("unrestricted-group-untouched", func(t *testing.T) {
		// Its body is not even read: any model, any shape goes through.
		if r := s.do("POST", "/openai/v1/chat/completions", bearer(etok, "gpt-4o-mini"), `{"model":"gpt-4o","model":"o1","messages":[]}`); r.status != 200 {
			t.Errorf("eng: %d %s", r.status, r.body)
		}
	})

	t.Run("audit-log", func(t *testing.T) {
		if err := s.stopKeyward(); err != nil {
			t.Fatalf("keyward exit: %v", err)
		}
		logs := s.logs.String()
		for _, want := range []string{`"reason":"model_not_allowed"`, `"model":"gpt-4o"`, `"model":"gemini-1.5-pro"`, `"reason":"model_unknown"`} {
			if !strings.Contains(logs, want) {
				t.Errorf("log lacks %s", want)
			}
		}
		assertNoSecrets(t, "keyward's log", logs, tok, ftok, etok, openaiKey, geminiKey, azureKey)
	})
}
