package serve

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// drainingHealth is grpc-go's health service with Watch streams that end
// when closing is done. A Watch stream lasts as long as its client keeps
// it open, and GracefulStop waits for every stream: without this, one
// watcher held shutdown for the whole grace period.
type drainingHealth struct {
	*health.Server
	closing context.Context
}

// Watch streams status changes, as the health service does, until the
// client leaves or the server shuts down; then the client is told
// UNAVAILABLE, so it looks for another server.
func (h *drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(h.closing, cancel)()
	err := h.Server.Watch(req, watchStream{Health_WatchServer: stream, ctx: ctx})
	if h.closing.Err() != nil {
		return status.Error(codes.Unavailable, "keyward is shutting down")
	}
	return err
}

// watchStream is a Watch stream with a context of its own.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

// Context returns the stream's context, ended at shutdown too.
func (w watchStream) Context() context.Context { return w.ctx }
