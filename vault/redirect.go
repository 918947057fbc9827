package vault

import (
	"errors"
	"fmt"
	"io"
	"net/http"
)

// ErrRedirect reports that Vault answered with a redirect (any 3xx),
// which keyward never follows. The Vault client would follow one: to a
// cleaned path (a name holding ".." once deleted the record it pointed
// at), or to whatever address a standby names as its leader, carrying
// keyward's token. keyward sends its token only to the addresses in its
// configuration and reads only from the active node (see active.go), so
// a redirect is an error like any other failed request: the caches serve
// their last good records, the next poll tries again.
var ErrRedirect = errors.New("vault answered with a redirect, which keyward does not follow")

// refuseRedirects turns every 3xx answer into ErrRedirect before the
// Vault client or net/http can act on it: the one place, whatever the
// status, Location or caller (store, token renewal, login).
type refuseRedirects struct{ next http.RoundTripper }

func (t refuseRedirects) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil || resp.StatusCode < 300 || resp.StatusCode > 399 {
		return resp, err
	}
	// Drain a little so the connection can be reused; a redirect's body
	// is small or empty.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	return nil, fmt.Errorf("%w: %s %s answered %d", ErrRedirect, r.Method, r.URL.Path, resp.StatusCode)
}
