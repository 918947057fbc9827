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

// TestRateLimit runs a group's requests_per_minute through real Envoy: a
// user gets their minute's burst, the next request is a 429 rate_limited
// that the OpenAI SDK reports as such, the provider never sees it, the
// user's other token shares the budget (TestAdversarialRatePerUser: and
// another user has their own), and the denial is audited.
func TestRateLimit(t *testing.T) {
	const rpm = 5 // the bucket holds a minute's worth: 5, then one each 12s
	s := newStack(t, stackOptions{})
	s.kw("group", "add", "limited", "-rpm", "5")
	s.kw("user", "set", "alice", "-groups", "eng,limited")
	tok := s.limitedToken("alice", "limited")
	other := s.limitedToken("alice", "limited")

	client := openai.NewClient(option.WithBaseURL(s.envoyURL+"/openai/v1/"), option.WithAPIKey(tok), option.WithMaxRetries(0))
	chat := func() error {
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
		})
		return err
	}
	before := len(s.provider.Requests())
	for i := range rpm {
		if err := chat(); err != nil {
			t.Fatalf("request %d of the burst of %d: %v", i+1, rpm, err)
		}
	}
	var apiErr *openai.Error
	if err := chat(); !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Code != "rate_limited" || apiErr.Type != "rate_limit_error" {
		t.Fatalf("request %d: %v, want a 429 openai.Error with code rate_limited", rpm+1, err)
	}
	r := s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + tok}, chatBody)
	if r.status != 429 || r.errorCode() != "rate_limited" || r.header.Get("x-keyward-reason") != "rate_limited" {
		t.Fatalf("raw request over the limit: %d %v %s", r.status, r.header, r.body)
	}
	if n := len(s.provider.Requests()) - before; n != rpm {
		t.Errorf("the provider received %d requests, want the %d allowed", n, rpm)
	}
	assertNoSecrets(t, "429 answer", string(r.body)+r.header.Get("x-keyward-reason"), openaiKey, tok)

	// The user's other token draws from the same bucket.
	if r := s.do("POST", "/openai/v1/chat/completions", map[string]string{"authorization": "Bearer " + other}, chatBody); r.status != 429 {
		t.Errorf("alice's other token: %d %s, want 429", r.status, r.body)
	}

	// The refusal is audited like any denial.
	waitFor(t, 2*time.Second, func() bool {
		for _, line := range strings.Split(s.logs.String(), "\n") {
			if strings.Contains(line, `"event":"authz.deny"`) && strings.Contains(line, `"reason":"rate_limited"`) && strings.Contains(line, `"status":429`) {
				return true
			}
		}
		return false
	})
}

// limitedToken is stack.token for a rate-limited group: it waits until
// keyward knows the token with a check that stops before the rate limit
// (a provider with no record: no_provider_key), so that waiting costs the
// token none of its budget.
func (s *stack) limitedToken(user, group string) string {
	s.t.Helper()
	tok := strings.TrimSpace(s.kw(tokenCreate(user, group)...))
	s.waitForToken(tok, "no-such-provider", func(denied string) bool { return strings.Contains(denied, `"no_provider_key"`) })
	return tok
}
