// Package cache keeps live records (groups, users, tokens, provider records)
// in memory in front of a slower backing store. It is an LRU with a TTL per
// entry, one load per key at a time, negative entries for records that are
// gone, stale-if-error serving, and invalidation that a late load cannot undo.
//
// A store that hangs is as harmless as one that is down: a Get waits for
// the refresh of an expired value at most until its caller's deadline (the
// check's, see authz), and a refresh that outlives it marks the store down
// for every cache in front of it (see Health), which then serve their
// last-known-good values at once.
//
// It sits on the authorization hot path: a fresh hit does no I/O and no
// allocation and takes only one of several sharded locks.
package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sync/singleflight"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultSize        = 100_000
	DefaultTTL         = 30 * time.Second
	DefaultNegativeTTL = 5 * time.Second
	DefaultLoadTimeout = 5 * time.Second
	DefaultStaleWait   = 250 * time.Millisecond
)

// ErrInvalidOptions is wrapped by every error New returns for bad arguments;
// the message names the offending field.
var ErrInvalidOptions = errors.New("cache: invalid options")

// LoadFunc loads the current value for key from the backing store. The
// context carries the LoadTimeout deadline and the values (not the
// cancellation) of the caller that started the load.
type LoadFunc[V any] func(ctx context.Context, key string) (V, error)

// Options configures a Cache. The zero value is usable: every zero field
// takes its default.
type Options struct {
	// Size is the maximum number of entries, negative ones included.
	// Defaults to DefaultSize (100000). Entries are spread over up to 16
	// shards with an LRU each, so eviction order is LRU per shard, not
	// global.
	Size int
	// TTL is how long a loaded value is fresh, counted from when its load
	// began. Defaults to DefaultTTL (30s).
	TTL time.Duration
	// NegativeTTL is how long a not-found answer is remembered. Defaults to
	// DefaultNegativeTTL (5s). Only used when IsNotFound is set.
	NegativeTTL time.Duration
	// MaxStale is how long past TTL a value may still be served when a
	// reload fails with an error that is not "not found" (fail static).
	// Zero, the default, never serves stale values.
	MaxStale time.Duration
	// LoadTimeout bounds one load. Defaults to DefaultLoadTimeout (5s).
	LoadTimeout time.Duration
	// StaleWait bounds how long a Get whose context has no deadline waits
	// for the refresh of an expired entry that MaxStale still allows to
	// serve; past it, that entry is served, the refresh finishes in the
	// background and the store counts as down (see Health). A context's
	// deadline takes its place. Defaults to DefaultStaleWait (250ms), below
	// Envoy's usual ext_authz timeout.
	StaleWait time.Duration
	// Health is shared by the caches of one backing store, so that a
	// refresh that hangs in one spares the lookups of all the wait. Nil
	// gives the cache a Health of its own.
	Health *Health
	// IsNotFound tells "the record is gone" apart from other loader
	// errors. Such answers are cached as negative entries for NegativeTTL
	// and replace a positive entry at once. Nil disables negative caching:
	// every error is then an ordinary load error.
	IsNotFound func(error) bool
	// Now is the clock, for tests. Defaults to the monotonic clock behind
	// time.Now.
	Now func() time.Time
}

// Stats holds cumulative counters. Each counter is read atomically, but the
// set is not one snapshot.
type Stats struct {
	Hits         uint64 // fresh positive entries returned
	NegativeHits uint64 // fresh negative entries returned
	Misses       uint64 // Gets that found no fresh entry and went to a load
	Loads        uint64 // loader calls
	LoadErrors   uint64 // loader calls that failed with an error other than not-found
	StaleServes  uint64 // Gets answered with a value past its TTL: its refresh failed or did not answer in time, or the store is down
}

