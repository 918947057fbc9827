package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/cache"
	"github.com/keyward/keyward/internal/promtext"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/telemetry"
)

// scrape serves m's handler over real HTTP, GETs /metrics and returns the
// keyward_ samples by series ("name{label="value",…}", labels sorted as
// the exposition writes them) and the whole body.
func scrape(t *testing.T, m *telemetry.Metrics) (map[string]float64, string) {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	return samples(t, string(body)), string(body)
}

// samples parses the Prometheus text format's keyward_ samples.
func samples(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out, err := promtext.Samples(body, "keyward_")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// only returns the samples of one metric name.
func only(all map[string]float64, name string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range all {
		if k == name || strings.HasPrefix(k, name+"{") {
			out[k] = v
		}
	}
	return out
}

func newMetrics(t *testing.T, opts telemetry.Options) *telemetry.Metrics {
	t.Helper()
	m, err := telemetry.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestChecks(t *testing.T) {
	m := newMetrics(t, telemetry.Options{})
	for _, o := range []authz.Observation{
		{Reason: authz.ReasonAllowed, KeySource: authz.KeySourceServer, Took: 20 * time.Microsecond},
		{Reason: authz.ReasonAllowed, KeySource: authz.KeySourceServer, Took: 20 * time.Microsecond},
		{Reason: authz.ReasonAllowed, KeySource: authz.KeySourceUser, Took: 2 * time.Millisecond},
		{Reason: authz.ReasonCustomKey, KeySource: authz.KeySourceClient, Took: 5 * time.Microsecond},
		{Reason: authz.ReasonInvalidToken, Took: 3 * time.Microsecond},
		{Reason: authz.ReasonInvalidToken, Took: 3 * time.Microsecond},
		{Reason: authz.ReasonStoreUnavailable, Took: 2 * time.Second},
	} {
		m.ObserveCheck(o)
	}
	got, _ := scrape(t, m)

	checks := only(got, "keyward_checks_total")
	want := map[string]float64{
		`keyward_checks_total{key_source="server",outcome="allowed",reason="allowed"}`:            2,
		`keyward_checks_total{key_source="user",outcome="allowed",reason="allowed"}`:              1,
		`keyward_checks_total{key_source="client",outcome="allowed",reason="allowed_custom_key"}`: 1,
	}
	for _, r := range authz.Reasons() {
		want[fmt.Sprintf(`keyward_checks_total{key_source="",outcome="denied",reason=%q}`, r)] = 0
	}
	want[`keyward_checks_total{key_source="",outcome="denied",reason="invalid_token"}`] = 2
	want[`keyward_checks_total{key_source="",outcome="denied",reason="store_unavailable"}`] = 1
	if !maps.Equal(checks, want) {
		t.Errorf("keyward_checks_total:\n got %v\nwant %v", checks, want)
	}

	durations := map[string]float64{
		`keyward_check_duration_seconds_count{outcome="allowed"}`:               4,
		`keyward_check_duration_seconds_count{outcome="denied"}`:                3,
		`keyward_check_duration_seconds_bucket{outcome="allowed",le="1e-05"}`:   1,
		`keyward_check_duration_seconds_bucket{outcome="allowed",le="2.5e-05"}`: 3,
		`keyward_check_duration_seconds_bucket{outcome="allowed",le="0.0025"}`:  4,
		`keyward_check_duration_seconds_bucket{outcome="denied",le="1e-05"}`:    2,
		`keyward_check_duration_seconds_bucket{outcome="denied",le="1"}`:        2,
		`keyward_check_duration_seconds_bucket{outcome="denied",le="+Inf"}`:     3,
	}
	for series, v := range durations {
		if got[series] != v {
			t.Errorf("%s = %v, want %v", series, got[series], v)
		}
	}
	if n := len(only(got, "keyward_check_duration_seconds_bucket")); n != 2*(len(telemetry.CheckBuckets())+1) {
		t.Errorf("%d buckets, want %d per outcome", n, len(telemetry.CheckBuckets())+1)
	}
	if s := got[`keyward_check_duration_seconds_sum{outcome="allowed"}`]; s < 0.002045-1e-9 || s > 0.002045+1e-9 {
		t.Errorf("allowed duration sum = %v, want 0.002045", s)
	}
}

// TestCheckLateReason: a reason authz does not list yet is still counted,
// under its own code.
func TestCheckLateReason(t *testing.T) {
	m := newMetrics(t, telemetry.Options{})
	m.ObserveCheck(authz.Observation{Reason: "some_new_reason"})
	m.ObserveCheck(authz.Observation{Reason: "some_new_reason"})
	got, _ := scrape(t, m)
	if v := got[`keyward_checks_total{key_source="",outcome="denied",reason="some_new_reason"}`]; v != 2 {
		t.Errorf("late reason counted %v times, want 2", v)
	}
}

func TestObserveCheckDoesNotAllocate(t *testing.T) {
	m := newMetrics(t, telemetry.Options{})
	for _, o := range []authz.Observation{
		{Reason: authz.ReasonAllowed, KeySource: authz.KeySourceServer, Took: time.Microsecond},
		{Reason: authz.ReasonCustomKey, KeySource: authz.KeySourceClient, Took: time.Microsecond},
		{Reason: authz.ReasonTokenRevoked, Took: time.Millisecond},
	} {
		m.ObserveCheck(o) // the first measurement of a series may allocate
		if n := testing.AllocsPerRun(1000, func() { m.ObserveCheck(o) }); n != 0 {
			t.Errorf("ObserveCheck(%v) allocates %v times", o, n)
		}
	}
}

func TestManagement(t *testing.T) {
	m := newMetrics(t, telemetry.Options{})
	m.ObserveManagement("GET /v1/tokens", 200)
	m.ObserveManagement("GET /v1/tokens", 200)
	m.ObserveManagement("GET /v1/tokens", 401)
	m.ObserveManagement("DELETE /v1/users/{name}", 204)
	m.ObserveManagement("", 404)
	got, _ := scrape(t, m)
	want := map[string]float64{
		`keyward_management_requests_total{route="GET /v1/tokens",status="200"}`:          2,
		`keyward_management_requests_total{route="GET /v1/tokens",status="401"}`:          1,
		`keyward_management_requests_total{route="DELETE /v1/users/{name}",status="204"}`: 1,
		`keyward_management_requests_total{route="unmatched",status="404"}`:               1,
	}
	if g := only(got, "keyward_management_requests_total"); !maps.Equal(g, want) {
		t.Errorf("keyward_management_requests_total:\n got %v\nwant %v", g, want)
	}
}

func TestBuildInfo(t *testing.T) {
	got, _ := scrape(t, newMetrics(t, telemetry.Options{Version: "v1.2.3"}))
	want := map[string]float64{fmt.Sprintf(`keyward_build_info{go_version=%q,version="v1.2.3"}`, runtime.Version()): 1}
	if g := only(got, "keyward_build_info"); !maps.Equal(g, want) {
		t.Errorf("keyward_build_info = %v, want %v", g, want)
	}
	// Without a version, the build's own.
	got, _ = scrape(t, newMetrics(t, telemetry.Options{}))
	if g := only(got, "keyward_build_info"); len(g) != 1 || strings.Contains(fmt.Sprint(g), `version=""`) {
		t.Errorf("keyward_build_info = %v, want one series with a version", g)
	}
}

// source is a record store for the caches: alice exists, bob is gone, and
// every group load fails.
type source struct{}

func (source) Token(_ context.Context, id string) (*record.Token, error) {
	return nil, fmt.Errorf("token %q: %w", id, record.ErrNotFound)
}

func (source) User(_ context.Context, name string) (*record.User, error) {
	if name == "bob" {
		return nil, fmt.Errorf("user %q: %w", name, record.ErrNotFound)
	}
	return &record.User{Name: name}, nil
}

func (source) Group(context.Context, string) (*record.Group, error) {
	return nil, errors.New("vault: 503")
}

func (source) Provider(_ context.Context, name string) (*record.Provider, error) {
	return &record.Provider{Name: name}, nil
}

func (source) Credentials(context.Context, string) ([]*record.Credential, error) { return nil, nil }

func TestCachesAndStoreErrors(t *testing.T) {
	records, err := cache.NewRecords(source{}, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 3 {
		records.User(ctx, "alice") // a miss, then hits
		records.User(ctx, "bob")   // a miss, then negative hits
	}
	records.Group(ctx, "eng") // two misses that fail
	records.Group(ctx, "eng")
	records.PrivateKeys(ctx, "alice")

	m := newMetrics(t, telemetry.Options{Store: "vault", CacheStats: records.Stats})
	got, _ := scrape(t, m)
	want := map[string]float64{}
	for _, kind := range []string{"token", "user", "group", "provider", "private_keys", "identities"} {
		for _, result := range []string{"hit", "miss", "stale", "negative"} {
			want[fmt.Sprintf(`keyward_cache_requests_total{kind=%q,result=%q}`, kind, result)] = 0
		}
	}
	want[`keyward_cache_requests_total{kind="user",result="miss"}`] = 2
	want[`keyward_cache_requests_total{kind="user",result="hit"}`] = 2
	want[`keyward_cache_requests_total{kind="user",result="negative"}`] = 2
	want[`keyward_cache_requests_total{kind="group",result="miss"}`] = 2
	want[`keyward_cache_requests_total{kind="private_keys",result="miss"}`] = 1
	if g := only(got, "keyward_cache_requests_total"); !maps.Equal(g, want) {
		t.Errorf("keyward_cache_requests_total:\n got %v\nwant %v", g, want)
	}
	wantErrs := map[string]float64{`keyward_store_errors_total{store="vault"}`: 2}
	if g := only(got, "keyward_store_errors_total"); !maps.Equal(g, wantErrs) {
		t.Errorf("keyward_store_errors_total = %v, want %v", g, wantErrs)
	}

	// The store's own failed loads are added.
	got, _ = scrape(t, newMetrics(t, telemetry.Options{Store: "file", CacheStats: records.Stats, StoreLoadErrors: func() uint64 { return 5 }}))
	if v := got[`keyward_store_errors_total{store="file"}`]; v != 7 {
		t.Errorf("keyward_store_errors_total with 5 failed store loads = %v, want 7", v)
	}

	// Read at each scrape: later lookups show in the next one.
	records.User(ctx, "alice")
	got, _ = scrape(t, m)
	if v := got[`keyward_cache_requests_total{kind="user",result="hit"}`]; v != 3 {
		t.Errorf("user hits after one more = %v, want 3", v)
	}
}

// TestNoCacheStats: without the caches' counters the cache and store
// series are absent, not zero.
func TestNoCacheStats(t *testing.T) {
	got, _ := scrape(t, newMetrics(t, telemetry.Options{Store: "file"}))
	for _, name := range []string{"keyward_cache_requests_total", "keyward_store_errors_total"} {
		if g := only(got, name); len(g) != 0 {
			t.Errorf("%s exported without cache stats: %v", name, g)
		}
	}
}

// TestOwnRegistry: two Metrics share nothing (no global registry or meter
// provider), and the Go and process collectors are there.
func TestOwnRegistry(t *testing.T) {
	a := newMetrics(t, telemetry.Options{})
	b := newMetrics(t, telemetry.Options{})
	a.ObserveCheck(authz.Observation{Reason: authz.ReasonMissingCredential})
	series := `keyward_checks_total{key_source="",outcome="denied",reason="missing_credential"}`
	gotA, body := scrape(t, a)
	gotB, _ := scrape(t, b)
	if gotA[series] != 1 || gotB[series] != 0 {
		t.Errorf("a: %v, b: %v; want 1 and 0", gotA[series], gotB[series])
	}
	for _, name := range []string{"go_goroutines", "process_open_fds"} {
		if !strings.Contains(body, "\n"+name+" ") {
			t.Errorf("no %s in the scrape", name)
		}
	}
	if strings.Contains(body, "otel_scope") || strings.Contains(body, "target_info") {
		t.Error("the scrape carries otel scope or target info")
	}
}

// TestLabelsAreCodes guards privacy and cardinality: every label of every
// keyward series is one of a fixed set, and its value one of a fixed set of
// codes, a route pattern, a status or a version: never a user, group,
// token, key or raw path.
func TestLabelsAreCodes(t *testing.T) {
	records, err := cache.NewRecords(source{}, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics(t, telemetry.Options{Store: "file", CacheStats: records.Stats, Version: "v1.0.0"})
	m.ObserveCheck(authz.Observation{Reason: authz.ReasonAllowed, KeySource: authz.KeySourceUser})
	m.ObserveManagement("POST /v1/tokens/{id}/rotate", 201)
	m.ObserveManagement("", 405)
	got, _ := scrape(t, m)

	reasons := []string{string(authz.ReasonAllowed), string(authz.ReasonCustomKey)}
	for _, r := range authz.Reasons() {
		reasons = append(reasons, string(r))
	}
	oneOf := func(values ...string) func(string) bool {
		return func(v string) bool { return slices.Contains(values, v) }
	}
	matches := func(re string) func(string) bool { return regexp.MustCompile(re).MatchString }
	valid := map[string]func(string) bool{
		"outcome":    oneOf("allowed", "denied"),
		"reason":     oneOf(reasons...),
		"key_source": oneOf("", "server", "user", "client"),
		"le":         matches(`^([0-9.e+-]+|\+Inf)$`),
		"kind":       oneOf("token", "user", "group", "provider", "private_keys", "identities"),
		"result":     oneOf("hit", "miss", "stale", "negative"),
		"store":      oneOf("file", "vault"),
		"route":      matches(`^(unmatched|(GET|POST|PUT|DELETE) /v1(/(users|groups|providers|me|tokens|credentials|management-tokens|rotate|\{name\}|\{id\}))+)$`),
		"status":     matches(`^[1-5][0-9][0-9]$`),
		"version":    oneOf("v1.0.0"),
		"go_version": oneOf(runtime.Version()),
	}
	label := regexp.MustCompile(`([a-z_]+)="([^"]*)"`)
	for series := range got {
		for _, l := range label.FindAllStringSubmatch(series, -1) {
			ok, known := valid[l[1]]
			switch {
			case !known:
				t.Errorf("%s: label %q is not one of keyward's", series, l[1])
			case !ok(l[2]):
				t.Errorf("%s: %s=%q is not one of its codes", series, l[1], l[2])
			}
		}
	}
}
