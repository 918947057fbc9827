package authz

import (
	"math/bits"
	"math/rand/v2"
	"sync/atomic"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// answers caches allowed answers by a key K, at most size of them, in a
// set-associative table: k's hash picks two sets of up to answerWays
// slots, each one cache line, and k is in one of their slots or not held.
// Each slot points to an immutable entry, so a hit, the common case, takes
// no lock and writes nothing: a read lock's counter is a line that every
// core writes, and a map under it hashed the whole key again and read more
// lines, which at a few callers (each check between cold caches) was a
// microsecond of the check.
//
// Adding takes a free slot of k's first set, else of its second, else
// replaces one of them at random rather than the least recently used:
// when more tokens are active than there is room for, cycling through them
// keeps a hit rate near size/active, where an LRU would miss every time
// (the cliff of issue 13). The second set is what lets a full cache hold
// about its size: with one, the sets fill unevenly, and cycling through
// as many tokens as there are slots hits 75% of the time; with two, 94%,
// with most hits in the first set.
type answers[K comparable] struct {
	sets []answerSet[K]
	// ways is how many slots of each set are used: answerWays, or fewer
	// in a cache smaller than one set.
	ways int
	// hash spreads keys over the sets.
	hash func(K) uint64
}

// answerWays is the slots of a set: 8 pointers, one cache line.
const answerWays = 8

type answerSet[K comparable] [answerWays]atomic.Pointer[answerEntry[K]]

type answerEntry[K comparable] struct {
	key  K
	resp *authv3.CheckResponse
}

// newAnswers returns a cache of at most size answers (size ≥ 1): whole
// sets, so that a size that is not a multiple of answerWays holds a
// little less.
func newAnswers[K comparable](size int, hash func(K) uint64) *answers[K] {
	ways := min(size, answerWays)
	return &answers[K]{sets: make([]answerSet[K], size/ways), ways: ways, hash: hash}
}

// setsOf are k's two sets (Lemire's multiply-shift of the hash and of its
// halves swapped: each the high bits of a product, uniform).
func (a *answers[K]) setsOf(k *K) [2]*answerSet[K] {
	h, n := a.hash(*k), uint64(len(a.sets))
	first, _ := bits.Mul64(h, n)
	second, _ := bits.Mul64(bits.RotateLeft64(h, 32), n)
	return [2]*answerSet[K]{&a.sets[first], &a.sets[second]}
}

func (a *answers[K]) get(k K) (*authv3.CheckResponse, bool) {
	for _, s := range a.setsOf(&k) {
		for i := range a.ways {
			if e := s[i].Load(); e != nil && e.key == k {
				return e.resp, true
			}
		}
	}
	return nil, false
}

func (a *answers[K]) add(k K, resp *authv3.CheckResponse) {
	sets := a.setsOf(&k)
	e := &answerEntry[K]{key: k, resp: resp}
	for _, s := range sets {
		for i := range a.ways {
			if s[i].CompareAndSwap(nil, e) {
				return
			}
		}
	}
	sets[rand.IntN(2)][rand.IntN(a.ways)].Store(e)
}

// capacity is how many answers the cache can hold.
func (a *answers[K]) capacity() int { return len(a.sets) * a.ways }

// len is the number of answers held.
func (a *answers[K]) len() int {
	n := 0
	for i := range a.sets {
		for j := range a.ways {
			if a.sets[i][j].Load() != nil {
				n++
			}
		}
	}
	return n
}
