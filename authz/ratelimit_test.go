package authz

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/keyward/keyward/record"
)

// limited adds a group name with limit rpm, which alice may use, and
// tokens of hers in it; it returns the tokens by name.
func (f *fixture) limited(t testing.TB, group string, rpm int, tokens ...string) map[string]string {
	t.Helper()
	f.records.groups[group] = &record.Group{Name: group, RequestsPerMinute: rpm}
	alice := *f.records.users["alice"]
	alice.Groups = append(alice.Groups[:len(alice.Groups):len(alice.Groups)], group)
	f.records.users["alice"] = &alice
	out := map[string]string{}
	for _, name := range tokens {
		out[name] = f.mint(t, "alice", group, name)
	}
	return out
}

// mint stores a new token of user in group and returns it.
func (f *fixture) mint(t testing.TB, user, group, name string) string {
	t.Helper()
	m, err := f.ring.Mint()
	if err != nil {
		t.Fatal(err)
	}
	f.records.tokens[m.ID] = &record.Token{ID: m.ID, Hash: m.Hash, User: user, Group: group, Name: name, Created: testNow.Add(-time.Hour)}
	return m.Token
}

// clock is a settable Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestRateLimit(t *testing.T) {
	type step struct {
		token string // name in the group's tokens
		n     int    // this many requests in a row
		want  Reason // for every one of them
		// then changes the world after the step.
		then func(f *fixture, c *clock)
	}
	tests := map[string]struct {
		rpm   int
		steps []step
	}{
		"no limit never limits": {rpm: 0, steps: []step{{token: "a", n: 2000, want: ReasonAllowed}}},
		"a minute's burst, then 429": {rpm: 60, steps: []step{
			{token: "a", n: 60, want: ReasonAllowed},
			{token: "a", n: 3, want: ReasonRateLimited},
		}},
		"the burst is capped": {rpm: 6000, steps: []step{
			{token: "a", n: maxBurst, want: ReasonAllowed},
			{token: "a", n: 1, want: ReasonRateLimited},
		}},
		// b has never been used: a new or rotated token brings no budget.
		"a user's tokens share one budget": {rpm: 3, steps: []step{
			{token: "a", n: 2, want: ReasonAllowed},
			{token: "b", n: 1, want: ReasonAllowed},
			{token: "a", n: 1, want: ReasonRateLimited},
			{token: "b", n: 1, want: ReasonRateLimited},
		}},
		"each user has their own budget": {rpm: 2, steps: []step{
			{token: "a", n: 2, want: ReasonAllowed},
			{token: "b", n: 1, want: ReasonRateLimited},
			{token: "bob", n: 2, want: ReasonAllowed},
			{token: "bob", n: 1, want: ReasonRateLimited},
		}},
		"the bucket refills at rpm/60 a second": {rpm: 60, steps: []step{
			{token: "a", n: 60, want: ReasonAllowed},
			{token: "a", n: 1, want: ReasonRateLimited, then: func(_ *fixture, c *clock) { c.advance(2 * time.Second) }},
			{token: "a", n: 2, want: ReasonAllowed},
			{token: "a", n: 1, want: ReasonRateLimited},
		}},
		"a raised limit takes effect with a fresh bucket": {rpm: 1, steps: []step{
			{token: "a", n: 1, want: ReasonAllowed},
			{token: "a", n: 1, want: ReasonRateLimited, then: func(f *fixture, _ *clock) {
				f.records.groups["lim"] = &record.Group{Name: "lim", RequestsPerMinute: 3}
			}},
			{token: "a", n: 3, want: ReasonAllowed},
			{token: "a", n: 1, want: ReasonRateLimited},
		}},
		"a removed limit takes effect": {rpm: 1, steps: []step{
			{token: "a", n: 1, want: ReasonAllowed},
			{token: "a", n: 1, want: ReasonRateLimited, then: func(f *fixture, _ *clock) {
				f.records.groups["lim"] = &record.Group{Name: "lim"}
			}},
			{token: "a", n: 5, want: ReasonAllowed},
		}},
		"denied requests do not count": {rpm: 1, steps: []step{
			{token: "a", n: 1, want: ReasonAllowed, then: func(f *fixture, c *clock) {
				c.advance(time.Minute) // full again
				f.records.groups["lim"] = &record.Group{Name: "lim", RequestsPerMinute: 1, Disabled: true}
			}},
			{token: "a", n: 3, want: ReasonGroupDisabled, then: func(f *fixture, _ *clock) {
				f.records.groups["lim"] = &record.Group{Name: "lim", RequestsPerMinute: 1}
			}},
			{token: "a", n: 1, want: ReasonAllowed},
			{token: "a", n: 1, want: ReasonRateLimited},
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			toks := f.limited(t, "lim", tc.rpm, "a", "b")
			f.records.users["bob"] = &record.User{Name: "bob", Groups: []string{"lim"}}
			toks["bob"] = f.mint(t, "bob", "lim", "bob")
			c := &clock{now: testNow}
			a, err := NewAuthorizer(f.records, f.ring, Options{Sources: []Source{{Header: "authorization"}}, Now: c.Now})
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.steps {
				for j := range s.n {
					d := a.Decide(context.Background(), &Request{
						Headers: bearerHeader(toks[s.token]), Path: "/v1/chat/completions",
						ContextExtensions: map[string]string{ProviderExtension: "openai"},
					})
					if d.Reason != s.want {
						t.Fatalf("step %d, request %d: %s, want %s", i, j+1, d.Reason, s.want)
					}
					if d.Reason == ReasonRateLimited && (d.Key != nil || d.TokenID == "" || d.Group == nil) {
						t.Fatalf("rate_limited decision %+v: want the token and group, no key", d)
					}
				}
				if s.then != nil {
					s.then(f, c)
				}
			}
		})
	}
}

