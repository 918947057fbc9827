package envoy

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/keyward/keyward/field"
)

// TracingCluster is the cluster of the OpenTelemetry collector that
// Envoy sends its spans to when Options.Tracing is on.
const TracingCluster = "opentelemetry_collector"

// DefaultTracingServiceName is the service.name of Envoy's spans when
// Tracing.ServiceName is empty.
const DefaultTracingServiceName = "envoy"

const (
	openTelemetryTracer  = "envoy.tracers.opentelemetry"
	tracingExportTimeout = 5 // seconds; Envoy's exports are batched in the background
)

// Tracing turns on Envoy's OpenTelemetry tracer: Envoy starts (or joins,
// from an incoming traceparent) a trace per request, exports its spans
// over OTLP/gRPC, and passes the trace context to keyward on the
// ext_authz call, so that keyward's Check span (when keyward traces too,
// see its OTEL_* variables) is a child of Envoy's.
//
// Envoy's request span records http.url with the query string: an
// allowed request's ?key= credential is removed by keyward before Envoy
// records it, a denied request's is not. Redact http.url in the
// collector where clients send credentials in the query.
type Tracing struct {
	// OTLPAddress is the collector's OTLP/gRPC address, host:port (an IP
	// gives a STATIC cluster, a hostname a STRICT_DNS one), in plaintext
	// HTTP/2: a collector beside Envoy. Setting it turns tracing on.
	OTLPAddress string `yaml:"otlp_address"`
	// ServiceName is the service.name of Envoy's spans. Default
	// DefaultTracingServiceName ("envoy").
	ServiceName string `yaml:"service_name"`
	// Sampling is the percentage of requests without a sampled trace
	// context that Envoy starts a trace for, 0 to 100. Default 100.
	Sampling *float64 `yaml:"sampling"`
}

// Enabled reports whether any field is set: tracing is then on, and
// OTLPAddress is required.
func (t Tracing) Enabled() bool {
	return t.OTLPAddress != "" || t.ServiceName != "" || t.Sampling != nil
}

// Validate checks t; each problem is a *field.Error whose path is prefix,
// a dot and the field's snake_case name.
func (t Tracing) Validate(prefix string) error { return errors.Join(t.problems(prefix)...) }

func (t Tracing) problems(prefix string) []error {
	var errs []error
	add := func(name, format string, args ...any) {
		errs = append(errs, field.Errorf(prefix+"."+name, format, args...))
	}
	if t.OTLPAddress == "" {
		add("otlp_address", "required with tracing: the collector's OTLP/gRPC host:port")
	} else if _, port, err := splitHostPort(t.OTLPAddress); err != nil {
		add("otlp_address", "%v", err)
	} else if port == 0 {
		add("otlp_address", "port must not be 0")
	}
	if len(t.ServiceName) > 255 || strings.ContainsFunc(t.ServiceName, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) {
		add("service_name", "at most 255 printable characters, no spaces")
	}
	if s := t.Sampling; s != nil && (*s < 0 || *s > 100) {
		add("sampling", "a percentage from 0 to 100, got %g", *s)
	}
	return errs
}

// tracing is the HTTP connection manager's tracing configuration and the
// collector's cluster, or nil, nil when t is off.
func tracing(t Tracing) (*hcmv3.HttpConnectionManager_Tracing, *clusterv3.Cluster, error) {
	if !t.Enabled() {
		return nil, nil, nil
	}
	serviceName := t.ServiceName
	if serviceName == "" {
		serviceName = DefaultTracingServiceName
	}
	sampling := 100.0
	if t.Sampling != nil {
		sampling = *t.Sampling
	}
	otel, err := anyOf(&tracev3.OpenTelemetryConfig{
		GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: TracingCluster}},
			Timeout:         &durationpb.Duration{Seconds: tracingExportTimeout},
		},
		ServiceName: serviceName,
	})
	if err != nil {
		return nil, nil, err
	}
	host, port, err := splitHostPort(t.OTLPAddress) // cannot fail after Validate
	if err != nil {
		return nil, nil, fmt.Errorf("tracing otlp address: %w", err)
	}
	c, err := http2Cluster(TracingCluster, host, port)
	if err != nil {
		return nil, nil, err
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: sampling},
		Provider: &tracev3.Tracing_Http{
			Name:       openTelemetryTracer,
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: otel},
		},
	}, c, nil
}

// http2Cluster is a plaintext HTTP/2 (gRPC) cluster of one host.
func http2Cluster(name, host string, port uint32) (*clusterv3.Cluster, error) {
	h2, err := http2Options()
	if err != nil {
		return nil, err
	}
	c := cluster(name, host, port, isIP(host), clusterv3.Cluster_STRICT_DNS, authzConnectTimeout)
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpOptionsKey: h2}
	return c, nil
}
