package filestore

import (
	"encoding/binary"
	"hash/maphash"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// tokenIndex holds the token records of a snapshot without pointers: a
// store of hundreds of thousands of tokens would otherwise give the garbage
// collector that many records to scan on every cycle, which showed in the
// tail latency of every check. Records are made on lookup; the record
// caches in front of the store keep the ones in use.
//
// An index is never changed once published. The records are spread over
// tokenShards tables by id so that a reload that read a few new lines
// copies the shards those lines fall in, not every record: a token
// appended to a file of 100,000 costs what it costs in a file of 100.
type tokenIndex struct {
	// shards hold the records by id.
	shards []tokenTable
	// seed hashes ids within a shard (see hash): a store file's ids are
	// whatever its writer chose, and must not be able to pile up on one
	// probe run. Every index derived from one keeps its seed, since they
	// share tables.
	seed maphash.Seed
	// names are the distinct user and group names, few and shared. Later
	// indexes append to the same array past this one's length, which this
	// one never reads.
	names []string
	// text holds each token's name, last four characters and successor
	// end to end (see tokenEntry), shared likewise.
	text []byte
	// n is the number of records.
	n int
	// owners list the ids of each user's records, in tokenShards maps by
	// the user's name (see ownerShardOf), copied on write like shards: a
	// user's tokens are found without reading every record. These hold
	// pointers (a name and a slice per user), as many as users, not
	// tokens.
	owners []ownerShard
}

type ownerShard = map[string][]token.RawID

// ownerShardOf is the owners shard of user (FNV-1a).
func ownerShardOf(user string) int {
	h := uint32(2166136261)
	for i := 0; i < len(user); i++ {
		h = (h ^ uint32(user[i])) * 16777619
	}
	return int(h % tokenShards)
}

// tokenShards is how many shards an index has: with random ids, a store of
// 100,000 tokens has about 100 in each.
const tokenShards = 1024

func shardOf(id token.RawID) int {
	return int(binary.BigEndian.Uint16(id[:2])) % tokenShards
}

// hash is id's hash within its shard's table: never 0, which marks a free
// slot.
func (x *tokenIndex) hash(id token.RawID) uint32 {
	return uint32(maphash.Comparable(x.seed, id)) | 1
}

type tokenEntry struct {
	hash [32]byte
	// Times are Unix seconds and nanoseconds: every time a JSON file can
	// hold fits, where Unix nanoseconds end in 2262.
	created, expires         int64
	createdNsec, expiresNsec int32
	user, group              uint32
	// The token's name, Token.Last4 and Token.ReplacedBy are in the
	// index's text, end to end from textOff: strings made of them are
	// views, with nothing allocated (see view).
	textOff                 uint32
	nameLen                 uint32
	last4Len, replacedByLen uint8
	revoked                 bool
	// hasExpires tells an expiry apart from none.
	hasExpires bool
	// principal is Token.Principal's index in names plus one; 0 for a
	// token bound to no workload.
	principal uint32
}

// last4Len is the length of Token.Last4.
const last4Len = 4

func (x *tokenIndex) len() int {
	if x == nil {
		return 0
	}
	return x.n
}

func (x *tokenIndex) lookup(id token.RawID) (*tokenEntry, bool) {
	if x == nil || x.shards == nil {
		return nil, false
	}
	return x.shards[shardOf(id)].get(id, x.hash(id))
}

// each calls yield for every record until it returns false.
func (x *tokenIndex) each(yield func(token.RawID, tokenEntry) bool) {
	if x == nil {
		return
	}
	for i := range x.shards {
		if !x.shards[i].each(yield) {
			return
		}
	}
}

func (x *tokenIndex) all() []*record.Token {
	out := make([]*record.Token, 0, x.len())
	x.each(func(id token.RawID, e tokenEntry) bool {
		out = append(out, x.record(id, e))
		return true
	})
	return out
}

// owned returns user's tokens, making records for theirs only.
func (x *tokenIndex) owned(user string) []*record.Token {
	if x == nil || x.owners == nil {
		return nil
	}
	ids := x.owners[ownerShardOf(user)][user]
	out := make([]*record.Token, 0, len(ids))
	for _, id := range ids {
		if e, ok := x.lookup(id); ok {
			out = append(out, x.record(id, *e))
		}
	}
	return out
}

// record is the record of id, its strings its own: a record kept for
// long (a listing, a cache) must not hold on to the index's text.
func (x *tokenIndex) record(id token.RawID, e tokenEntry) *record.Token {
	r := detached(x.view("", &e))
	r.ID = id.String()
	return r
}

// detached is r with strings of its own, none a view of an index's text
// or of the caller's id (see view).
func detached(r record.Token) *record.Token {
	r.ID, r.Name, r.Last4, r.ReplacedBy = strings.Clone(r.ID), strings.Clone(r.Name), strings.Clone(r.Last4), strings.Clone(r.ReplacedBy)
	return &r
}

// view is e's record by value with id, the caller's spelling of its id,
// as its ID, and every other string a view of the index's names and text:
// nothing is allocated. The views stay valid for as long as they are
// held: an index never changes, and the indexes built after it only
// append past its end.
func (x *tokenIndex) view(id string, e *tokenEntry) record.Token {
	r := record.Token{
		ID:      id,
		Hash:    e.hash,
		User:    x.names[e.user],
		Group:   x.names[e.group],
		Created: fromUnix(e.created, e.createdNsec),
		Revoked: e.revoked,
	}
	off := e.textOff
	r.Name, off = x.textAt(off, e.nameLen), off+e.nameLen
	r.Last4, off = x.textAt(off, uint32(e.last4Len)), off+uint32(e.last4Len)
	r.ReplacedBy = x.textAt(off, uint32(e.replacedByLen))
	if e.hasExpires {
		r.Expires = fromUnix(e.expires, e.expiresNsec)
	}
	if e.principal > 0 {
		r.Principal = x.names[e.principal-1]
	}
	return r
}

// textAt is n bytes of the index's text from off, viewed as a string.
func (x *tokenIndex) textAt(off, n uint32) string {
	if n == 0 {
		return ""
	}
	return unsafe.String(&x.text[off], n)
}

// value is the record of id, raw decoded (see view), if the index holds
// it.
func (x *tokenIndex) value(id string, raw token.RawID) (record.Token, bool) {
	e, ok := x.lookup(raw)
	if !ok {
		return record.Token{}, false
	}
	return x.view(id, e), true
}

// data returns the entry as the token file holds it.
func (x *tokenIndex) data(id token.RawID, e tokenEntry) TokenData {
	r := x.record(id, e)
	td := TokenData{
		User: r.User, Group: r.Group, Name: r.Name, Hash: HashString(r.Hash), Created: r.Created,
		Revoked: r.Revoked, Last4: r.Last4, ReplacedBy: r.ReplacedBy, Principal: r.Principal,
	}
	if e.hasExpires {
		td.Expires = &r.Expires
	}
	return td
}

// indexBuilder makes a new index from an old one, or from nothing, by
// setting and removing records. Only one builder may derive from an index
// at a time (the Store's load lock): builders append to the names and
// text arrays that the index shares.
type indexBuilder struct {
	x *tokenIndex
	// owned marks the shards this builder copied (or made) and may change;
	// nil when every shard is its own. ownedOwners and ownedLists do the
	// same for the owners shards and the users' id lists.
	owned       map[int]bool
	ownedOwners map[int]bool
	ownedLists  map[string]bool
	// intern finds a name's index in x.names. It is shared by every
	// builder of a Store and may hold names a failed load appended: a hit
	// counts only when x.names has that name there.
	intern map[string]uint32
}

// newIndexBuilder starts an index from nothing.
func newIndexBuilder() *indexBuilder { return sizedIndexBuilder(0) }

// sizedIndexBuilder starts an index from nothing, with room for about n
// records made ahead: the shards of a large index are then not grown, and
// copied, many times over while it is built.
func sizedIndexBuilder(n int) *indexBuilder {
	x := &tokenIndex{shards: make([]tokenTable, tokenShards), seed: maphash.MakeSeed(), owners: make([]ownerShard, tokenShards)}
	if per := n / tokenShards; per > 8 {
		// A shard holds per records give or take a few times their
		// square root (ids are random): room for most without growing.
		per += 2 * int(math.Sqrt(float64(per)))
		for i := range x.shards {
			x.shards[i] = newTokenTable(per)
		}
	}
	return &indexBuilder{x: x, intern: map[string]uint32{}}
}

// deriveIndexBuilder starts an index from base, whose builder used
// intern.
func deriveIndexBuilder(base *tokenIndex, intern map[string]uint32) *indexBuilder {
	x := *base
	x.shards = slices.Clone(base.shards)
	x.owners = slices.Clone(base.owners)
	if x.owners == nil {
		x.owners = make([]ownerShard, tokenShards)
	}
	return &indexBuilder{x: &x, owned: map[int]bool{}, ownedOwners: map[int]bool{}, ownedLists: map[string]bool{}, intern: intern}
}

// ownerList returns the owners shard of user and user's id list in it,
// both copied first if the base index shares them.
func (b *indexBuilder) ownerList(user string) (ownerShard, []token.RawID) {
	i := ownerShardOf(user)
	if b.ownedOwners != nil && !b.ownedOwners[i] {
		b.x.owners[i] = maps.Clone(b.x.owners[i])
		b.ownedOwners[i] = true
	}
	if b.x.owners[i] == nil {
		b.x.owners[i] = ownerShard{}
	}
	sh := b.x.owners[i]
	if b.ownedLists != nil && !b.ownedLists[user] {
		sh[user] = slices.Clone(sh[user])
		b.ownedLists[user] = true
	}
	return sh, sh[user]
}

// addOwned lists id among user's records.
func (b *indexBuilder) addOwned(user string, id token.RawID) {
	sh, ids := b.ownerList(user)
	sh[user] = append(ids, id)
}

// dropOwned takes id off user's list.
func (b *indexBuilder) dropOwned(user string, id token.RawID) {
	sh, ids := b.ownerList(user)
	if ids = slices.DeleteFunc(ids, func(x token.RawID) bool { return x == id }); len(ids) == 0 {
		delete(sh, user)
	} else {
		sh[user] = ids
	}
}

// shard returns shard i, copied first if the base index shares it.
func (b *indexBuilder) shard(i int) *tokenTable {
	if b.owned != nil && !b.owned[i] {
		b.x.shards[i] = b.x.shards[i].clone()
		b.owned[i] = true
	}
	return &b.x.shards[i]
}

// lookup returns the index of name s in x.names, if it is there.
func (b *indexBuilder) lookup(s string) (uint32, bool) {
	i, ok := b.intern[s]
	return i, ok && int(i) < len(b.x.names) && b.x.names[i] == s
}

// name returns the index of name s in x.names, added if need be.
func (b *indexBuilder) name(s string) uint32 {
	if i, ok := b.lookup(s); ok {
		return i
	}
	i := uint32(len(b.x.names))
	b.x.names = append(b.x.names, s)
	b.intern[s] = i
	return i
}

// set stores td, which checkToken accepted, as id's record.
func (b *indexBuilder) set(id token.RawID, td *TokenData) {
	b.setNamed(id, td, b.name(td.User), b.name(td.Group))
}

// setNamed is set with td's user and group names' indexes in x.names.
func (b *indexBuilder) setNamed(id token.RawID, td *TokenData, user, group uint32) {
	hash, _ := record.ParseHash(td.Hash)
	e := tokenEntry{
		hash:     hash,
		user:     user,
		group:    group,
		textOff:  uint32(len(b.x.text)),
		nameLen:  uint32(len(td.Name)),
		last4Len: uint8(len(td.Last4)),
		revoked:  td.Revoked,
	}
	e.created, e.createdNsec = toUnix(td.Created)
	if td.Expires != nil {
		e.expires, e.expiresNsec = toUnix(*td.Expires)
		e.hasExpires = true
	}
	if td.Principal != "" {
		// Interned: bindings are few, shared by many tokens.
		e.principal = b.name(td.Principal) + 1
	}
	b.x.text = append(append(b.x.text, td.Name...), td.Last4...)
	if raw, ok := token.ParseID(td.ReplacedBy); ok {
		by := raw.String()
		e.replacedByLen = uint8(len(by))
		b.x.text = append(b.x.text, by...)
	}
	switch old, ok := b.shard(shardOf(id)).set(id, b.x.hash(id), e); {
	case !ok:
		b.x.n++
		b.addOwned(td.User, id)
	case b.x.names[old.user] != td.User:
		b.dropOwned(b.x.names[old.user], id)
		b.addOwned(td.User, id)
	}
}

// remove drops id's record, if there is one.
func (b *indexBuilder) remove(id token.RawID) {
	if _, ok := b.x.lookup(id); !ok {
		return // its shard not copied for nothing
	}
	if e, ok := b.shard(shardOf(id)).remove(id, b.x.hash(id)); ok {
		b.x.n--
		b.dropOwned(b.x.names[e.user], id)
	}
}

func toUnix(t time.Time) (int64, int32) { return t.Unix(), int32(t.Nanosecond()) }

func fromUnix(sec int64, nsec int32) time.Time {
	t := time.Unix(sec, int64(nsec)).UTC()
	if t.IsZero() {
		return time.Time{}
	}
	return t
}