// Cache is an LRU-with-TTL cache of values of type V keyed by string. It is
// safe for concurrent use. Create it with New.
type Cache[V any] struct {
	load   LoadFunc[V]
	opts   Options
	clock  func() time.Duration // time since the cache was created
	seed   maphash.Seed
	shards []shard[V]
	mask   uint64
	group  singleflight.Group
	health *Health

	// mu guards the fields below and orders every store of a load's
	// result against Invalidate and Purge. Only the miss path and the
	// invalidation calls take it, never a hit. Lock order: mu, then a
	// shard's mu.
	mu       sync.Mutex
	seq      uint64                // bumped when a load begins and on every invalidation
	purgedAt uint64                // seq of the latest Purge
	inflight map[string]*keyFlight // keys with loads running, nothing else

	// joined, if set, runs after a Get has joined a load; tests use it to
	// know every caller is waiting before they let the load finish.
	joined func()
	// background are the refreshes nobody waits for (refreshBehind);
	// tests wait for them.
	background sync.WaitGroup

	loads       atomic.Uint64
	loadErrors  atomic.Uint64
	staleServes atomic.Uint64
}

// shard is one lock and LRU. Hit counters sit on the same cache line as the
// lock, which a hit has to take anyway; padding keeps shards off each
// other's lines.
type shard[V any] struct {
	mu      sync.Mutex
	lru     *simplelru.LRU[string, *entry[V]]
	hits    atomic.Uint64
	negHits atomic.Uint64
	misses  atomic.Uint64
	_       [128 - 40]byte // mu 8, lru 8, counters 24; see TestShardSize
}

// entry is immutable once stored, so readers use it outside the shard lock.
type entry[V any] struct {
	val     V
	err     error         // non-nil marks a negative entry
	loaded  time.Duration // clock reading when the load that produced it began
	expires time.Duration // clock reading from which it is no longer fresh
	seq     uint64        // the producing load's seq: a newer entry is never overwritten by an older load
	retryAt time.Duration // a stale entry's next refresh is not tried before this
}

// keyFlight tracks the loads of one key that are running.
type keyFlight struct {
	n             int    // loads running for the key
	invalidatedAt uint64 // seq of the latest Invalidate of the key while loads ran
}

// result is what one shared load hands to all its waiters.
type result[V any] struct {
	val   V
	err   error
	stale bool
}

// maxShards caps lock striping; minPerShard keeps small caches in one shard
// so their LRU order stays exact.
const (
	maxShards   = 16
	minPerShard = 64
)

