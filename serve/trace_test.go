package serve

import (
	"context"
	"net"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/metadata"
)

// TestRunRefusesBadTracing: a tracing variable keyward cannot use stops
// serve before anything listens, with an error that names it.
func TestRunRefusesBadTracing(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"OTEL_TRACES_EXPORTER":        {"OTEL_TRACES_EXPORTER": "zipkin"},
		"OTEL_EXPORTER_OTLP_PROTOCOL": {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
		"OTEL_TRACES_SAMPLER_ARG":     {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			getenv := f.getenv
			opts := Options{Getenv: func(k string) string {
				if v, ok := env[k]; ok {
					return v
				}
				return getenv(k)
			}, listening: func(map[string]net.Addr) { t.Error("listening despite a bad tracing setting") }}
			err := Run(context.Background(), f.cfg, opts)
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("Run = %v, want an error naming %s", err, name)
			}
		})
	}
}

// BenchmarkCheckTraced is BenchmarkCheck with tracing on and every check
// sampled (Envoy's trace context in the call's metadata), the spans
// batched to an exporter that drops them. Tracing costs allocations;
// the zero-allocation target is BenchmarkCheck's, with tracing off.
func BenchmarkCheckTraced(b *testing.B) {
	f := newFixture(b)
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardSpans{}))
	b.Cleanup(func() { tp.Shutdown(context.Background()) })
	f.tracer = tp.Tracer("bench")
	svc := f.service(b)
	req := sdkRequest(f.token)
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
	if resp, _ := svc.authz.Check(ctx, req); mustDecode(b, resp).GetOkResponse() == nil {
		b.Fatalf("denied: %v", resp)
	}
	b.ReportAllocs()
	for b.Loop() {
		svc.authz.Check(ctx, req)
	}
}

type discardSpans struct{}

func (discardSpans) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardSpans) Shutdown(context.Context) error                             { return nil }
