// Package telemetry is keyward's metrics: an OpenTelemetry MeterProvider
// that exports to a Prometheus registry of its own, the http.Handler that
// serves it at /metrics, and the recorders that the serving packages' hooks
// call (authz.ServerOptions.Observe, httpapi.Options.Observe).
//
// It is also keyward's traces (Tracing): a TracerProvider built from the
// standard OTEL_* variables, off unless they ask for OTLP export, whose
// tracer authz.ServerOptions.Tracer takes.
//
// No label ever holds a user, group, token, key, model or request path:
// labels are fixed codes (outcomes, reason codes, key sources, route
// patterns, statuses, store and cache kinds), which also keeps the number
// of series bounded. Nothing here touches global state: neither otel's
// global MeterProvider nor prometheus.DefaultRegisterer.
package telemetry

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"

	"github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/cache"
)

// The label values of keyward_checks_total and
// keyward_check_duration_seconds.
const (
	OutcomeAllowed = "allowed"
	OutcomeDenied  = "denied"
)

// UnmatchedRoute is the route label of management requests that matched no
// route (404 and 405 answers).
const UnmatchedRoute = "unmatched"

// CheckBuckets returns the bounds, in seconds, of the check duration
// histogram: a check answered from warm caches takes microseconds, one that
// waits for the store milliseconds, and Envoy gives up after its
// ext_authz timeout (500ms by default).
func CheckBuckets() []float64 {
	return []float64{
		10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
		1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1,
	}
}

// Options configure New. Every field is optional.
type Options struct {
	// Store is the record store's kind (file or vault): the store label
	// of keyward_store_errors_total. Without it, or without CacheStats,
	// that series is not exported.
	Store string
	// CacheStats, when set, is read at each scrape for
	// keyward_cache_requests_total and keyward_store_errors_total: each
	// record cache's kind and cumulative counters
	// (cache.Records.Stats). Reading them at scrape time costs the hot
	// path nothing: the caches count anyway.
	CacheStats func() iter.Seq2[string, cache.Stats]
	// StoreLoadErrors, when set, is read at each scrape and added to
	// keyward_store_errors_total: loads the store makes itself that
	// failed, such as the file store's reloads of its files
	// (filestore.Store.FailedLoads), which no cache sees.
	StoreLoadErrors func() uint64
	// Version is keyward's version for keyward_build_info. Default: the
	// main module's version from the build information.
	Version string
	// Log receives errors of the /metrics handler. Default: discard.
	Log *slog.Logger
}

// Metrics holds keyward's instruments and serves them. Create it with
// New; its methods are safe for concurrent use.
type Metrics struct {
	handler  http.Handler
	duration metric.Float64Histogram
	mgmt     metric.Int64Counter
	// checks holds the series of keyward_checks_total for every (reason,
	// key source) pair known at New, built once so that recording a
	// check allocates nothing. It is read-only after New.
	checks map[checkKey]*checkSeries
	// lateChecks holds pairs first seen after New (a reason added to
	// authz but not to authz.Reasons): still a bounded set.
	lateChecks sync.Map // checkKey → *checkSeries
}

type checkKey struct {
	reason    authz.Reason
	keySource string
}

// checkSeries is one series of keyward_checks_total and the options that
// record its check's duration. The count is a plain atomic read at each
// scrape: an otel counter's Add costs about 190ns with three attributes
// (SDK v1.47), several times the atomic add, on every check.
type checkSeries struct {
	count    atomic.Int64
	attrs    metric.ObserveOption
	duration []metric.RecordOption
}

// The hooks Metrics serves.
var (
	_ func(*Metrics, authz.Observation) = (*Metrics).ObserveCheck
	_ func(*Metrics, string, int)       = (*Metrics).ObserveManagement
)

// New returns keyward's metrics on a fresh Prometheus registry, with the
// Go runtime and process collectors beside them.
func New(opts Options) (*Metrics, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("telemetry: go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("telemetry: process collector: %w", err)
	}
	exporter, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		// keyward_build_info says what runs; the otel scope and
		// resource labels would only repeat it on every series.
		otelprom.WithoutScopeInfo(),
		otelprom.WithoutTargetInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	provider := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(exporter),
		// Exemplars would need trace context, and would cost the hot path.
		sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter),
	)
	m := &Metrics{
		handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			ErrorLog:      slog.NewLogLogger(opts.Log.Handler(), slog.LevelWarn),
			ErrorHandling: promhttp.ContinueOnError,
		}),
		checks: map[checkKey]*checkSeries{},
	}
	m.precompute()
	if err := m.instruments(provider.Meter("github.com/keyward/keyward"), opts); err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	return m, nil
}

