package filestore

import (
	"math/rand/v2"
	"testing"

	"github.com/keyward/keyward/token"
)

// TestTokenTable holds the table to a Go map through random sets and
// removes, with hashes drawn from few values so that probe runs collide,
// wrap around the end and are cut by removes (the backward shift), at
// sizes from empty to grown several times. Every clone stays as it was
// while the original changes.
func TestTokenTable(t *testing.T) {
	for _, tc := range []struct {
		name         string
		ids, hashes  int
		presize, ops int
		seed1, seed2 uint64
	}{
		{"tiny, all one hash", 6, 1, 0, 2000, 1, 2},
		{"few hashes", 40, 3, 0, 5000, 3, 4},
		{"presized", 200, 1 << 30, 150, 20000, 5, 6},
		{"grows", 2000, 400, 8, 20000, 7, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(tc.seed1, tc.seed2))
			ids := make([]token.RawID, tc.ids)
			hashes := make([]uint32, tc.ids)
			for i := range ids {
				ids[i][0], ids[i][1], ids[i][2] = byte(i), byte(i>>8), byte(i>>16)
				hashes[i] = uint32(rng.IntN(tc.hashes))<<1 | 1
				if tc.hashes == 1<<30 {
					hashes[i] = rng.Uint32() | 1
				}
			}
			table := newTokenTable(tc.presize)
			model := map[token.RawID]tokenEntry{}
			var snap tokenTable
			var snapModel map[token.RawID]tokenEntry
			for op := range tc.ops {
				i := rng.IntN(len(ids))
				id, h := ids[i], hashes[i]
				if rng.IntN(3) == 0 {
					got, ok := table.remove(id, h)
					want, wok := model[id]
					if ok != wok || got != want {
						t.Fatalf("op %d: remove %d = %v, %v; want %v, %v", op, i, got, ok, want, wok)
					}
					delete(model, id)
				} else {
					e := tokenEntry{textOff: uint32(op), user: uint32(i)}
					old, ok := table.set(id, h, e)
					want, wok := model[id]
					if ok != wok || old != want {
						t.Fatalf("op %d: set %d replaced %v, %v; want %v, %v", op, i, old, ok, want, wok)
					}
					model[id] = e
				}
				if op%97 == 0 {
					snap, snapModel = table.clone(), clone(model)
				}
				if len(ids) < 1000 && op%13 == 0 || op%400 == 0 {
					sameAsModel(t, &table, model, ids, hashes)
					sameAsModel(t, &snap, snapModel, ids, hashes)
				}
			}
			sameAsModel(t, &table, model, ids, hashes)
		})
	}
}

func clone(m map[token.RawID]tokenEntry) map[token.RawID]tokenEntry {
	out := make(map[token.RawID]tokenEntry, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sameAsModel checks that t holds exactly model's records, each found.
func sameAsModel(t *testing.T, table *tokenTable, model map[token.RawID]tokenEntry, ids []token.RawID, hashes []uint32) {
	t.Helper()
	if table.n != len(model) {
		t.Fatalf("table holds %d records, the model %d", table.n, len(model))
	}
	for i, id := range ids {
		e, ok := table.get(id, hashes[i])
		want, wok := model[id]
		if ok != wok || ok && *e != want {
			t.Fatalf("get %d: %v, %v; want %v, %v", i, e, ok, want, wok)
		}
	}
	seen := 0
	table.each(func(id token.RawID, e tokenEntry) bool {
		if model[id] != e {
			t.Fatalf("each yields %v for %v, the model has %v", e, id, model[id])
		}
		seen++
		return true
	})
	if seen != len(model) {
		t.Fatalf("each yields %d records, the model has %d", seen, len(model))
	}
	if table.n > 0 && 4*table.n > 3*len(table.slots) {
		t.Fatalf("%d records in %d slots: over three quarters", table.n, len(table.slots))
	}
}