// A client's own key sent with a keyward token counts as well.
func TestRateLimitCustomKey(t *testing.T) {
	f := newFixture(t)
	toks := f.limited(t, "lim", 1, "a")
	s := f.server(t, Options{})
	h := map[string]string{"authorization": "Bearer " + toks["a"], "x-api-key": "sk-client-own"}
	req := checkRequest(h, "", "openai")
	for i, want := range []int32{0, 429} {
		resp, err := check(t, s, req)
		if err != nil {
			t.Fatal(err)
		}
		if got := int32(resp.GetDeniedResponse().GetStatus().GetCode()); got != want {
			t.Fatalf("request %d: HTTP %d, want %d (0: allowed)", i+1, got, want)
		}
	}
}

func TestRateLimitedResponse(t *testing.T) {
	f := newFixture(t)
	toks := f.limited(t, "lim", 1, "a")
	s := f.server(t, Options{})
	req := checkRequest(bearerHeader(toks["a"]), "", "openai")
	if resp, _ := check(t, s, req); resp.GetOkResponse() == nil {
		t.Fatalf("first request denied: %v", resp)
	}
	resp, err := check(t, s, req)
	if err != nil {
		t.Fatal(err)
	}
	denied := resp.GetDeniedResponse()
	if denied.GetStatus().GetCode() != 429 || resp.GetStatus().GetCode() != int32(code.Code_RESOURCE_EXHAUSTED) {
		t.Fatalf("HTTP %d, gRPC %d; want 429, RESOURCE_EXHAUSTED", denied.GetStatus().GetCode(), resp.GetStatus().GetCode())
	}
	var body ErrorBody
	if err := json.Unmarshal([]byte(denied.GetBody()), &body); err != nil {
		t.Fatal(err)
	}
	if Reason(body.Error.Code) != ReasonRateLimited || body.Error.Type != "rate_limit_error" || !strings.Contains(body.Error.Message, "rate limit") {
		t.Fatalf("body %s", denied.GetBody())
	}
	if h := headerMap(denied.GetHeaders()); h["x-keyward-reason"] != "rate_limited" || h["content-type"] != "application/json" {
		t.Fatalf("headers %v", h)
	}
	if strings.Contains(resp.String(), openaiKey) || strings.Contains(resp.String(), toks["a"]) {
		t.Fatalf("429 answer holds a secret: %v", resp)
	}
}

// BenchmarkCheckAllowedRateLimited is BenchmarkCheckAllowed for a token
// whose group has a limit it never reaches: the cost of taking from the
// bucket.
func BenchmarkCheckAllowedRateLimited(b *testing.B) {
	f := newFixture(b)
	toks := f.limited(b, "lim", 1<<40, "a")
	a, err := NewAuthorizer(f.records, f.ring, Options{Sources: []Source{{Header: "authorization"}}})
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewServer(a, ServerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	req := checkRequest(map[string]string{
		"authorization": "Bearer " + toks["a"], "content-type": "application/json", "user-agent": "OpenAI/Python 1.99.0",
		"accept": "application/json", "x-request-id": "6f1c2a1e-0000-4000-8000-000000000000",
	}, "/v1/chat/completions", "openai")
	ctx := context.Background()
	if resp, _ := check(b, s, req); resp.GetOkResponse() == nil {
		b.Fatalf("denied: %v", resp)
	}
	f.records.privateAsked = nil
	b.ReportAllocs()
	for b.Loop() {
		if resp, _ := s.Check(ctx, req); resp.GetDeniedResponse() != nil {
			b.Fatal("rate limited")
		}
	}
}
