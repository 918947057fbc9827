package fakeprovider

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// writeJSON answers with v as a JSON body. Encoding errors cannot happen for
// the package's own types, and a write error means the client left, so
// neither is reported.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// sseWriter writes Server-Sent Events, flushing after each one so a client
// (and any proxy between) sees every chunk as it is produced.
type sseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func newSSEWriter(w http.ResponseWriter) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	return &sseWriter{w: w, rc: http.NewResponseController(w)}
}

// event writes one event; name may be empty (OpenAI and Gemini send data
// lines only, Anthropic names every event). The error means the client is
// gone and the stream should stop.
func (s *sseWriter) event(name string, data any) error {
	payload, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("encode sse event %q: %w", name, err)
	}
	return s.raw(name, payload)
}

func (s *sseWriter) raw(name string, payload []byte) error {
	var b bytes.Buffer
	if name != "" {
		fmt.Fprintf(&b, "event: %s\n", name)
	}
	fmt.Fprintf(&b, "data: %s\n\n", payload)
	if _, err := s.w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write sse event %q: %w", name, err)
	}
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("flush sse event %q: %w", name, err)
	}
	return nil
}

// decodeBody decodes the JSON body into v and returns the raw body. An empty
// body counts as "{}" so shell probes can POST without one.
func decodeBody(r *http.Request, v any) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return body, nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return body, fmt.Errorf("decode request body: %w", err)
	}
	return body, nil
}

// replyPieces splits Reply into word-sized pieces that concatenate back to
// it, so streams carry more than one content chunk.
func replyPieces() []string {
	words := strings.SplitAfter(Reply, " ")
	pieces := make([]string, 0, len(words))
	for _, w := range words {
		if w != "" {
			pieces = append(pieces, w)
		}
	}
	return pieces
}

// promptTokens is a stable, plausible token count for a request: about four
// bytes per token, as the providers' own rule of thumb goes.
func promptTokens(body []byte) int {
	return max(len(body)/4, 1)
}

// completionTokens is the token count reported for Reply.
func completionTokens() int { return len(replyPieces()) }
