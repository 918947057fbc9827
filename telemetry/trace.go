package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// The environment variables NewTracing reads itself. The OTLP exporters
// read their own (OTEL_EXPORTER_OTLP_* and OTEL_EXPORTER_OTLP_TRACES_*:
// endpoint, headers, timeout, certificates, compression), the batch
// processor OTEL_BSP_*, and the resource OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES, straight from the process environment.
const (
	EnvSDKDisabled      = "OTEL_SDK_DISABLED"
	EnvTracesExporter   = "OTEL_TRACES_EXPORTER"
	EnvProtocol         = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvTracesProtocol   = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	EnvEndpoint         = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint   = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvTracesSampler    = "OTEL_TRACES_SAMPLER"
	EnvTracesSamplerArg = "OTEL_TRACES_SAMPLER_ARG"
	EnvServiceName      = "OTEL_SERVICE_NAME"
)

// DefaultServiceName is the service.name of keyward's spans unless
// OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name another.
const DefaultServiceName = "keyward"

// TracingOptions configure NewTracing. Every field is optional.
type TracingOptions struct {
	// Getenv reads the variables NewTracing interprets itself (the Env…
	// constants); in keyward serve it is os.Getenv, like the
	// environment the SDK reads. Default: nothing is set, tracing off.
	Getenv func(string) string
	// Log hears of export failures (once when they start, once when
	// export works again) instead of otel's global error handler.
	// Default: discard.
	Log *slog.Logger
	// Version is service.version. Default: the main module's version.
	Version string
}

// Tracing is keyward's trace pipeline: a TracerProvider with a batch
// span processor and an OTLP exporter. It is never installed as otel's
// global provider; its Tracer is passed to what traces.
type Tracing struct {
	provider *sdktrace.TracerProvider
}

// NewTracing builds the trace pipeline that the standard OTEL_*
// environment variables describe, or returns nil, nil when tracing is off.
//
// Tracing is on only when OTEL_TRACES_EXPORTER is otlp (and
// OTEL_SDK_DISABLED is not true). The specification's default exporter
// is otlp; keyward's is none, because it is a security component that
// must not start sending data to an endpoint nobody configured (the
// specification's default is localhost:4317), and because tracing costs
// the hot path a few allocations per check. The protocol is
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL:
// grpc or http/protobuf (the default, as the specification says). The
// sampler is OTEL_TRACES_SAMPLER (+ _ARG); default parentbased_always_on,
// which follows Envoy's decision for every check Envoy traces.
//
// A value NewTracing cannot use is an error that names its variable;
// values are not repeated in errors, as an endpoint may carry user info.
func NewTracing(ctx context.Context, opts TracingOptions) (*Tracing, error) {
	if opts.Getenv == nil {
		opts.Getenv = func(string) string { return "" }
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	on, err := tracingOn(opts.Getenv)
	if err != nil || !on {
		return nil, err
	}
	sampler, err := samplerFromEnv(opts.Getenv)
	if err != nil {
		return nil, err
	}
	for _, name := range []string{EnvTracesEndpoint, EnvEndpoint} {
		if err := checkEndpoint(name, opts.Getenv(name)); err != nil {
			return nil, err
		}
	}
	exporter, err := newExporter(ctx, opts.Getenv)
	if err != nil {
		return nil, err
	}
	version := opts.Version
	if version == "" {
		version = buildVersion()
	}
	// Later detectors win: OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
	// override the defaults.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName(DefaultServiceName), semconv.ServiceVersion(version)),
		resource.WithFromEnv(),
	)
	if err != nil {
		exporter.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry: OTEL_RESOURCE_ATTRIBUTES or %s: %w", EnvServiceName, err)
	}
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(&loggingExporter{SpanExporter: exporter, log: opts.Log}),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sampler),
	)
	return &Tracing{provider: provider}, nil
}