// New returns a cache that fills itself with load. It reports which field
// is wrong when opts is invalid.
func New[V any](load LoadFunc[V], opts Options) (*Cache[V], error) {
	if load == nil {
		return nil, fmt.Errorf("%w: load function is nil", ErrInvalidOptions)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return newCache(load, opts, shardCount(opts.Size)), nil
}

func (o Options) withDefaults() (Options, error) {
	if o.Size < 0 {
		return o, fmt.Errorf("%w: Size is negative (%d)", ErrInvalidOptions, o.Size)
	}
	for _, d := range []struct {
		name string
		val  time.Duration
	}{
		{"TTL", o.TTL},
		{"NegativeTTL", o.NegativeTTL},
		{"MaxStale", o.MaxStale},
		{"LoadTimeout", o.LoadTimeout},
		{"StaleWait", o.StaleWait},
	} {
		if d.val < 0 {
			return o, fmt.Errorf("%w: %s is negative (%v)", ErrInvalidOptions, d.name, d.val)
		}
	}
	if o.Size == 0 {
		o.Size = DefaultSize
	}
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.NegativeTTL == 0 {
		o.NegativeTTL = DefaultNegativeTTL
	}
	if o.LoadTimeout == 0 {
		o.LoadTimeout = DefaultLoadTimeout
	}
	if o.StaleWait == 0 {
		o.StaleWait = DefaultStaleWait
	}
	if o.Health == nil {
		o.Health = &Health{}
	}
	return o, nil
}

// clockFunc returns a clock that reads the time elapsed since it was made.
// Without an injected clock it reads only the monotonic clock (time.Since),
// which costs half of time.Now: the clock is a good part of a hit.
func clockFunc(now func() time.Time) func() time.Duration {
	if now == nil {
		base := time.Now()
		return func() time.Duration { return time.Since(base) }
	}
	base := now()
	return func() time.Duration { return now().Sub(base) }
}

// shardCount is the largest power of two not above maxShards that leaves
// every shard at least minPerShard entries.
func shardCount(size int) int {
	n := 1
	for n < maxShards && size/(n*2) >= minPerShard {
		n *= 2
	}
	return n
}

func newCache[V any](load LoadFunc[V], opts Options, nShards int) *Cache[V] {
	c := &Cache[V]{
		load:     load,
		opts:     opts,
		clock:    clockFunc(opts.Now),
		seed:     maphash.MakeSeed(),
		shards:   make([]shard[V], nShards),
		mask:     uint64(nShards - 1),
		health:   opts.Health,
		inflight: make(map[string]*keyFlight),
	}
	per := (opts.Size + nShards - 1) / nShards
	for i := range c.shards {
		// NewLRU fails only for a size <= 0, which withDefaults rules out.
		l, err := simplelru.NewLRU[string, *entry[V]](per, nil)
		if err != nil {
			panic(fmt.Sprintf("cache: simplelru.NewLRU(%d): %v", per, err))
		}
		c.shards[i].lru = l
	}
	return c
}

func (c *Cache[V]) shard(key string) *shard[V] {
	if c.mask == 0 {
		return &c.shards[0]
	}
	return &c.shards[maphash.String(c.seed, key)&c.mask]
}

// Get returns the value for key: from the cache while fresh, otherwise from
// a load shared with every concurrent Get of the same key.
//
// A not-found answer (see Options.IsNotFound) is returned as the loader's
// own error, from the load and from the negative entry alike, so errors.Is
// works. Other load errors come back wrapped with the key, unless a value no
// older than TTL+MaxStale is at hand, which is then returned instead.
//
// With such a value at hand, Get waits for its refresh only until ctx's
// deadline (or StaleWait) and then returns the value, and it does not wait
// at all while the store is down (see Health). Without one, if ctx ends
// while waiting, Get returns ctx's error (context.Cause). Either way the
// load carries on for the other waiters and for the cache. A ctx that is
// already done asks for an answer from memory only: Get then returns what
// it holds (fresh, negative, or last-known-good while it may not wait), and
// otherwise ctx's error without starting a load. A fresh hit never looks
// at ctx.
func (c *Cache[V]) Get(ctx context.Context, key string) (V, error) {
	sh := c.shard(key)
	sh.mu.Lock()
	e, ok := sh.lru.Get(key)
	sh.mu.Unlock()
	if ok {
		now := c.clock()
		if now < e.expires {
			if e.err != nil {
				sh.negHits.Add(1)
				var zero V
				return zero, e.err
			}
			sh.hits.Add(1)
			return e.val, nil
		}
		if c.servableStale(e, now) {
			return c.stale(ctx, sh, key, e, now)
		}
	}
	return c.miss(ctx, sh, key, nil)
}

// stale answers with e, expired but still servable, unless the store may be
// waited for.
func (c *Cache[V]) stale(ctx context.Context, sh *shard[V], key string, e *entry[V], now time.Duration) (V, error) {
	switch {
	case now < e.retryAt:
		// A refresh failed (or was started while the store was down) a
		// moment ago: don't ask the store again yet.
	case c.health.Down():
		// Nobody waits on a store that is down; one refresh in the
		// background finds out whether it is back.
		c.refreshBehind(ctx, key, e, now)
	default:
		return c.miss(ctx, sh, key, e)
	}
	c.staleServes.Add(1)
	return e.val, nil
}

// miss waits for a load of key, which it joins or starts, unless ctx is
// done already: nobody would wait for that load.
func (c *Cache[V]) miss(ctx context.Context, sh *shard[V], key string, fallback *entry[V]) (V, error) {
	if err := ctx.Err(); err != nil {
		var zero V
		return zero, fmt.Errorf("load %q: %w", key, context.Cause(ctx))
	}
	sh.misses.Add(1)
	return c.wait(ctx, key, fallback)
}

// refreshBehind starts a refresh of key that nobody waits for, and holds
// off the next one for staleRetry, so that a store that is down gets at
// most one refresh per record and staleRetry. It does nothing if e is no
// longer key's entry (invalidated, or replaced by a newer one).
func (c *Cache[V]) refreshBehind(ctx context.Context, key string, e *entry[V], now time.Duration) {
	sh := c.shard(key)
	sh.mu.Lock()
	cur, ok := sh.lru.Peek(key)
	if ok && cur == e {
		retry := *e
		retry.retryAt = addSat(now, staleRetry)
		sh.lru.Add(key, &retry)
	}
	sh.mu.Unlock()
	if !ok || cur != e {
		return
	}
	key = strings.Clone(key) // see wait
	c.background.Go(func() {
		// Joins the refresh of key that may be running already.
		_, _, _ = c.group.Do(key, func() (any, error) {
			return c.loadAndStore(ctx, key), nil
		})
	})
}

// staleRetry is how long a stale entry is served without a new refresh
// after a refresh failed.
const staleRetry = time.Second

// servableStale reports whether an expired positive entry may still be
// served if its refresh fails: only when MaxStale allows, and not past
// TTL+MaxStale.
func (c *Cache[V]) servableStale(e *entry[V], now time.Duration) bool {
	return c.opts.MaxStale > 0 && e.err == nil && now <= addSat(addSat(e.loaded, c.opts.TTL), c.opts.MaxStale)
}

// wait joins (or starts) the load of key and waits for it or for ctx. With
// a fallback (an expired entry that may still be served), it waits until
// ctx's deadline (StaleWait without one), or until the store is marked
// down, and then serves the fallback, leaving the load to finish in the
// background: a hanging store must not hold checks past Envoy's timeout
// when a last-known-good record is at hand. A load that has not answered
// by then marks the store down, so that other Gets do not wait for it too.
func (c *Cache[V]) wait(ctx context.Context, key string, fallback *entry[V]) (V, error) {
	// The key may be a slice of a larger string (a token id is part of the
	// client's token): the maps and the LRU must not keep that alive.
	key = strings.Clone(key)
	ch := c.group.DoChan(key, func() (any, error) {
		return c.loadAndStore(ctx, key), nil
	})
	if c.joined != nil {
		c.joined()
	}
	var giveUp <-chan time.Time
	var down <-chan struct{}
	if fallback != nil {
		down = c.health.wentDown()
		if _, ok := ctx.Deadline(); !ok {
			t := time.NewTimer(c.opts.StaleWait)
			defer t.Stop()
			giveUp = t.C
		}
	}
	select {
	case r := <-ch:
		res := r.Val.(*result[V])
		if res.stale {
			c.staleServes.Add(1)
		}
		return res.val, res.err
	case <-down:
	case <-giveUp:
		c.health.markDown()
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			c.health.markDown()
		}
		if fallback == nil {
			var zero V
			return zero, fmt.Errorf("load %q: %w", key, context.Cause(ctx))
		}
	}
	c.staleServes.Add(1)
	return fallback.val, nil
}

