package fakeprovider

import (
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// The tests below go through the official Go SDK: if it parses the answers,
// the wire format is what real clients expect.

func newOpenAIClient(srv string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(srv + "/v1/"),
		option.WithAPIKey("x"),
		option.WithMaxRetries(0),
	}, opts...)...)
}

func chatParams(model string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
	}
}

func TestOpenAIChatSDK(t *testing.T) {
	fake, srv := newTestServer(t)
	client := newOpenAIClient(srv.URL)

	c, err := client.Chat.Completions.New(testContext(t), chatParams("gpt-4o-mini"))
	if err != nil {
		t.Fatalf("chat completion: %v", err)
	}
	if c.Object != "chat.completion" || c.Model != "gpt-4o-mini" || !strings.HasPrefix(c.ID, "chatcmpl-") {
		t.Errorf("completion object %q model %q id %q", c.Object, c.Model, c.ID)
	}
	if len(c.Choices) != 1 {
		t.Fatalf("%d choices, want 1", len(c.Choices))
	}
	ch := c.Choices[0]
	if ch.Message.Content != Reply || ch.Message.Role != "assistant" || ch.FinishReason != "stop" {
		t.Errorf("choice = %q %q %q", ch.Message.Role, ch.Message.Content, ch.FinishReason)
	}
	if c.Usage.TotalTokens != c.Usage.PromptTokens+c.Usage.CompletionTokens || c.Usage.CompletionTokens == 0 {
		t.Errorf("usage %+v", c.Usage)
	}

	last, ok := fake.Last()
	if !ok || last.Header.Get("Authorization") != "Bearer x" {
		t.Errorf("provider saw Authorization %q", last.Header.Get("Authorization"))
	}
}

func TestOpenAIChatStreamSDK(t *testing.T) {
	tests := map[string]struct {
		includeUsage bool
	}{
		"without usage": {},
		"with usage":    {includeUsage: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, srv := newTestServer(t)
			client := newOpenAIClient(srv.URL)
			params := chatParams("gpt-4o-mini")
			if tc.includeUsage {
				params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			}

			stream := client.Chat.Completions.NewStreaming(testContext(t), params)
			defer stream.Close()
			var (
				acc    openai.ChatCompletionAccumulator
				text   strings.Builder
				chunks int
			)
			for stream.Next() {
				chunk := stream.Current()
				acc.AddChunk(chunk)
				chunks++
				if len(chunk.Choices) > 0 {
					text.WriteString(chunk.Choices[0].Delta.Content)
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			if text.String() != Reply {
				t.Errorf("streamed text %q, want %q", text.String(), Reply)
			}
			if chunks < 3 {
				t.Errorf("%d chunks, want several", chunks)
			}
			if got := acc.Choices[0].FinishReason; got != "stop" {
				t.Errorf("accumulated finish reason %q, want stop", got)
			}
			if got := acc.Choices[0].Message.Content; got != Reply {
				t.Errorf("accumulated content %q, want %q", got, Reply)
			}
			if hasUsage := acc.Usage.TotalTokens > 0; hasUsage != tc.includeUsage {
				t.Errorf("usage %+v, want present=%v", acc.Usage, tc.includeUsage)
			}
		})
	}
}

func TestOpenAIModelsSDK(t *testing.T) {
	_, srv := newTestServer(t)
	client := newOpenAIClient(srv.URL)
	page, err := client.Models.List(testContext(t))
	if err != nil {
		t.Fatalf("list models: %v", err)
	}
	if len(page.Data) != 1 || page.Data[0].ID == "" || page.Data[0].Object != "model" {
		t.Errorf("models %+v", page.Data)
	}
}

func TestAzureChatSDK(t *testing.T) {
	fake, srv := newTestServer(t)
	// The SDK's azure package needs the Azure SDK, which this module does not
	// depend on; these options are what it amounts to on the wire.
	client := openai.NewClient(
		option.WithBaseURL(srv.URL+"/openai/deployments/my-deployment/"),
		option.WithQueryAdd("api-version", "2024-10-21"),
		option.WithHeader("Api-Key", "azure-key"),
		option.WithMaxRetries(0),
	)

	c, err := client.Chat.Completions.New(testContext(t), chatParams("my-deployment"))
	if err != nil {
		t.Fatalf("azure chat completion: %v", err)
	}
	if c.Choices[0].Message.Content != Reply {
		t.Errorf("content %q", c.Choices[0].Message.Content)
	}

	stream := client.Chat.Completions.NewStreaming(testContext(t), chatParams("my-deployment"))
	defer stream.Close()
	var text strings.Builder
	for stream.Next() {
		if ch := stream.Current().Choices; len(ch) > 0 {
			text.WriteString(ch[0].Delta.Content)
		}
	}
	if err := stream.Err(); err != nil || text.String() != Reply {
		t.Errorf("azure stream: text %q err %v", text.String(), err)
	}

	last, _ := fake.Last()
	if last.Path != "/openai/deployments/my-deployment/chat/completions" || !strings.Contains(last.RawQuery, "api-version=2024-10-21") {
		t.Errorf("provider saw %s?%s", last.Path, last.RawQuery)
	}
	if last.Header.Get("Api-Key") != "azure-key" {
		t.Errorf("provider saw Api-Key %q", last.Header.Get("Api-Key"))
	}
}

// TestOpenAIStreamWire checks the raw stream beyond what the SDK enforces:
// content type, chunk order, flushing and the [DONE] terminator.
func TestOpenAIStreamWire(t *testing.T) {
	tests := map[string]string{
		"openai": "/v1/chat/completions",
		"azure":  "/openai/deployments/dep/chat/completions?api-version=2024-10-21",
	}
	for name, path := range tests {
		t.Run(name, func(t *testing.T) {
			rec := serve(t, http.MethodPost, path, `{"model":"m","stream":true}`)
			if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("content type %q", ct)
			}
			if !rec.Flushed {
				t.Error("stream was never flushed")
			}
			events := parseSSE(t, rec.Body.Bytes())
			if len(events) < 4 || events[len(events)-1].Data != "[DONE]" {
				t.Fatalf("events %+v, want chunks then [DONE]", events)
			}
			type chunk struct {
				Object  string `json:"object"`
				Model   string `json:"model"`
				Choices []struct {
					Delta struct {
						Role    string `json:"role"`
						Content string `json:"content"`
					} `json:"delta"`
					FinishReason *string `json:"finish_reason"`
				} `json:"choices"`
			}
			var chunks []chunk
			for _, e := range events[:len(events)-1] {
				var c chunk
				mustUnmarshal(t, e.Data, &c)
				if c.Object != "chat.completion.chunk" || c.Model != "m" || len(c.Choices) != 1 {
					t.Fatalf("bad chunk %s", e.Data)
				}
				chunks = append(chunks, c)
			}
			if chunks[0].Choices[0].Delta.Role != "assistant" {
				t.Errorf("first chunk has role %q, want assistant", chunks[0].Choices[0].Delta.Role)
			}
			for i, c := range chunks {
				fr := c.Choices[0].FinishReason
				if isLast := i == len(chunks)-1; isLast != (fr != nil && *fr == "stop") {
					t.Errorf("chunk %d finish_reason %v", i, fr)
				}
			}
		})
	}
}
