package filestore

import (
	"context"
	"log/slog"
	"time"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Poller returns one poll of Watch, to call in place of a tick: when it
// returns, the files have been checked and onChange called if the records
// changed.
func (s *Store) Poller(log *slog.Logger, onChange func()) func() {
	return s.newWatcher(log, onChange).poll
}

// WatchTicks is Watch polling at each tick instead of on a timer.
func (s *Store) WatchTicks(ctx context.Context, ticks <-chan time.Time, log *slog.Logger, onChange func()) {
	s.watch(ctx, ticks, log, onChange)
}

// SetCompactMin sets how many superseded lines the token file must hold
// before a write rewrites it whole, so that tests reach it with a few.
func (s *Store) SetCompactMin(n int) { s.compactMin = n }

// get is the record of id, if the index holds it (Store.Token without the
// store).
func (x *tokenIndex) get(id string) (*record.Token, bool) {
	raw, ok := token.ParseID(id)
	if !ok {
		return nil, false
	}
	t, ok := x.value(id, raw)
	if !ok {
		return nil, false
	}
	return detached(t), true
}
