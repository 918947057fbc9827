package fakeprovider

import (
	"net/http"
	"strings"
	"testing"
)

// geminiResponseJSON is the client's view of a GenerateContentResponse.
type geminiResponseJSON struct {
	Candidates []struct {
		Content struct {
			Role  string `json:"role"`
			Parts []struct {
				Text string `json:"text"`
			} `json:"parts"`
		} `json:"content"`
		FinishReason string `json:"finishReason"`
	} `json:"candidates"`
	UsageMetadata *struct {
		PromptTokenCount     int `json:"promptTokenCount"`
		CandidatesTokenCount int `json:"candidatesTokenCount"`
		TotalTokenCount      int `json:"totalTokenCount"`
	} `json:"usageMetadata"`
}

func (g geminiResponseJSON) text(t *testing.T) string {
	t.Helper()
	if len(g.Candidates) != 1 || len(g.Candidates[0].Content.Parts) != 1 || g.Candidates[0].Content.Role != "model" {
		t.Fatalf("response shape %+v", g)
	}
	return g.Candidates[0].Content.Parts[0].Text
}

const geminiBody = `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`

func TestGeminiGenerateContent(t *testing.T) {
	for _, prefix := range []string{"/v1beta", "/v1"} {
		t.Run(prefix, func(t *testing.T) {
			_, srv := newTestServer(t)
			resp, body := do(t, http.MethodPost, srv.URL+prefix+"/models/gemini-2.0-flash:generateContent", geminiBody,
				map[string]string{"X-Goog-Api-Key": "g"})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d body %s", resp.StatusCode, body)
			}
			var g geminiResponseJSON
			mustUnmarshal(t, string(body), &g)
			if got := g.text(t); got != Reply {
				t.Errorf("text %q", got)
			}
			if g.Candidates[0].FinishReason != "STOP" {
				t.Errorf("finishReason %q", g.Candidates[0].FinishReason)
			}
			u := g.UsageMetadata
			if u == nil || u.TotalTokenCount != u.PromptTokenCount+u.CandidatesTokenCount || u.CandidatesTokenCount == 0 {
				t.Errorf("usageMetadata %+v", u)
			}
		})
	}
}

func TestGeminiStream(t *testing.T) {
	tests := map[string]struct {
		query string
		sse   bool
	}{
		"sse":        {query: "?alt=sse", sse: true},
		"json array": {query: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rec := serve(t, http.MethodPost, "/v1beta/models/gemini-2.0-flash:streamGenerateContent"+tc.query, geminiBody)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d body %s", rec.Code, rec.Body)
			}
			var chunks []geminiResponseJSON
			if tc.sse {
				if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" || !rec.Flushed {
					t.Errorf("content type %q flushed %v", ct, rec.Flushed)
				}
				for _, e := range parseSSE(t, rec.Body.Bytes()) {
					if e.Name != "" {
						t.Errorf("gemini event has a name %q", e.Name)
					}
					var g geminiResponseJSON
					mustUnmarshal(t, e.Data, &g)
					chunks = append(chunks, g)
				}
			} else {
				mustUnmarshal(t, rec.Body.String(), &chunks)
			}
			if len(chunks) < 2 {
				t.Fatalf("%d chunks, want several", len(chunks))
			}
			var text strings.Builder
			for i, c := range chunks {
				text.WriteString(c.text(t))
				isLast := i == len(chunks)-1
				if isLast != (c.Candidates[0].FinishReason == "STOP") || isLast != (c.UsageMetadata != nil) {
					t.Errorf("chunk %d: finishReason %q usage %v", i, c.Candidates[0].FinishReason, c.UsageMetadata)
				}
			}
			if text.String() != Reply {
				t.Errorf("streamed text %q", text.String())
			}
		})
	}
}
