package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/record"
)

// credSource is a Source whose only interesting part is Credentials; it
// counts the loads per user.
type credSource struct {
	mu    sync.Mutex
	creds map[string][]*record.Credential
	errs  map[string]error
	loads map[string]int
}

func newCredSource() *credSource {
	return &credSource{creds: map[string][]*record.Credential{}, errs: map[string]error{}, loads: map[string]int{}}
}

func (s *credSource) Token(_ context.Context, id string) (*record.Token, error) {
	return nil, fmt.Errorf("token %q: %w", id, record.ErrNotFound)
}
func (s *credSource) User(_ context.Context, name string) (*record.User, error) {
	return &record.User{Name: name}, nil
}
func (s *credSource) Group(_ context.Context, name string) (*record.Group, error) {
	return &record.Group{Name: name}, nil
}
func (s *credSource) Provider(_ context.Context, name string) (*record.Provider, error) {
	return &record.Provider{Name: name}, nil
}

func (s *credSource) Credentials(_ context.Context, user string) ([]*record.Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads[user]++
	if err := s.errs[user]; err != nil {
		return nil, err
	}
	return s.creds[user], nil
}

func (s *credSource) set(user string, creds []*record.Credential, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds[user], s.errs[user] = creds, err
}

func (s *credSource) loaded(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loads[user]
}

func cred(user, id, key string) *record.Credential {
	return &record.Credential{ID: id, User: user, Name: "n", Provider: "openai", Key: key}
}

