package authz

import (
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// Rate limits (record.Group.RequestsPerMinute) are token buckets, one per
// user and group: all of a user's tokens in the group draw from one
// budget, so that making new tokens or rotating them does not multiply
// it, and one busy user cannot starve the others of the group. The
// buckets live in this replica's memory, so with N keyward replicas behind
// Envoy a user may get up to N times their group's limit; Envoy's global
// rate limit service is the tool for an exact limit across replicas.

// maxBurst caps a bucket's size: a minute's worth of requests, but never
// more than this many back to back.
const maxBurst = 1000

// rateLimitersSize bounds the buckets held: one per user that has called
// a limited group recently. Past it the least recently used bucket is
// dropped, and that user starts again with a full bucket when they next
// call — a user idle that long has refilled their bucket anyway unless
// more than this many users are active at once.
const rateLimitersSize = 1 << 16

// limiterKey names a bucket. The limit is part of the key, so a changed
// limit starts a fresh bucket at the new rate rather than adjusting one
// that was sized for the old.
type limiterKey struct {
	user, group string
	rpm         int
}

// rateLimiters holds the per-user buckets. It is safe for concurrent use.
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

// allow takes one request from the bucket of user in group under a limit
// of rpm requests a minute (rpm > 0), at now, and reports whether there
// was one. A bucket refills at rpm/60 requests a second and holds a
// minute's worth, at most maxBurst: a user who has been quiet may send
// their whole minute's budget at once, then one request each 60/rpm
// seconds.
func (l *rateLimiters) allow(user, group string, rpm int, now time.Time) bool {
	k := limiterKey{user: user, group: group, rpm: rpm}
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
