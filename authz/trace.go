package authz

import (
	"context"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
)

// CheckSpanName is the name of the span of each Check: the gRPC method,
// as OpenTelemetry's RPC conventions name server spans.
const CheckSpanName = "envoy.service.auth.v3.Authorization/Check"

// The attributes of a Check span besides the RPC ones. They hold fixed
// codes, the provider's name (from the route or keyward's configuration)
// and the model clipped as in the audit log; never a header, token, key,
// path, user or group.
const (
	// AttrDecision is "allow" or "deny".
	AttrDecision = attribute.Key("keyward.decision")
	// AttrReason is the reason code (Reason).
	AttrReason = attribute.Key("keyward.reason")
	// AttrKeySource is Observation.KeySource, on allowed checks.
	AttrKeySource = attribute.Key("keyward.key_source")
	// AttrProvider is the route's provider, once known.
	AttrProvider = attribute.Key("keyward.provider")
	// AttrModel is the requested model, once known, cut to 128 bytes.
	AttrModel = attribute.Key("keyward.model")
)

// checkSpanStart are the options of every Check span, built once.
var checkSpanStart = []trace.SpanStartOption{
	trace.WithSpanKind(trace.SpanKindServer),
	trace.WithAttributes(
		semconv.RPCSystemNameGRPC,
		semconv.RPCMethod(authv3.Authorization_Check_FullMethodName[1:]),
	),
}

var (
	decisionAllow = AttrDecision.String("allow")
	decisionDeny  = AttrDecision.String("deny")
)

// startSpan starts the span of one Check, the child of the span whose W3C
// trace context (traceparent, tracestate) came in the call's metadata:
// Envoy sends its ext_authz span's there when its tracing is on.
func (s *Server) startSpan(ctx context.Context) (context.Context, trace.Span) {
	ctx = propagation.TraceContext{}.Extract(ctx, metadataCarrier{ctx})
	return s.tracer.Start(ctx, CheckSpanName, checkSpanStart...)
}

// endSpan records d on span and ends it. Failures of keyward's own (the
// store, a missing key, a bug) set an error status; a denial of the
// client's request is a normal outcome.
func endSpan(span trace.Span, d *Decision) {
	attrs := make([]attribute.KeyValue, 0, 5)
	if d.Reason.Allowed() {
		attrs = append(attrs, decisionAllow, AttrKeySource.String(keySource(d)))
	} else {
		attrs = append(attrs, decisionDeny)
	}
	attrs = append(attrs, AttrReason.String(string(d.Reason)))
	if d.ProviderName != "" {
		attrs = append(attrs, AttrProvider.String(d.ProviderName))
	}
	if d.Model != "" {
		attrs = append(attrs, AttrModel.String(clipModel(d.Model)))
	}
	span.SetAttributes(attrs...)
	if d.Reason.HTTPStatus() >= 500 {
		// The reason, not d.Err: the error's text is the audit log's.
		span.SetStatus(codes.Error, string(d.Reason))
	}
	span.End()
}

// metadataCarrier reads the incoming gRPC metadata for the propagator.
type metadataCarrier struct{ ctx context.Context }

func (c metadataCarrier) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (metadataCarrier) Set(string, string) {}

// Keys is not needed by the W3C TraceContext propagator, the only one
// used.
func (metadataCarrier) Keys() []string { return nil }
