package vault_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/vault"
	"github.com/keyward/keyward/vault/vaulttest"
)

// FuzzStoreNamesLive drives every store method that puts a name or id
// into a path with arbitrary names, against a real OpenBao dev server (one
// per fuzz worker), starting each time from the fixture. An invalid name
// must be record.ErrInvalidName with no request sent at all; a valid one
// may change only the records its method names, and the change marker,
// checked on a snapshot of the whole mount.
//
// Its name ends in Live: every run costs real requests, so scripts/test.sh
// runs such targets with a smaller count ($LIVE_FUZZTIME) than the
// parsers'.
func FuzzStoreNamesLive(f *testing.F) {
	ops := nameOps()
	opNames := slices.Sorted(maps.Keys(ops))
	// Seeds: every trick for every method (no request each), then one
	// valid name that hits a fixture record and one that names a new one.
	for i, name := range opNames {
		for _, seed := range trickNames {
			f.Add(uint8(i), seed)
		}
		for _, candidates := range [][]string{{fixUser, fixToken}, {"new.name-1", "EEEEEEEEEEEEEEEE"}} {
			if seed := candidates[0]; ops[name].valid(seed) {
				f.Add(uint8(i), seed)
			} else {
				f.Add(uint8(i), candidates[1])
			}
		}
	}
	srv := vaulttest.Start(f, "keyward")
	st := newStore(f, srv, vault.Config{})
	fx := &fixture{srv: srv, st: st, root: srv.Client(f, srv.RootToken)}
	fx.reset(f)
	f.Fuzz(func(t *testing.T, which uint8, name string) {
		opName := opNames[int(which)%len(opNames)]
		op := ops[opName]
		sent := st.Requests()
		err := op.do(t.Context(), st, name)
		if !op.valid(name) {
			checkNameError(t, op, name, err)
			if n := st.Requests() - sent; n != 0 {
				t.Fatalf("%s(%q): %d requests sent to Vault, want none", opName, name, n)
			}
			return
		}
		if errors.Is(err, record.ErrInvalidName) {
			t.Fatalf("%s(%q): %v for a valid name", opName, name, err)
		}
		changed := fx.changed(t)
		if len(changed) > 0 {
			// Whatever the verdict, the next input starts from the
			// fixture.
			defer fx.reset(t)
		}
		var may []string
		if op.may != nil {
			may = op.may(name)
		}
		for _, path := range changed {
			if path != "system/changes" && !mayChange(may, path) {
				t.Fatalf("%s(%q) changed %s; it may change only %v", opName, name, path, may)
			}
		}
	})
}

// fixture keeps the mount at the records seedFixture writes.
type fixture struct {
	srv  *vaulttest.Server
	st   *vault.Store
	root *api.Client
	base map[string]string
}

// reset deletes every record and writes the fixture again.
func (fx *fixture) reset(t testing.TB) {
	t.Helper()
	for path := range vaulttest.Snapshot(t, fx.root, "keyward") {
		if err := fx.root.KVv2("keyward").DeleteMetadata(context.Background(), path); err != nil {
			t.Fatal(err)
		}
	}
	seedFixture(t, fx.srv, fx.st)
	fx.base = vaulttest.Snapshot(t, fx.root, "keyward")
}

// changed lists the records that differ from the fixture.
func (fx *fixture) changed(t testing.TB) []string {
	t.Helper()
	now := vaulttest.Snapshot(t, fx.root, "keyward")
	var out []string
	for path, state := range now {
		if fx.base[path] != state {
			out = append(out, path)
		}
	}
	for path := range fx.base {
		if _, ok := now[path]; !ok {
			out = append(out, path)
		}
	}
	return out
}

// mayChange reports whether path is one of may or under one of its
// folders.
func mayChange(may []string, path string) bool {
	for _, m := range may {
		if path == m || (strings.HasSuffix(m, "/") && strings.HasPrefix(path, m)) {
			return true
		}
	}
	return false
}
