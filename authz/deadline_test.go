package authz

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/record"
)

// slowRecords are memRecords behind a store that hangs for the kinds in
// slow, as a cache whose records of that kind have expired: asked from
// memory (the Authorizer's fromMemory context) they have nothing; asked
// under the check's deadline they wait for its end (which may already
// have passed on a busy machine), then answer with the last-known-good
// record if stale holds the kind, else with the context's error.
// Every lookup's context is recorded, in order.
type slowRecords struct {
	*memRecords
	slow, stale map[string]bool
	// fromMemory is the Authorizer's context for asking from memory.
	fromMemory context.Context

	mu    sync.Mutex
	calls []slowCall
}

type slowCall struct {
	kind string
	ctx  context.Context
}

func lookupAs[V any](s *slowRecords, ctx context.Context, kind string, mem func() (V, error)) (V, error) {
	s.mu.Lock()
	s.calls = append(s.calls, slowCall{kind, ctx})
	s.mu.Unlock()
	var zero V
	if s.slow[kind] {
		if ctx == s.fromMemory {
			return zero, fmt.Errorf("%s: %w", kind, context.Cause(ctx))
		}
		<-ctx.Done()
		if !s.stale[kind] {
			return zero, fmt.Errorf("%s: %w", kind, context.Cause(ctx))
		}
	}
	return mem()
}

func (s *slowRecords) Token(ctx context.Context, id string) (record.Token, error) {
	return lookupAs(s, ctx, "token", func() (record.Token, error) { return s.memRecords.Token(ctx, id) })
}
func (s *slowRecords) User(ctx context.Context, n string) (*record.User, error) {
	return lookupAs(s, ctx, "user", func() (*record.User, error) { return s.memRecords.User(ctx, n) })
}
func (s *slowRecords) Group(ctx context.Context, n string) (*record.Group, error) {
	return lookupAs(s, ctx, "group", func() (*record.Group, error) { return s.memRecords.Group(ctx, n) })
}
func (s *slowRecords) Provider(ctx context.Context, n string) (*record.Provider, error) {
	return lookupAs(s, ctx, "provider", func() (*record.Provider, error) { return s.memRecords.Provider(ctx, n) })
}
func (s *slowRecords) PrivateKeys(ctx context.Context, u string) (*record.PrivateKeys, error) {
	return lookupAs(s, ctx, "private_keys", func() (*record.PrivateKeys, error) { return s.memRecords.PrivateKeys(ctx, u) })
}

// TestCheckDeadline: every lookup of a check first asks from memory; the
// first that has to wait makes the check's one deadline, which every later
// lookup shares; past it a check answers from last-known-good records or
// is refused as store_unavailable.
func TestCheckDeadline(t *testing.T) {
	tests := map[string]struct {
		slow  []string
		stale []string // the slow kinds with a last-known-good record
		want  Reason
		// calls are the lookups' kinds in order, "+" marking those asked
		// under the check's deadline rather than from memory.
		calls []string
	}{
		"warm":                  {want: ReasonAllowed, calls: []string{"token", "user", "group", "provider", "private_keys"}},
		"token stale":           {slow: []string{"token"}, stale: []string{"token"}, want: ReasonAllowed, calls: []string{"token", "+token", "+user", "+group", "+provider", "+private_keys"}},
		"group stale":           {slow: []string{"group"}, stale: []string{"group"}, want: ReasonAllowed, calls: []string{"token", "user", "group", "+group", "+provider", "+private_keys"}},
		"group cold":            {slow: []string{"group"}, want: ReasonStoreUnavailable, calls: []string{"token", "user", "group", "+group"}},
		"user stale, then cold": {slow: []string{"user", "private_keys"}, stale: []string{"user"}, want: ReasonStoreUnavailable, calls: []string{"token", "user", "+user", "+group", "+provider", "+private_keys"}},
		"provider cold":         {slow: []string{"provider"}, want: ReasonStoreUnavailable, calls: []string{"token", "user", "group", "provider", "+provider"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			recs := &slowRecords{memRecords: f.records, slow: map[string]bool{}, stale: map[string]bool{}}
			for _, k := range tc.slow {
				recs.slow[k] = true
			}
			for _, k := range tc.stale {
				recs.stale[k] = true
			}
			a, err := NewAuthorizer(recs, f.ring, Options{
				Sources: []Source{{Header: "authorization"}}, Now: func() time.Time { return testNow },
				CheckDeadline: time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			recs.fromMemory = a.fromMemory
			d := a.Decide(t.Context(), &Request{Headers: bearerHeader(f.tokens["ok"]), ContextExtensions: map[string]string{"provider": "openai"}})
			if d.Reason != tc.want {
				t.Errorf("reason %s (%v), want %s", d.Reason, d.Err, tc.want)
			}
			var got []string
			var deadlineCtx context.Context
			for _, c := range recs.calls {
				switch {
				case c.ctx == a.fromMemory:
					got = append(got, c.kind)
				case deadlineCtx == nil || c.ctx == deadlineCtx:
					deadlineCtx = c.ctx
					got = append(got, "+"+c.kind)
				default:
					t.Errorf("%s asked under a second deadline context", c.kind)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.calls) {
				t.Errorf("lookups %v, want %v", got, tc.calls)
			}
		})
	}
}

// TestCheckDeadlineBounds: the check's deadline is CheckDeadline after the
// first lookup that has to wait, but no later than halfway to the
// caller's own deadline.
func TestCheckDeadlineBounds(t *testing.T) {
	tests := map[string]struct {
		checkDeadline time.Duration
		parentLeft    time.Duration // the caller's deadline, this far away; 0 for none
	}{
		"CheckDeadline":               {checkDeadline: 10 * time.Millisecond},
		"CheckDeadline, later parent": {checkDeadline: 2 * time.Millisecond, parentLeft: 10 * time.Second},
		"halfway to the parent":       {checkDeadline: time.Hour, parentLeft: 20 * time.Millisecond},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			recs := &slowRecords{memRecords: f.records, slow: map[string]bool{"token": true}, stale: map[string]bool{"token": true}}
			a, err := NewAuthorizer(recs, f.ring, Options{Sources: []Source{{Header: "authorization"}}, Now: func() time.Time { return testNow }, CheckDeadline: tc.checkDeadline})
			if err != nil {
				t.Fatal(err)
			}
			recs.fromMemory = a.fromMemory
			ctx := context.Background()
			before := time.Now()
			parent := before.Add(tc.parentLeft)
			if tc.parentLeft > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, parent)
				defer cancel()
			}
			a.Decide(ctx, &Request{Headers: bearerHeader(f.tokens["ok"]), ContextExtensions: map[string]string{"provider": "openai"}})
			after := time.Now()
			got, ok := recs.calls[1].ctx.Deadline()
			if !ok {
				t.Fatal("the check's lookups had no deadline")
			}
			// Bounds from the clock readings around the check, between
			// which the deadline was computed.
			lo, hi := before.Add(tc.checkDeadline), after.Add(tc.checkDeadline)
			if tc.parentLeft > 0 {
				hlo, hhi := before.Add(parent.Sub(after)/2), after.Add(parent.Sub(before)/2)
				switch {
				case hhi.Before(lo): // halfway comes first
					lo, hi = hlo, hhi
				case !hlo.After(hi): // too slow a run to tell which comes first
					lo, hi = minTime(lo, hlo), maxTime(hi, hhi)
				}
			}
			if got.Before(lo) || got.After(hi) {
				t.Errorf("deadline %v after the check began, want between %v and %v", got.Sub(before), lo.Sub(before), hi.Sub(before))
			}
		})
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