// loadAndStore runs one load for key and stores its outcome unless key was
// invalidated after the load began.
func (c *Cache[V]) loadAndStore(ctx context.Context, key string) *result[V] {
	seq := c.beginLoad(key)
	started := c.clock()
	// One impatient caller must not fail the load for everyone waiting.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.LoadTimeout)
	defer cancel()
	c.loads.Add(1)
	val, err := c.callLoad(lctx, key)
	notFound := err != nil && c.opts.IsNotFound != nil && c.opts.IsNotFound(err)
	switch {
	case err == nil || notFound:
		c.health.markUp() // the store answered
	case lctx.Err() != nil:
		// It did not answer at all. A store that answers with an
		// error (or a record it cannot decode) is not waited for long.
		c.health.markDown()
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	storable := c.endLoad(key, seq)
	sh := c.shard(key)
	switch {
	case err == nil:
		if storable {
			c.store(sh, key, &entry[V]{val: val, loaded: started, expires: addSat(started, c.opts.TTL), seq: seq})
		}
		return &result[V]{val: val}
	case notFound:
		if storable {
			// Replacing the entry drops any positive one at once.
			c.store(sh, key, &entry[V]{err: err, loaded: started, expires: addSat(started, c.opts.NegativeTTL), seq: seq})
		}
		return &result[V]{err: err}
	default:
		c.loadErrors.Add(1)
		if res := c.staleValue(sh, key); res != nil {
			return res
		}
		return &result[V]{err: fmt.Errorf("load %q: %w", key, err)}
	}
}

// callLoad turns a loader panic into an error: singleflight re-panics
// DoChan panics on a fresh goroutine, which would take the process down.
func (c *Cache[V]) callLoad(ctx context.Context, key string) (val V, err error) {
	defer func() {
		if r := recover(); r != nil {
			var zero V
			val, err = zero, fmt.Errorf("loader panicked: %v", r)
		}
	}()
	return c.load(ctx, key)
}

// beginLoad registers a running load of key and returns its sequence
// number.
func (c *Cache[V]) beginLoad(key string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	f := c.inflight[key]
	if f == nil {
		f = &keyFlight{}
		c.inflight[key] = f
	}
	f.n++
	return c.seq
}

// endLoad unregisters a load begun as seq and reports whether its result
// may be stored: no Invalidate of key and no Purge came after it began.
// c.mu must be held.
//
// It also drops the load from the singleflight group. singleflight would do
// so only after the load function returns, and in that gap a Get following
// an Invalidate could join this finished, pre-invalidation load: Invalidate
// forgets only the loads in c.inflight. If another load of key is still
// running, this one was forgotten already (two run at once only after an
// invalidation), so there is nothing to forget.
func (c *Cache[V]) endLoad(key string, seq uint64) bool {
	f := c.inflight[key]
	ok := f.invalidatedAt < seq && c.purgedAt < seq
	if f.n--; f.n == 0 {
		delete(c.inflight, key)
		c.group.Forget(key)
	}
	return ok
}

// store adds e unless a newer load already stored an entry for key (two
// loads of one key run at once only after an Invalidate). c.mu must be
// held.
func (c *Cache[V]) store(sh *shard[V], key string, e *entry[V]) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old, ok := sh.lru.Peek(key); ok && old.seq > e.seq {
		return
	}
	sh.lru.Add(key, e)
}

