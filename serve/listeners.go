package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/manage/httpapi"
	"github.com/keyward/keyward/manage/httpapi/oidc"
	"github.com/keyward/keyward/servertls"
)

// listeners are serve's open listeners, each with the server that will
// serve it, and the TLS material to keep fresh.
type listeners struct {
	servers  []*server
	tls      []watchedTLS
	onReload func(name string) // a test hook
}

// server is one listener and how it is served and stopped.
type server struct {
	field string // the address's YAML field: listen, management.listen, metrics.listen
	lis   net.Listener
	// serve serves lis until stop; it returns nil once stopped on purpose.
	serve func(net.Listener) error
	// stop stops gracefully until ctx is done, then at once.
	stop func(ctx context.Context)
}

// watchedTLS is TLS material reloaded every so often.
type watchedTLS struct {
	src   *servertls.Source
	every time.Duration
}

// listen opens every listener cfg asks for: the ext_authz gRPC server,
// and the management API and metrics when configured. Nothing is left
// open when it fails. closing ends health Watch streams at shutdown.
func (s *service) listen(cfg *config.Config, st *Store, opts Options, closing context.Context) (ls *listeners, err error) {
	ls = &listeners{onReload: opts.tlsReloaded}
	defer func() {
		if err != nil {
			ls.close()
		}
	}()
	src, err := ls.loadTLS("tls", "ext_authz", cfg.TLS, s.log, nil)
	if err != nil {
		return ls, err
	}
	var creds credentials.TransportCredentials
	if src != nil {
		creds = credentials.NewTLS(src.Config())
	}
	g := s.grpcServer(creds, closing)
	if err := ls.add("listen", cfg.Listen, g.Serve, s.stopGRPC(g)); err != nil {
		return ls, err
	}
	if cfg.Management.Listen != "" {
		h, err := s.managementHandler(cfg.Management, st.records, opts.Getenv)
		if err != nil {
			return ls, err
		}
		if err := ls.addHTTP(s, "management", cfg.Management.Listen, cfg.Management.TLS, h); err != nil {
			return ls, err
		}
	}
	if cfg.Metrics.Listen != "" {
		if err := ls.addHTTP(s, "metrics", cfg.Metrics.Listen, cfg.Metrics.TLS, s.metricsHandler()); err != nil {
			return ls, err
		}
	}
	return ls, nil
}

// loadTLS loads a listener's TLS material when it has any; errors name
// field.
func (ls *listeners) loadTLS(field, name string, t config.TLS, log *slog.Logger, nextProtos []string) (*servertls.Source, error) {
	if !t.Enabled() {
		return nil, nil
	}
	o := servertls.Options{Name: name, Log: log, NextProtos: nextProtos}
	if ls.onReload != nil {
		o.OnReload = func() { ls.onReload(name) }
	}
	src, err := servertls.Load(t.Files, o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	ls.tls = append(ls.tls, watchedTLS{src: src, every: t.ReloadInterval})
	return src, nil
}

// add listens on addr for the server of field.
func (ls *listeners) add(field, addr string, serve func(net.Listener) error, stop func(context.Context)) error {
	lis, err := listenOn(addr)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	ls.servers = append(ls.servers, &server{field: field, lis: lis, serve: serve, stop: stop})
	return nil
}

// addHTTP listens for one of serve's HTTP endpoints (name is its YAML
// section), over TLS when t says so.
func (ls *listeners) addHTTP(s *service, name, addr string, t config.TLS, h http.Handler) error {
	src, err := ls.loadTLS(name+".tls", name, t, s.log, []string{"h2", "http/1.1"})
	if err != nil {
		return err
	}
	srv := s.httpServer(h)
	serve := srv.Serve
	if src != nil {
		srv.TLSConfig = src.Config()
		serve = func(l net.Listener) error { return srv.ServeTLS(l, "", "") }
	}
	stop := func(ctx context.Context) {
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
	}
	return ls.add(name+".listen", addr, func(l net.Listener) error {
		if err := serve(l); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}, stop)
}

// addrs returns each listener's address by field.
func (ls *listeners) addrs() map[string]net.Addr {
	out := make(map[string]net.Addr, len(ls.servers))
	for _, srv := range ls.servers {
		out[srv.field] = srv.lis.Addr()
	}
	return out
}

// stop stops every server at once, each gracefully for grace.
func (ls *listeners) stop(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range ls.servers {
		wg.Go(func() { srv.stop(ctx) })
	}
	wg.Wait()
}

// close closes every listener; the servers that serve them close them
// too, so this only matters on the ways out before serving began.
func (ls *listeners) close() {
	for _, srv := range ls.servers {
		srv.lis.Close()
	}
}

// GRPCOptions are the settings of keyward's ext_authz gRPC server, TLS
// aside; the load test's floor server uses them too, so that only the
// Check handler differs between the two.
func GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		// Envoy keeps its connection to keyward open and may ping it.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Checks run on long-lived workers rather than a new goroutine
		// each: a new goroutine's stack grew, and was copied, on
		// every check (15% of keyward's CPU under load, measured);
		// a worker's stack has grown already. Past this many at once,
		// gRPC starts goroutines as before.
		grpc.NumStreamWorkers(uint32(streamWorkersPerCPU * runtime.GOMAXPROCS(0))),
		// The protobuf codec, but for check requests, which keyward's
		// handler reads from the wire (authz.Register); the floor's
		// typed handler gets them decoded as before.
		authz.ServerCodec(),
	}
}

