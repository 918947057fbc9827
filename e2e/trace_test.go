package e2e

import (
	"context"
	"encoding/hex"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/keyward/keyward/authz"
)

// traceGuard bounds the wait for spans: Envoy exports every 5 s; far
// above that, it only turns a hang into a failure.
const traceGuard = 90 * time.Second

// envoyService is the service.name of Envoy's spans in these tests.
const envoyService = "envoy-e2e"

// otlpReceiver is an OTLP/gRPC trace collector on a loopback port: it
// keeps every export and signals each.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	addr     string
	mu       sync.Mutex
	requests []*collectortrace.ExportTraceServiceRequest
	changed  chan struct{} // closed, and replaced, at each export
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{addr: lis.Addr().String(), changed: make(chan struct{})}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, r)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return r
}

func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, proto.Clone(req).(*collectortrace.ExportTraceServiceRequest))
	close(r.changed)
	r.changed = make(chan struct{})
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// span is a received span and the service.name of its resource.
type span struct {
	service string
	*tracepb.Span
}

func (s span) id() string     { return hex.EncodeToString(s.SpanId) }
func (s span) trace() string  { return hex.EncodeToString(s.TraceId) }
func (s span) parent() string { return hex.EncodeToString(s.ParentSpanId) }

// attr is the string value of the span's attribute key, "" when absent.
func (s span) attr(key string) (string, bool) {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value.GetStringValue(), true
		}
	}
	return "", false
}

// snapshot returns every span received so far, every export serialized
// (spans, attributes, events, resources) and the channel closed at the
// next export.
func (r *otlpReceiver) snapshot(t *testing.T) ([]span, string, <-chan struct{}) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var spans []span
	var all strings.Builder
	for _, req := range r.requests {
		b, err := protojson.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
		all.WriteByte('\n')
		for _, rs := range req.ResourceSpans {
			var service string
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.Key == "service.name" {
					service = kv.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					spans = append(spans, span{service: service, Span: sp})
				}
			}
		}
	}
	return spans, all.String(), r.changed
}

// waitFor waits, export after export, until ok holds for the spans
// received; it returns them and their serialized form.
func (r *otlpReceiver) waitFor(t *testing.T, what string, ok func([]span) bool) ([]span, string) {
	t.Helper()
	guard := time.After(traceGuard)
	for {
		spans, all, changed := r.snapshot(t)
		if ok(spans) {
			return spans, all
		}
		select {
		case <-changed:
		case <-guard:
			t.Fatalf("no %s after %v; received:\n%s", what, traceGuard, all)
		}
	}
}

// joined returns keyward's Check span whose reason is reason (and
// provider, when given) and whose parent is a span Envoy sent, and that
// parent.
func joined(spans []span, reason string, provider ...string) (kw, parent span, ok bool) {
	envoySpans := map[string]span{}
	for _, s := range spans {
		if s.service == envoyService {
			envoySpans[s.trace()+"/"+s.id()] = s
		}
	}
	for _, s := range spans {
		r, _ := s.attr(string(authz.AttrReason))
		p, _ := s.attr(string(authz.AttrProvider))
		if s.service != "keyward" || r != reason || (len(provider) > 0 && p != provider[0]) {
			continue
		}
		if p, found := envoySpans[s.trace()+"/"+s.parent()]; found {
			return s, p, true
		}
	}
	return span{}, span{}, false
}

// traceStack is a stack whose Envoy traces to recv, with keyward's
// environment env, and a token of a group that restricts models (so that
// keyward reads the model).
func traceStack(t *testing.T, recv *otlpReceiver, env ...string) (*stack, string) {
	t.Helper()
	s := newStack(t, stackOptions{
		env:         env,
		forwardBody: true,
		// Continues the envoy: section.
		extra: "  tracing: {otlp_address: '" + recv.addr + "', service_name: " + envoyService + "}\n",
	})
	s.kw("group", "add", "mini", "-models", "gpt-4o-mini")
	s.kw("user", "set", "alice", "-groups", "eng,mini")
	return s, s.token("alice", "mini")
}

