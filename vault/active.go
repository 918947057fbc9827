package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// keyward reads only from the active node of a Vault or OpenBao cluster.
//
// Since OpenBao 2.5 a Raft standby answers reads itself, from its own copy
// of the data, which lags the active node: by milliseconds normally, for
// as long as it is cut off or the cluster has no leader (it keeps
// answering then). X-Vault-Index lets a client read its own writes from a
// standby, but keyward's replicas read what other processes wrote (the
// CLI, the management API of another replica), whose index they never
// saw: only the active node can answer for those. Reading there is cheap,
// since keyward caches what it reads, and it needs nothing of the servers'
// configuration.
//
// So keyward finds the active node among the addresses it is configured
// with (sys/health answers 200 there, 429 on a standby), sends every
// request there, asks again at every poll, and sends nothing while it
// knows of none: the caches then serve their last good records (fail
// static). It never adopts an address from Vault (a redirect's Location,
// sys/leader's leader_address): its token goes only where it was
// configured to go.

// ErrNoActiveNode reports that none of the configured addresses is an
// active, unsealed node just now: every node is a standby, sealed or
// unreachable (a failover in progress, or an address list without the
// active node). No request is sent meanwhile.
var ErrNoActiveNode = errors.New("no active Vault node among the configured addresses")

// activeNode routes every request to the node last found active. It is an
// http.RoundTripper under the Vault client, so that every clone of the
// client (token renewal, logins) follows it too.
type activeNode struct {
	addrs []*url.URL
	// probe asks sys/health: no token, not routed.
	probe  *http.Client
	next   http.RoundTripper
	active atomic.Pointer[url.URL] // nil: none known, nothing is sent
	// moved is set when requests were moved to another node, until the
	// next poll takes it (see takeMoved).
	moved atomic.Bool
	// finds makes concurrent requests that found no node share one search;
	// lastMiss (Unix nanoseconds) is when a search last found none.
	finds    singleflight.Group
	lastMiss atomic.Int64
}

// refindEvery bounds how often requests search for the active node while
// none answers (an election takes seconds; polls keep searching too).
const refindEvery = 100 * time.Millisecond

func newActiveNode(addrs []string, probe *http.Client, next http.RoundTripper) (*activeNode, error) {
	a := &activeNode{probe: probe, next: next}
	for _, s := range addrs {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, errors.New("vault address: not http(s)://HOST[:PORT]") // unquoted: it may hold a password
		}
		a.addrs = append(a.addrs, u)
	}
	if len(a.addrs) == 0 {
		return nil, errors.New("vault: no address: set vault.address, vault.addresses or $VAULT_ADDR")
	}
	return a, nil
}

// RoundTrip sends r to the active node. A read that finds no active node
// known, or whose node does not answer (it died: a failover under way),
// searches for the active node at once and is sent there, rather than
// fail until the next poll: a token created on the new leader right after
// a failover is then found, not refused. Writes are never sent twice.
func (a *activeNode) RoundTrip(r *http.Request) (*http.Response, error) {
	u := a.active.Load()
	if u == nil && idempotent(r) {
		u = a.refind(r.Context(), nil)
	}
	if u == nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("%w: %s %s not sent", ErrNoActiveNode, r.Method, r.URL.Path)
	}
	resp, err := a.next.RoundTrip(routed(r, u))
	if err != nil && idempotent(r) && r.Context().Err() == nil {
		if other := a.refind(r.Context(), u); other != nil && other.String() != u.String() {
			return a.next.RoundTrip(routed(r, other))
		}
	}
	return resp, err
}

// routed returns r addressed to u.
func routed(r *http.Request, u *url.URL) *http.Request {
	if r.URL.Scheme == u.Scheme && r.URL.Host == u.Host {
		return r
	}
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host, r.Host = u.Scheme, u.Host, u.Host
	return r
}

// idempotent reports whether r may be sent again: a read without a body.
func idempotent(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == "LIST") && (r.Body == nil || r.Body == http.NoBody)
}

// refind checks which node is active (see check), sharing the search
// with concurrent callers, and returns it; nil when there is none, or
// when one was searched for in vain less than refindEvery ago. failed is
// the node that did not answer (nil: none was known).
func (a *activeNode) refind(ctx context.Context, failed *url.URL) *url.URL {
	if u := a.active.Load(); u != nil && u != failed {
		return u // another request found it meanwhile
	}
	if since := time.Now().UnixNano() - a.lastMiss.Load(); since < int64(refindEvery) {
		return nil
	}
	v, _, _ := a.finds.Do("", func() (any, error) {
		if _, err := a.check(ctx); err != nil {
			a.lastMiss.Store(time.Now().UnixNano())
			return (*url.URL)(nil), nil
		}
		return a.active.Load(), nil
	})
	return v.(*url.URL)
}

// current returns the address requests go to ("" while none is known).
func (a *activeNode) current() string {
	if u := a.active.Load(); u != nil {
		return u.Redacted()
	}
	return ""
}

// check makes sure requests go to the active node: it asks the current
// one, and when it is not active (or none is known) every configured
// address at once, then routes to the first active one in configured
// order. It reports whether requests now go to another node than before.
func (a *activeNode) check(ctx context.Context) (changed bool, err error) {
	prev := a.active.Load()
	if prev != nil && a.isActive(ctx, prev) == nil {
		return false, nil
	}
	// Until an active node is found, nothing goes to one that may have
	// become a standby.
	a.active.Store(nil)
	found, err := a.find(ctx)
	if err != nil {
		return prev != nil, err
	}
	a.active.Store(found)
	changed = prev != nil && prev.String() != found.String()
	if changed {
		a.moved.Store(true)
	}
	return changed, nil
}

// takeMoved reports whether requests were moved to another node since it
// was last called, by a poll or by a request (see RoundTrip).
func (a *activeNode) takeMoved() bool { return a.moved.Swap(false) }

// find asks every address and returns the first active one.
func (a *activeNode) find(ctx context.Context) (*url.URL, error) {
	errs := make([]error, len(a.addrs))
	var wg sync.WaitGroup
	for i, u := range a.addrs {
		wg.Go(func() { errs[i] = a.isActive(ctx, u) })
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			return a.addrs[i], nil
		}
	}
	why := make([]string, len(errs))
	for i, err := range errs {
		why[i] = err.Error()
	}
	return nil, fmt.Errorf("%w (%s)", ErrNoActiveNode, strings.Join(why, "; "))
}

// health is the part of sys/health's answer that says what a node is.
type health struct {
	Initialized        bool `json:"initialized"`
	Sealed             bool `json:"sealed"`
	Standby            bool `json:"standby"`
	PerformanceStandby bool `json:"performance_standby"`
}

// isActive asks u's sys/health, which answers 200 on an active, unsealed
// node only (429 on a standby, 473 on a performance standby, 503 when
// sealed); the body must agree. Errors say what the node is instead.
func (a *activeNode) isActive(ctx context.Context, u *url.URL) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.JoinPath("v1", "sys", "health").String(), nil)
	if err != nil {
		return fmt.Errorf("%s: %w", u.Redacted(), err)
	}
	resp, err := a.probe.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	var h health
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&h); err != nil {
		return fmt.Errorf("%s: sys/health answered %d: %w", u.Redacted(), resp.StatusCode, err)
	}
	switch {
	case h.Sealed:
		return fmt.Errorf("%s: sealed", u.Redacted())
	case !h.Initialized:
		return fmt.Errorf("%s: not initialized", u.Redacted())
	case h.Standby || h.PerformanceStandby || resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%s: a standby (sys/health %d)", u.Redacted(), resp.StatusCode)
	}
	return nil
}
