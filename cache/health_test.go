package cache

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// deadlineCtx is a context with a deadline that passes when the test says
// so (expire), not by the clock: it then ends with DeadlineExceeded.
type deadlineCtx struct {
	context.Context
	done chan struct{}
	once sync.Once
}

func newDeadlineCtx() *deadlineCtx {
	return &deadlineCtx{Context: context.Background(), done: make(chan struct{})}
}

// Deadline says there is one; when it passes is up to the test.
func (c *deadlineCtx) Deadline() (time.Time, bool) { return time.Now().Add(time.Hour), true }
func (c *deadlineCtx) Done() <-chan struct{}       { return c.done }
func (c *deadlineCtx) expire()                     { c.once.Do(func() { close(c.done) }) }

func (c *deadlineCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// doneCtx is a context that is already done: a Get under it answers from
// memory only.
func doneCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// expiredCache returns a cache over a gated loader, with MaxStale, on the
// given Health, holding "v1" for each key, all expired but servable.
func expiredCache(t *testing.T, h *Health, keys ...string) (*Cache[string], *gatedLoader, <-chan struct{}) {
	t.Helper()
	g, clock := newGatedLoader(), newFakeClock()
	// StaleWait is a hang guard: a Get with a deadline never uses it, and
	// the tests never wait it out.
	c, joined := newJoinCounted(t, g.load, Options{Now: clock.Now, TTL: time.Second, MaxStale: time.Hour, StaleWait: time.Hour, Health: h, IsNotFound: isNotFound})
	for _, key := range keys {
		get := goGet(t.Context(), c, key)
		g.next(t).reply <- gatedReply{val: "v1"}
		if r := recv(t, get); r.val != "v1" {
			t.Fatalf("first Get(%s) = %q, %v", key, r.val, r.err)
		}
		waitJoins(t, joined, 1)
	}
	clock.Advance(2 * time.Second)
	return c, g, joined
}

func wantStale(t *testing.T, what string, r getResult) {
	t.Helper()
	if r.val != "v1" || r.err != nil {
		t.Errorf("%s: Get = %q, %v; want the last-known-good v1", what, r.val, r.err)
	}
}

// TestRefreshPastDeadlineMarksStoreDown: a Get waits for the refresh of an
// expired value until its deadline, then serves the value and marks the
// store down; a Get of another cache on the same store, with no deadline
// of its own, then serves its expired value without waiting at all.
func TestRefreshPastDeadlineMarksStoreDown(t *testing.T) {
	h := &Health{}
	tokens, tokenLoads, joined := expiredCache(t, h, "t")
	users, userLoads, _ := expiredCache(t, h, "u")

	ctx := newDeadlineCtx()
	get := goGet(ctx, tokens, "t")
	refresh := tokenLoads.next(t) // hangs until answered
	waitJoins(t, joined, 1)
	if h.Down() {
		t.Fatal("store down before any deadline passed")
	}
	ctx.expire()
	wantStale(t, "at the deadline", recv(t, get))
	if !h.Down() {
		t.Fatal("store not down after a refresh outlived the deadline")
	}

	// No deadline and StaleWait an hour: only the mark lets this return.
	wantStale(t, "other cache, store down", recv(t, goGet(context.Background(), users, "u")))
	// ... and it refreshes behind; the store answers again.
	userLoads.next(t).reply <- gatedReply{val: "v2"}
	users.background.Wait()
	if h.Down() {
		t.Error("store still down after a load succeeded")
	}
	if v, err := users.Get(context.Background(), "u"); v != "v2" || err != nil {
		t.Errorf("after the refresh: %q, %v; want v2", v, err)
	}
	refresh.reply <- gatedReply{val: "v2"}
}

// TestStoreDownReleasesWaiters: Gets already waiting for a refresh, with a
// value to fall back on, are released as soon as another marks the store
// down; a Get without one keeps waiting for the store.
func TestStoreDownReleasesWaiters(t *testing.T) {
	h := &Health{}
	c, g, joined := expiredCache(t, h, "a", "b")
	first := newDeadlineCtx()
	getA := goGet(first, c, "a")
	callA := g.next(t)
	getB := goGet(context.Background(), c, "b") // no deadline: StaleWait, an hour
	callB := g.next(t)
	getCold := goGet(context.Background(), c, "cold")
	callCold := g.next(t)
	waitJoins(t, joined, 3)

	first.expire()
	wantStale(t, "a, whose deadline passed", recv(t, getA))
	wantStale(t, "b, released by the mark", recv(t, getB))
	callCold.reply <- gatedReply{val: "c1"}
	if r := recv(t, getCold); r.val != "c1" || r.err != nil {
		t.Errorf("cold Get while the store is down: %q, %v; want it to wait for the load", r.val, r.err)
	}
	if h.Down() {
		t.Error("store still down after a load succeeded")
	}
	callA.reply <- gatedReply{err: errDown}
	callB.reply <- gatedReply{err: errDown}
}

// TestColdMissPastDeadline: without a value to fall back on, a Get fails
// with its context's error at the deadline, and marks the store down.
func TestColdMissPastDeadline(t *testing.T) {
	h := &Health{}
	c, g, joined := expiredCache(t, h)
	ctx := newDeadlineCtx()
	get := goGet(ctx, c, "cold")
	call := g.next(t)
	waitJoins(t, joined, 1)
	ctx.expire()
	if r := recv(t, get); !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("cold Get at the deadline: %q, %v; want DeadlineExceeded", r.val, r.err)
	}
	if !h.Down() {
		t.Error("store not down after a load outlived the deadline")
	}
	call.reply <- gatedReply{val: "late"}
}

