package filestore

import (
	"context"
	"log/slog"
	"time"
)

// Watch checks the files every interval and reloads them when they change,
// calling onChange whenever the records in force changed since the last
// call: after a reload of what another process wrote, and after this
// store's own Update (which reloads at once, so the files look unchanged
// to the next check). A file that fails to load is reported to log and
// the last good snapshot stays in force. Watch returns when ctx is done.
func (s *Store) Watch(ctx context.Context, interval time.Duration, log *slog.Logger, onChange func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	s.watch(ctx, t.C, log, onChange)
}

// watch polls the files at every tick until ctx is done. The ticks are
// injected so that tests decide when a poll happens instead of racing a
// timer.
func (s *Store) watch(ctx context.Context, ticks <-chan time.Time, log *slog.Logger, onChange func()) {
	w := s.newWatcher(log, onChange)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
			w.poll()
		}
	}
}

// watcher is the state Watch keeps between polls.
type watcher struct {
	s        *Store
	log      *slog.Logger
	onChange func()
	// seen is the snapshot onChange was last called for.
	seen *snapshot
	// lastErr is the failure last logged, so that a file that stays
	// broken is logged once rather than at every poll.
	lastErr string
}

func (s *Store) newWatcher(log *slog.Logger, onChange func()) *watcher {
	return &watcher{s: s, log: log, onChange: onChange, seen: s.snap.Load()}
}

// poll reloads the files if they changed and reports the outcome.
func (w *watcher) poll() {
	if _, err := w.s.reload(); err != nil {
		// The message, not the error's identity: a new failure is logged,
		// the same one again is not.
		if msg := err.Error(); msg != w.lastErr {
			w.log.Error("store reload failed; keeping the last good records", "err", err)
			w.lastErr = msg
		}
		return
	}
	w.lastErr = ""
	if snap := w.s.snap.Load(); snap != w.seen {
		w.seen = snap
		w.s.WarnMissing(w.log)
		w.log.Info("store reloaded", "file", w.s.opts.Path, "tokens", snap.tokens.len())
		w.onChange()
	}
}
