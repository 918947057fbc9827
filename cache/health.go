package cache

import (
	"sync"
	"sync/atomic"
)

// Health remembers whether the backing store answers, for every cache in
// front of it. A store that hangs answers nothing, not even an error, for
// as long as a load may take: without this, every lookup of an expired
// record would wait on it again. Once one refresh has not answered within
// its caller's deadline (or a load within LoadTimeout), the store counts
// as down:
// Gets serve their last-known-good values at once (within MaxStale), Gets
// already waiting for a refresh are released to do the same, and each such
// record is refreshed in the background at most once a second. The
// first load that succeeds (or finds a record gone: the store answered)
// counts it as up again. Lookups without a value to fall back on still
// wait for the store, within their caller's deadline.
//
// The zero value is a store that answers. A Health is safe for concurrent
// use; share one among the caches of one store (Options.Health).
type Health struct {
	down atomic.Bool
	mu   sync.Mutex
	// downCh is closed when the store is marked down, and replaced by an
	// open one when it is up again; nil until first needed.
	downCh chan struct{}
}

// Down reports whether the store counts as down.
func (h *Health) Down() bool { return h.down.Load() }

// markDown counts the store as down and releases every Get waiting for a
// refresh with a value to fall back on.
func (h *Health) markDown() {
	if h.down.Load() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down.Load() {
		return
	}
	h.down.Store(true)
	if h.downCh == nil {
		h.downCh = make(chan struct{})
	}
	close(h.downCh)
}

// markUp counts the store as up. On a store that is up, as after nearly
// every load, it costs one atomic read.
func (h *Health) markUp() {
	if !h.down.Load() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down.Load() {
		h.down.Store(false)
		h.downCh = make(chan struct{})
	}
}

// wentDown returns a channel that is closed once the store is marked down
// (already closed if it is down now).
func (h *Health) wentDown() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.downCh == nil {
		h.downCh = make(chan struct{})
	}
	return h.downCh
}