// streamWorkersPerCPU sizes the gRPC stream workers: 64 on 2 CPUs held
// the load test's 32 callers, where 16 left some checks to new goroutines.
const streamWorkersPerCPU = 32

// grpcServer is the ext_authz server with the health service, over creds
// when TLS is on.
func (s *service) grpcServer(creds credentials.TransportCredentials, closing context.Context) *grpc.Server {
	opts := GRPCOptions()
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	g := grpc.NewServer(opts...)
	authz.Register(g, s.authz)
	healthpb.RegisterHealthServer(g, &drainingHealth{Server: s.health, closing: closing})
	return g
}

// stopGRPC stops g gracefully until ctx is done, then cuts what is left.
func (s *service) stopGRPC(g *grpc.Server) func(context.Context) {
	return func(ctx context.Context) {
		done := make(chan struct{})
		go func() { g.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.log.Warn("grace period over; closing remaining connections")
			g.Stop()
			<-done
		}
	}
}

// managementHandler is the management API.
func (s *service) managementHandler(cfg config.Management, st manage.Store, getenv func(string) string) (http.Handler, error) {
	adminToken, err := httpapi.AdminToken(getenv)
	if err != nil {
		return nil, err
	}
	m, err := manage.New(st, manage.Options{RotationGrace: cfg.RotationGrace, MaxActiveTokens: cfg.MaxActiveTokens})
	if err != nil {
		return nil, err
	}
	// Management tokens are verified with the keyring the decision uses,
	// kept current as the signing keys change: no store read for a forged
	// one.
	opts := httpapi.Options{Manager: m, Keys: s.verifier, AdminToken: adminToken, Logger: s.log, Observe: s.observeManagement()}
	if cfg.OIDC.Enabled() {
		// Nothing is fetched from the issuer here: the first JWT does, so
		// that an issuer that is down delays neither the start nor
		// management tokens.
		v, err := oidc.New(cfg.OIDC, oidc.Options{Log: s.log})
		if err != nil {
			return nil, field.Prefix("management.oidc", err)
		}
		opts.OIDC = v
	}
	return httpapi.New(opts)
}

// metricsHandler serves /metrics, and /healthz, which answers 200 "ok"
// while the process runs (readiness is the gRPC health service's).
func (s *service) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	return mux
}

// httpServer is the server of one of serve's HTTP endpoints. Requests are
// small and answers quick, so a slow client must not hold a connection
// open for long.
func (s *service) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}
