package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

var (
	errNotFound = errors.New("not found")
	errDown     = errors.New("store down")
)

func isNotFound(err error) bool { return errors.Is(err, errNotFound) }

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
}

// fakeStore answers loads from a map of values and errors.
type fakeStore struct {
	mu   sync.Mutex
	vals map[string]string
	errs map[string]error
}

func newFakeStore() *fakeStore {
	return &fakeStore{vals: map[string]string{}, errs: map[string]error{}}
}

func (s *fakeStore) set(key, val string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vals[key], s.errs[key] = val, err
}

func (s *fakeStore) load(_ context.Context, key string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.errs[key]; err != nil {
		return "", err
	}
	return s.vals[key], nil
}

func TestNewValidatesOptions(t *testing.T) {
	load := func(context.Context, string) (int, error) { return 0, nil }
	tests := map[string]struct {
		load  LoadFunc[int]
		opts  Options
		field string // "" means valid
	}{
		"zero options":         {load: load},
		"all set":              {load: load, opts: Options{Size: 1, TTL: time.Second, NegativeTTL: time.Second, MaxStale: time.Minute, LoadTimeout: time.Second}},
		"nil load":             {field: "load function"},
		"negative Size":        {load: load, opts: Options{Size: -1}, field: "Size"},
		"negative TTL":         {load: load, opts: Options{TTL: -time.Second}, field: "TTL"},
		"negative NegativeTTL": {load: load, opts: Options{NegativeTTL: -1}, field: "NegativeTTL"},
		"negative MaxStale":    {load: load, opts: Options{MaxStale: -1}, field: "MaxStale"},
		"negative LoadTimeout": {load: load, opts: Options{LoadTimeout: -1}, field: "LoadTimeout"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := New(tc.load, tc.opts)
			if tc.field == "" {
				if err != nil || c == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("New error = %v, want ErrInvalidOptions", err)
			}
			if !strings.Contains(err.Error(), tc.field+" ") {
				t.Errorf("New error %q does not name %s", err, tc.field)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	c, err := New(newFakeStore().load, Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := c.opts
	if o.Size != DefaultSize || o.TTL != DefaultTTL || o.NegativeTTL != DefaultNegativeTTL ||
		o.LoadTimeout != DefaultLoadTimeout || o.MaxStale != 0 {
		t.Errorf("defaults = %+v", o)
	}
	if len(c.shards) != maxShards {
		t.Errorf("shards = %d, want %d", len(c.shards), maxShards)
	}
}

// step is one Get of key "g" in a scenario.
type step struct {
	advance time.Duration // moved before the Get
	setVal  string        // if setVal or setErr is set, the store's answer changes
	setErr  error
	want    string
	wantErr error // errors.Is target; nil means success
	loads   uint64
}

func TestGetScenarios(t *testing.T) {
	tests := map[string]struct {
		opts  Options
		steps []step
		stats Stats
	}{
		"fresh hit then reload after TTL": {
			steps: []step{
				{setVal: "v1", want: "v1", loads: 1},
				{advance: 29 * time.Second, want: "v1", loads: 1},
				{setVal: "v2", want: "v1", loads: 1}, // still fresh: the change is not seen yet
				{advance: time.Second, want: "v2", loads: 2},
			},
			stats: Stats{Hits: 2, Misses: 2, Loads: 2},
		},
		"not found cached for NegativeTTL": {
			opts: Options{IsNotFound: isNotFound},
			steps: []step{
				{setErr: errNotFound, wantErr: errNotFound, loads: 1},
				{advance: 4 * time.Second, wantErr: errNotFound, loads: 1},
				{setVal: "v1", wantErr: errNotFound, loads: 1},
				{advance: time.Second, want: "v1", loads: 2},
			},
			stats: Stats{NegativeHits: 2, Misses: 2, Loads: 2},
		},
		"not found replaces positive entry and is never served stale": {
			opts: Options{IsNotFound: isNotFound, MaxStale: time.Hour},
			steps: []step{
				{setVal: "v1", want: "v1", loads: 1},
				{advance: 30 * time.Second, setErr: errNotFound, wantErr: errNotFound, loads: 2},
				{wantErr: errNotFound, loads: 2},
				{setErr: errDown, advance: 5 * time.Second, wantErr: errDown, loads: 3}, // v1 is gone: nothing stale to serve
			},
			stats: Stats{NegativeHits: 1, Misses: 3, Loads: 3, LoadErrors: 1},
		},
		"without IsNotFound not found is a plain uncached error": {
			steps: []step{
				{setErr: errNotFound, wantErr: errNotFound, loads: 1},
				{wantErr: errNotFound, loads: 2},
			},
			stats: Stats{Misses: 2, Loads: 2, LoadErrors: 2},
		},
		"stale within MaxStale, error beyond": {
			opts: Options{IsNotFound: isNotFound, MaxStale: time.Minute},
			steps: []step{
				{setVal: "v1", want: "v1", loads: 1},
				{advance: 30 * time.Second, setErr: errDown, want: "v1", loads: 2},
				{advance: time.Minute, want: "v1", loads: 3}, // exactly TTL+MaxStale old
				{advance: time.Nanosecond, wantErr: errDown, loads: 4},
				{setVal: "v2", want: "v2", loads: 5},
				{want: "v2", loads: 5},
			},
			stats: Stats{Hits: 1, Misses: 5, Loads: 5, LoadErrors: 3, StaleServes: 2},
		},
		"MaxStale zero never serves stale": {
			steps: []step{
				{setVal: "v1", want: "v1", loads: 1},
				{advance: 30 * time.Second, setErr: errDown, wantErr: errDown, loads: 2},
			},
			stats: Stats{Misses: 2, Loads: 2, LoadErrors: 1},
		},
		"huge TTL does not overflow": {
			opts: Options{TTL: time.Duration(1<<63 - 1), MaxStale: time.Duration(1<<63 - 1)},
			steps: []step{
				{setVal: "v1", want: "v1", loads: 1},
				{advance: 100 * 365 * 24 * time.Hour, want: "v1", loads: 1},
			},
			stats: Stats{Hits: 1, Misses: 1, Loads: 1},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			store, clock := newFakeStore(), newFakeClock()
			tc.opts.Now = clock.Now
			c, err := New(store.load, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.steps {
				clock.Advance(s.advance)
				if s.setVal != "" || s.setErr != nil {
					store.set("g", s.setVal, s.setErr)
				}
				got, err := c.Get(t.Context(), "g")
				c.background.Wait() // a refresh while the store is down
				checkResult(t, fmt.Sprintf("step %d", i), c, got, err, s.want, s.wantErr)
				if loads := c.Stats().Loads; loads != s.loads {
					t.Errorf("step %d: loads = %d, want %d", i, loads, s.loads)
				}
			}
			if got := c.Stats(); got != tc.stats {
				t.Errorf("stats = %+v, want %+v", got, tc.stats)
			}
		})
	}
}

// checkResult checks one Get: a not-found answer must be the loader's own
// error, any other error must be wrapped with the key.
func checkResult(t *testing.T, what string, c *Cache[string], got string, err error, want string, wantErr error) {
	t.Helper()
	switch {
	case wantErr == nil:
		if err != nil || got != want {
			t.Errorf("%s: Get = %q, %v; want %q", what, got, err, want)
		}
	case c.opts.IsNotFound != nil && c.opts.IsNotFound(wantErr):
		if err != wantErr {
			t.Errorf("%s: Get error = %v, want the loader's %v", what, err, wantErr)
		}
	default:
		if !errors.Is(err, wantErr) || !strings.Contains(err.Error(), `load "g"`) {
			t.Errorf("%s: Get error = %v, want %v wrapped with the key", what, err, wantErr)
		}
	}
}

// gatedLoader hands every load to the test, which answers when it likes.
type gatedLoader struct {
	calls chan *gatedCall
}

type gatedCall struct {
	ctx   context.Context
	key   string
	reply chan gatedReply
}

type gatedReply struct {
	val string
	err error
}

func newGatedLoader() *gatedLoader { return &gatedLoader{calls: make(chan *gatedCall)} }

func (g *gatedLoader) load(ctx context.Context, key string) (string, error) {
	call := &gatedCall{ctx: ctx, key: key, reply: make(chan gatedReply)}
	g.calls <- call
	r := <-call.reply
	return r.val, r.err
}

// next waits for the next load to start.
func (g *gatedLoader) next(t *testing.T) *gatedCall {
	t.Helper()
	select {
	case call := <-g.calls:
		return call
	case <-time.After(5 * time.Second):
		t.Fatal("no load started")
		return nil
	}
}

type getResult struct {
	val string
	err error
}

// goGet runs Get on its own goroutine and returns where its result lands.
func goGet(ctx context.Context, c *Cache[string], key string) <-chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		v, err := c.Get(ctx, key)
		ch <- getResult{v, err}
	}()
	return ch
}

func recv(t *testing.T, ch <-chan getResult) getResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("Get did not return")
		return getResult{}
	}
}

