package main

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	t.Parallel()
	cases := map[string]uint64{
		"zero":          0,
		"exact region":  255,
		"first shifted": 256,
		"odd":           257,
		"microsecond":   1_000,
		"millisecond":   1_234_567,
		"second":        uint64(time.Second),
		"max":           math.MaxUint64,
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			i := bucketOf(v)
			if i < 0 || i >= numBuckets {
				t.Fatalf("bucketOf(%d) = %d, outside [0,%d)", v, i, numBuckets)
			}
			lo, hi := bucketBounds(i)
			if v < lo || v > hi {
				t.Fatalf("bucket %d is [%d,%d], does not hold %d", i, lo, hi, v)
			}
			if width := float64(hi - lo); width > float64(lo)/subCount {
				t.Fatalf("bucket %d [%d,%d] is wider than 1/%d of its value", i, lo, hi, subCount)
			}
		})
	}
}

func TestBucketsContiguous(t *testing.T) {
	t.Parallel()
	var next uint64
	for i := range numBuckets {
		lo, hi := bucketBounds(i)
		if lo != next {
			t.Fatalf("bucket %d starts at %d, want %d", i, lo, next)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d,%d] maps back to %d and %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		next = hi + 1
	}
	if next != 0 { // wrapped past MaxUint64: every value has a bucket
		t.Fatalf("buckets end at %d, want all of uint64", next)
	}
}

func TestQuantile(t *testing.T) {
	t.Parallel()
	// 1µs..1ms in 1µs steps, shuffled: the q-quantile is q·1ms.
	var uniform []time.Duration
	for i := 1; i <= 1000; i++ {
		uniform = append(uniform, time.Duration(i)*time.Microsecond)
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(uniform), func(i, j int) { uniform[i], uniform[j] = uniform[j], uniform[i] })
	// One slow outlier in 1000 shows at p99.9 and not at p99.
	outlier := make([]time.Duration, 1000)
	for i := range outlier {
		outlier[i] = 100 * time.Microsecond
	}
	outlier[500] = 50 * time.Millisecond

	cases := map[string]struct {
		values []time.Duration
		q      float64
		want   time.Duration
	}{
		"empty":            {nil, 0.5, 0},
		"single":           {[]time.Duration{42 * time.Microsecond}, 0.99, 42 * time.Microsecond},
		"uniform p50":      {uniform, 0.5, 500 * time.Microsecond},
		"uniform p99":      {uniform, 0.99, 990 * time.Microsecond},
		"uniform p99.9":    {uniform, 0.999, 999 * time.Microsecond},
		"uniform max":      {uniform, 1, time.Millisecond},
		"uniform min":      {uniform, 0, time.Microsecond},
		"outlier p99":      {outlier, 0.99, 100 * time.Microsecond},
		"outlier p99.9":    {outlier, 0.999, 100 * time.Microsecond},
		"outlier p99.95":   {outlier, 0.9995, 50 * time.Millisecond},
		"negative clamped": {[]time.Duration{-5}, 0.5, 0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var h histogram
			for _, v := range c.values {
				h.record(v)
			}
			got := h.quantile(c.q)
			if diff := math.Abs(float64(got - c.want)); diff > float64(c.want)/subCount {
				t.Fatalf("quantile(%v) = %v, want %v within 1/%d", c.q, got, c.want, subCount)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	t.Parallel()
	var a, b, all histogram
	for i := 1; i <= 2000; i++ {
		d := time.Duration(i) * time.Microsecond
		all.record(d)
		if i%2 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
	}
	var m histogram
	m.merge(&a)
	m.merge(&b)
	m.merge(&histogram{}) // an empty histogram changes nothing
	if m.count() != all.count() || m.min != all.min || m.max != all.max || m.mean() != all.mean() {
		t.Fatalf("merged n=%d min=%d max=%d mean=%v, want n=%d min=%d max=%d mean=%v",
			m.count(), m.min, m.max, m.mean(), all.count(), all.min, all.max, all.mean())
	}
	for _, q := range []float64{0.5, 0.99, 0.999} {
		if m.quantile(q) != all.quantile(q) {
			t.Errorf("quantile(%v) = %v merged, %v recorded at once", q, m.quantile(q), all.quantile(q))
		}
	}
}
