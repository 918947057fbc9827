package authz

import (
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"testing"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/keyward/keyward/record"
)

// TestAnswersBounded: the cache never holds more than its size (whole
// sets of it), keeps what it was given while its sets have room (all of
// it in a cache of one set, nearly all in a large one), answers each key with its own answer, and,
// cycling through three times more keys than it holds, still hits about
// as often as it has room for (an LRU would miss every time: issue 13's
// cliff).
func TestAnswersBounded(t *testing.T) {
	seed := maphash.MakeSeed()
	for _, size := range []int{1, 8, 10, 5000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			a := newAnswers(size, func(k tokenAnswer) uint64 { return maphash.Bytes(seed, k.id[:]) })
			if c := a.capacity(); c > size || c < size-answerWays+1 {
				t.Fatalf("capacity %d for size %d", c, size)
			}
			keys := make([]tokenAnswer, 3*size)
			resps := make(map[tokenAnswer]*authv3.CheckResponse, len(keys))
			for i := range keys {
				keys[i] = tokenAnswer{answerKey: answerKey{key: &record.Key{}, provider: "openai"}}
				copy(keys[i].id[:], fmt.Sprintf("%016d", i))
				resps[keys[i]] = &authv3.CheckResponse{}
			}
			for _, k := range keys[:a.capacity()] {
				a.add(k, resps[k])
			}
			for _, k := range keys[:a.capacity()] {
				if _, ok := a.get(k); !ok && len(a.sets) == 1 {
					t.Fatalf("key %s evicted with room to spare", k.id)
				}
			}
			// As many keys as it has room for, cycled through again and
			// again, mostly hit: two sets a key are what fill it evenly
			// (about 94% hit, with one set 75%).
			hits := 0
			for round := range 6 {
				for _, k := range keys[:a.capacity()] {
					if _, ok := a.get(k); ok && round >= 2 {
						hits++
					} else if !ok {
						a.add(k, resps[k])
					}
				}
			}
			if hits < 4*a.capacity()*90/100 {
				t.Fatalf("%d hits in 4 rounds over the %d keys it has room for", hits, a.capacity())
			}
			hits = 0
			for range 3 {
				for _, k := range keys {
					if resp, ok := a.get(k); ok {
						if resp != resps[k] {
							t.Fatalf("key %s answered with another key's answer", k.id)
						}
						hits++
					} else {
						a.add(k, resps[k])
					}
					if n := a.len(); n > size {
						t.Fatalf("holds %d answers, size %d", n, size)
					}
				}
			}
			// Random replacement keeps about capacity/active of the
			// keys: a third here, half of that is ample.
			if want := 3 * len(keys) / 3 / 6; hits < want {
				t.Fatalf("%d hits while cycling 3 times through %d keys, want at least %d", hits, len(keys), want)
			}
		})
	}
}

// TestCachedAnswerIsBuilt: a cached answer, the key's shared parts and the
// token's own merged on the wire, reads as build's answer for every key
// convention, the user's own key and key delivery in metadata included.
func TestCachedAnswerIsBuilt(t *testing.T) {
	f := newFixture(t)
	cases := map[string]struct {
		headers  map[string]string
		provider string
		opts     Options
	}{
		"openai":      {headers: bearerHeader(f.tokens["ok"]), provider: "openai"},
		"anthropic":   {headers: map[string]string{"x-api-key": f.tokens["ok"]}, provider: "anthropic"},
		"gemini":      {headers: map[string]string{"x-goog-api-key": f.tokens["ok"]}, provider: "gemini"},
		"azure":       {headers: map[string]string{"api-key": f.tokens["ok"]}, provider: "azure"},
		"in metadata": {headers: bearerHeader(f.tokens["ok"]), provider: "openai", opts: Options{KeyDelivery: map[string]KeyDelivery{"openai": KeyInMetadata}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := f.server(t, tc.opts)
			req := checkRequest(tc.headers, "", tc.provider)
			got, err := check(t, s, req)
			if err != nil {
				t.Fatal(err)
			}
			if got.GetOkResponse() == nil {
				t.Fatalf("denied: %v", got)
			}
			http := req.Attributes.Request.Http
			d := s.authorizer.Decide(context.Background(), &Request{Method: http.Method, Headers: http.Headers, Path: http.Path, Host: http.Host, ContextExtensions: req.Attributes.ContextExtensions})
			if d.Key == nil {
				t.Fatal("no key: the case does not reach the cached form")
			}
			k, ok := tokenAnswerOf(answerKey{key: d.Key, provider: d.ProviderName, tokenAt: int32(d.found.tokenAt), inMetadata: tc.opts.KeyDelivery[tc.provider] == KeyInMetadata}, &d)
			if !ok {
				t.Fatalf("token id %q: no answer key", d.TokenID)
			}
			cached, ok := s.responder.byToken.get(k)
			if !ok || len(cached.ProtoReflect().GetUnknown()) == 0 || cached.GetOkResponse() == nil {
				t.Fatal("the answer is not cached in its compact form")
			}
			want := s.responder.build(&d, nil, false, tc.opts.KeyDelivery[tc.provider] == KeyInMetadata)
			sortHeaders(got)
			sortHeaders(want)
			if !proto.Equal(got, want) {
				t.Fatalf("cached answer reads\n%v\nwant build's\n%v", got, want)
			}
		})
	}
}

func sortHeaders(resp *authv3.CheckResponse) {
	ok := resp.GetOkResponse()
	slices.SortFunc(ok.Headers, func(a, b *corev3.HeaderValueOption) int { return strings.Compare(a.Header.Key, b.Header.Key) })
	slices.Sort(ok.HeadersToRemove)
}

// BenchmarkCheckAllowedUncached is an allowed check whose answer is not in
// the cache (two tokens alternate over a cache of one): what each check
// costs a replica with more active tokens than cache.answers.
func BenchmarkCheckAllowedUncached(b *testing.B) {
	f := newFixture(b)
	s := f.server(b, Options{})
	var err error
	if s.responder, err = newResponder(s.authorizer.opts.Sources, nil, 1); err != nil {
		b.Fatal(err)
	}
	reqs := []*authv3.CheckRequest{
		checkRequest(bearerHeader(f.tokens["ok"]), "", "openai"),
		checkRequest(bearerHeader(f.tokens["future"]), "", "openai"),
	}
	for _, req := range reqs {
		if resp, _ := check(b, s, req); resp.GetOkResponse() == nil {
			b.Fatalf("denied: %v", resp)
		}
	}
	f.records.privateAsked = nil
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.Check(ctx, reqs[i&1])
		i++
	}
}

// TestAnswerKeySizes: an answer's entry is its key and a pointer, one
// allocation per answer cached, in Go's size class of 96 bytes for the
// many tokens' answers: a key that grew would move every one of them up
// to the next.
func TestAnswerKeySizes(t *testing.T) {
	for name, tc := range map[string]struct{ size, max uintptr }{
		"token": {unsafe.Sizeof(answerEntry[tokenAnswer]{}), 96},
		"other": {unsafe.Sizeof(answerEntry[otherAnswer]{}), 128},
	} {
		if tc.size > tc.max {
			t.Errorf("a %s answer's entry is %d bytes, over %d", name, tc.size, tc.max)
		}
	}
}
