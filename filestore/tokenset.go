package filestore

import (
	"cmp"
	"iter"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Tokens are the token records an Update reads and changes, by token id:
// the records the token file holds, under the changes made so far. Only
// the changed records are written, appended to the token file, so that a
// change costs the same however many tokens the file holds. The zero
// value holds no tokens.
//
// Get and All return copies: a record changes only when it is Set.
type Tokens struct {
	// base are the records loaded from the token file; never changed.
	base *tokenIndex
	// changes are the records Set (or Deleted, nil) since.
	changes map[string]*TokenData
	// delta is how many records the changes add (or remove).
	delta int
}

// Get returns token id's record.
func (t *Tokens) Get(id string) (TokenData, bool) {
	if td, ok := t.changes[id]; ok {
		if td == nil {
			return TokenData{}, false
		}
		return td.clone(), true
	}
	raw, ok := token.ParseID(id)
	if !ok {
		return TokenData{}, false
	}
	e, ok := t.base.lookup(raw)
	if !ok {
		return TokenData{}, false
	}
	return t.base.data(raw, *e), true
}

// Set creates or replaces token id's record with a copy of td. The record
// is checked when the Update ends.
func (t *Tokens) Set(id string, td TokenData) {
	t.change(id, new(td.clone()))
}

// Delete removes token id's record, and reports whether there was one.
func (t *Tokens) Delete(id string) bool {
	_, had := t.Get(id)
	if had {
		t.change(id, nil)
	}
	return had
}

func (t *Tokens) change(id string, td *TokenData) {
	_, had := t.Get(id)
	switch {
	case had && td == nil:
		t.delta--
	case !had && td != nil:
		t.delta++
	}
	if t.changes == nil {
		t.changes = map[string]*TokenData{}
	}
	t.changes[id] = td
}

// Len returns the number of records.
func (t *Tokens) Len() int { return t.base.len() + t.delta }

// All yields every record, in no particular order. It reads every record
// of the file: for a few, use Get.
func (t *Tokens) All() iter.Seq2[string, TokenData] {
	return func(yield func(string, TokenData) bool) {
		more := true
		t.base.each(func(raw token.RawID, e tokenEntry) bool {
			id := raw.String()
			if _, changed := t.changes[id]; !changed {
				more = yield(id, t.base.data(raw, e))
			}
			return more
		})
		for id, td := range t.changes {
			if !more {
				return
			}
			if td != nil {
				more = yield(id, td.clone())
			}
		}
	}
}

// tokenChange is one record an Update writes: nil data deletes it.
type tokenChange struct {
	id string
	td *TokenData
}

// written returns the changes that leave a record other than the file
// holds, in id order so that the file is the same for the same change.
func (t *Tokens) written() []tokenChange {
	var out []tokenChange
	for _, id := range slices.Sorted(maps.Keys(t.changes)) {
		td := t.changes[id]
		var old *TokenData
		if raw, ok := token.ParseID(id); ok {
			if e, ok := t.base.lookup(raw); ok {
				old = new(t.base.data(raw, *e))
			}
		}
		if !sameToken(old, td) {
			out = append(out, tokenChange{id, td})
		}
	}
	return out
}

func (td TokenData) clone() TokenData {
	if td.Expires != nil {
		td.Expires = new(*td.Expires)
	}
	return td
}

// sameToken reports whether a and b are the same record (nil: none), as
// the file would hold them.
func sameToken(a, b *TokenData) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.User == b.User && a.Group == b.Group && a.Name == b.Name && strings.EqualFold(a.Hash, b.Hash) &&
		a.Created.Equal(b.Created) && sameExpiry(a.Expires, b.Expires) && a.Revoked == b.Revoked &&
		a.Last4 == b.Last4 && a.ReplacedBy == b.ReplacedBy && a.Principal == b.Principal
}

func sameExpiry(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// byAge orders token lines oldest first, then by id, so that the file reads
// in the order the tokens were made.
func byAge(a, b tokenChange) int {
	return cmp.Or(a.td.Created.Compare(b.td.Created), strings.Compare(a.id, b.id))
}

// Owned returns user's token records, under the changes made so far. It
// reads only the index's compact entries, making records for user's
// tokens alone.
func (t *Tokens) Owned(user string) ([]*record.Token, error) {
	var out []*record.Token
	for _, rt := range t.base.owned(user) {
		if _, changed := t.changes[rt.ID]; !changed {
			out = append(out, rt)
		}
	}
	for id, td := range t.changes {
		if td == nil || td.User != user {
			continue
		}
		rt, err := td.record(id)
		if err != nil {
			return nil, err
		}
		out = append(out, rt)
	}
	return out, nil
}
