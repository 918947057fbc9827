package fakeprovider

import (
	"fmt"
	"net/http"
	"time"
)

// openAIChatRequest is the part of a chat completion request the fake needs.
type openAIChatRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

type openAIMessage struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
	Refusal *string `json:"refusal,omitempty"`
}

type openAIChoice struct {
	Index        int            `json:"index"`
	Message      *openAIMessage `json:"message,omitempty"`
	Delta        *openAIMessage `json:"delta,omitempty"`
	Logprobs     *struct{}      `json:"logprobs"`
	FinishReason *string        `json:"finish_reason"`
}

type openAIUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type openAICompletion struct {
	ID                string         `json:"id"`
	Object            string         `json:"object"`
	Created           int64          `json:"created"`
	Model             string         `json:"model"`
	SystemFingerprint string         `json:"system_fingerprint"`
	Choices           []openAIChoice `json:"choices"`
	// Usage is a pointer because stream chunks carry "usage": null except
	// for the final usage chunk.
	Usage *openAIUsage `json:"usage"`
}

type openAIError struct {
	Error openAIErrorBody `json:"error"`
}

type openAIErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func writeOpenAIError(w http.ResponseWriter, status int, typ, msg string) {
	writeJSON(w, status, openAIError{Error: openAIErrorBody{Message: msg, Type: typ}})
}

// notFound answers any path the fake does not serve the way OpenAI answers
// an unknown URL.
func notFound(w http.ResponseWriter, r *http.Request) {
	code := "unknown_url"
	writeJSON(w, http.StatusNotFound, openAIError{Error: openAIErrorBody{
		Message: fmt.Sprintf("Unknown request URL: %s %s. The fake provider does not serve this path.", r.Method, r.URL.Path),
		Type:    "invalid_request_error",
		Code:    &code,
	}})
}

func ptr[T any](v T) *T { return &v }

// openAIChat serves /v1/chat/completions and its Azure twin
// /openai/deployments/{deployment}/chat/completions.
func (s *Server) openAIChat(w http.ResponseWriter, r *http.Request) {
	var req openAIChatRequest
	body, err := decodeBody(r, &req)
	if err != nil {
		writeOpenAIError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	model := req.Model
	if model == "" {
		// Azure names the model by deployment; echoing it keeps the answer
		// recognisable when the body omits "model".
		model = r.PathValue("deployment")
	}
	if model == "" {
		model = "fake-model"
	}
	c := openAICompletion{
		ID:                s.nextID("chatcmpl-"),
		Created:           time.Now().Unix(),
		Model:             model,
		SystemFingerprint: "fp_fake",
	}
	usage := openAIUsage{PromptTokens: promptTokens(body), CompletionTokens: completionTokens()}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	w.Header().Set("X-Request-Id", s.nextID("req_"))

	if !req.Stream {
		c.Object = "chat.completion"
		c.Choices = []openAIChoice{{
			Message:      &openAIMessage{Role: "assistant", Content: ptr(Reply)},
			FinishReason: ptr("stop"),
		}}
		c.Usage = &usage
		writeJSON(w, http.StatusOK, c)
		return
	}
	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	streamOpenAIChat(newSSEWriter(w), c, usage, includeUsage)
}

// streamOpenAIChat writes the chunk sequence OpenAI sends: the role, the
// content in pieces, an empty delta with the finish reason, the usage chunk
// when asked for, then [DONE].
func streamOpenAIChat(sse *sseWriter, c openAICompletion, usage openAIUsage, includeUsage bool) {
	c.Object = "chat.completion.chunk"
	chunk := func(delta openAIMessage, finish *string) openAICompletion {
		out := c
		out.Choices = []openAIChoice{{Delta: &delta, FinishReason: finish}}
		return out
	}

	events := []openAICompletion{chunk(openAIMessage{Role: "assistant", Content: ptr("")}, nil)}
	for _, p := range replyPieces() {
		events = append(events, chunk(openAIMessage{Content: ptr(p)}, nil))
	}
	events = append(events, chunk(openAIMessage{}, ptr("stop")))
	if includeUsage {
		last := c
		last.Choices = []openAIChoice{}
		last.Usage = &usage
		events = append(events, last)
	}
	for _, e := range events {
		if err := sse.event("", e); err != nil {
			return
		}
	}
	_ = sse.raw("", []byte("[DONE]"))
}

type openAIModel struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

type openAIModelList struct {
	Object string        `json:"object"`
	Data   []openAIModel `json:"data"`
}

// openAIModels serves GET /v1/models with a single model.
func (s *Server) openAIModels(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, openAIModelList{
		Object: "list",
		Data: []openAIModel{{
			ID: "fake-model", Object: "model", Created: 1700000000, OwnedBy: "fake-provider",
		}},
	})
}
