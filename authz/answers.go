package authz

import (
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// answers caches allowed answers by a key K, at most size of them. It is
// a map per shard under a read-write lock, so that a hit, the common case,
// takes a read lock and writes nothing; an LRU would move its entry to the
// front under an exclusive lock on every hit. When a shard is full, adding
// evicts an arbitrary entry (Go randomizes where map iteration starts)
// rather than the least recently used: when more tokens are active than
// there is room for, cycling through them keeps a hit rate near
// size/active, where an LRU would miss every time (the cliff of issue 13).
//
// Keep K at most 128 bytes: Go's maps store larger keys apart, one
// allocation per insert.
type answers[K comparable] struct {
	shards   []answerShard[K]
	shift    uint
	perShard int
	// hash spreads keys over the shards.
	hash func(K) uint64
}

type answerShard[K comparable] struct {
	mu sync.RWMutex
	m  map[K]*authv3.CheckResponse
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

func newAnswers[K comparable](size int, hash func(K) uint64) *answers[K] {
	n := 1
	for n < answerShards && size/(n*2) >= minAnswersPerShard {
		n *= 2
	}
	a := &answers[K]{shards: make([]answerShard[K], n), perShard: (size + n - 1) / n, shift: 64, hash: hash}
	for n > 1 {
		a.shift--
		n /= 2
	}
	for i := range a.shards {
		a.shards[i].m = make(map[K]*authv3.CheckResponse)
	}
	return a
}

// shard picks k's shard (Fibonacci hashing over hash).
func (a *answers[K]) shard(k *K) *answerShard[K] {
	if a.shift == 64 {
		return &a.shards[0]
	}
	return &a.shards[(a.hash(*k)*0x9E3779B97F4A7C15)>>a.shift]
}

func (a *answers[K]) get(k K) (*authv3.CheckResponse, bool) {
	s := a.shard(&k)
	s.mu.RLock()
	resp, ok := s.m[k]
	s.mu.RUnlock()
	return resp, ok
}

func (a *answers[K]) add(k K, resp *authv3.CheckResponse) {
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
func (a *answers[K]) len() int {
	n := 0
	for i := range a.shards {
		s := &a.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
