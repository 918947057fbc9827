package telemetry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func TestNewTracing(t *testing.T) {
	tests := map[string]struct {
		env map[string]string
		on  bool
		// errNames is the variable the error must name; "" for no error.
		errNames string
	}{
		"unset: off":                     {env: nil},
		"none: off":                      {env: map[string]string{EnvTracesExporter: "none"}},
		"otlp over http/protobuf":        {env: map[string]string{EnvTracesExporter: "otlp"}, on: true},
		"otlp over grpc":                 {env: map[string]string{EnvTracesExporter: "otlp", EnvProtocol: "grpc", EnvEndpoint: "http://127.0.0.1:4317"}, on: true},
		"traces protocol wins":           {env: map[string]string{EnvTracesExporter: "otlp", EnvProtocol: "http/json", EnvTracesProtocol: "grpc"}, on: true},
		"sdk disabled":                   {env: map[string]string{EnvTracesExporter: "otlp", EnvSDKDisabled: "TRUE"}},
		"sdk not disabled":               {env: map[string]string{EnvTracesExporter: "otlp", EnvSDKDisabled: "false"}, on: true},
		"sdk disabled, bad value":        {env: map[string]string{EnvTracesExporter: "otlp", EnvSDKDisabled: "yes"}, errNames: EnvSDKDisabled},
		"another exporter":               {env: map[string]string{EnvTracesExporter: "zipkin"}, errNames: EnvTracesExporter},
		"several exporters":              {env: map[string]string{EnvTracesExporter: "otlp,console"}, errNames: EnvTracesExporter},
		"http/json":                      {env: map[string]string{EnvTracesExporter: "otlp", EnvProtocol: "http/json"}, errNames: EnvProtocol},
		"bad traces protocol":            {env: map[string]string{EnvTracesExporter: "otlp", EnvTracesProtocol: "udp"}, errNames: EnvTracesProtocol},
		"endpoint without scheme":        {env: map[string]string{EnvTracesExporter: "otlp", EnvEndpoint: "collector:4317"}, errNames: EnvEndpoint},
		"traces endpoint without host":   {env: map[string]string{EnvTracesExporter: "otlp", EnvTracesEndpoint: "http:///v1/traces"}, errNames: EnvTracesEndpoint},
		"ratio sampler":                  {env: map[string]string{EnvTracesExporter: "otlp", EnvTracesSampler: "parentbased_traceidratio", EnvTracesSamplerArg: "0.25"}, on: true},
		"unknown sampler":                {env: map[string]string{EnvTracesExporter: "otlp", EnvTracesSampler: "jaeger_remote"}, errNames: EnvTracesSampler},
		"ratio above 1":                  {env: map[string]string{EnvTracesExporter: "otlp", EnvTracesSampler: "traceidratio", EnvTracesSamplerArg: "2"}, errNames: EnvTracesSamplerArg},
		"ratio not a number":             {env: map[string]string{EnvTracesExporter: "otlp", EnvTracesSampler: "parentbased_traceidratio", EnvTracesSamplerArg: "half"}, errNames: EnvTracesSamplerArg},
		"off ignores the other settings": {env: map[string]string{EnvProtocol: "udp", EnvTracesSampler: "bogus"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tr, err := NewTracing(context.Background(), TracingOptions{Getenv: func(k string) string { return tc.env[k] }})
			t.Cleanup(func() { tr.Shutdown(context.Background()) })
			if tc.errNames != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errNames) {
					t.Fatalf("err = %v, want one naming %s", err, tc.errNames)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if on := tr != nil; on != tc.on || (tr.Tracer() != nil) != tc.on {
				t.Fatalf("tracing on = %v, want %v", on, tc.on)
			}
		})
	}
}

// An endpoint may carry credentials: an error about it does not repeat it.
func TestTracingEndpointErrorHidesValue(t *testing.T) {
	env := map[string]string{EnvTracesExporter: "otlp", EnvEndpoint: "ftp://user:s3cr3t-pw@collector:4317"}
	_, err := NewTracing(context.Background(), TracingOptions{Getenv: func(k string) string { return env[k] }})
	if err == nil || strings.Contains(err.Error(), "s3cr3t-pw") {
		t.Fatalf("err = %v", err)
	}
}

// failingExporter fails while fail is set.
type failingExporter struct{ fail bool }

func (e *failingExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error {
	if e.fail {
		return errors.New("connection refused")
	}
	return nil
}
func (*failingExporter) Shutdown(context.Context) error { return nil }

// Export failures are logged when they start and when they end, not once
// per batch.
func TestExportFailuresLoggedOnChange(t *testing.T) {
	var buf bytes.Buffer
	inner := &failingExporter{fail: true}
	e := &loggingExporter{SpanExporter: inner, log: slog.New(slog.NewTextHandler(&buf, nil))}
	for _, fail := range []bool{true, true, true, false, false, true} {
		inner.fail = fail
		if err := e.ExportSpans(context.Background(), nil); err != nil {
			t.Fatalf("ExportSpans = %v: the batch processor would hand it to otel's global handler", err)
		}
	}
	if n := strings.Count(buf.String(), "trace export failing"); n != 2 {
		t.Errorf("%d failure lines, want 2:\n%s", n, buf.String())
	}
	if n := strings.Count(buf.String(), "trace export works again"); n != 1 {
		t.Errorf("%d recovery lines, want 1:\n%s", n, buf.String())
	}
}