// TestTraces runs Envoy with its OpenTelemetry tracer and keyward with
// OTEL_TRACES_EXPORTER=otlp, both exporting to an in-process collector,
// and sends an allowed and a denied request with the OpenAI SDK: each
// trace holds Envoy's spans and keyward's Check span as the child of
// Envoy's ext_authz span; no span holds a key, token or credential; the
// health checks Envoy sent meanwhile left no span. With tracing off,
// keyward sends nothing.
func TestTraces(t *testing.T) {
	t.Run("on", func(t *testing.T) {
		recv := newOTLPReceiver(t)
		// An hour's schedule delay: keyward's spans can only arrive by the
		// flush at shutdown, which this checks too.
		s, tok := traceStack(t, recv, "OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+recv.addr,
			"OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_BSP_SCHEDULE_DELAY=3600000")
		forged := []byte(tok)
		for i := len(forged) - 8; i < len(forged); i++ {
			forged[i] = map[bool]byte{true: 'B', false: 'A'}[forged[i] == 'A']
		}
		if r := s.pythonSDK(t, "openai", tok); !r.OK {
			t.Fatalf("allowed call: %+v", r)
		}
		if r := s.pythonSDK(t, "openai", string(forged)); r.Status != 401 || r.Code != "invalid_token" {
			t.Fatalf("forged token: %+v", r)
		}
		// A credential in the query: keyward removes it from an allowed
		// request before Envoy records the URL in its span. (A denied
		// request keeps it there: see Traces in the README.)
		qtok := s.token("alice", "eng")
		if r := s.do("POST", "/gemini/v1beta/models/gemini-1.5-flash:generateContent?alt=sse&key="+qtok, nil, `{"contents":[{"parts":[{"text":"hi"}]}]}`); r.status != 200 {
			t.Fatalf("query credential: %d %s", r.status, r.body)
		}
		// Envoy health-checks keyward every second: at least one while
		// keyward traced.
		waitFor(t, 30*time.Second, func() bool {
			n, err := s.envoy.Counter(context.Background(), "cluster.keyward.health_check.success")
			return err == nil && n > 0
		})
		if err := s.stopKeyward(); err != nil {
			t.Fatalf("stop keyward: %v", err)
		}

		spans, all := recv.waitFor(t, "joined spans of both requests", func(spans []span) bool {
			_, _, allowed := joined(spans, "allowed")
			_, _, denied := joined(spans, "invalid_token")
			_, _, query := joined(spans, "allowed", "gemini")
			return allowed && denied && query
		})
		for reason, want := range map[string]map[string]string{
			"allowed": {"keyward.decision": "allow", "keyward.provider": "openai", "keyward.model": "gpt-4o-mini", "keyward.key_source": "server",
				"rpc.system.name": "grpc", "rpc.method": "envoy.service.auth.v3.Authorization/Check"},
			"invalid_token": {"keyward.decision": "deny", "keyward.provider": "", "keyward.model": ""},
		} {
			kw, parent, _ := joined(spans, reason, want["keyward.provider"])
			t.Logf("%s: keyward %q (%s) is the child of Envoy's %q (%s) in trace %s", reason, kw.Name, kw.Kind, parent.Name, parent.Kind, kw.trace())
			if kw.Name != authz.CheckSpanName || kw.Kind != tracepb.Span_SPAN_KIND_SERVER {
				t.Errorf("%s: keyward's span %q kind %v, want %q server", reason, kw.Name, kw.Kind, authz.CheckSpanName)
			}
			if parent.Kind != tracepb.Span_SPAN_KIND_CLIENT || !strings.Contains(parent.Name, "Authorization") {
				t.Errorf("%s: parent %q kind %v, want Envoy's ext_authz client span", reason, parent.Name, parent.Kind)
			}
			for k, v := range want {
				if got, _ := kw.attr(k); got != v {
					t.Errorf("%s: %s = %q, want %q", reason, k, got, v)
				}
			}
		}
		for _, sp := range spans {
			if sp.service == "keyward" && sp.Name != authz.CheckSpanName {
				t.Errorf("keyward traced %q: only checks are traced, never health checks", sp.Name)
			}
			if strings.Contains(strings.ToLower(sp.Name), "health") {
				t.Errorf("%s traced a health check: %q", sp.service, sp.Name)
			}
		}
		assertNoSecrets(t, "the spans", all, openaiKey, anthropicKey, geminiKey, azureKey, tok, string(forged), qtok, "Bearer ")
	})

	t.Run("off", func(t *testing.T) {
		recv := newOTLPReceiver(t)
		// Everything but OTEL_TRACES_EXPORTER: keyward must stay silent.
		s, tok := traceStack(t, recv, "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+recv.addr, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_BSP_SCHEDULE_DELAY=10")
		if r := s.pythonSDK(t, "openai", tok); !r.OK {
			t.Fatalf("allowed call: %+v", r)
		}
		// keyward flushes at shutdown: had it traced, its spans would be
		// in by the time it has exited.
		if err := s.stopKeyward(); err != nil {
			t.Fatalf("stop keyward: %v", err)
		}
		spans, all := recv.waitFor(t, "Envoy's ext_authz span", func(spans []span) bool {
			for _, sp := range spans {
				if sp.service == envoyService && sp.Kind == tracepb.Span_SPAN_KIND_CLIENT && strings.Contains(sp.Name, "Authorization") {
					return true
				}
			}
			return false
		})
		for _, sp := range spans {
			if sp.service != envoyService {
				t.Fatalf("a span from %q with tracing off:\n%s", sp.service, all)
			}
		}
		if !strings.Contains(s.logs.String(), `"traces":false`) {
			t.Errorf("the serving log line does not say traces are off:\n%s", s.logs.String())
		}
	})
}