// newJoinCounted returns a cache whose joins (Gets waiting on a load) are
// reported on the returned channel.
func newJoinCounted(t *testing.T, load LoadFunc[string], opts Options) (*Cache[string], <-chan struct{}) {
	t.Helper()
	c, err := New(load, opts)
	if err != nil {
		t.Fatal(err)
	}
	joined := make(chan struct{}, 1024)
	c.joined = func() { joined <- struct{}{} }
	return c, joined
}

func waitJoins(t *testing.T, joined <-chan struct{}, n int) {
	t.Helper()
	for range n {
		select {
		case <-joined:
		case <-time.After(5 * time.Second):
			t.Fatal("Gets did not join the load")
		}
	}
}

func TestConcurrentGetsShareOneLoad(t *testing.T) {
	const n = 32
	var loads atomic.Int32
	release := make(chan struct{})
	load := func(context.Context, string) (string, error) {
		loads.Add(1)
		<-release
		return "v", nil
	}
	c, joined := newJoinCounted(t, load, Options{Now: newFakeClock().Now})
	results := make([]<-chan getResult, n)
	for i := range results {
		results[i] = goGet(t.Context(), c, "g")
	}
	waitJoins(t, joined, n) // all n are waiting while the load is blocked
	close(release)
	for _, ch := range results {
		if r := recv(t, ch); r.val != "v" || r.err != nil {
			t.Errorf("Get = %q, %v", r.val, r.err)
		}
	}
	if got := loads.Load(); got != 1 {
		t.Errorf("loads = %d, want 1", got)
	}
	if s := c.Stats(); s.Misses != n || s.Loads != 1 {
		t.Errorf("stats = %+v, want %d misses and 1 load", s, n)
	}
}

