package serve

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/internal/testlog"
)

// hangGuard bounds every wait on an event: far above what any step takes
// on a loaded machine, it only turns a hang into a failure.
const hangGuard = time.Minute

// running is a Run in progress.
type running struct {
	t      *testing.T
	addrs  map[string]net.Addr
	cancel context.CancelFunc // SIGTERM
	done   chan error
	logs   *testlog.Buffer
	// drainAsked receives the drain Run waits for; drainOver ends it.
	drainAsked chan time.Duration
	drainOver  chan time.Time
	// reloaded receives the listener name of each certificate reload.
	reloaded chan string
}

// start runs f's configuration and waits until every listener is open.
func start(t *testing.T, f *fixture) *running {
	t.Helper()
	r := &running{t: t, done: make(chan error, 1), logs: &testlog.Buffer{}, drainAsked: make(chan time.Duration, 1), drainOver: make(chan time.Time), reloaded: make(chan string, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	listening := make(chan map[string]net.Addr, 1)
	opts := Options{
		Log:       slog.New(slog.NewJSONHandler(r.logs, nil)),
		Getenv:    f.getenv,
		listening: func(a map[string]net.Addr) { listening <- a },
		after: func(d time.Duration) <-chan time.Time {
			r.drainAsked <- d
			return r.drainOver
		},
		tlsReloaded: func(name string) { r.reloaded <- name },
	}
	go func() { r.done <- Run(ctx, f.cfg, opts) }()
	t.Cleanup(func() {
		cancel()
		close(r.drainOver)
		select {
		case <-r.done:
		case <-time.After(hangGuard):
			t.Error("Run did not return")
		}
		if t.Failed() {
			t.Logf("keyward log:\n%s", r.logs.String())
		}
		if strings.Contains(r.logs.String(), openaiKey) || strings.Contains(r.logs.String(), f.token[19:]) {
			t.Error("a secret is in the log")
		}
	})
	select {
	case r.addrs = <-listening:
	case err := <-r.done:
		r.done <- err
		t.Fatalf("Run: %v", err)
	case <-time.After(hangGuard):
		t.Fatal("Run did not start listening")
	}
	return r
}

// wait waits for Run to return and gives its error.
func (r *running) wait() error {
	r.t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(hangGuard):
		r.t.Fatalf("Run did not return within %v", hangGuard)
		return nil
	}
}

// dial connects to the ext_authz listener (TLS when creds is set).
func (r *running) dial(creds credentials.TransportCredentials) *grpc.ClientConn {
	r.t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	target := r.addrs["listen"].String()
	if r.addrs["listen"].Network() == "unix" {
		target = "unix://" + target
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { conn.Close() })
	return conn
}

// check asks for the fixture's token; it reports whether the answer
// allowed the request with the provider's key.
func check(ctx context.Context, conn *grpc.ClientConn, tok string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, hangGuard)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, sdkRequest(tok))
	if err != nil {
		return false, err
	}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.GetHeader().GetValue() == "Bearer "+openaiKey {
			return true, nil
		}
	}
	return false, nil
}

// waitServing waits until health says SERVING.
func waitServing(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("health watch: %v", err)
		}
		if resp.Status == healthpb.HealthCheckResponse_SERVING {
			return
		}
	}
}

// TestDrain: on SIGTERM health turns NOT_SERVING while the listener keeps
// answering, new connections included, for the drain; then open health
// Watch streams end, so the process stops at once although the grace
// period is an hour.
func TestDrain(t *testing.T) {
	f := newFixture(t, func(c *config.Config) { c.ShutdownDrain, c.ShutdownGrace = 5*time.Second, time.Hour })
	r := start(t, f)
	conn := r.dial(nil)
	waitServing(t, conn)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v", resp, err)
	}

	r.cancel()
	if resp, err := watch.Recv(); err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("after SIGTERM the watcher saw %v %v, want NOT_SERVING", resp, err)
	}
	select {
	case d := <-r.drainAsked:
		if d != 5*time.Second {
			t.Fatalf("drain of %v, want shutdown_drain", d)
		}
	case err := <-r.done:
		r.done <- err
		t.Fatalf("Run returned without draining: %v", err)
	case <-time.After(hangGuard):
		t.Fatal("no drain")
	}
	// Draining: a check on a new connection is still answered.
	if ok, err := check(ctx, r.dial(nil), f.token); !ok || err != nil {
		t.Fatalf("check during the drain: allowed %v, %v", ok, err)
	}

	r.drainOver <- time.Now()
	if err := r.wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := watch.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("the watch ended with %v, want UNAVAILABLE", err)
	}
	if c, err := net.Dial("tcp", r.addrs["listen"].String()); err == nil {
		c.Close()
		t.Error("the listener still accepts after the stop")
	}
}
