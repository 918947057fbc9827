package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// loadSpec shapes the load put on one server.
type loadSpec struct {
	concurrency int
	conns       int
	warmup      time.Duration
	duration    time.Duration
}

// result is what one measured phase against one server gave.
type result struct {
	hist    histogram
	elapsed time.Duration
	allowed uint64
	denied  uint64
	errors  uint64
	// denyReasons counts denials by the error.code of their body.
	denyReasons map[string]uint64
	// errSamples holds the first few distinct gRPC errors.
	errSamples []string
}

// throughput returns the answers (allowed or denied) per second.
func (r *result) throughput() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.hist.count()) / r.elapsed.Seconds()
}

// merge adds o to r, as if both phases had been one.
func (r *result) merge(o *result) {
	r.hist.merge(&o.hist)
	r.elapsed += o.elapsed
	r.allowed += o.allowed
	r.denied += o.denied
	r.errors += o.errors
	for k, v := range o.denyReasons {
		if r.denyReasons == nil {
			r.denyReasons = map[string]uint64{}
		}
		r.denyReasons[k] += v
	}
	r.addErrSamples(o.errSamples...)
}

const maxErrSamples = 5

func (r *result) addErrSamples(msgs ...string) {
	for _, m := range msgs {
		if len(r.errSamples) < maxErrSamples && !slices.Contains(r.errSamples, m) {
			r.errSamples = append(r.errSamples, m)
		}
	}
}

// loader drives one server over spec.conns shared connections.
type loader struct {
	spec    loadSpec
	clients []authv3.AuthorizationClient
	conns   []*grpc.ClientConn
	reqs    []*authv3.CheckRequest
}

func newLoader(addr string, spec loadSpec, reqs []*authv3.CheckRequest) (*loader, error) {
	l := &loader{spec: spec, reqs: reqs}
	for range spec.conns {
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(newVerdictCodec())))
		if err != nil {
			l.close()
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		l.conns = append(l.conns, conn)
		l.clients = append(l.clients, authv3.NewAuthorizationClient(conn))
	}
	return l, nil
}

func (l *loader) close() {
	for _, c := range l.conns {
		c.Close()
	}
}

// run warms the server up, then measures it. onMeasure, if set, is called
// as the measured phase starts and returns a func called as it ends.
func (l *loader) run(ctx context.Context, onMeasure func() func()) (*result, error) {
	if l.spec.warmup > 0 {
		if _, err := l.phase(ctx, l.spec.warmup, false); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	var end func()
	if onMeasure != nil {
		end = onMeasure()
	}
	r, err := l.phase(ctx, l.spec.duration, true)
	if end != nil {
		end()
	}
	if err != nil {
		return nil, fmt.Errorf("measure: %w", err)
	}
	return r, nil
}

// once sends every request once, spread over the workers, unmeasured.
func (l *loader) once(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, l.spec.concurrency)
	for w := range l.spec.concurrency {
		client := l.clients[w%len(l.clients)]
		wg.Go(func() {
			for i := w; i < len(l.reqs); i += l.spec.concurrency {
				if _, err := client.Check(ctx, l.reqs[i]); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// hangGrace is how long calls may still run after a phase ends before they
// are cut off and counted as errors: only a stuck server needs it.
const hangGrace = 5 * time.Second

// phase runs spec.concurrency workers for d. Each worker cycles through
// the requests from its own starting point, so that the workers together
// present every sampled token, and owns its result, merged at the end.
func (l *loader) phase(ctx context.Context, d time.Duration, measure bool) (*result, error) {
	callCtx, cancel := context.WithTimeout(ctx, d+hangGrace)
	defer cancel()
	var stop atomic.Bool
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()

	results := make([]*result, l.spec.concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range l.spec.concurrency {
		res := &result{}
		results[w] = res
		client := l.clients[w%len(l.clients)]
		first := w * len(l.reqs) / l.spec.concurrency
		wg.Go(func() { l.work(callCtx, client, first, &stop, measure, res) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	total := &result{}
	for _, r := range results {
		total.merge(r)
	}
	total.elapsed = elapsed
	return total, nil
}

// work calls Check in a loop until stop is set.
func (l *loader) work(ctx context.Context, client authv3.AuthorizationClient, next int, stop *atomic.Bool, measure bool, res *result) {
	for !stop.Load() {
		req := l.reqs[next]
		next++
		if next == len(l.reqs) {
			next = 0
		}
		t0 := time.Now()
		resp, err := client.Check(ctx, req)
		lat := time.Since(t0)
		switch {
		case err != nil:
			if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return // interrupted
			}
			res.errors++
			res.addErrSamples(err.Error())
			if ctx.Err() != nil {
				return
			}
		case resp.GetOkResponse() != nil:
			res.allowed++
		default:
			res.denied++
			if res.denyReasons == nil {
				res.denyReasons = map[string]uint64{}
			}
			res.denyReasons[denyReason(resp)]++
		}
		if measure && err == nil {
			res.hist.record(lat)
		}
	}
}

// denyReason returns the error.code of a denial's JSON body, or what else
// identifies it.
func denyReason(resp *authv3.CheckResponse) string {
	var body struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &body) == nil && body.Error.Code != "" {
		return body.Error.Code
	}
	if m := resp.GetStatus().GetMessage(); m != "" {
		return "status: " + m
	}
	return fmt.Sprintf("no reason (status code %d)", resp.GetStatus().GetCode())
}