func TestCancelledWaiterDoesNotFailTheLoad(t *testing.T) {
	g := newGatedLoader()
	c, joined := newJoinCounted(t, g.load, Options{Now: newFakeClock().Now})

	// The impatient caller starts the load, so the load runs on its context.
	ctx, cancel := context.WithCancel(t.Context())
	impatient := goGet(ctx, c, "g")
	call := g.next(t)
	patient := goGet(t.Context(), c, "g")
	waitJoins(t, joined, 2)

	cancel()
	if r := recv(t, impatient); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled Get = %q, %v; want context.Canceled", r.val, r.err)
	}
	if err := call.ctx.Err(); err != nil {
		t.Fatalf("load context ended with its first caller: %v", err)
	}
	if _, ok := call.ctx.Deadline(); !ok {
		t.Error("load context has no LoadTimeout deadline")
	}
	call.reply <- gatedReply{val: "v"}
	if r := recv(t, patient); r.val != "v" || r.err != nil {
		t.Errorf("patient Get = %q, %v", r.val, r.err)
	}
	if v, err := c.Get(t.Context(), "g"); v != "v" || err != nil || c.Stats().Loads != 1 {
		t.Errorf("after load: Get = %q, %v, loads %d; want a cached v", v, err, c.Stats().Loads)
	}
}

func TestGetWithDoneContext(t *testing.T) {
	c, err := New(newFakeStore().load, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Get(ctx, "g"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get = %v, want context.Canceled", err)
	}
	if loads := c.Stats().Loads; loads != 0 {
		t.Errorf("loads = %d: a load started for a caller already gone", loads)
	}
}

func TestLoadTimeout(t *testing.T) {
	clock := newFakeClock()
	var calls atomic.Int32
	load := func(ctx context.Context, _ string) (string, error) {
		if calls.Add(1) == 1 {
			return "v1", nil
		}
		<-ctx.Done() // a store that hangs
		return "", ctx.Err()
	}
	tests := map[string]struct {
		maxStale time.Duration
		want     string
		wantErr  error
	}{
		"error without MaxStale": {wantErr: context.DeadlineExceeded},
		"stale with MaxStale":    {maxStale: time.Minute, want: "v1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			calls.Store(0)
			c, err := New(load, Options{Now: clock.Now, LoadTimeout: 20 * time.Millisecond, MaxStale: tc.maxStale})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Get(t.Context(), "g"); err != nil {
				t.Fatal(err)
			}
			clock.Advance(DefaultTTL)
			got, err := c.Get(t.Context(), "g")
			checkResult(t, "after TTL", c, got, err, tc.want, tc.wantErr)
			if !c.health.Down() {
				t.Error("store not down after a load ran out of LoadTimeout")
			}
		})
	}
}