func (m *Metrics) instruments(meter metric.Meter, opts Options) error {
	_, err := meter.Int64ObservableCounter("keyward.checks",
		metric.WithDescription("ext_authz checks answered, by outcome, reason code and where the key came from."),
		metric.WithUnit("{check}"),
		metric.WithInt64Callback(m.observeChecks))
	if err != nil {
		return err
	}
	if m.duration, err = meter.Float64Histogram("keyward.check.duration",
		metric.WithDescription("Time spent in the ext_authz Check handler."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(CheckBuckets()...)); err != nil {
		return err
	}
	if m.mgmt, err = meter.Int64Counter("keyward.management.requests",
		metric.WithDescription("Management API requests, by route pattern and status."),
		metric.WithUnit("{request}")); err != nil {
		return err
	}
	version := opts.Version
	if version == "" {
		version = buildVersion()
	}
	info := attribute.NewSet(attribute.String("version", version), attribute.String("go_version", runtime.Version()))
	if _, err = meter.Int64ObservableGauge("keyward.build.info",
		metric.WithDescription("Always 1; its labels say which keyward runs."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(1, metric.WithAttributeSet(info))
			return nil
		})); err != nil {
		return err
	}
	if opts.CacheStats == nil {
		return nil
	}
	return cacheInstruments(meter, opts)
}

// cacheInstruments registers the cache and store counters, read from the
// caches' own counters at each scrape.
func cacheInstruments(meter metric.Meter, opts Options) error {
	requests, err := meter.Int64ObservableCounter("keyward.cache.requests",
		metric.WithDescription("Record cache lookups by record kind and result: hit, negative (a record known to be gone), "+
			"miss (went to the store), stale (served past its TTL because the store failed; also counted as a miss when a refresh was tried)."),
		metric.WithUnit("{request}"))
	if err != nil {
		return err
	}
	instruments := []metric.Observable{requests}
	var storeErrors metric.Int64ObservableCounter
	if opts.Store != "" {
		if storeErrors, err = meter.Int64ObservableCounter("keyward.store.errors",
			metric.WithDescription("Record loads from the store that failed (not counting records that are gone)."),
			metric.WithUnit("{error}")); err != nil {
			return err
		}
		instruments = append(instruments, storeErrors)
	}
	storeAttrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("store", opts.Store)))
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		var loadErrors uint64
		for kind, s := range opts.CacheStats() {
			for _, r := range []struct {
				result string
				n      uint64
			}{{"hit", s.Hits}, {"miss", s.Misses}, {"stale", s.StaleServes}, {"negative", s.NegativeHits}} {
				o.ObserveInt64(requests, int64(r.n), metric.WithAttributes(attribute.String("kind", kind), attribute.String("result", r.result)))
			}
			loadErrors += s.LoadErrors
		}
		if storeErrors != nil {
			if opts.StoreLoadErrors != nil {
				loadErrors += opts.StoreLoadErrors()
			}
			o.ObserveInt64(storeErrors, int64(loadErrors), storeAttrs)
		}
		return nil
	}, instruments...)
	return err
}

// observeChecks reports keyward_checks_total, every known outcome
// included: a series that starts at 0 lets rate() see its first check.
func (m *Metrics) observeChecks(_ context.Context, o metric.Int64Observer) error {
	for _, s := range m.checks {
		o.Observe(s.count.Load(), s.attrs)
	}
	m.lateChecks.Range(func(_, v any) bool {
		s := v.(*checkSeries)
		o.Observe(s.count.Load(), s.attrs)
		return true
	})
	return nil
}

// precompute builds the series of every check outcome that authz
// reports: a denial has no key source, allowed goes out on a server key or
// the user's own, allowed_custom_key on the client's.
func (m *Metrics) precompute() {
	keys := []checkKey{
		{authz.ReasonAllowed, authz.KeySourceServer},
		{authz.ReasonAllowed, authz.KeySourceUser},
		{authz.ReasonCustomKey, authz.KeySourceClient},
	}
	for _, r := range authz.Reasons() {
		keys = append(keys, checkKey{r, ""})
	}
	for _, k := range keys {
		m.checks[k] = newCheckSeries(k)
	}
}

func newCheckSeries(k checkKey) *checkSeries {
	outcome := OutcomeDenied
	if k.reason.Allowed() {
		outcome = OutcomeAllowed
	}
	all := attribute.NewSet(
		attribute.String("outcome", outcome),
		attribute.String("reason", string(k.reason)),
		attribute.String("key_source", k.keySource),
	)
	return &checkSeries{
		attrs:    metric.WithAttributeSet(all),
		duration: []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", outcome)))},
	}
}

// ObserveCheck records one ext_authz check; it is an
// authz.ServerOptions.Observe. It allocates nothing for the outcomes that
// authz lists.
func (m *Metrics) ObserveCheck(o authz.Observation) {
	k := checkKey{o.Reason, o.KeySource}
	s, ok := m.checks[k]
	if !ok {
		v, _ := m.lateChecks.LoadOrStore(k, newCheckSeries(k))
		s = v.(*checkSeries)
	}
	s.count.Add(1)
	m.duration.Record(context.Background(), o.Took.Seconds(), s.duration...)
}

// ObserveManagement records one management API request; it is an
// httpapi.Options.Observe. route is the route pattern, "" when none matched.
func (m *Metrics) ObserveManagement(route string, status int) {
	if route == "" {
		route = UnmatchedRoute
	}
	m.mgmt.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("route", route), attribute.String("status", strconv.Itoa(status))))
}

// Handler serves the metrics in the Prometheus text format, for /metrics.
func (m *Metrics) Handler() http.Handler { return m.handler }

// buildVersion is the main module's version: a tag for `go install
// …@version`, "(devel)" for a local build.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}
