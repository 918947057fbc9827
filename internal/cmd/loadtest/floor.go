package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/keyward/keyward/internal/loadrig"
	"github.com/keyward/keyward/serve"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// allowServerCmd is the hidden subcommand that runs the floor: the load
// test re-executes itself with it so that the floor, like keyward, is a
// process of its own with its own scheduler and garbage collector.
const allowServerCmd = "allow-server"

// allowAll is the floor: an ext_authz server that allows every check with
// one prebuilt answer, so that what is measured against it is the cost of
// gRPC, protobuf and the load generator alone.
type allowAll struct {
	authv3.UnimplementedAuthorizationServer
	resp *authv3.CheckResponse
}

func newAllowAll() *allowAll {
	return &allowAll{resp: &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			// One header set, like keyward's provider key, so that the
			// answer is not empty.
			Headers: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "authorization", Value: "Bearer " + loadrig.ProviderKey},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
		}},
	}}
}

// Check allows every request.
func (a *allowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return a.resp, nil
}

// serveAllow runs the floor server until ctx is done: `loadtest
// allow-server -listen ADDR`. Its gRPC settings are keyward's
// (serve.GRPCOptions), so that only the Check handler differs.
func serveAllow(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet(allowServerCmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "`address` to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := grpc.NewServer(serve.GRPCOptions()...)
	authv3.RegisterAuthorizationServer(srv, newAllowAll())
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	srv.Stop()
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