// TestPrivateKeysLoad: what each store answer becomes, and that a user
// without credentials is remembered like one with them.
func TestPrivateKeysLoad(t *testing.T) {
	tests := map[string]struct {
		creds   []*record.Credential
		err     error
		wantKey string // Key.ID For("openai", "") gives; "" for none
		wantErr bool
	}{
		"credentials":    {creds: []*record.Credential{cred("ann", "c1", "sk-ann")}, wantKey: "user:c1"},
		"empty list":     {creds: []*record.Credential{}},
		"nil list":       {},
		"user not found": {err: fmt.Errorf("user %q: %w", "ann", record.ErrNotFound)},
		"store down":     {err: errors.New("vault list: connection refused"), wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			src := newCredSource()
			src.set("ann", tc.creds, tc.err)
			r, err := NewRecords(src, Options{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			for range 3 {
				pk, err := r.PrivateKeys(ctx, "ann")
				if tc.wantErr {
					if err == nil {
						t.Fatal("store error not returned")
					}
					continue
				}
				if err != nil || pk == nil {
					t.Fatalf("PrivateKeys = %v, %v; want a non-nil index", pk, err)
				}
				got := ""
				if k := pk.For("openai", ""); k != nil {
					got = k.Key.ID
				}
				if got != tc.wantKey {
					t.Fatalf("For = %q, want %q", got, tc.wantKey)
				}
			}
			want := 1
			if tc.wantErr {
				want = 3 // errors are not cached
			}
			if n := src.loaded("ann"); n != want {
				t.Fatalf("%d loads for 3 requests, want %d", n, want)
			}
		})
	}
}

// TestPrivateKeysInvalidate: a credential change drops its user's entry
// and nobody else's; a user change and a purge drop it too.
func TestPrivateKeysInvalidate(t *testing.T) {
	tests := map[string]struct {
		drop    func(r *Records)
		annDrop bool
		bobDrop bool
	}{
		"credential of ann": {drop: func(r *Records) { r.Invalidate(record.TypeCredential, "ann/c9") }, annDrop: true},
		"credential of bob": {drop: func(r *Records) { r.Invalidate(record.TypeCredential, "bob/c1") }, bobDrop: true},
		"user ann":          {drop: func(r *Records) { r.Invalidate(record.TypeUser, "ann") }, annDrop: true},
		"group ann":         {drop: func(r *Records) { r.Invalidate(record.TypeGroup, "ann") }},
		"token":             {drop: func(r *Records) { r.Invalidate(record.TypeToken, "ann") }},
		"api-token":         {drop: func(r *Records) { r.Invalidate(record.TypeAPIToken, "ann") }},
		"unknown kind":      {drop: func(r *Records) { r.Invalidate("something-new", "x") }, annDrop: true, bobDrop: true},
		"purge":             {drop: func(r *Records) { r.Purge() }, annDrop: true, bobDrop: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			src := newCredSource()
			src.set("ann", []*record.Credential{cred("ann", "c1", "sk-ann-1")}, nil)
			src.set("bob", []*record.Credential{cred("bob", "c1", "sk-bob-1")}, nil)
			r, err := NewRecords(src, Options{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			before := map[string]*record.Key{}
			for _, u := range []string{"ann", "bob"} {
				pk, err := r.PrivateKeys(ctx, u)
				if err != nil {
					t.Fatal(err)
				}
				before[u] = &pk.For("openai", "").Key
			}
			// Both users replace their credential behind the cache.
			src.set("ann", []*record.Credential{cred("ann", "c9", "sk-ann-9")}, nil)
			src.set("bob", []*record.Credential{cred("bob", "c2", "sk-bob-2")}, nil)
			tc.drop(r)
			for u, dropped := range map[string]bool{"ann": tc.annDrop, "bob": tc.bobDrop} {
				pk, err := r.PrivateKeys(ctx, u)
				if err != nil {
					t.Fatal(err)
				}
				k := &pk.For("openai", "").Key
				switch {
				case dropped && k == before[u]:
					t.Errorf("%s: still the old credential %s", u, k.ID)
				case !dropped && k != before[u]:
					t.Errorf("%s: reloaded (%s) though nothing of theirs changed", u, k.ID)
				}
				if wantLoads := map[bool]int{false: 1, true: 2}[dropped]; src.loaded(u) != wantLoads {
					t.Errorf("%s: %d loads, want %d", u, src.loaded(u), wantLoads)
				}
			}
		})
	}
}

func TestPrivateKeysHitDoesNotAllocate(t *testing.T) {
	src := newCredSource()
	src.set("ann", []*record.Credential{cred("ann", "c1", "sk-ann")}, nil)
	r, err := NewRecords(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.PrivateKeys(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		pk, _ := r.PrivateKeys(ctx, "ann")
		pk.For("openai", "gpt-4o")
	}); n != 0 {
		t.Fatalf("a warm PrivateKeys lookup allocates %v times", n)
	}
}

// hangSource answers tokens and users; while hanging is set it blocks
// every such load until release is closed, announcing each on started.
type hangSource struct {
	credSource
	mu      sync.Mutex
	hanging bool
	started chan string
	release chan struct{}
}

func (s *hangSource) block(what string) {
	s.mu.Lock()
	h := s.hanging
	s.mu.Unlock()
	if h {
		s.started <- what
		<-s.release
	}
}

func (s *hangSource) Token(_ context.Context, id string) (*record.Token, error) {
	s.block("token " + id)
	return &record.Token{ID: id}, nil
}

func (s *hangSource) User(ctx context.Context, name string) (*record.User, error) {
	s.block("user " + name)
	return s.credSource.User(ctx, name)
}

// TestRecordsShareHealth: a token refresh that outlives its deadline spares
// the user lookup the wait: the caches of one store share its Health.
func TestRecordsShareHealth(t *testing.T) {
	src := &hangSource{credSource: *newCredSource(), started: make(chan string, 4), release: make(chan struct{})}
	clock := newFakeClock()
	r, err := NewRecords(src, Options{Now: clock.Now, TTL: time.Second, MaxStale: time.Hour, StaleWait: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := r.Token(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.User(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	src.mu.Lock()
	src.hanging = true
	src.mu.Unlock()
	defer close(src.release)

	deadline := newDeadlineCtx()
	done := make(chan error, 1)
	go func() {
		_, err := r.Token(deadline, "t")
		done <- err
	}()
	if got := <-src.started; got != "token t" {
		t.Fatalf("load %q started, want token t", got)
	}
	deadline.expire()
	if err := <-done; err != nil {
		t.Fatalf("token at its deadline: %v; want the stale record", err)
	}
	// No deadline and StaleWait an hour: only the shared mark lets this
	// return.
	if u, err := r.User(context.Background(), "u"); err != nil || u.Name != "u" {
		t.Fatalf("user while the store is down: %v, %v; want the stale record at once", u, err)
	}
}

// residentSource is a credSource that says its tokens, users, groups,
// providers and private keys are resident, and counts reads of them.
type residentSource struct {
	*credSource
	reads map[string]int
}

func (s *residentSource) ResidentToken(_ context.Context, id string) (record.Token, error) {
	s.reads["token"]++
	return record.Token{ID: id, User: "ann"}, nil
}

func (s *residentSource) PrivateKeys(ctx context.Context, user string) (*record.PrivateKeys, error) {
	s.reads["private_keys"]++
	creds, err := s.credSource.Credentials(ctx, user)
	return record.NewPrivateKeys(creds), err
}

func (s *residentSource) User(ctx context.Context, name string) (*record.User, error) {
	s.reads["user"]++
	return s.credSource.User(ctx, name)
}

func (s *residentSource) Group(ctx context.Context, name string) (*record.Group, error) {
	s.reads["group"]++
	return s.credSource.Group(ctx, name)
}

func (s *residentSource) Provider(ctx context.Context, name string) (*record.Provider, error) {
	s.reads["provider"]++
	return s.credSource.Provider(ctx, name)
}

// TestResidentSource: a resident source's tokens (by value), users,
// groups, providers and private keys are read from it on every lookup,
// with no cache (and no counters) of their own, while a plain source's are
// cached; identities are cached either way.
func TestResidentSource(t *testing.T) {
	ctx := t.Context()
	for name, tc := range map[string]struct {
		resident  bool
		wantReads int
		wantKinds []string
	}{
		"resident": {true, 3, []string{"identities"}},
		"plain":    {false, 0, []string{"token", "user", "group", "provider", "private_keys", "identities"}},
	} {
		t.Run(name, func(t *testing.T) {
			rs := &residentSource{credSource: newCredSource(), reads: map[string]int{}}
			var src Source = rs.credSource
			if tc.resident {
				src = rs
			}
			r, err := NewRecords(src, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if tk, err := r.Token(ctx, "AAAAAAAAAAAAAAAA"); tc.resident && (err != nil || tk.ID != "AAAAAAAAAAAAAAAA" || tk.User != "ann") {
					t.Fatalf("token: %+v, %v", tk, err)
				}
				if u, err := r.User(ctx, "ann"); err != nil || u.Name != "ann" {
					t.Fatalf("user: %v, %v", u, err)
				}
				if g, err := r.Group(ctx, "eng"); err != nil || g.Name != "eng" {
					t.Fatalf("group: %v, %v", g, err)
				}
				if p, err := r.Provider(ctx, "openai"); err != nil || p.Name != "openai" {
					t.Fatalf("provider: %v, %v", p, err)
				}
				if _, err := r.PrivateKeys(ctx, "ann"); err != nil {
					t.Fatal(err)
				}
			}
			for _, kind := range []string{"token", "user", "group", "provider", "private_keys"} {
				if rs.reads[kind] != tc.wantReads {
					t.Errorf("%s read from the source %d times, want %d", kind, rs.reads[kind], tc.wantReads)
				}
			}
			if n := rs.loaded("ann"); !tc.resident && n != 1 {
				t.Errorf("credentials loaded %d times, want 1 (cached)", n)
			}
			var kinds []string
			for kind := range r.Stats() {
				kinds = append(kinds, kind)
			}
			if fmt.Sprint(kinds) != fmt.Sprint(tc.wantKinds) {
				t.Errorf("stats kinds %v, want %v", kinds, tc.wantKinds)
			}
			// Dropping records works whatever reads them.
			r.Invalidate(record.TypeToken, "AAAAAAAAAAAAAAAA")
			r.Invalidate(record.TypeUser, "ann")
			r.Invalidate(record.TypeProvider, "openai")
			r.Purge()
		})
	}
}
