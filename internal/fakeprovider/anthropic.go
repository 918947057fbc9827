package fakeprovider

import (
	"net/http"
)

type anthropicRequest struct {
	Model  string `json:"model"`
	Stream bool   `json:"stream"`
}

type anthropicContent struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type anthropicUsage struct {
	InputTokens  int `json:"input_tokens,omitempty"`
	OutputTokens int `json:"output_tokens"`
}

type anthropicMessage struct {
	ID           string             `json:"id"`
	Type         string             `json:"type"`
	Role         string             `json:"role"`
	Model        string             `json:"model"`
	Content      []anthropicContent `json:"content"`
	StopReason   *string            `json:"stop_reason"`
	StopSequence *string            `json:"stop_sequence"`
	Usage        anthropicUsage     `json:"usage"`
}

type anthropicError struct {
	Type  string             `json:"type"`
	Error anthropicErrorBody `json:"error"`
}

type anthropicErrorBody struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// anthropicEvent is any streaming event; fields a given type does not carry
// are left nil and omitted.
type anthropicEvent struct {
	Type         string            `json:"type"`
	Message      *anthropicMessage `json:"message,omitempty"`
	Index        *int              `json:"index,omitempty"`
	ContentBlock *anthropicContent `json:"content_block,omitempty"`
	Delta        any               `json:"delta,omitempty"`
	Usage        *anthropicUsage   `json:"usage,omitempty"`
}

type anthropicTextDelta struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type anthropicMessageDelta struct {
	StopReason   string  `json:"stop_reason"`
	StopSequence *string `json:"stop_sequence"`
}

// anthropicMessages serves POST /v1/messages.
func (s *Server) anthropicMessages(w http.ResponseWriter, r *http.Request) {
	var req anthropicRequest
	body, err := decodeBody(r, &req)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, anthropicError{
			Type:  "error",
			Error: anthropicErrorBody{Type: "invalid_request_error", Message: err.Error()},
		})
		return
	}
	if req.Model == "" {
		req.Model = "fake-model"
	}
	msg := anthropicMessage{
		ID:    s.nextID("msg_"),
		Type:  "message",
		Role:  "assistant",
		Model: req.Model,
		Usage: anthropicUsage{InputTokens: promptTokens(body), OutputTokens: completionTokens()},
	}
	// The SDKs expose this header as the response's request id.
	w.Header().Set("Request-Id", s.nextID("req_"))

	if !req.Stream {
		msg.Content = []anthropicContent{{Type: "text", Text: Reply}}
		msg.StopReason = ptr("end_turn")
		writeJSON(w, http.StatusOK, msg)
		return
	}
	streamAnthropic(newSSEWriter(w), msg)
}

// streamAnthropic writes the event sequence the Messages API sends for one
// text block, including the ping Anthropic interleaves.
func streamAnthropic(sse *sseWriter, msg anthropicMessage) {
	final := msg.Usage.OutputTokens
	msg.Content = []anthropicContent{}
	msg.Usage.OutputTokens = 1
	zero := ptr(0)

	type named struct {
		name string
		data anthropicEvent
	}
	events := []named{
		{"message_start", anthropicEvent{Type: "message_start", Message: &msg}},
		{"content_block_start", anthropicEvent{Type: "content_block_start", Index: zero, ContentBlock: &anthropicContent{Type: "text"}}},
		{"ping", anthropicEvent{Type: "ping"}},
	}
	for _, p := range replyPieces() {
		events = append(events, named{"content_block_delta", anthropicEvent{
			Type: "content_block_delta", Index: zero, Delta: anthropicTextDelta{Type: "text_delta", Text: p},
		}})
	}
	events = append(events,
		named{"content_block_stop", anthropicEvent{Type: "content_block_stop", Index: zero}},
		named{"message_delta", anthropicEvent{
			Type:  "message_delta",
			Delta: anthropicMessageDelta{StopReason: "end_turn"},
			Usage: &anthropicUsage{OutputTokens: final},
		}},
		named{"message_stop", anthropicEvent{Type: "message_stop"}},
	)
	for _, e := range events {
		if err := sse.event(e.name, e.data); err != nil {
			return
		}
	}
}
