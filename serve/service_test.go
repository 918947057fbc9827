package serve

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/token"
)

// BenchmarkCheck measures the Check handler (decision and response) for an
// allowed request with warm caches: the target is at most 2µs and 10
// allocations.
func BenchmarkCheck(b *testing.B) { benchCheck(b) }

// BenchmarkCheckParallel is BenchmarkCheck from GOMAXPROCS goroutines.
func BenchmarkCheckParallel(b *testing.B) { benchCheckParallel(b) }

// BenchmarkCheckDenied is a forged token: rejected before any lookup.
func BenchmarkCheckDenied(b *testing.B) { benchCheckDenied(b) }

// BenchmarkCheckMetrics is BenchmarkCheck with metrics on: still no
// allocation.
func BenchmarkCheckMetrics(b *testing.B) { benchCheck(b, withMetrics) }

// BenchmarkCheckParallelMetrics is BenchmarkCheckParallel with metrics on.
func BenchmarkCheckParallelMetrics(b *testing.B) { benchCheckParallel(b, withMetrics) }

// BenchmarkCheckDeniedMetrics is BenchmarkCheckDenied with metrics on.
func BenchmarkCheckDeniedMetrics(b *testing.B) { benchCheckDenied(b, withMetrics) }

// withMetrics turns metrics on as metrics.listen does in serve; the
// benchmarks built with it serve no endpoint.
func withMetrics(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" }

func benchCheck(b *testing.B, configure ...func(*config.Config)) {
	f := newFixture(b, configure...)
	svc, tok := f.service(b), f.token
	req := sdkRequest(tok)
	ctx := context.Background()
	if resp, _ := svc.authz.Check(ctx, req); mustDecode(b, resp).GetOkResponse() == nil {
		b.Fatalf("denied: %v", resp)
	}
	b.ReportAllocs()
	for b.Loop() {
		svc.authz.Check(ctx, req)
	}
}

func benchCheckParallel(b *testing.B, configure ...func(*config.Config)) {
	f := newFixture(b, configure...)
	svc, tok := f.service(b), f.token
	req := sdkRequest(tok)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer() // the set-up allocates; the checks must not
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			svc.authz.Check(ctx, req)
		}
	})
}

func benchCheckDenied(b *testing.B, configure ...func(*config.Config)) {
	f := newFixture(b, configure...)
	svc, tok := f.service(b), f.token
	req := sdkRequest(tok[:20] + strings.Repeat("A", len(tok)-20))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		svc.authz.Check(ctx, req)
	}
}

// flakyStore fails its first signing-key reads, as a Vault that answers
// logins but not yet reads would.
type flakyStore struct {
	recordStore
	failures int
}

func (f *flakyStore) SigningKeys(ctx context.Context) ([]token.SigningKey, error) {
	if f.failures > 0 {
		f.failures--
		return nil, errors.New("vault read system/signing-keys: 503")
	}
	return f.recordStore.SigningKeys(ctx)
}

// TestBecomeReadyStartsOnce: the store is started once, however often the
// signing keys need another try.
func TestBecomeReadyStartsOnce(t *testing.T) {
	svc := newFixture(t).service(t)
	svc.store = &flakyStore{recordStore: svc.store, failures: 2}
	starts := 0
	if !svc.becomeReady(context.Background(), func(context.Context) error { starts++; return nil }) {
		t.Fatal("not ready")
	}
	if starts != 1 {
		t.Fatalf("store started %d times", starts)
	}
}
