package authz

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
)

// The trace context Envoy's ext_authz span would send.
const (
	parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpan  = "00f067aa0ba902b7"
)

// tracedServer is a Server over f whose spans go to the returned
// recorder; records, when set, replaces f's.
func tracedServer(t testing.TB, f *fixture, records Records) (*Server, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	if records == nil {
		records = f.records
	}
	a, err := NewAuthorizer(records, f.ring, Options{
		Sources:     []Source{{Header: "authorization"}, {Header: "x-api-key"}, {Query: "key"}},
		ModelHeader: "x-ai-eg-model",
		Now:         func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(a, ServerOptions{Tracer: tp.Tracer("test")})
	if err != nil {
		t.Fatal(err)
	}
	return s, rec
}

// withParent is ctx with the gRPC metadata of a call Envoy traces:
// sampled or not.
func withParent(sampled bool) context.Context {
	flags := "00"
	if sampled {
		flags = "01"
	}
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(
		"traceparent", "00-"+parentTrace+"-"+parentSpan+"-"+flags,
		"tracestate", "envoy=1",
	))
}

func TestCheckSpan(t *testing.T) {
	f := newFixture(t)
	longModel := "gpt-4o-" + strings.Repeat("x", 500)
	tests := map[string]struct {
		ctx     context.Context
		headers map[string]string
		path    string
		records Records
		// want are the span's keyward attributes; nil means no span.
		want      map[attribute.Key]string
		rootSpan  bool
		errStatus bool
	}{
		"allowed, joined to Envoy's trace": {
			ctx:     withParent(true),
			headers: map[string]string{"authorization": "Bearer " + f.tokens["ok"], "x-ai-eg-model": "gpt-4o-mini", "x-request-id": "req-5b1e"},
			want: map[attribute.Key]string{AttrDecision: "allow", AttrReason: "allowed", AttrKeySource: "server",
				AttrProvider: "openai", AttrModel: "gpt-4o-mini"},
		},
		"custom key passes through": {
			ctx:     withParent(true),
			headers: map[string]string{"authorization": "Bearer sk-client-own-1234567890"},
			want:    map[attribute.Key]string{AttrDecision: "allow", AttrReason: "allowed_custom_key", AttrKeySource: "client"},
		},
		"denied in the query": {
			ctx:  withParent(true),
			path: "/v1/models?key=" + f.tokens["revoked"],
			want: map[attribute.Key]string{AttrDecision: "deny", AttrReason: "token_revoked"},
		},
		"model not allowed, clipped": {
			ctx:     withParent(true),
			headers: map[string]string{"authorization": "Bearer " + f.tokens["gpt"], "x-ai-eg-model": "o1" + longModel},
			want: map[attribute.Key]string{AttrDecision: "deny", AttrReason: "model_not_allowed", AttrProvider: "openai",
				AttrModel: clipModel("o1" + longModel)},
		},
		"no trace context: a root span": {
			ctx:      context.Background(),
			headers:  map[string]string{"authorization": "Bearer " + f.tokens["foreign"]},
			want:     map[attribute.Key]string{AttrDecision: "deny", AttrReason: "invalid_token"},
			rootSpan: true,
		},
		"store failure is an error": {
			ctx:       withParent(true),
			headers:   map[string]string{"authorization": "Bearer " + f.tokens["ok"]},
			records:   &memRecords{fail: errors.New("vault: connection refused")},
			want:      map[attribute.Key]string{AttrDecision: "deny", AttrReason: "store_unavailable"},
			errStatus: true,
		},
		"panic is an error": {
			ctx:       withParent(true),
			headers:   map[string]string{"authorization": "Bearer " + f.tokens["ok"]},
			records:   &panicRecords{},
			want:      map[attribute.Key]string{AttrDecision: "deny", AttrReason: "internal_error"},
			errStatus: true,
		},
		"Envoy did not sample: no span": {
			ctx:     withParent(false),
			headers: map[string]string{"authorization": "Bearer " + f.tokens["ok"]},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, rec := tracedServer(t, f, tc.records)
			if _, err := s.Check(tc.ctx, checkRequest(tc.headers, tc.path, "openai")); err != nil {
				t.Fatal(err)
			}
			spans := rec.Ended()
			if tc.want == nil {
				if len(spans) != 0 {
					t.Fatalf("%d spans, want none", len(spans))
				}
				return
			}
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			sp := spans[0]
			if sp.Name() != CheckSpanName || sp.SpanKind() != trace.SpanKindServer {
				t.Errorf("span %q kind %v, want %q server", sp.Name(), sp.SpanKind(), CheckSpanName)
			}
			if tc.rootSpan {
				if sp.Parent().IsValid() {
					t.Errorf("parent %v, want none", sp.Parent())
				}
			} else if sp.SpanContext().TraceID().String() != parentTrace || sp.Parent().SpanID().String() != parentSpan || !sp.Parent().IsRemote() {
				t.Errorf("trace %s parent %s, want %s %s (remote)", sp.SpanContext().TraceID(), sp.Parent().SpanID(), parentTrace, parentSpan)
			}
			got := map[attribute.Key]string{}
			for _, kv := range sp.Attributes() {
				if strings.HasPrefix(string(kv.Key), "keyward.") {
					got[kv.Key] = kv.Value.String()
				}
			}
			if !equalMaps(got, tc.want) {
				t.Errorf("attributes %v, want %v", got, tc.want)
			}
			if m := got[AttrModel]; len(m) > maxLoggedModel+len("…") {
				t.Errorf("model attribute of %d bytes", len(m))
			}
			if isErr := sp.Status().Code == codes.Error; isErr != tc.errStatus {
				t.Errorf("status %v, want error %v", sp.Status(), tc.errStatus)
			}
			assertNoSecretInSpan(t, sp, f, tc.headers)
		})
	}
}