func TestLoaderPanicIsAnError(t *testing.T) {
	var calls atomic.Int32
	load := func(context.Context, string) (string, error) {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		return "v", nil
	}
	c, err := New(load, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(t.Context(), "g"); err == nil || !strings.Contains(err.Error(), "panicked: boom") {
		t.Errorf("Get after panic = %v", err)
	}
	if v, err := c.Get(t.Context(), "g"); v != "v" || err != nil {
		t.Errorf("Get = %q, %v", v, err)
	}
}

// TestInvalidateRacingLoad checks that a load begun before an invalidation
// never puts its older answer back into the cache.
func TestInvalidateRacingLoad(t *testing.T) {
	invalidations := map[string]func(*Cache[string]){
		"Invalidate": func(c *Cache[string]) { c.Invalidate("g") },
		"Purge":      func(c *Cache[string]) { c.Purge() },
	}
	orders := map[string]bool{"old load ends first": true, "new load ends first": false}
	for iname, invalidate := range invalidations {
		for oname, oldFirst := range orders {
			t.Run(iname+"/"+oname, func(t *testing.T) {
				g := newGatedLoader()
				c, err := New(g.load, Options{Now: newFakeClock().Now})
				if err != nil {
					t.Fatal(err)
				}
				oldGet := goGet(t.Context(), c, "g")
				oldCall := g.next(t)
				invalidate(c)
				// A Get after the invalidation must not join the old load.
				newGet := goGet(t.Context(), c, "g")
				newCall := g.next(t)
				if oldFirst {
					oldCall.reply <- gatedReply{val: "old"}
					newCall.reply <- gatedReply{val: "new"}
				} else {
					newCall.reply <- gatedReply{val: "new"}
					oldCall.reply <- gatedReply{val: "old"}
				}
				if r := recv(t, oldGet); r.val != "old" || r.err != nil {
					t.Errorf("old waiter got %q, %v; want its own load's answer", r.val, r.err)
				}
				if r := recv(t, newGet); r.val != "new" || r.err != nil {
					t.Errorf("new waiter got %q, %v", r.val, r.err)
				}
				if v, err := c.Get(t.Context(), "g"); v != "new" || err != nil {
					t.Errorf("cached value = %q, %v; want new", v, err)
				}
				if loads := c.Stats().Loads; loads != 2 {
					t.Errorf("loads = %d, want 2", loads)
				}
			})
		}
	}
}

func TestInvalidateDuringLoadWithoutNewGet(t *testing.T) {
	tests := map[string]struct {
		invalidate func(*Cache[string])
		stored     bool
	}{
		"same key":  {invalidate: func(c *Cache[string]) { c.Invalidate("g") }},
		"Purge":     {invalidate: func(c *Cache[string]) { c.Purge() }},
		"other key": {invalidate: func(c *Cache[string]) { c.Invalidate("h") }, stored: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := newGatedLoader()
			c, err := New(g.load, Options{Now: newFakeClock().Now})
			if err != nil {
				t.Fatal(err)
			}
			get := goGet(t.Context(), c, "g")
			call := g.next(t)
			tc.invalidate(c)
			call.reply <- gatedReply{val: "old"}
			if r := recv(t, get); r.val != "old" {
				t.Errorf("waiter got %q, %v", r.val, r.err)
			}
			if got := c.Len(); got != map[bool]int{true: 1, false: 0}[tc.stored] {
				t.Errorf("Len = %d, stored = %v", got, tc.stored)
			}
			if !tc.stored {
				// The next Get must go to the store again.
				next := goGet(t.Context(), c, "g")
				g.next(t).reply <- gatedReply{val: "new"}
				if r := recv(t, next); r.val != "new" {
					t.Errorf("Get = %q, %v; want new", r.val, r.err)
				}
			}
		})
	}
}

