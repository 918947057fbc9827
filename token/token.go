// Package token mints and verifies keyward tokens.
//
// A token is "kw_" followed by 64 base64url characters that encode 48 bytes:
//
//	id (12) | version (1) | signing key id (1) | secret (18) | tag (16)
//
// The id is public: its 16 characters are the token's record name, so the
// record is found without decoding anything. The 144-bit secret is stored
// only as its SHA-256. The tag is an HMAC-SHA256 (truncated to 128 bits) of
// everything before it under a server-held signing key, so a forged,
// truncated or random token is rejected before any store lookup: only
// tokens keyward itself minted ever reach the store. The "kw_" prefix lets
// secret scanners find leaked tokens.
package token

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// Prefix starts every keyward token.
const Prefix = "kw_"

// ManagementPrefix starts every management-API token (see
// Keyring.Management). It differs from Prefix so that neither kind of
// token can stand in for the other, and secret scanners tell them apart.
const ManagementPrefix = "kwm_"

const (
	idLen     = 12
	secretLen = 18
	tagLen    = 16
	rawLen    = idLen + 2 + secretLen + tagLen // 48
	signedLen = rawLen - tagLen

	// IDLen is the length of a token id string.
	IDLen = idLen * 4 / 3
	// Len is the length of a token string.
	Len = len(Prefix) + rawLen*4/3

	version = 1
	// KeySize is the size of a signing key in bytes.
	KeySize = 32
)

var encoding = base64.RawURLEncoding.Strict()

// Errors returned by Verify. Callers branch on them to pick a denial reason.
var (
	// ErrMalformed means the string is not shaped like a keyward token.
	ErrMalformed = errors.New("malformed token")
	// ErrForged means the token is well formed but no signing key of this
	// server signed it.
	ErrForged = errors.New("token signature does not verify")
)

// SigningKey is one HMAC key of a Keyring. ID is carried in every token it
// signs, so that old keys keep verifying after a new one takes over.
type SigningKey struct {
	ID     uint8
	Secret []byte
}

// String hides the secret.
func (k SigningKey) String() string { return fmt.Sprintf("signing key %d", k.ID) }

// GoString hides the secret from %#v as well.
func (k SigningKey) GoString() string { return k.String() }

// NewSigningKey returns a random signing key with the given id.
func NewSigningKey(id uint8) (SigningKey, error) {
	k := SigningKey{ID: id, Secret: make([]byte, KeySize)}
	if _, err := rand.Read(k.Secret); err != nil {
		return SigningKey{}, fmt.Errorf("generate signing key: %w", err)
	}
	return k, nil
}

// Keyring verifies tokens signed by any of its keys and mints new ones with
// the newest (highest id). It is safe for concurrent use and immutable.
type Keyring struct {
	current uint8
	keys    [256]*ringKey
	// prefix starts the tokens this keyring mints and verifies.
	prefix string
	// domain is signed ahead of the token bytes, so that a tag made for one
	// prefix never verifies under another. Empty for LLM tokens, whose tags
	// stay as they always were.
	domain []byte
}

// managementDomain separates management-token tags from LLM-token tags.
const managementDomain = "keyward management token\x00"

type ringKey struct {
	// scratch pools a MAC and its buffers, so that Verify allocates nothing.
	scratch sync.Pool
}

type scratch struct {
	mac hash.Hash
	raw [rawLen]byte
	sum [sha256.Size]byte
}

// NewKeyring builds a keyring from keys, which must be non-empty, have
// distinct ids and secrets of at least KeySize bytes.
func NewKeyring(keys []SigningKey) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("keyring: no signing keys")
	}
	r := &Keyring{prefix: Prefix}
	for i, k := range keys {
		if len(k.Secret) < KeySize {
			return nil, fmt.Errorf("keyring: key %d (id %d): secret is %d bytes, need at least %d", i, k.ID, len(k.Secret), KeySize)
		}
		if r.keys[k.ID] != nil {
			return nil, fmt.Errorf("keyring: key %d: duplicate id %d", i, k.ID)
		}
		secret := append([]byte(nil), k.Secret...)
		r.keys[k.ID] = &ringKey{scratch: sync.Pool{New: func() any {
			return &scratch{mac: hmac.New(sha256.New, secret)}
		}}}
		if i == 0 || k.ID > r.current {
			r.current = k.ID
		}
	}
	return r, nil
}

