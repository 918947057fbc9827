package cache

import (
	"context"
	"fmt"
	"testing"
)

// benchKeys is how many distinct keys the hit benchmarks spread over, about
// the number of live groups and users a replica serves.
const benchKeys = 1024

func newBenchCache(b *testing.B, shards int) (*Cache[int], []string) {
	b.Helper()
	opts, err := Options{TTL: 1 << 62}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	c := newCache(func(_ context.Context, key string) (int, error) { return len(key), nil }, opts, shards)
	keys := make([]string, benchKeys)
	ctx := context.Background()
	for i := range keys {
		keys[i] = fmt.Sprintf("group/%04d", i)
		if _, err := c.Get(ctx, keys[i]); err != nil {
			b.Fatal(err)
		}
	}
	return c, keys
}

// BenchmarkGetHit measures a fresh hit from one goroutine.
func BenchmarkGetHit(b *testing.B) {
	c, keys := newBenchCache(b, shardCount(DefaultSize))
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.Get(ctx, keys[i%benchKeys]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkGetHitParallel measures fresh hits from 16 goroutines per
// GOMAXPROCS (32 on the 2-core target).
func BenchmarkGetHitParallel(b *testing.B) {
	for _, shards := range []int{1, shardCount(DefaultSize)} {
		b.Run(fmt.Sprintf("shards=%d", shards), func(b *testing.B) {
			benchParallel(b, shards)
		})
	}
}

func benchParallel(b *testing.B, shards int) {
	c, keys := newBenchCache(b, shards)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := c.Get(ctx, keys[i%benchKeys]); err != nil {
				b.Error(err)
				return
			}
			i += 7
		}
	})
}
