package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/cache"
	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/manage/httpapi"
	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/telemetry"
	"github.com/keyward/keyward/token"
	"github.com/keyward/keyward/vault"
)

func (e *env) serve(ctx context.Context, args []string) error {
	c := e.newCommand("serve")
	if pos, err := c.parse(args); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", pos)
	}
	cfg, err := c.config()
	if err != nil {
		return err
	}
	log := newLogger(e, cfg.LogLevel)
	b, err := e.backend(ctx, cfg, log)
	if err != nil {
		return err
	}
	svc, err := newService(cfg, b.store, log)
	if err != nil {
		return err
	}
	// Parsing a large store leaves garbage many times the size of the
	// records; hand it back to the OS now rather than at the GC's leisure.
	debug.FreeOSMemory()
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if cfg.Management.Listen != "" {
		adminToken, err := httpapi.AdminToken(e.getenv)
		if err != nil {
			lis.Close()
			return err
		}
		if err := svc.setupManagement(cfg.Management, b.admin, adminToken); err != nil {
			lis.Close()
			return err
		}
	}
	if cfg.Metrics.Listen != "" {
		if err := svc.setupMetrics(cfg.Metrics.Listen); err != nil {
			lis.Close()
			if svc.managementLis != nil {
				svc.managementLis.Close()
			}
			return err
		}
	}
	log.Info("keyward serving", "listen", lis.Addr().String(), "store", cfg.Store.Kind,
		"management", cfg.Management.Listen, "metrics", svc.metricsAddr(), "disable_custom_keys", cfg.DisableCustomKeys)
	return svc.run(ctx, lis, b, cfg.ShutdownGrace)
}

// setupManagement prepares the management API on its own listener; run
// serves it beside the ext_authz server.
func (s *service) setupManagement(cfg config.Management, st manage.Store, adminToken string) error {
	m, err := manage.New(st, manage.Options{RotationGrace: cfg.RotationGrace, MaxActiveTokens: cfg.MaxActiveTokens})
	if err != nil {
		return err
	}
	// Management tokens are verified with the keyring the decision uses,
	// kept current as the signing keys change: no store read for a forged
	// one.
	h, err := httpapi.New(httpapi.Options{Manager: m, Keys: s.verifier, AdminToken: adminToken, Logger: s.log, Observe: s.observeManagement()})
	if err != nil {
		return err
	}
	s.management, s.managementLis, err = s.listenHTTP("management", cfg.Listen, h)
	return err
}

// setupMetrics prepares the /metrics endpoint on its own listener; run
// serves it beside the ext_authz server. /healthz answers 200 "ok" while
// the process runs (readiness is the gRPC health service's).
func (s *service) setupMetrics(addr string) error {
	if s.metrics == nil {
		return errors.New("metrics listen: metrics are off")
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	var err error
	s.metricsServer, s.metricsLis, err = s.listenHTTP("metrics", addr, mux)
	return err
}

// listenHTTP listens on addr for one of serve's HTTP endpoints (what names
// it in errors) and returns its server. Requests are small and answers
// quick, so a slow client must not hold a connection open for long.
func (s *service) listenHTTP(what, addr string, h http.Handler) (*http.Server, net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s listen: %w", what, err)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}, lis, nil
}

// metricsAddr is the address /metrics is served on, "" when off.
func (s *service) metricsAddr() string {
	if s.metricsLis == nil {
		return ""
	}
	return s.metricsLis.Addr().String()
}

// observeCheck is the authz observer: the metrics' when they are on.
func (s *service) observeCheck() func(authz.Observation) {
	if s.metrics == nil {
		return nil
	}
	return s.metrics.ObserveCheck
}

// observeManagement is the management API observer: the metrics' when
// they are on.
func (s *service) observeManagement() func(route string, status int) {
	if s.metrics == nil {
		return nil
	}
	return s.metrics.ObserveManagement
}

// backend is a store as serving sees it: its reads, how to start it (the
// service is ready once start has succeeded and the signing keys loaded),
// and its change feed, which runs until its context is done.
type backend struct {
	store recordStore
	admin manage.Store
	start func(ctx context.Context) error
	watch func(ctx context.Context, s *service)
}

func (e *env) backend(ctx context.Context, cfg *config.Config, log *slog.Logger) (*backend, error) {
	if cfg.Store.Kind == "vault" {
		vs, err := vault.New(cfg.Vault, log, e.getenv)
		if err != nil {
			return nil, err
		}
		return &backend{
			store: vs,
			admin: vs,
			start: vs.Start,
			watch: func(ctx context.Context, s *service) {
				vs.Watch(ctx, s.records, s.keysChanged)
				vs.Wait()
			},
		}, nil
	}
	st, err := openStore(cfg, e.getenv)
	if err != nil {
		return nil, err
	}
	if err := st.EnsureSigningKey(ctx); err != nil {
		return nil, err
	}
	st.WarnMissing(log)
	return &backend{
		store: st,
		admin: st,
		start: func(context.Context) error { return nil },
		watch: func(ctx context.Context, s *service) {
			st.Watch(ctx, cfg.Store.PollInterval, log, func() {
				// Every cache, users' own credentials included: a
				// credential another process wrote is in use within
				// poll_interval.
				s.records.Purge()
				s.keysChanged()
				debug.FreeOSMemory() // see serve
			})
		},
	}, nil
}

func newLogger(e *env, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated by config
	return slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: l}))
}

