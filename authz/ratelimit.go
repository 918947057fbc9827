package authz

import (
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// Rate limits (record.Group.RequestsPerMinute) are token buckets, one per
// token: every application gets its own budget, and one busy token cannot
// starve the others of its group. The buckets live in this replica's
// memory, so with N keyward replicas behind Envoy a token may get up to N
// times its group's limit; Envoy's global rate limit service is the tool
// for an exact limit across replicas.

// maxBurst caps a bucket's size: a minute's worth of requests, but never
// more than this many back to back.
const maxBurst = 1000

// rateLimitersSize bounds the buckets held: one per token that has called
// a limited group recently. Past it the least recently used bucket is
// dropped, and that token starts again with a full bucket when it next
// calls — a token idle that long has refilled its bucket anyway unless
// more than this many tokens are active at once.
const rateLimitersSize = 1 << 16

// limiterKey names a bucket. The limit is part of the key, so a changed
// limit starts a fresh bucket at the new rate rather than adjusting one
// that was sized for the old.
type limiterKey struct {
	tokenID string
	rpm     int
}

// rateLimiters holds the per-token buckets. It is safe for concurrent use.
type rateLimiters struct {
	buckets *lru.Cache[limiterKey, *rate.Limiter]
}

func newRateLimiters(size int) (*rateLimiters, error) {
	buckets, err := lru.New[limiterKey, *rate.Limiter](size)
	if err != nil {
		return nil, err
	}
	return &rateLimiters{buckets: buckets}, nil
}

// allow takes one request from the bucket of tokenID under a limit of rpm
// requests a minute (rpm > 0), at now, and reports whether there was one.
// A bucket refills at rpm/60 requests a second and holds a minute's worth,
// at most maxBurst: a token that has been quiet may send its whole minute's
// budget at once, then one request each 60/rpm seconds.
func (l *rateLimiters) allow(tokenID string, rpm int, now time.Time) bool {
	k := limiterKey{tokenID: tokenID, rpm: rpm}
	lim, ok := l.buckets.Get(k)
	if !ok {
		// Two first requests may race here; PeekOrAdd keeps whichever
		// bucket was stored first, so both draw from the same one.
		lim = rate.NewLimiter(rate.Limit(float64(rpm)/60), min(rpm, maxBurst))
		if prev, found, _ := l.buckets.PeekOrAdd(k, lim); found {
			lim = prev
		}
	}
	return lim.AllowN(now, 1)
}