// staleValue returns the cached positive value for key if MaxStale allows
// serving it after a failed load, else nil. c.mu must be held.
func (c *Cache[V]) staleValue(sh *shard[V], key string) *result[V] {
	if c.opts.MaxStale == 0 {
		return nil
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.lru.Peek(key)
	now := c.clock()
	if !ok || e.err != nil || now > addSat(addSat(e.loaded, c.opts.TTL), c.opts.MaxStale) {
		return nil
	}
	// Keep serving it, and hold off the next refresh for staleRetry.
	retry := *e
	retry.retryAt = addSat(now, staleRetry)
	sh.lru.Add(key, &retry)
	return &result[V]{val: e.val, stale: now >= e.expires}
}

// Invalidate drops key. A load of key already running when Invalidate is
// called still answers its waiters but does not store its result, and Gets
// after Invalidate start a new load instead of joining it.
func (c *Cache[V]) Invalidate(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	if f := c.inflight[key]; f != nil {
		f.invalidatedAt = c.seq
		c.group.Forget(key)
	}
	sh := c.shard(key)
	sh.mu.Lock()
	sh.lru.Remove(key)
	sh.mu.Unlock()
}

// Purge drops every entry. Loads running when Purge is called do not store
// their results, as with Invalidate.
func (c *Cache[V]) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	c.purgedAt = c.seq
	for key := range c.inflight {
		c.group.Forget(key)
	}
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.lru.Purge()
		sh.mu.Unlock()
	}
}

// Len returns the number of entries held, expired and negative ones
// included.
func (c *Cache[V]) Len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += sh.lru.Len()
		sh.mu.Unlock()
	}
	return n
}

// stats is Stats, for Records.
func (c *Cache[V]) stats() (Stats, bool) { return c.Stats(), true }

// Stats returns the counters accumulated since New.
func (c *Cache[V]) Stats() Stats {
	s := Stats{
		Loads:       c.loads.Load(),
		LoadErrors:  c.loadErrors.Load(),
		StaleServes: c.staleServes.Load(),
	}
	for i := range c.shards {
		sh := &c.shards[i]
		s.Hits += sh.hits.Load()
		s.NegativeHits += sh.negHits.Load()
		s.Misses += sh.misses.Load()
	}
	return s
}

// addSat adds a non-negative d to t, saturating instead of overflowing so
// that a huge TTL means "forever", not "already expired".
func addSat(t, d time.Duration) time.Duration {
	if t > math.MaxInt64-d {
		return math.MaxInt64
	}
	return t + d
}
