// Package serve is keyward's process runtime, what `keyward serve` runs:
// it opens the configured store (OpenStore, the one place that chooses the
// file store or Vault, which the CLI's commands use too), builds the record
// caches, the keyring and the decision, and serves the ext_authz gRPC
// server with its health service, the management API and the metrics
// endpoint on their listeners — TLS from files reloaded on change, or a
// unix socket — until it is told to stop, then drains: health turns
// NOT_SERVING while every listener keeps answering for shutdown_drain,
// then in-flight requests get shutdown_grace. Every listener is closed on
// every way out.
package serve

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/telemetry"
)

// Options are what Run needs besides the configuration.
type Options struct {
	// Log receives every event. Default: discarded.
	Log *slog.Logger
	// Getenv reads the environment: provider keys, Vault's settings, the
	// bootstrap admin credential. Default: nothing is set.
	Getenv func(string) string

	// listening, in tests, learns the listeners' addresses (keyed by
	// their YAML field) once all are open.
	listening func(map[string]net.Addr)
	// after is the drain's clock; default time.After.
	after func(time.Duration) <-chan time.Time
	// tlsReloaded, in tests, hears of each certificate reload, by
	// listener name.
	tlsReloaded func(name string)
}

func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Getenv == nil {
		o.Getenv = func(string) string { return "" }
	}
	if o.after == nil {
		o.after = time.After
	}
	return o
}

// errStopped is a listener that stopped serving on its own.
var errStopped = errors.New("listener stopped")

// Run serves cfg until ctx is done, then drains and stops. It returns nil
// after a clean stop, and an error when it cannot start (configuration,
// store, listeners: nothing is left open) or a listener fails (the others
// are stopped at once).
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	opts = opts.withDefaults()
	log := opts.Log
	plaintext, err := checkPlaintext(cfg)
	if err != nil {
		return err
	}
	st, err := OpenStore(cfg, log, opts.Getenv)
	if err != nil {
		return err
	}
	if err := st.kind.prepare(ctx, log); err != nil {
		return err
	}
	tracing, err := telemetry.NewTracing(ctx, telemetry.TracingOptions{Getenv: opts.Getenv, Log: log})
	if err != nil {
		return err
	}
	// Deferred first, so run last: after the listeners have stopped, the
	// spans of the last checks included.
	defer flushTraces(tracing, log)
	svc, err := newService(cfg, st, log, tracing.Tracer())
	if err != nil {
		return err
	}
	// Parsing a large store leaves garbage many times the size of the
	// records; hand it back to the OS now rather than at the GC's leisure.
	debug.FreeOSMemory()
	closing, endWatches := context.WithCancel(context.Background())
	defer endWatches()
	ls, err := svc.listen(cfg, st, opts, closing)
	if err != nil {
		return err
	}
	defer ls.close()
	for _, l := range plaintext {
		log.Warn("listening without TLS on an address other hosts can reach (allow_plaintext)", "listener", l.field, "address", l.addr, "risk", l.exposes)
	}
	addrs := ls.addrs()
	log.Info("keyward serving", "listen", addrs["listen"].String(), "tls", cfg.TLS.Enabled(), "store", cfg.Store.Kind,
		"management", cfg.Management.Listen, "metrics", cfg.Metrics.Listen, "traces", tracing != nil, "disable_custom_keys", cfg.DisableCustomKeys)
	if opts.listening != nil {
		opts.listening(addrs)
	}
	return svc.run(ctx, ls, st, cfg, opts.after, endWatches)
}

// run serves on ls until ctx is done. Health is NOT_SERVING until the
// store has started and the signing keys are loaded (checks meanwhile get
// 503, not 401). The store's change feed and the certificate reloads run
// until the very end, through the drain.
func (s *service) run(ctx context.Context, ls *listeners, st *Store, cfg *config.Config, after func(time.Duration) <-chan time.Time, endWatches func()) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	s.setServing(false)
	wg.Go(func() {
		if s.becomeReady(bgCtx, st.kind.start) {
			st.kind.watch(bgCtx, s.records, s.keysChanged)
		}
	})
	for _, w := range ls.tls {
		wg.Go(func() { w.src.Watch(bgCtx, w.every) })
	}
	results := make(chan error, len(ls.servers))
	for _, srv := range ls.servers {
		wg.Go(func() { results <- srv.serve(srv.lis) })
	}
	pending := len(ls.servers)
	var failed error
	select {
	case <-ctx.Done():
		failed = s.drain(cfg.ShutdownDrain, after, results)
	case err := <-results:
		failed = cmp.Or(err, errStopped)
	}
	grace := cfg.ShutdownGrace
	if failed != nil {
		pending, grace = pending-1, 0
	}
	s.health.Shutdown()
	endWatches() // health Watch streams would hold GracefulStop for the whole grace
	s.log.Info("stopping listeners", "grace", grace.String())
	ls.stop(grace)
	for range pending {
		if err := <-results; failed == nil {
			failed = err
		}
	}
	if failed != nil {
		return failed
	}
	s.log.Info("stopped")
	return nil
}

// drain turns health NOT_SERVING and keeps every listener answering for
// d, so that Envoy's health checks take this replica out of rotation
// while it still answers what they send meanwhile. A listener that fails
// ends the drain, and its error is returned.
func (s *service) drain(d time.Duration, after func(time.Duration) <-chan time.Time, results <-chan error) error {
	s.health.Shutdown()
	s.log.Info("shutting down: health NOT_SERVING, still answering", "drain", d.String())
	if d <= 0 {
		return nil
	}
	select {
	case <-after(d):
		return nil
	case err := <-results:
		return cmp.Or(err, errStopped)
	}
}

// traceFlushTimeout bounds the export of the last spans at shutdown: a
// collector that does not answer must not hold the process.
const traceFlushTimeout = 5 * time.Second

// flushTraces exports the spans still queued and stops tracing.
func flushTraces(t *telemetry.Tracing, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), traceFlushTimeout)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		log.Warn("the last spans were not exported", "err", err)
	}
}
