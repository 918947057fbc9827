package cache

import (
	"context"
	"sync"
	"testing"

	"github.com/keyward/keyward/record"
)

// idSource is a Source with principal mappings; it counts their loads.
type idSource struct {
	*credSource
	mu    sync.Mutex
	ids   []*record.Identity
	loads int
}

func (s *idSource) Identities(context.Context) ([]*record.Identity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads++
	return s.ids, nil
}

// TestIdentitiesCache: the mappings are loaded once and served from
// memory, reloaded when a mapping changes (and on a purge), not when
// another kind of record does; a Source without mappings maps nothing.
func TestIdentitiesCache(t *testing.T) {
	ctx := context.Background()
	src := &idSource{credSource: newCredSource(), ids: []*record.Identity{{Name: "a", Principal: "spiffe://td/ns/a/*", User: "u", Group: "g"}}}
	r, err := NewRecords(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	lookup := func() *record.Identity {
		t.Helper()
		x, err := r.Identities(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return x.Lookup("spiffe://td/ns/a/sa/w")
	}
	if id := lookup(); id == nil || id.Name != "a" {
		t.Fatalf("lookup: %v", id)
	}
	lookup()
	r.Invalidate(record.TypeUser, "u")
	r.Invalidate(record.TypeGroup, "g")
	if lookup(); src.loads != 1 {
		t.Fatalf("%d loads, want 1: warm lookups and other kinds' changes must not reload", src.loads)
	}
	src.mu.Lock()
	src.ids = nil
	src.mu.Unlock()
	r.Invalidate(record.TypeIdentity, "a")
	if id := lookup(); id != nil || src.loads != 2 {
		t.Fatalf("after the mapping's change: %v, %d loads", id, src.loads)
	}
	r.Purge()
	lookup()
	if src.loads != 3 {
		t.Fatalf("%d loads after a purge, want 3", src.loads)
	}

	plain, err := NewRecords(newCredSource(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if x, err := plain.Identities(ctx); err != nil || x.Len() != 0 {
		t.Fatalf("a source without mappings: %v %v", x, err)
	}
}
