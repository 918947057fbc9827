package authz

import (
	"context"
	"testing"
)

// chatHeaders are the headers the Python SDK sends with a chat completion.
func chatHeaders(tok string) map[string]string {
	return map[string]string{
		"authorization": "Bearer " + tok, "content-type": "application/json", "user-agent": "OpenAI/Python 1.99.0",
		"accept": "application/json", "x-request-id": "6f1c2a1e-0000-4000-8000-000000000000", "x-forwarded-proto": "http",
		"x-stainless-lang": "python", "x-stainless-os": "Linux", "content-length": "4096", PartialBodyHeader: "false",
	}
}

// benchmarkCheckBody measures an allowed check of a 4 KiB chat body with
// the token tok.
func benchmarkCheckBody(b *testing.B, tok string) {
	f := newFixture(b)
	s := f.server(b, Options{})
	req := checkRequest(chatHeaders(f.tokens[tok]), "/v1/chat/completions", "openai")
	req.Attributes.Request.Http.Body = chatBody(4<<10, "gpt-4o-mini")
	ctx := context.Background()
	if resp, _ := check(b, s, req); resp.GetOkResponse() == nil {
		b.Fatalf("denied: %v", resp)
	}
	f.records.privateAsked = nil
	b.ReportAllocs()
	for b.Loop() {
		s.Check(ctx, req)
	}
}

// A group that does not restrict models never reads the body: the same
// cost as without one.
func BenchmarkCheckAllowedUnrestrictedBody(b *testing.B) { benchmarkCheckBody(b, "ok") }

// A group that restricts models reads the model from the body.
func BenchmarkCheckAllowedRestrictedBody(b *testing.B) { benchmarkCheckBody(b, "gpt") }

func BenchmarkModelFromBody(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"4KiB", 4 << 10}, {"64KiB", 64 << 10}} {
		body := chatBody(size.n, "gpt-4o-mini")
		b.Run(size.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := modelFromBody(body); !ok {
					b.Fatal("no model")
				}
			}
		})
	}
}

func BenchmarkPathModel(b *testing.B) {
	for _, path := range []string{"/openai/v1/chat/completions", "/gemini/v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse"} {
		b.Run(path[1:7], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				pathModel(path)
			}
		})
	}
}
