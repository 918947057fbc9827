// Package fakeprovider is a local stand-in for the LLM providers keyward sits
// in front of. It records every request it receives, so end-to-end tests can
// assert which headers actually reached the upstream, and answers in each
// provider's wire format (plain JSON and SSE streaming) so the official SDKs
// parse the answers. It never checks credentials: it is a recorder.
package fakeprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Reply is the assistant text every endpoint answers with.
const Reply = "Hello from the fake provider."

// AdminPath is the admin endpoint: GET lists the recorded requests as JSON,
// DELETE forgets them. Requests under AdminPrefix are never recorded.
const AdminPath = AdminPrefix + "requests"

// AdminPrefix is the path prefix reserved for the admin endpoints.
const AdminPrefix = "/_fake/"

// maxBody bounds how much of a request body is read and kept; LLM requests
// are small and a recorder must not be a way to exhaust memory.
const maxBody = 16 << 20

// Request is one request as the fake provider received it.
type Request struct {
	Method   string
	Path     string
	RawQuery string
	// Host is the Host header, which net/http moves out of Header; tests
	// need it to check Envoy's host rewrite.
	Host   string
	Header http.Header
	Body   []byte
	Time   time.Time
}

// requestJSON is the admin endpoint's shape of a Request: the body as a
// string so shell scripts and jq can read it.
type requestJSON struct {
	Method string      `json:"method"`
	Path   string      `json:"path"`
	Query  string      `json:"query"`
	Host   string      `json:"host"`
	Header http.Header `json:"header"`
	Body   string      `json:"body"`
	Time   time.Time   `json:"time"`
}

// MarshalJSON encodes r as the admin endpoint shows it, with the body as a
// string.
func (r Request) MarshalJSON() ([]byte, error) {
	return json.Marshal(requestJSON{
		Method: r.Method, Path: r.Path, Query: r.RawQuery, Host: r.Host,
		Header: r.Header, Body: string(r.Body), Time: r.Time,
	})
}

// UnmarshalJSON decodes the admin endpoint's shape, so another process can
// read GET /_fake/requests into []Request.
func (r *Request) UnmarshalJSON(data []byte) error {
	var j requestJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("decode recorded request: %w", err)
	}
	*r = Request{
		Method: j.Method, Path: j.Path, RawQuery: j.Query, Host: j.Host,
		Header: j.Header, Body: []byte(j.Body), Time: j.Time,
	}
	return nil
}

func (r Request) clone() Request {
	r.Header = r.Header.Clone()
	r.Body = bytes.Clone(r.Body)
	return r
}

// Server is the fake provider. It is an http.Handler; the zero value is not
// usable, call New. All methods are safe for concurrent use.
type Server struct {
	api   http.Handler
	admin http.Handler
	ids   atomic.Uint64

	mu       sync.Mutex
	requests []Request
	// changed is closed and replaced whenever a request is recorded, which
	// wakes every WaitFor without a goroutine per waiter.
	changed chan struct{}
}

var _ http.Handler = (*Server)(nil)

// New returns a Server with no recorded requests.
func New() *Server {
	s := &Server{changed: make(chan struct{})}

	api := http.NewServeMux()
	api.HandleFunc("POST /v1/chat/completions", s.openAIChat)
	api.HandleFunc("POST /openai/deployments/{deployment}/chat/completions", s.openAIChat)
	api.HandleFunc("GET /v1/models", s.openAIModels)
	api.HandleFunc("POST /v1/messages", s.anthropicMessages)
	// Gemini puts the method after a colon inside the last segment
	// ("gemini-2.0-flash:generateContent"), which a mux wildcard cannot
	// split, so one handler takes the whole segment.
	api.HandleFunc("POST /v1beta/models/{modelAction}", s.gemini)
	api.HandleFunc("POST /v1/models/{modelAction}", s.gemini)
	api.HandleFunc("/", notFound)
	s.api = api

	admin := http.NewServeMux()
	admin.HandleFunc("GET "+AdminPath, s.adminList)
	admin.HandleFunc("DELETE "+AdminPath, s.adminReset)
	admin.HandleFunc("/", notFound)
	s.admin = admin
	return s
}

// ServeHTTP records the request (unless it is an admin request) and answers
// it in the format of the provider its path belongs to.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, AdminPrefix) {
		s.admin.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	s.record(r, body)
	if err != nil {
		status := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			status = http.StatusRequestEntityTooLarge
		}
		writeOpenAIError(w, status, "invalid_request_error", fmt.Sprintf("read request body: %v", err))
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.api.ServeHTTP(w, r)
}

func (s *Server) record(r *http.Request, body []byte) {
	req := Request{
		Method:   r.Method,
		Path:     r.URL.Path,
		RawQuery: r.URL.RawQuery,
		Host:     r.Host,
		Header:   r.Header.Clone(),
		Body:     body,
		Time:     time.Now(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
	close(s.changed)
	s.changed = make(chan struct{})
}

// Requests returns a copy of every recorded request, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked()
}

func (s *Server) snapshotLocked() []Request {
	out := make([]Request, len(s.requests))
	for i, r := range s.requests {
		out[i] = r.clone()
	}
	return out
}

// Last returns a copy of the most recent request, and false if none has been
// recorded.
func (s *Server) Last() (Request, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) == 0 {
		return Request{}, false
	}
	return s.requests[len(s.requests)-1].clone(), true
}

// Reset forgets every recorded request.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// WaitFor blocks until at least n requests are recorded and returns them all,
// or returns ctx's error if it ends first.
func (s *Server) WaitFor(ctx context.Context, n int) ([]Request, error) {
	for {
		s.mu.Lock()
		if len(s.requests) >= n {
			out := s.snapshotLocked()
			s.mu.Unlock()
			return out, nil
		}
		changed := s.changed
		have := len(s.requests)
		s.mu.Unlock()

		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %d requests (have %d): %w", n, have, ctx.Err())
		}
	}
}

func (s *Server) adminList(w http.ResponseWriter, _ *http.Request) {
	reqs := s.Requests()
	if reqs == nil {
		// An empty JSON array rather than null, so scripts can always index.
		reqs = []Request{}
	}
	writeJSON(w, http.StatusOK, reqs)
}

func (s *Server) adminReset(w http.ResponseWriter, _ *http.Request) {
	s.Reset()
	w.WriteHeader(http.StatusNoContent)
}

// nextID returns a fresh id with the given prefix, unique within s.
func (s *Server) nextID(prefix string) string {
	return fmt.Sprintf("%sfake%06d", prefix, s.ids.Add(1))
}
