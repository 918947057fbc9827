package token

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func testRing(t testing.TB, ids ...uint8) *Keyring {
	t.Helper()
	var keys []SigningKey
	for _, id := range ids {
		keys = append(keys, SigningKey{ID: id, Secret: bytes.Repeat([]byte{id + 1}, KeySize)})
	}
	r, err := NewKeyring(keys)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestMintVerify(t *testing.T) {
	r := testRing(t, 1, 2)
	m, err := r.Mint()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.Token, Prefix) || len(m.Token) != Len {
		t.Fatalf("token shape: len %d", len(m.Token))
	}
	if !ValidID(m.ID) || !strings.Contains(m.Token, m.ID) {
		t.Fatalf("id %q not a valid id inside the token", m.ID)
	}
	id, h, err := r.Verify(m.Token)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id != m.ID || !HashEqual(h, m.Hash) {
		t.Fatalf("Verify returned id %q, hash match %v", id, HashEqual(h, m.Hash))
	}
	// Minted with the newest key (2): a ring that only has key 1 rejects it,
	// a ring that has 2 (and a newer 3) still accepts it.
	if _, _, err := testRing(t, 1).Verify(m.Token); !errors.Is(err, ErrForged) {
		t.Fatalf("ring without the signing key: %v, want ErrForged", err)
	}
	if _, _, err := testRing(t, 2, 3).Verify(m.Token); err != nil {
		t.Fatalf("rotated ring: %v", err)
	}
}

func TestMintIsRandom(t *testing.T) {
	r := testRing(t, 7)
	seen := map[string]bool{}
	for range 5000 {
		m, err := r.Mint()
		if err != nil {
			t.Fatal(err)
		}
		if seen[m.ID] {
			t.Fatalf("duplicate id after %d mints", len(seen))
		}
		if m.ID[0] == '-' {
			t.Fatalf("id %q starts with '-': a command line takes it for a flag", m.ID)
		}
		seen[m.ID] = true
	}
}

func TestVerifyRejects(t *testing.T) {
	r := testRing(t, 1)
	m, err := r.Mint()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := testRing(t, 1).Mint() // same key material: signature verifies
	flip := func(i int) string {
		b := []byte(m.Token)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	withKeyID := func(kid byte) string {
		raw, err := encoding.DecodeString(m.Token[len(Prefix):])
		if err != nil {
			t.Fatal(err)
		}
		raw[idLen+1] = kid
		return Prefix + encoding.EncodeToString(raw)
	}
	tests := map[string]struct {
		tok  string
		want error
	}{
		"empty":             {"", ErrMalformed},
		"prefix only":       {"kw_", ErrMalformed},
		"truncated":         {m.Token[:Len-1], ErrMalformed},
		"extended":          {m.Token + "A", ErrMalformed},
		"wrong prefix":      {"sk_" + m.Token[3:], ErrMalformed},
		"bad alphabet":      {m.Token[:10] + "+" + m.Token[11:], ErrMalformed},
		"random":            {Prefix + strings.Repeat("Q", Len-len(Prefix)), ErrMalformed},
		"flipped id":        {flip(5), ErrForged},
		"flipped secret":    {flip(30), ErrForged},
		"flipped tag":       {flip(Len - 3), ErrForged},
		"unknown key id":    {withKeyID(9), ErrForged},
		"spliced":           {m.Token[:40] + other.Token[40:], ErrForged},
		"provider key":      {"sk-proj-" + strings.Repeat("a", 59), ErrMalformed},
		"kw prefix garbage": {"kw_" + strings.Repeat("-", 64), ErrMalformed},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, _, err := r.Verify(tc.tok)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), m.Token[3:]) {
				t.Fatal("error message contains the token")
			}
		})
	}
}

func TestNewKeyringErrors(t *testing.T) {
	tests := map[string][]SigningKey{
		"none":      nil,
		"short":     {{ID: 1, Secret: []byte("short")}},
		"duplicate": {{ID: 1, Secret: make([]byte, 32)}, {ID: 1, Secret: make([]byte, 32)}},
	}
	for name, keys := range tests {
		if _, err := NewKeyring(keys); err == nil {
			t.Errorf("%s: NewKeyring succeeded", name)
		}
	}
}

func TestSigningKeyHidesSecret(t *testing.T) {
	k, err := NewSigningKey(3)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{k.String(), k.GoString()} {
		if bytes.Contains([]byte(s), k.Secret) {
			t.Fatalf("%q shows the secret", s)
		}
	}
}

func FuzzVerify(f *testing.F) {
	r := testRing(f, 1)
	m, _ := r.Mint()
	f.Add(m.Token)
	f.Add("kw_")
	f.Add("Bearer kw_x")
	f.Fuzz(func(t *testing.T, s string) {
		id, _, err := r.Verify(s)
		if err != nil {
			return
		}
		if id != s[3:19] || !ValidID(id) {
			t.Fatalf("accepted %q with id %q", s, id)
		}
		// Whatever verifies is bound by its tag: any one character
		// changed, and it no longer does.
		for i := len(Prefix); i < len(s); i++ {
			b := []byte(s)
			b[i] ^= 1
			if _, _, err := r.Verify(string(b)); err == nil {
				t.Fatalf("%q still verifies with byte %d changed", s, i)
			}
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	r := testRing(b, 1)
	m, _ := r.Mint()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.Verify(m.Token); err != nil {
			b.Fatal(err)
		}
	}
}

func TestManagementTokensAreAnotherKind(t *testing.T) {
	llm := testRing(t, 1, 2)
	mgmt := llm.Management()
	lt, err := llm.Mint()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := mgmt.Mint()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(mt.Token, ManagementPrefix) || !ValidID(mt.ID) || !strings.Contains(mt.Token, mt.ID) {
		t.Fatalf("management token shape: len %d", len(mt.Token))
	}
	if id, h, err := mgmt.Verify(mt.Token); err != nil || id != mt.ID || !HashEqual(h, mt.Hash) {
		t.Fatalf("management Verify: id %q, err %v", id, err)
	}
	if LooksLikeToken(mt.Token) {
		t.Fatal("a management token looks like an LLM token")
	}
	// The same body under the other prefix must not verify either: the tag
	// covers the kind, not only the prefix check.
	swappedToMgmt := ManagementPrefix + lt.Token[len(Prefix):]
	swappedToLLM := Prefix + mt.Token[len(ManagementPrefix):]
	for name, tc := range map[string]struct {
		ring *Keyring
		tok  string
		want error
	}{
		"llm token as management":         {mgmt, lt.Token, ErrMalformed},
		"management token as llm":         {llm, mt.Token, ErrMalformed},
		"llm body with management prefix": {mgmt, swappedToMgmt, ErrForged},
		"management body with llm prefix": {llm, swappedToLLM, ErrForged},
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := tc.ring.Verify(tc.tok); !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
	// LLM tokens are unchanged by the management kind's existence.
	if _, _, err := llm.Verify(lt.Token); err != nil {
		t.Fatalf("llm Verify: %v", err)
	}
}