// TestStoreDownRefreshesBehind: while the store is down, an expired value
// is served at once, with at most one refresh per staleRetry; the refresh
// that succeeds brings the store back up and the new value in.
func TestStoreDownRefreshesBehind(t *testing.T) {
	store, clock := newFakeStore(), newFakeClock()
	c, err := New(store.load, Options{Now: clock.Now, TTL: time.Second, MaxStale: time.Hour, IsNotFound: isNotFound})
	if err != nil {
		t.Fatal(err)
	}
	store.set("g", "v1", nil)
	if v, err := c.Get(t.Context(), "g"); v != "v1" || err != nil {
		t.Fatalf("first Get: %q, %v", v, err)
	}
	store.set("g", "", errDown)
	c.health.markDown() // as a refresh of another record past its deadline does
	clock.Advance(2 * time.Second)
	loaded := c.Stats().Loads
	steps := []struct {
		advance time.Duration
		loads   uint64 // loads of g so far
	}{
		{0, 1},                      // served, one refresh behind (it fails)
		{0, 1}, {staleRetry / 2, 1}, // no other refresh within staleRetry
		{staleRetry / 2, 2}, // then one more
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		if v, err := c.Get(context.Background(), "g"); v != "v1" || err != nil {
			t.Fatalf("step %d: %q, %v; want v1 at once", i, v, err)
		}
		c.background.Wait()
		if got := c.Stats().Loads - loaded; got != s.loads {
			t.Errorf("step %d: %d refreshes of g, want %d", i, got, s.loads)
		}
	}
	store.set("g", "v2", nil)
	clock.Advance(staleRetry)
	if v, err := c.Get(context.Background(), "g"); v != "v1" || err != nil {
		t.Fatalf("store back, before the refresh: %q, %v; want v1", v, err)
	}
	c.background.Wait()
	if c.health.Down() {
		t.Error("store still down after a refresh succeeded")
	}
	if v, err := c.Get(context.Background(), "g"); v != "v2" || err != nil {
		t.Errorf("after the refresh: %q, %v; want v2", v, err)
	}
}

// TestDoneContextAnswersFromMemory: under a context that is already done,
// Get answers what it holds and starts no load.
func TestDoneContextAnswersFromMemory(t *testing.T) {
	tests := map[string]struct {
		key     string
		down    bool
		want    string
		wantErr error
	}{
		"fresh":              {key: "fresh", want: "v1"},
		"negative":           {key: "gone", wantErr: errNotFound},
		"expired, store up":  {key: "old", wantErr: context.Canceled},
		"expired, down":      {key: "old", down: true, want: "v1"},
		"never seen":         {key: "new", wantErr: context.Canceled},
		"never seen, down":   {key: "new", down: true, wantErr: context.Canceled},
		"expired, too stale": {key: "ancient", down: true, wantErr: context.Canceled},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			store, clock := newFakeStore(), newFakeClock()
			c, err := New(store.load, Options{Now: clock.Now, TTL: time.Minute, MaxStale: time.Hour, IsNotFound: isNotFound})
			if err != nil {
				t.Fatal(err)
			}
			store.set("ancient", "v1", nil)
			_, _ = c.Get(t.Context(), "ancient")
			clock.Advance(time.Hour + time.Second)
			store.set("old", "v1", nil)
			store.set("gone", "", errNotFound)
			_, _ = c.Get(t.Context(), "old")
			clock.Advance(time.Minute) // old expired, ancient past MaxStale
			store.set("fresh", "v1", nil)
			_, _ = c.Get(t.Context(), "fresh")
			_, _ = c.Get(t.Context(), "gone")
			if tc.down {
				c.health.markDown()
			}
			before := c.Stats().Loads
			got, err := c.Get(doneCtx(), tc.key)
			c.background.Wait()
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("Get = %q, %v; want %v", got, err, tc.wantErr)
				}
				if loads := c.Stats().Loads - before; loads != 0 {
					t.Errorf("%d loads started under a done context", loads)
				}
			case got != tc.want || err != nil:
				t.Errorf("Get = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestStoreDownKeepsInvalidation: while the store is down, an invalidated
// value is never served stale, and a record the store reports gone is
// dropped at once (the store answered, so it is up again).
func TestStoreDownKeepsInvalidation(t *testing.T) {
	h := &Health{}
	c, g, _ := expiredCache(t, h, "inv", "gone")
	h.markDown()
	c.Invalidate("inv")
	if _, err := c.Get(doneCtx(), "inv"); !errors.Is(err, context.Canceled) {
		t.Errorf("invalidated, store down: %v; want nothing from memory", err)
	}
	// The refresh behind finds the record gone.
	wantStale(t, "gone, before its refresh", recv(t, goGet(context.Background(), c, "gone")))
	g.next(t).reply <- gatedReply{err: errNotFound}
	c.background.Wait()
	if _, err := c.Get(doneCtx(), "gone"); !errors.Is(err, errNotFound) {
		t.Errorf("after the store said gone: %v; want not found", err)
	}
	if h.Down() {
		t.Error("store still down after it answered")
	}
}