func equalMaps(a, b map[attribute.Key]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// assertNoSecretInSpan fails when any token or key of f, or any header
// value but the model's, appears anywhere in sp.
func assertNoSecretInSpan(t *testing.T, sp sdktrace.ReadOnlySpan, f *fixture, headers map[string]string) {
	t.Helper()
	b, err := json.Marshal(tracetest.SpanStubFromReadOnlySpan(sp))
	if err != nil {
		t.Fatal(err)
	}
	all := string(b)
	secrets := []string{openaiKey, anthropicKey, "sk-client-own-1234567890"}
	for _, tok := range f.tokens {
		secrets = append(secrets, tok)
	}
	for k, v := range headers {
		if k != "x-ai-eg-model" {
			secrets = append(secrets, v)
		}
	}
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("span holds a secret or header value (%d chars starting %q)", len(s), s[:4])
		}
	}
}

// BenchmarkCheckAllowedTraced is BenchmarkCheckAllowed with tracing on
// and every check sampled (Envoy's trace context in the metadata), spans
// batched to an exporter that drops them.
func BenchmarkCheckAllowedTraced(b *testing.B) {
	f := newFixture(b)
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
	b.Cleanup(func() { tp.Shutdown(context.Background()) })
	a, err := NewAuthorizer(f.records, f.ring, Options{Sources: []Source{{Header: "authorization"}}, Now: func() time.Time { return testNow }})
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewServer(a, ServerOptions{Tracer: tp.Tracer("bench")})
	if err != nil {
		b.Fatal(err)
	}
	req := checkRequest(chatHeaders(f.tokens["ok"]), "/v1/chat/completions", "openai")
	ctx := withParent(true)
	if resp, _ := s.Check(ctx, req); mustUnpack(b, resp).GetOkResponse() == nil {
		b.Fatalf("denied: %v", resp)
	}
	f.records.privateAsked = nil
	b.ReportAllocs()
	for b.Loop() {
		s.Check(ctx, req)
	}
}

type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }
