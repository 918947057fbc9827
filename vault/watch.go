package vault

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/keyward/keyward/record"
)

// Invalidator drops cached records: one by kind and name, or all.
type Invalidator interface {
	Invalidate(t record.Type, name string)
	Purge()
}

// Watch polls Vault every PollInterval until ctx is done, telling inv what
// changed. onKeys runs when the token signing keys may have changed.
//
// One poll is a health check of the active node (see active.go), one read
// of the change marker, and one metadata read per provider in use (so that
// a key rotated directly in Vault is seen within a poll): a constant few
// requests, however many tokens and groups there are. When the active node
// changes, every cache is dropped.
// Records changed directly in Vault, past keyward, are picked up when their
// cache TTL runs out.
//
// While Vault cannot be reached, cached records keep serving (up to the
// cache's MaxStale); when it answers again, every cache is dropped, since
// anything may have changed meanwhile.
func (s *Store) Watch(ctx context.Context, inv Invalidator, onKeys func()) {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	w := &watchState{}
	for {
		s.poll(ctx, w, inv, onKeys)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type watchState struct {
	started   bool
	last      int
	down      bool
	downSince time.Time
}

func (s *Store) poll(ctx context.Context, w *watchState, inv Invalidator, onKeys func()) {
	var seq int
	var changes []change
	_, err := s.nodes.check(ctx)
	switched := s.nodes.takeMoved()
	if err == nil {
		seq, changes, _, err = s.readMarker(ctx)
	}
	if err == nil {
		err = s.pollProviders(ctx, inv)
	}
	if err != nil {
		s.pollFailed(ctx, w, err)
		return
	}
	resync := func(why string) {
		s.log.Info("dropping all cached records", "reason", why)
		inv.Purge()
		onKeys()
	}
	switch {
	case w.down:
		s.log.Info("vault reachable again", "after", time.Since(w.downSince).Round(time.Millisecond).String(), "active_node", s.nodes.current())
		w.down = false
		resync("vault was unreachable")
	case switched:
		// Records read from the old node in its last moments as active
		// may predate changes the new one has.
		s.log.Info("vault active node changed", "address", s.nodes.current())
		resync("the active node changed")
	case !w.started:
	case seq < w.last:
		resync("change marker went back")
	case seq > w.last:
		if len(changes) == 0 || changes[0].seq > w.last+1 {
			resync("missed changes")
			break
		}
		applyChanges(changes, w.last, inv, onKeys)
	}
	w.started, w.last = true, seq
}

// pollFailed notes a poll that could not reach Vault.
func (s *Store) pollFailed(ctx context.Context, w *watchState, err error) {
	if ctx.Err() != nil {
		return
	}
	if isForbidden(err) {
		// Our token was revoked, or Vault lost it (a restart without its
		// storage): log in again rather than wait for the renewal to
		// notice.
		s.keeper.relogin()
	}
	if !w.down {
		w.down, w.downSince = true, time.Now()
		s.log.Warn("vault unreachable; serving cached records within max_stale", "err", err, "max_stale", s.cfg.MaxStale.String())
	}
}

// applyChanges tells inv of every change after sequence number last.
func applyChanges(changes []change, last int, inv Invalidator, onKeys func()) {
	for _, c := range changes {
		switch {
		case c.seq <= last:
		case c.kind == record.TypeSystem:
			onKeys()
		default:
			inv.Invalidate(c.kind, c.name)
		}
	}
}

// pollProviders compares the version of every provider in use with the
// one last read.
func (s *Store) pollProviders(ctx context.Context, inv Invalidator) error {
	s.mu.Lock()
	versions := maps.Clone(s.providerVersions)
	s.mu.Unlock()
	for name, seen := range versions {
		current := 0
		meta, err := s.kv.GetMetadata(ctx, providersDir+name)
		switch {
		case err == nil && meta != nil:
			current = meta.CurrentVersion
		case err == nil, errors.Is(err, api.ErrSecretNotFound), isNotFound(err):
		default:
			return err
		}
		if current != seen {
			s.log.Info("provider changed in vault", "provider", name, "version", current)
			s.watchProvider(name, current)
			inv.Invalidate(record.TypeProvider, name)
		}
	}
	return nil
}

func isForbidden(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403
}

func isNotFound(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == 404
}