// Tracer returns the tracer of keyward's spans; nil when t is nil
// (tracing off), which is what authz.ServerOptions.Tracer expects then.
func (t *Tracing) Tracer() trace.Tracer {
	if t == nil {
		return nil
	}
	return t.provider.Tracer("github.com/keyward/keyward")
}

// Shutdown exports the spans still queued and stops the exporter, within
// ctx. Call it once, when the process stops; nothing is traced after.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: trace shutdown: %w", err)
	}
	return nil
}

// tracingOn reads OTEL_SDK_DISABLED and OTEL_TRACES_EXPORTER.
func tracingOn(getenv func(string) string) (bool, error) {
	switch v := strings.ToLower(strings.TrimSpace(getenv(EnvSDKDisabled))); v {
	case "true":
		return false, nil
	case "", "false":
	default:
		return false, fmt.Errorf("telemetry: %s must be true or false", EnvSDKDisabled)
	}
	switch v := strings.TrimSpace(getenv(EnvTracesExporter)); v {
	case "", "none":
		return false, nil
	case "otlp":
		return true, nil
	default:
		return false, fmt.Errorf("telemetry: %s=%q: keyward exports traces with otlp or not at all (none, the default)", EnvTracesExporter, v)
	}
}

// The OTLP protocols keyward speaks.
const (
	protocolGRPC = "grpc"
	protocolHTTP = "http/protobuf"
)

// newExporter is the OTLP exporter of the configured protocol; it reads
// its endpoint and other settings from the environment itself.
func newExporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	name, protocol := EnvTracesProtocol, strings.TrimSpace(getenv(EnvTracesProtocol))
	if protocol == "" {
		name, protocol = EnvProtocol, strings.TrimSpace(getenv(EnvProtocol))
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch protocol {
	case protocolGRPC:
		exp, err = otlptracegrpc.New(ctx)
	case protocolHTTP, "":
		exp, err = otlptracehttp.New(ctx)
	default:
		return nil, fmt.Errorf("telemetry: %s=%q: want %s or %s", name, protocol, protocolGRPC, protocolHTTP)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP %s trace exporter: %w", protocol, err)
	}
	return exp, nil
}

// checkEndpoint refuses an endpoint the exporters would only complain
// about on otel's global error handler, then ignore: it must be an http
// or https URL with a host.
func checkEndpoint(name, v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(strings.TrimSpace(v))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("telemetry: %s: want a URL such as http://collector:4317 (http or https, with a host)", name)
	}
	return nil
}

// samplerFromEnv reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG.
// The SDK reads them too, but falls back to its default on a bad value
// with only a message on otel's global error handler.
func samplerFromEnv(getenv func(string) string) (sdktrace.Sampler, error) {
	name := strings.ToLower(strings.TrimSpace(getenv(EnvTracesSampler)))
	arg := strings.TrimSpace(getenv(EnvTracesSamplerArg))
	ratio := func() (sdktrace.Sampler, error) {
		if arg == "" {
			return sdktrace.TraceIDRatioBased(1), nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("telemetry: %s=%q: want a ratio from 0 to 1", EnvTracesSamplerArg, arg)
		}
		return sdktrace.TraceIDRatioBased(r), nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return ratio()
	case "parentbased_traceidratio":
		s, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.ParentBased(s), nil
	default:
		return nil, fmt.Errorf("telemetry: %s=%q: want always_on, always_off, traceidratio or their parentbased_ forms", EnvTracesSampler, name)
	}
}

// loggingExporter reports export failures on keyward's log rather than
// otel's global error handler: once when exports start failing, once
// when they work again, so that a collector that is down cannot flood the
// log. Spans that fail to export are dropped; tracing never holds up a
// check.
type loggingExporter struct {
	sdktrace.SpanExporter
	log     *slog.Logger
	failing atomic.Bool
}

func (e *loggingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	switch {
	case err != nil && !e.failing.Swap(true):
		e.log.Warn("trace export failing; spans are dropped until it works again", "err", err, "spans", len(spans))
	case err == nil && e.failing.Swap(false):
		e.log.Info("trace export works again")
	}
	return nil
}
