package serve

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/cache"
	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/telemetry"
	"github.com/keyward/keyward/token"
)

// recordStore is what serving needs of a store: the reads the decision
// makes (users' own credentials among them), and the signing keys that
// verify tokens.
type recordStore interface {
	cache.Source
	SigningKeys(ctx context.Context) ([]token.SigningKey, error)
}

var _ authz.Records = (*cache.Records)(nil)

// service is keyward's serving side: caches over the store, the keyring,
// the decision and the health service. The gRPC server around them is
// built with the listener's credentials (see grpcServer).
type service struct {
	log      *slog.Logger
	store    recordStore
	records  *cache.Records
	verifier *token.Verifier
	authz    *authz.Server
	health   *health.Server
	// metrics are on when metrics.listen is set.
	metrics *telemetry.Metrics
}

// newService builds the service for cfg over the opened store st; tracer,
// when not nil, traces each check.
func newService(cfg *config.Config, st *Store, log *slog.Logger, tracer trace.Tracer) (*service, error) {
	opts := st.kind.cacheOptions(cache.Options{Size: cfg.Cache.Size, TTL: cfg.Cache.TTL})
	records, err := cache.NewRecords(st.records, opts)
	if err != nil {
		return nil, err
	}
	s := &service{log: log, store: st.records, records: records, verifier: &token.Verifier{}}
	if cfg.Metrics.Listen != "" {
		topts := telemetry.Options{Store: cfg.Store.Kind, CacheStats: records.Stats, Log: log}
		if st.files != nil {
			topts.StoreLoadErrors = st.files.FailedLoads // its reloads fail where no cache sees them
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
	jwt := make([]authz.JWTIssuer, len(cfg.JWT))
	for i, j := range cfg.JWT {
		jwt[i] = authz.JWTIssuer{Issuer: j.Issuer, UserClaim: j.UserClaim, GroupClaim: j.GroupClaim}
	}
	a, err := authz.NewAuthorizer(records, s.verifier, authz.Options{
		Sources:           sources,
		ModelHeader:       cfg.ModelHeader,
		DisableCustomKeys: cfg.DisableCustomKeys,
		Hosts:             hosts,
		CheckDeadline:     cfg.Cache.CheckDeadline,
		Endpoints:         cfg.EndpointSpecs(),
		KeyDelivery:       cfg.KeyDelivery,
		JWT:               jwt,
	})
	if err != nil {
		return nil, err
	}
	if s.authz, err = authz.NewServer(a, authz.ServerOptions{ResponseCacheSize: cfg.Cache.Answers, Log: log, DenyLogRate: rate.Limit(cfg.Audit.DenyLogPerSecond), Observe: s.observeCheck(), Tracer: tracer}); err != nil {
		return nil, err
	}
	s.health = health.NewServer()
	return s, nil
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
