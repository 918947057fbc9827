package filestore

import (
	"slices"

	"github.com/keyward/keyward/token"
)

// tokenTable is one shard of a tokenIndex: its records in open addressing
// with linear probing, each slot holding the id and its hash beside the
// entry. A lookup reads the shard's header and then one slot, where a Go
// map read its directory, table, control word and slot apart: at a few
// callers every check comes to the index with cold caches, and each line
// read is a miss. Any capacity will do (Lemire's multiply-shift maps a
// hash onto it), kept a third above the records, so that a presized
// table wastes little. A table is changed only by the builder that owns
// it (see indexBuilder.shard), never once published.
type tokenTable struct {
	slots []tokenSlot
	n     int
}

type tokenSlot struct {
	id token.RawID
	// h is the id's hash (tokenIndex.hash), never 0; 0 marks a free slot.
	h uint32
	e tokenEntry
}

// newTokenTable returns a table with room for n records before it grows.
func newTokenTable(n int) tokenTable {
	if n == 0 {
		return tokenTable{}
	}
	return tokenTable{slots: make([]tokenSlot, n+n/3+1)}
}

// home is where a probe for hash h starts.
func (t *tokenTable) home(h uint32) int {
	return int(uint64(h) * uint64(len(t.slots)) >> 32)
}

// find returns the slot that holds id, or else the free slot where a probe
// for it ends. There is always a free slot: see set.
func (t *tokenTable) find(id token.RawID, h uint32) (int, bool) {
	i := t.home(h)
	for {
		s := &t.slots[i]
		switch {
		case s.h == 0:
			return i, false
		case s.h == h && s.id == id:
			return i, true
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
}

// get returns id's entry, if the table holds it.
func (t *tokenTable) get(id token.RawID, h uint32) (*tokenEntry, bool) {
	if t.n == 0 {
		return nil, false
	}
	i, ok := t.find(id, h)
	return &t.slots[i].e, ok
}

// set stores e as id's entry, returning the one it replaces, if any.
func (t *tokenTable) set(id token.RawID, h uint32, e tokenEntry) (tokenEntry, bool) {
	if 4*(t.n+1) > 3*len(t.slots) {
		t.resize(max(8, 2*len(t.slots)))
	}
	i, ok := t.find(id, h)
	s := &t.slots[i]
	old := s.e
	if !ok {
		s.id, s.h = id, h
		t.n++
	}
	s.e = e
	return old, ok
}

// remove drops id's entry, returning it, if the table holds it. The
// records after it in its probe run move back into the gap (backward-shift
// deletion), so that no probe stops short of them and no slot is left
// marked deleted.
func (t *tokenTable) remove(id token.RawID, h uint32) (tokenEntry, bool) {
	if t.n == 0 {
		return tokenEntry{}, false
	}
	i, ok := t.find(id, h)
	if !ok {
		return tokenEntry{}, false
	}
	old := t.slots[i].e
	for j := i; ; {
		if j++; j == len(t.slots) {
			j = 0
		}
		s := &t.slots[j]
		if s.h == 0 {
			break
		}
		// s stays where it is if its home lies cyclically in (i, j]:
		// a probe for it then never passes the gap at i.
		if k := t.home(s.h); i <= j && i < k && k <= j || i > j && (i < k || k <= j) {
			continue
		}
		t.slots[i] = *s
		i = j
	}
	t.slots[i] = tokenSlot{}
	t.n--
	return old, true
}

// resize moves the records into a table of size slots.
func (t *tokenTable) resize(size int) {
	old := t.slots
	t.slots = make([]tokenSlot, size)
	for k := range old {
		if s := &old[k]; s.h != 0 {
			i, _ := t.find(s.id, s.h)
			t.slots[i] = *s
		}
	}
}

// clone returns a copy of t that its builder may change.
func (t tokenTable) clone() tokenTable {
	return tokenTable{slots: slices.Clone(t.slots), n: t.n}
}

// each calls yield for every record until it returns false, and reports
// whether it got to the end.
func (t *tokenTable) each(yield func(token.RawID, tokenEntry) bool) bool {
	for k := range t.slots {
		if s := &t.slots[k]; s.h != 0 && !yield(s.id, s.e) {
			return false
		}
	}
	return true
}
