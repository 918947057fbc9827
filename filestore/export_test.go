package filestore

import (
	"context"
	"log/slog"
	"time"
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
