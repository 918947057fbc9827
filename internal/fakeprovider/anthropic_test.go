package fakeprovider

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestAnthropicMessage(t *testing.T) {
	_, srv := newTestServer(t)
	resp, body := do(t, http.MethodPost, srv.URL+"/v1/messages",
		`{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`,
		map[string]string{"X-Api-Key": "sk-ant", "Anthropic-Version": "2023-06-01"})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp.Header.Get("Request-Id") == "" {
		t.Error("no request-id header")
	}
	var msg struct {
		ID           string  `json:"id"`
		Type         string  `json:"type"`
		Role         string  `json:"role"`
		Model        string  `json:"model"`
		StopReason   string  `json:"stop_reason"`
		StopSequence *string `json:"stop_sequence"`
		Content      []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		Usage struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
		} `json:"usage"`
	}
	mustUnmarshal(t, string(body), &msg)
	if !strings.HasPrefix(msg.ID, "msg_") || msg.Type != "message" || msg.Role != "assistant" ||
		msg.Model != "claude-sonnet-4-5" || msg.StopReason != "end_turn" || msg.StopSequence != nil {
		t.Errorf("message %s", body)
	}
	if len(msg.Content) != 1 || msg.Content[0].Type != "text" || msg.Content[0].Text != Reply {
		t.Errorf("content %+v", msg.Content)
	}
	if msg.Usage.InputTokens == 0 || msg.Usage.OutputTokens == 0 {
		t.Errorf("usage %+v", msg.Usage)
	}
}

func TestAnthropicStream(t *testing.T) {
	rec := serve(t, http.MethodPost, "/v1/messages", `{"model":"claude-x","stream":true,"max_tokens":64}`)
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d content type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if !rec.Flushed {
		t.Error("stream was never flushed")
	}
	events := parseSSE(t, rec.Body.Bytes())

	var names []string
	for _, e := range events {
		// Anthropic repeats the event name as the data's "type".
		var typed struct {
			Type string `json:"type"`
		}
		mustUnmarshal(t, e.Data, &typed)
		if typed.Type != e.Name {
			t.Errorf("event %q carries type %q", e.Name, typed.Type)
		}
		if e.Name != "content_block_delta" || len(names) == 0 || names[len(names)-1] != e.Name {
			names = append(names, e.Name)
		}
	}
	want := []string{"message_start", "content_block_start", "ping", "content_block_delta",
		"content_block_stop", "message_delta", "message_stop"}
	if !slices.Equal(names, want) {
		t.Fatalf("event sequence %v, want %v (deltas collapsed)", names, want)
	}

	var start struct {
		Message struct {
			ID         string  `json:"id"`
			Type       string  `json:"type"`
			Role       string  `json:"role"`
			Model      string  `json:"model"`
			Content    []any   `json:"content"`
			StopReason *string `json:"stop_reason"`
			Usage      struct {
				InputTokens int `json:"input_tokens"`
			} `json:"usage"`
		} `json:"message"`
	}
	mustUnmarshal(t, events[0].Data, &start)
	m := start.Message
	if !strings.HasPrefix(m.ID, "msg_") || m.Type != "message" || m.Role != "assistant" || m.Model != "claude-x" ||
		m.Content == nil || len(m.Content) != 0 || m.StopReason != nil || m.Usage.InputTokens == 0 {
		t.Errorf("message_start %s", events[0].Data)
	}

	var blockStart struct {
		Index        *int `json:"index"`
		ContentBlock struct {
			Type string  `json:"type"`
			Text *string `json:"text"`
		} `json:"content_block"`
	}
	mustUnmarshal(t, events[1].Data, &blockStart)
	if blockStart.Index == nil || *blockStart.Index != 0 || blockStart.ContentBlock.Type != "text" ||
		blockStart.ContentBlock.Text == nil || *blockStart.ContentBlock.Text != "" {
		t.Errorf("content_block_start %s", events[1].Data)
	}

	var text strings.Builder
	for _, e := range events {
		if e.Name != "content_block_delta" {
			continue
		}
		var d struct {
			Index *int `json:"index"`
			Delta struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"delta"`
		}
		mustUnmarshal(t, e.Data, &d)
		if d.Index == nil || *d.Index != 0 || d.Delta.Type != "text_delta" {
			t.Errorf("content_block_delta %s", e.Data)
		}
		text.WriteString(d.Delta.Text)
	}
	if text.String() != Reply {
		t.Errorf("streamed text %q, want %q", text.String(), Reply)
	}

	var delta struct {
		Delta struct {
			StopReason string `json:"stop_reason"`
		} `json:"delta"`
		Usage struct {
			OutputTokens int `json:"output_tokens"`
		} `json:"usage"`
	}
	mustUnmarshal(t, events[len(events)-2].Data, &delta)
	if delta.Delta.StopReason != "end_turn" || delta.Usage.OutputTokens == 0 {
		t.Errorf("message_delta %s", events[len(events)-2].Data)
	}
}
