package main

import (
	"math"
	"math/bits"
	"time"
)

// The histogram is log-linear like HdrHistogram: values below 2·subCount
// nanoseconds get a bucket each, and every power of two above is cut into
// subCount buckets, so a reported value is within 1/subCount (0.8%) of the
// true one whatever its magnitude, and recording is a few shifts and an
// increment with no allocation.
const (
	subBits  = 7
	subCount = 1 << subBits
	// numBuckets covers every uint64: the largest shift is 64-(subBits+1).
	numBuckets = (64-subBits-1)*subCount + 2*subCount
)

// histogram records latencies in nanoseconds. The zero value is ready to
// use. It is not safe for concurrent use: each load goroutine owns one and
// they are merged at the end.
type histogram struct {
	counts   [numBuckets]uint64
	n        uint64
	min, max uint64
	sum      float64
}

// bucketOf returns the bucket index of v.
func bucketOf(v uint64) int {
	if v < 2*subCount {
		return int(v)
	}
	shift := bits.Len64(v) - (subBits + 1)
	return shift*subCount + int(v>>shift)
}

// bucketBounds returns the smallest and largest values that fall in bucket
// i.
func bucketBounds(i int) (lo, hi uint64) {
	if i < 2*subCount {
		return uint64(i), uint64(i)
	}
	shift := i/subCount - 1
	top := uint64(i - shift*subCount)
	lo = top << shift
	return lo, lo + (uint64(1) << shift) - 1
}

// record adds one latency.
func (h *histogram) record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	h.max = max(h.max, v)
	h.n++
	h.sum += float64(v)
}

// merge adds o's records to h.
func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// count returns the number of recorded values.
func (h *histogram) count() uint64 { return h.n }

// mean returns the mean latency, 0 when empty.
func (h *histogram) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// quantile returns the latency at quantile q (0..1): the largest value of
// the bucket that holds the ceil(q·n)-th smallest record, clamped to the
// recorded maximum, as HdrHistogram reports it. It returns 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := bucketBounds(i)
			return time.Duration(min(max(hi, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