// Management returns a keyring over the same signing keys that mints and
// verifies management tokens (ManagementPrefix) instead of LLM tokens: a
// keyward LLM token fails its Verify, and its own tokens fail r.Verify,
// even when the prefix is swapped, because the tag covers the kind.
func (r *Keyring) Management() *Keyring {
	m := *r
	m.prefix = ManagementPrefix
	m.domain = []byte(managementDomain)
	return &m
}

// Minted is a new token: Token is shown to its owner once; the rest is what
// the store keeps.
type Minted struct {
	Token string
	ID    string
	Hash  [sha256.Size]byte
}

// Mint returns a new random token signed with the newest key.
func (r *Keyring) Mint() (Minted, error) {
	var raw [rawLen]byte
	if _, err := rand.Read(raw[:signedLen]); err != nil {
		return Minted{}, fmt.Errorf("mint token: %w", err)
	}
	// An id starting with '-' (the first 6 bits all but the last set) reads
	// as a flag on command lines (`keyward token revoke <id>`): draw its
	// first byte again. That costs a fraction of a bit of the id, which is
	// public anyway; the secret is untouched.
	for raw[0]>>2 == 62 {
		if _, err := rand.Read(raw[:1]); err != nil {
			return Minted{}, fmt.Errorf("mint token: %w", err)
		}
	}
	raw[idLen] = version
	raw[idLen+1] = r.current
	s := r.keys[r.current].get()
	defer r.keys[r.current].put(s)
	copy(raw[signedLen:], s.sign(r.domain, raw[:signedLen]))

	tok := r.prefix + encoding.EncodeToString(raw[:])
	return Minted{
		Token: tok,
		ID:    tok[len(r.prefix) : len(r.prefix)+IDLen],
		Hash:  sha256.Sum256(raw[idLen+2 : signedLen]),
	}, nil
}

// Verify checks the token's shape and signature without any I/O and returns
// its id and the SHA-256 of its secret, to be compared (in constant time,
// see HashEqual) with the stored record. It returns ErrMalformed or
// ErrForged; the error never contains the token.
func (r *Keyring) Verify(tok string) (id string, secretHash [sha256.Size]byte, err error) {
	p := len(r.prefix)
	if len(tok) != p+Len-len(Prefix) || tok[:p] != r.prefix {
		return "", secretHash, ErrMalformed
	}
	// The id and signing key id sit in fixed places in the encoding: check
	// the key id before decoding the rest into pooled scratch.
	var head [3]byte
	if n, err := encoding.Decode(head[:], []byte(tok[p+IDLen:p+IDLen+4])); err != nil || n != 3 || head[0] != version {
		return "", secretHash, ErrMalformed
	}
	rk := r.keys[head[1]]
	if rk == nil {
		return "", secretHash, ErrForged
	}
	s := rk.get()
	defer rk.put(s)
	if n, err := encoding.Decode(s.raw[:], []byte(tok[p:])); err != nil || n != rawLen {
		return "", secretHash, ErrMalformed
	}
	if !hmac.Equal(s.sign(r.domain, s.raw[:signedLen]), s.raw[signedLen:]) {
		return "", secretHash, ErrForged
	}
	return tok[p : p+IDLen], sha256.Sum256(s.raw[idLen+2 : signedLen]), nil
}

// HashEqual compares two secret hashes in constant time.
func HashEqual(a, b [sha256.Size]byte) bool {
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// LooksLikeToken reports whether s carries the keyward prefix, i.e. whether
// a client meant it as a keyward token rather than a provider key.
func LooksLikeToken(s string) bool {
	return len(s) >= len(Prefix) && s[:len(Prefix)] == Prefix
}

// ValidID reports whether id is shaped like a token id.
func ValidID(id string) bool {
	_, ok := ParseID(id)
	return ok
}

func (k *ringKey) get() *scratch  { return k.scratch.Get().(*scratch) }
func (k *ringKey) put(s *scratch) { k.scratch.Put(s) }

// sign returns the truncated HMAC of domain and msg in s's buffer.
func (s *scratch) sign(domain, msg []byte) []byte {
	s.mac.Reset()
	s.mac.Write(domain)
	s.mac.Write(msg)
	return s.mac.Sum(s.sum[:0])[:tagLen]
}

// RawID is a token id in binary form: a map key without pointers.
type RawID [idLen]byte

// ParseID decodes a token id string.
func ParseID(id string) (RawID, bool) {
	var raw RawID
	if len(id) != IDLen {
		return raw, false
	}
	n, err := encoding.Decode(raw[:], []byte(id))
	return raw, err == nil && n == idLen
}

// String encodes the id as it appears in tokens.
func (id RawID) String() string { return encoding.EncodeToString(id[:]) }
