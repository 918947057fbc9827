package filestore

import (
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// tokenTable holds the token records of a snapshot without pointers: a
// store of hundreds of thousands of tokens would otherwise give the garbage
// collector that many records to scan on every cycle, which showed in the
// tail latency of every check. Records are made on lookup; the record
// caches in front of the store keep the ones in use.
type tokenTable struct {
	entries map[token.RawID]tokenEntry
	// names are the distinct user and group names, few and shared.
	names   []string
	nameIdx map[string]uint32
	// text holds the tokens' own names end to end.
	text []byte
}

type tokenEntry struct {
	hash             [32]byte
	created, expires int64 // Unix nanoseconds; 0 for none
	user, group      uint32
	nameOff, nameLen uint32
	revoked          bool
	// last4 holds Token.Last4 (zero bytes when unknown).
	last4 [last4Len]byte
	// replacedBy is Token.ReplacedBy when replaced is set.
	replacedBy token.RawID
	replaced   bool
}

// last4Len is the length of Token.Last4.
const last4Len = 4

func newTokenTable(n int) *tokenTable {
	return &tokenTable{entries: make(map[token.RawID]tokenEntry, n), nameIdx: map[string]uint32{}}
}

func (t *tokenTable) intern(name string) uint32 {
	if i, ok := t.nameIdx[name]; ok {
		return i
	}
	i := uint32(len(t.names))
	t.names = append(t.names, name)
	t.nameIdx[name] = i
	return i
}

func (t *tokenTable) add(id token.RawID, r *record.Token) {
	e := tokenEntry{
		hash:    r.Hash,
		created: unixNano(r.Created),
		expires: unixNano(r.Expires),
		user:    t.intern(r.User),
		group:   t.intern(r.Group),
		nameOff: uint32(len(t.text)),
		nameLen: uint32(len(r.Name)),
		revoked: r.Revoked,
	}
	copy(e.last4[:], r.Last4)
	if raw, ok := token.ParseID(r.ReplacedBy); ok {
		e.replacedBy, e.replaced = raw, true
	}
	t.entries[id] = e
	t.text = append(t.text, r.Name...)
}

// done drops what is only needed while the table is built.
func (t *tokenTable) done() {
	t.nameIdx = nil
	t.text = slices.Clip(t.text)
}

func (t *tokenTable) get(id string) (*record.Token, bool) {
	raw, ok := token.ParseID(id)
	if !ok {
		return nil, false
	}
	e, ok := t.entries[raw]
	if !ok {
		return nil, false
	}
	return t.record(raw, e), true
}

func (t *tokenTable) all() []*record.Token {
	out := make([]*record.Token, 0, len(t.entries))
	for id, e := range t.entries {
		out = append(out, t.record(id, e))
	}
	return out
}

// owned returns user's tokens, making records for theirs only.
func (t *tokenTable) owned(user string) []*record.Token {
	idx := slices.Index(t.names, user)
	if idx < 0 {
		return nil
	}
	var out []*record.Token
	for id, e := range t.entries {
		if e.user == uint32(idx) {
			out = append(out, t.record(id, e))
		}
	}
	return out
}

func (t *tokenTable) record(id token.RawID, e tokenEntry) *record.Token {
	r := &record.Token{
		ID:      id.String(),
		Hash:    e.hash,
		User:    t.names[e.user],
		Group:   t.names[e.group],
		Name:    strings.Clone(string(t.text[e.nameOff : e.nameOff+e.nameLen])),
		Created: fromUnixNano(e.created),
		Expires: fromUnixNano(e.expires),
		Revoked: e.revoked,
	}
	if e.last4 != [last4Len]byte{} {
		r.Last4 = string(e.last4[:])
	}
	if e.replaced {
		r.ReplacedBy = e.replacedBy.String()
	}
	return r
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func (t *tokenTable) len() int { return len(t.entries) }
