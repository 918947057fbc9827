package vault_test

import (
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/vault"
	"github.com/keyward/keyward/vault/vaulttest"
)

// TestDotDotRedirectRefused sends paths holding ".." as they reach
// Vault when nothing cleans them first (the Vault client's own path.Join
// does, which is why names are checked; a raw request does not): Vault
// answers 307 to the cleaned path, and the client must not follow it.
// Before, it did, with the same method: the DELETEs removed group eng, a
// token and a provider.
func TestDotDotRedirectRefused(t *testing.T) {
	srv := vaulttest.Start(t, "keyward")
	st := newStore(t, srv, vault.Config{})
	seedFixture(t, srv, st)
	root := srv.Client(t, srv.RootToken)
	before := vaulttest.Snapshot(t, root, "keyward")
	ctx := t.Context()
	for _, path := range []string{
		"/v1/keyward/metadata/users/../groups/" + fixGroup,
		"/v1/keyward/metadata/groups/../tokens/" + fixToken,
		"/v1/keyward/data/users/../providers/openai",
	} {
		r := st.Client().NewRequest(http.MethodDelete, "/v1/keyward/metadata/placeholder")
		r.URL.Path = path // as sent, uncleaned
		//lint:ignore SA1019 the one call that sends a path the client has not cleaned
		resp, err := st.Client().RawRequestWithContext(ctx, r)
		if resp != nil {
			resp.Body.Close()
		}
		if !errors.Is(err, vault.ErrRedirect) {
			t.Errorf("DELETE %s: %v, want vault.ErrRedirect", path, err)
		}
	}
	if after := vaulttest.Snapshot(t, root, "keyward"); !maps.Equal(before, after) {
		t.Fatalf("the mount changed:\nbefore %v\nafter  %v", before, after)
	}
}

// TestRedirectsRefused: whatever 3xx a server answers, the store reports
// vault.ErrRedirect (never "not found", which would evict a live record
// or refuse a valid token) and sends nothing to the Location.
func TestRedirectsRefused(t *testing.T) {
	var followed atomic.Int64
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		followed.Add(1)
		io.WriteString(w, `{"data":{"data":{"disabled":false},"metadata":{"version":1}}}`)
	}))
	defer elsewhere.Close()
	for _, status := range []int{300, 301, 302, 303, 307, 308} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/v1/sys/health":
					io.WriteString(w, activeHealth)
					return
				case "/v1/auth/token/lookup-self":
					io.WriteString(w, `{"data":{"ttl":0,"renewable":false}}`)
					return
				}
				w.Header().Set("Location", elsewhere.URL+r.URL.Path)
				w.WriteHeader(status)
			}))
			defer fake.Close()
			st := fakeStore(t, fake.URL)
			_, err := st.Group(t.Context(), "eng")
			if !errors.Is(err, vault.ErrRedirect) || errors.Is(err, record.ErrNotFound) {
				t.Fatalf("Group: %v, want vault.ErrRedirect and not ErrNotFound", err)
			}
			if err := st.DeleteGroup(t.Context(), "eng"); !errors.Is(err, vault.ErrRedirect) {
				t.Fatalf("DeleteGroup: %v, want vault.ErrRedirect", err)
			}
			if n := followed.Load(); n != 0 {
				t.Fatalf("%d requests followed the redirect", n)
			}
			if strings.Contains(err.Error(), "kwtest-token") {
				t.Fatalf("the error carries the token: %v", err)
			}
		})
	}
}

// activeHealth is sys/health's answer on an active node.
const activeHealth = `{"initialized":true,"sealed":false,"standby":false}`

// fakeStore is a started store on a fake Vault at addr, logged in with a
// token the fake accepts.
func fakeStore(t *testing.T, addr string) *vault.Store {
	t.Helper()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("kwtest-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := vault.New(vault.Config{Address: addr, Auth: vault.AuthConfig{TokenFile: file}}, slog.New(slog.DiscardHandler), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return st
}
