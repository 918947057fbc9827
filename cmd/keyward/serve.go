package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/cache"
	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/token"
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
	st, err := openStore(cfg, e.getenv)
	if err != nil {
		return err
	}
	if err := st.EnsureSigningKey(ctx); err != nil {
		return err
	}
	st.WarnMissing(log)
	svc, err := newService(cfg, st, log)
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
	log.Info("keyward serving", "listen", lis.Addr().String(), "store", cfg.Store.File,
		"disable_custom_keys", cfg.DisableCustomKeys)
	return svc.run(ctx, lis, st, cfg)
}

func newLogger(e *env, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated by config
	return slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: l}))
}

// recordStore is what serving needs of a store: the reads the decision
// makes, and the signing keys that verify tokens.
type recordStore interface {
	cache.Source
	SigningKeys(ctx context.Context) ([]token.SigningKey, error)
}

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
}

func newService(cfg *config.Config, st recordStore, log *slog.Logger) (*service, error) {
	records, err := cache.NewRecords(st, cache.Options{Size: cfg.Cache.Size, TTL: cfg.Cache.TTL})
	if err != nil {
		return nil, err
	}
	s := &service{log: log, store: st, records: records, verifier: &token.Verifier{}}
	if err := s.loadKeyring(context.Background()); err != nil {
		return nil, err
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
	})
	if err != nil {
		return nil, err
	}
	if s.authz, err = authz.NewServer(a, authz.ServerOptions{Log: log}); err != nil {
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
func (s *service) loadKeyring(ctx context.Context) error {
	keys, err := s.store.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	ring, err := token.NewKeyring(keys)
	if err != nil {
		return err
	}
	s.verifier.Set(ring)
	return nil
}

// changed runs after the store reports new records: everything cached may
// be out of date.
func (s *service) changed() {
	s.records.Purge()
	if err := s.loadKeyring(context.Background()); err != nil {
		s.log.Error("token signing keys unusable; keeping the previous ones", "err", err)
	}
	debug.FreeOSMemory()
}

// run serves on lis until ctx is done, then drains: health turns
// NOT_SERVING first so Envoy's health checks move away, in-flight checks
// finish within the grace period, and the rest are cut.
func (s *service) run(ctx context.Context, lis net.Listener, st *filestore.Store, cfg *config.Config) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wg.Go(func() { st.Watch(watchCtx, cfg.Store.PollInterval, s.log, s.changed) })

	for _, svc := range []string{"", authv3.Authorization_ServiceDesc.ServiceName} {
		s.health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "grace", cfg.ShutdownGrace.String())
	s.health.Shutdown()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(cfg.ShutdownGrace):
		s.log.Warn("grace period over; closing remaining connections")
		s.grpc.Stop()
		<-done
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) && !strings.Contains(err.Error(), "closed") {
		return err
	}
	s.log.Info("stopped")
	return nil
}
