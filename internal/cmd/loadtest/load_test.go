package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/keyward/keyward/internal/loadrig"
	"google.golang.org/grpc"
)

// denyOdd allows requests whose token ends in an even digit and denies the
// rest with a keyward-shaped body.
type denyOdd struct {
	authv3.UnimplementedAuthorizationServer
	allow *authv3.CheckResponse
}

func (d *denyOdd) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	auth := req.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"]
	if (auth[len(auth)-1]-'0')%2 == 0 {
		return d.allow, nil
	}
	return &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Body: `{"error":{"message":"no","type":"invalid_request_error","code":"invalid_token"}}`,
	}}}, nil
}

func TestLoaderCountsDenials(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, &denyOdd{allow: newAllowAll().resp})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	reqs := loadrig.CheckRequests([]string{"tok0", "tok1", "tok2", "tok3"})
	l, err := newLoader(lis.Addr().String(), loadSpec{concurrency: 4, conns: 2, warmup: 20 * time.Millisecond, duration: 200 * time.Millisecond}, reqs)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	measured := false
	r, err := l.run(t.Context(), func() func() { measured = true; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !measured {
		t.Error("onMeasure was not called")
	}
	if r.errors != 0 || r.allowed == 0 || r.denied == 0 {
		t.Fatalf("allowed %d, denied %d, errors %d (%v); want both answers and no errors", r.allowed, r.denied, r.errors, r.errSamples)
	}
	if r.hist.count() != r.allowed+r.denied || r.throughput() <= 0 {
		t.Errorf("histogram holds %d, want %d answers; throughput %v", r.hist.count(), r.allowed+r.denied, r.throughput())
	}
	if r.denyReasons["invalid_token"] != r.denied {
		t.Errorf("deny reasons %v, want all %d as invalid_token", r.denyReasons, r.denied)
	}
	rep := &report{Keyward: figuresOf(r)}
	if err := rep.failure(); err == nil || !strings.Contains(err.Error(), "invalid_token=") {
		t.Errorf("failure() = %v, want the denial reason", err)
	}
}