// recordStore is what serving needs of a store: the reads the decision
// makes (users' own credentials among them), and the signing keys that
// verify tokens.
type recordStore interface {
	cache.Source
	SigningKeys(ctx context.Context) ([]token.SigningKey, error)
}

var _ authz.Records = (*cache.Records)(nil)

// service is keyward's serving side: caches over the store, the keyring,
// the decision and the gRPC server around it.
type service struct {
	log      *slog.Logger
	store    recordStore
	records  *cache.Records
	verifier *token.Verifier
	authz    *authz.Server
	grpc     *grpc.Server
	health   *health.Server
	// management is the management API, when configured.
	management    *http.Server
	managementLis net.Listener
	// metrics are on when metrics.listen is set; metricsServer serves
	// them once setupMetrics has run.
	metrics       *telemetry.Metrics
	metricsServer *http.Server
	metricsLis    net.Listener
}

func newService(cfg *config.Config, st recordStore, log *slog.Logger) (*service, error) {
	opts := cache.Options{Size: cfg.Cache.Size, TTL: cfg.Cache.TTL}
	if cfg.Store.Kind == "vault" {
		// Fail static: while Vault is unreachable, records past their TTL
		// keep serving this much longer.
		opts.MaxStale = cfg.Vault.MaxStale
		opts.LoadTimeout = cfg.Vault.Timeout
	}
	records, err := cache.NewRecords(st, opts)
	if err != nil {
		return nil, err
	}
	s := &service{log: log, store: st, records: records, verifier: &token.Verifier{}}
	if cfg.Metrics.Listen != "" {
		topts := telemetry.Options{Store: cfg.Store.Kind, CacheStats: records.Stats, Log: log}
		if fs, ok := st.(*filestore.Store); ok {
			topts.StoreLoadErrors = fs.FailedLoads // its reloads fail where no cache sees them
		}
		if s.metrics, err = telemetry.New(topts); err != nil {
			return nil, err
		}
	}
	hosts := map[string]string{}
	for _, r := range cfg.Routes {
		for _, h := range r.Hosts {
			hosts[h] = r.Provider
		}
	}
	sources := make([]authz.Source, len(cfg.Credentials))
	for i, src := range cfg.Credentials {
		sources[i] = authz.Source{Header: src.Header, Query: src.Query}
	}
	a, err := authz.NewAuthorizer(records, s.verifier, authz.Options{
		Sources:           sources,
		ModelHeader:       cfg.ModelHeader,
		DisableCustomKeys: cfg.DisableCustomKeys,
		Hosts:             hosts,
		CheckDeadline:     cfg.Cache.CheckDeadline,
		Endpoints:         cfg.EndpointSpecs(),
	})
	if err != nil {
		return nil, err
	}
	if s.authz, err = authz.NewServer(a, authz.ServerOptions{Log: log, DenyLogRate: rate.Limit(cfg.Audit.DenyLogPerSecond), Observe: s.observeCheck()}); err != nil {
		return nil, err
	}
	s.grpc = grpc.NewServer(
		// Envoy keeps its connection to keyward open and may ping it.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	authv3.RegisterAuthorizationServer(s.grpc, s.authz)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	return s, nil
}

// loadKeyring (re)builds the token keyring from the store's signing keys.
// A store without keys holds no valid token yet.
func (s *service) loadKeyring(ctx context.Context) error {
	keys, err := s.store.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	if len(keys) == 0 {
		s.log.Warn("the store holds no token signing keys yet: every token is refused until one is created (keyward token create makes one)")
		s.verifier.Set(nil)
		return nil
	}
	ring, err := token.NewKeyring(keys)
	if err != nil {
		return err
	}
	s.verifier.Set(ring)
	return nil
}

// keysChanged reloads the signing keys after the store reported a change.
func (s *service) keysChanged() {
	if err := s.loadKeyring(context.Background()); err != nil {
		s.log.Error("token signing keys unusable; keeping the previous ones", "err", err)
	}
}

// run serves on lis until ctx is done. Health is NOT_SERVING until the
// store has started and the signing keys are loaded (checks meanwhile get
// 503, not 401). On shutdown health turns NOT_SERVING first so Envoy's
// health checks move away, in-flight checks finish within grace, and the
// rest are cut.
func (s *service) run(ctx context.Context, lis net.Listener, b *backend, grace time.Duration) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	bgCtx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	s.setServing(false)
	wg.Go(func() {
		if s.becomeReady(bgCtx, b.start) {
			b.watch(bgCtx, s)
		}
	})

	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(lis) }()
	mgmtErr := make(chan error, 1)
	if s.management != nil {
		go func() { mgmtErr <- s.management.Serve(s.managementLis) }()
	}
	metricsErr := make(chan error, 1)
	if s.metricsServer != nil {
		go func() { metricsErr <- s.metricsServer.Serve(s.metricsLis) }()
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case err := <-mgmtErr:
		s.grpc.Stop()
		return fmt.Errorf("management api: %w", err)
	case err := <-metricsErr:
		s.grpc.Stop()
		return fmt.Errorf("metrics: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "grace", grace.String())
	s.health.Shutdown()
	if s.management != nil {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
			defer cancel()
			if err := s.management.Shutdown(sctx); err != nil {
				s.management.Close()
			}
		})
	}
	if s.metricsServer != nil {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
			defer cancel()
			if err := s.metricsServer.Shutdown(sctx); err != nil {
				s.metricsServer.Close()
			}
		})
	}
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.log.Warn("grace period over; closing remaining connections")
		s.grpc.Stop()
		<-done
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	s.log.Info("stopped")
	return nil
}

// becomeReady starts the store and loads the signing keys, retrying with
// backoff, then turns health SERVING. It reports false if ctx ended first.
func (s *service) becomeReady(ctx context.Context, start func(context.Context) error) bool {
	backoff := 250 * time.Millisecond
	started := false
	for {
		var err error
		if !started {
			// Once only: a started store runs its own background work.
			err = start(ctx)
			started = err == nil
		}
		if err == nil {
			err = s.loadKeyring(ctx)
		}
		if err == nil {
			s.setServing(true)
			s.log.Info("ready")
			return true
		}
		s.log.Warn("store not ready; retrying", "err", err, "in", backoff.String())
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 15*time.Second)
	}
}

func (s *service) setServing(on bool) {
	status := healthpb.HealthCheckResponse_NOT_SERVING
	if on {
		status = healthpb.HealthCheckResponse_SERVING
	}
	for _, svc := range []string{"", authv3.Authorization_ServiceDesc.ServiceName} {
		s.health.SetServingStatus(svc, status)
	}
}
