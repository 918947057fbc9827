package fakeprovider

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"
)

func TestRecordsRequests(t *testing.T) {
	fake, srv := newTestServer(t)
	if _, ok := fake.Last(); ok {
		t.Fatal("Last reports a request before any was sent")
	}

	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	do(t, http.MethodPost, srv.URL+"/v1/chat/completions?trace=1", body, map[string]string{
		"Authorization": "Bearer sk-upstream",
		"X-Custom":      "yes",
	})
	do(t, http.MethodGet, srv.URL+"/nowhere", "", nil)

	reqs := fake.Requests()
	if len(reqs) != 2 {
		t.Fatalf("recorded %d requests, want 2", len(reqs))
	}
	got := reqs[0]
	if got.Method != http.MethodPost || got.Path != "/v1/chat/completions" || got.RawQuery != "trace=1" {
		t.Errorf("recorded %s %s?%s", got.Method, got.Path, got.RawQuery)
	}
	if got.Header.Get("Authorization") != "Bearer sk-upstream" || got.Header.Get("X-Custom") != "yes" {
		t.Errorf("recorded headers %v", got.Header)
	}
	if got.Host != srv.Listener.Addr().String() {
		t.Errorf("recorded host %q, want %q", got.Host, srv.Listener.Addr().String())
	}
	if string(got.Body) != body {
		t.Errorf("recorded body %q, want %q", got.Body, body)
	}
	if got.Time.IsZero() {
		t.Error("recorded time is zero")
	}

	// Unknown paths are recorded too: a test needs to see a wrong rewrite.
	last, ok := fake.Last()
	if !ok || last.Path != "/nowhere" {
		t.Errorf("Last = %+v, %v; want /nowhere", last, ok)
	}

	// Copies must not alias the recorder's state.
	reqs[0].Header.Set("Authorization", "changed")
	reqs[0].Body[0] = 'X'
	again := fake.Requests()[0]
	if again.Header.Get("Authorization") != "Bearer sk-upstream" || again.Body[0] != '{' {
		t.Error("mutating a returned Request changed the recorded one")
	}

	fake.Reset()
	if n := len(fake.Requests()); n != 0 {
		t.Errorf("after Reset %d requests remain", n)
	}
}

func TestNotFound(t *testing.T) {
	_, srv := newTestServer(t)
	tests := map[string]struct {
		method, path string
	}{
		"unknown path":          {http.MethodPost, "/v1/completions-nope"},
		"wrong method on chat":  {http.MethodGet, "/v1/chat/completions"},
		"root":                  {http.MethodGet, "/"},
		"unknown gemini action": {http.MethodPost, "/v1beta/models/gemini-pro:countTokens"},
		"unknown admin path":    {http.MethodGet, "/_fake/nothing"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resp, body := do(t, tc.method, srv.URL+tc.path, "", nil)
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("status %d, want 404; body %s", resp.StatusCode, body)
			}
			var e struct {
				Error struct {
					Message string `json:"message"`
				} `json:"error"`
			}
			mustUnmarshal(t, string(body), &e)
			if e.Error.Message == "" {
				t.Errorf("404 body has no error message: %s", body)
			}
		})
	}
}

func TestBadJSONBody(t *testing.T) {
	_, srv := newTestServer(t)
	tests := map[string]string{
		"openai":    "/v1/chat/completions",
		"azure":     "/openai/deployments/d/chat/completions",
		"anthropic": "/v1/messages",
		"gemini":    "/v1beta/models/gemini-pro:generateContent",
	}
	for name, path := range tests {
		t.Run(name, func(t *testing.T) {
			resp, body := do(t, http.MethodPost, srv.URL+path, "{not json", nil)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d, want 400; body %s", resp.StatusCode, body)
			}
		})
	}
}

func TestAdminEndpoint(t *testing.T) {
	fake, srv := newTestServer(t)

	resp, body := do(t, http.MethodGet, srv.URL+AdminPath, "", nil)
	if resp.StatusCode != http.StatusOK || string(body) != "[]\n" {
		t.Fatalf("empty list: status %d body %q, want 200 []", resp.StatusCode, body)
	}

	do(t, http.MethodPost, srv.URL+"/v1/messages?beta=true", `{"model":"claude"}`, map[string]string{"X-Api-Key": "sk-ant"})

	resp, body = do(t, http.MethodGet, srv.URL+AdminPath, "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("list: status %d", resp.StatusCode)
	}
	// The raw shape is what shell scripts and jq read.
	var raw []map[string]any
	mustUnmarshal(t, string(body), &raw)
	if len(raw) != 1 {
		t.Fatalf("admin lists %d requests, want 1 (admin requests must not be recorded): %s", len(raw), body)
	}
	for key, want := range map[string]string{"method": "POST", "path": "/v1/messages", "query": "beta=true", "body": `{"model":"claude"}`} {
		if raw[0][key] != want {
			t.Errorf("%s = %v, want %q", key, raw[0][key], want)
		}
	}

	// The same document decodes back into []Request for Go callers.
	var reqs []Request
	mustUnmarshal(t, string(body), &reqs)
	if got := reqs[0].Header.Get("X-Api-Key"); got != "sk-ant" {
		t.Errorf("decoded X-Api-Key = %q, want sk-ant", got)
	}
	if string(reqs[0].Body) != `{"model":"claude"}` || reqs[0].RawQuery != "beta=true" {
		t.Errorf("decoded request %+v", reqs[0])
	}

	resp, _ = do(t, http.MethodDelete, srv.URL+AdminPath, "", nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("delete: status %d, want 204", resp.StatusCode)
	}
	if n := len(fake.Requests()); n != 0 {
		t.Errorf("after DELETE %d requests remain", n)
	}
}

func TestRequestJSONRoundTrip(t *testing.T) {
	in := Request{
		Method: "POST", Path: "/v1/messages", RawQuery: "a=b", Host: "h:1",
		Header: http.Header{"Authorization": {"Bearer x"}},
		Body:   []byte(`{"k":"v"}`),
		Time:   time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC),
	}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var out Request
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if out.Method != in.Method || out.Path != in.Path || out.RawQuery != in.RawQuery || out.Host != in.Host ||
		out.Header.Get("Authorization") != "Bearer x" || string(out.Body) != string(in.Body) || !out.Time.Equal(in.Time) {
		t.Errorf("round trip: got %+v, want %+v", out, in)
	}
}

func TestWaitFor(t *testing.T) {
	fake, srv := newTestServer(t)

	const n = 5
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			// Not do: t.Fatal must not be called off the test goroutine.
			resp, err := srv.Client().Get(srv.URL + "/v1/models")
			if err != nil {
				t.Errorf("get models: %v", err)
				return
			}
			resp.Body.Close()
		})
	}
	reqs, err := fake.WaitFor(testContext(t), n)
	if err != nil {
		t.Fatalf("WaitFor: %v", err)
	}
	if len(reqs) < n {
		t.Errorf("WaitFor returned %d requests, want >= %d", len(reqs), n)
	}
	wg.Wait()

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := fake.WaitFor(ctx, n+1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor past the deadline: err %v, want DeadlineExceeded", err)
	}
}
