package authz

import (
	"sync"
	"unsafe"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// answers caches allowed answers by allowKey, at most size of them. It is
// a map per shard under a read-write lock, so that a hit, the common case,
// takes a read lock and writes nothing; an LRU would move its entry to the
// front under an exclusive lock on every hit. When a shard is full, adding
// evicts an arbitrary entry (Go randomizes where map iteration starts)
// rather than the least recently used: when more tokens are active than
// there is room for, cycling through them keeps a hit rate near
// size/active, where an LRU would miss every time (the cliff of issue 13).
type answers struct {
	shards   []answerShard
	shift    uint
	perShard int
}

type answerShard struct {
	mu sync.RWMutex
	m  map[allowKey]*authv3.CheckResponse
	// Keeps shards off each other's cache lines: mu is written by every
	// read lock.
	_ [64 - 24 - 8]byte
}

// answerShards caps the lock striping; minAnswersPerShard keeps small
// caches in one shard, so that their bound is exact.
const (
	answerShards       = 16
	minAnswersPerShard = 64
)

func newAnswers(size int) *answers {
	n := 1
	for n < answerShards && size/(n*2) >= minAnswersPerShard {
		n *= 2
	}
	a := &answers{shards: make([]answerShard, n), perShard: (size + n - 1) / n, shift: 64}
	for n > 1 {
		a.shift--
		n /= 2
	}
	for i := range a.shards {
		a.shards[i].m = make(map[allowKey]*authv3.CheckResponse)
	}
	return a
}

// shard picks k's shard from its record pointers (Fibonacci hashing):
// records are immutable and live while cached, so their addresses are
// stable keys, and no string is hashed.
func (a *answers) shard(k *allowKey) *answerShard {
	if a.shift == 64 {
		return &a.shards[0]
	}
	h := uint64(uintptr(unsafe.Pointer(k.token))) ^ uint64(uintptr(unsafe.Pointer(k.key)))>>3
	return &a.shards[(h*0x9E3779B97F4A7C15)>>a.shift]
}

func (a *answers) get(k allowKey) (*authv3.CheckResponse, bool) {
	s := a.shard(&k)
	s.mu.RLock()
	resp, ok := s.m[k]
	s.mu.RUnlock()
	return resp, ok
}

func (a *answers) add(k allowKey, resp *authv3.CheckResponse) {
	s := a.shard(&k)
	s.mu.Lock()
	if _, ok := s.m[k]; !ok && len(s.m) >= a.perShard {
		for old := range s.m {
			delete(s.m, old)
			break
		}
	}
	s.m[k] = resp
	s.mu.Unlock()
}

// len is the number of answers held.
func (a *answers) len() int {
	n := 0
	for i := range a.shards {
		s := &a.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