func TestInvalidateDropsEntries(t *testing.T) {
	store := newFakeStore()
	c, err := New(store.load, Options{Now: newFakeClock().Now, IsNotFound: isNotFound})
	if err != nil {
		t.Fatal(err)
	}
	store.set("g", "v1", nil)
	store.set("gone", "", errNotFound)
	for _, key := range []string{"g", "gone"} {
		_, _ = c.Get(t.Context(), key)
	}
	store.set("g", "v2", nil)
	store.set("gone", "back", nil)
	c.Invalidate("g")
	c.Invalidate("gone")
	for key, want := range map[string]string{"g": "v2", "gone": "back"} {
		if v, err := c.Get(t.Context(), key); v != want || err != nil {
			t.Errorf("Get(%q) = %q, %v; want %q", key, v, err, want)
		}
	}
	c.Purge()
	if c.Len() != 0 {
		t.Errorf("Len after Purge = %d", c.Len())
	}
}

func TestLRUEviction(t *testing.T) {
	store := newFakeStore()
	c, err := New(store.load, Options{Size: 2, Now: newFakeClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"a", "b", "a", "c"} { // "a" is used again, so "b" is oldest
		_, _ = c.Get(t.Context(), key)
	}
	if c.Len() != 2 {
		t.Errorf("Len = %d, want 2", c.Len())
	}
	before := c.Stats().Loads
	_, _ = c.Get(t.Context(), "a")
	_, _ = c.Get(t.Context(), "b")
	if got := c.Stats().Loads - before; got != 1 {
		t.Errorf("loads for a and b = %d, want 1 (only b was evicted)", got)
	}
}

func TestShardCount(t *testing.T) {
	tests := []struct{ size, want int }{
		{1, 1}, {127, 1}, {128, 2}, {256, 4}, {1023, 8}, {1024, 16}, {DefaultSize, 16}, {1 << 30, 16},
	}
	for _, tc := range tests {
		if got := shardCount(tc.size); got != tc.want {
			t.Errorf("shardCount(%d) = %d, want %d", tc.size, got, tc.want)
		}
	}
}

func TestShardSize(t *testing.T) {
	if got := unsafe.Sizeof(shard[string]{}); got != 128 {
		t.Errorf("shard is %d bytes, want 128: fix its padding", got)
	}
}

// TestInvalidationIsNeverUndone hammers one cache from several goroutines:
// after a writer bumps a key's version and invalidates it, its next Get must
// see at least that version, however other loads and purges interleave.
func TestInvalidationIsNeverUndone(t *testing.T) {
	const (
		writers = 8
		rounds  = 300
		keys    = 4
	)
	var versions [keys]atomic.Int64
	load := func(_ context.Context, key string) (int64, error) {
		var i int
		if _, err := fmt.Sscanf(key, "k%d", &i); err != nil {
			return 0, err
		}
		return versions[i].Load(), nil
	}
	c, err := New(load, Options{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for r := range rounds {
				i := (w + r) % keys
				key := fmt.Sprintf("k%d", i)
				if r%50 == 0 {
					c.Purge()
				}
				written := versions[i].Add(1)
				c.Invalidate(key)
				got, err := c.Get(t.Context(), key)
				if err != nil || got < written {
					t.Errorf("Get(%s) after writing %d = %d, %v", key, written, got, err)
					return
				}
				_, _ = c.Get(t.Context(), fmt.Sprintf("k%d", (i+1)%keys))
			}
		})
	}
	wg.Wait()
}

// TestStaleWaitWithoutDeadline: a Get whose context has no deadline waits
// for the refresh of an expired value at most StaleWait, then serves it and
// marks the store down.
func TestStaleWaitWithoutDeadline(t *testing.T) {
	g, clock := newGatedLoader(), newFakeClock()
	c, err := New(g.load, Options{Now: clock.Now, TTL: time.Second, MaxStale: time.Minute, StaleWait: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	get := goGet(context.Background(), c, "k")
	g.next(t).reply <- gatedReply{val: "v1"}
	if r := recv(t, get); r.val != "v1" {
		t.Fatalf("first Get: %q, %v", r.val, r.err)
	}
	clock.Advance(2 * time.Second)
	get = goGet(context.Background(), c, "k")
	refresh := g.next(t) // hangs: only StaleWait lets the Get return
	if r := recv(t, get); r.val != "v1" || r.err != nil {
		t.Fatalf("Get on a hanging store: %q, %v; want the stale value after StaleWait", r.val, r.err)
	}
	if !c.health.Down() {
		t.Error("store not down after a refresh outlived StaleWait")
	}
	refresh.reply <- gatedReply{err: errDown}
	waitUntil(t, func() bool { return c.Stats().LoadErrors == 1 })
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
