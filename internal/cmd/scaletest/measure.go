package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyward/keyward/internal/loadrig"
)

// size is one store's record counts.
type size struct {
	tokens, groups, users int
}

// records is what the store file and the token file hold together.
func (s size) records() int { return s.tokens + s.groups + s.users }

// result is one measured start-up.
type result struct {
	size
	storeBytes int64
	// start is from exec to health SERVING; cpu is the CPU time keyward
	// used meanwhile, which other work on the machine does not stretch.
	start, cpu time.Duration
	// peak is VmHWM once serving: the most resident memory the load
	// took. steady is VmRSS once settled after the checks.
	peak, steady uint64
}

const (
	stopGrace = 3 * time.Second
	// settleEvery and settleMax pace the wait for the resident memory to
	// stop falling after the checks (the runtime hands memory back to the
	// OS in the background).
	settleEvery = 250 * time.Millisecond
	settleMax   = 10 * time.Second
)

// measure generates a store of sz, starts keyward on it and measures it.
func measure(ctx context.Context, o *options, sz size, progress func(string, ...any)) (*result, error) {
	dir, err := os.MkdirTemp("", "keyward-scale-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	t0 := time.Now()
	fix, err := loadrig.WriteFixture(ctx, dir, loadrig.Spec{Tokens: sz.tokens, Groups: max(sz.groups, 1), Users: max(sz.users, 1)})
	if err != nil {
		return nil, err
	}
	progress("%d tokens, %d groups, %d users: store of %.1f MiB written in %s", sz.tokens, sz.groups, sz.users,
		mib(uint64(fix.StoreBytes)), time.Since(t0).Round(time.Millisecond))
	// Keep the tokens the checks use and let the rest go: generating a
	// large store leaves this process gigabytes of garbage, which its
	// collector would otherwise sweep and hand back to the OS on the
	// machine's cores while keyward loads.
	tokens := slices.Clone(fix.Tokens[:min(o.checks, len(fix.Tokens))])
	configPath, storeBytes := fix.ConfigPath, fix.StoreBytes
	fix = nil
	debug.FreeOSMemory()

	start := time.Now()
	kw, err := loadrig.StartChild("keyward", o.keyward, []string{"serve", "-config", configPath}, loadrig.ChildEnv())
	if err != nil {
		return nil, err
	}
	defer kw.Stop(stopGrace)
	addr, err := kw.WaitReady(ctx, o.startTimeout, authv3.Authorization_ServiceDesc.ServiceName)
	if err != nil {
		return nil, err
	}
	r := &result{size: sz, storeBytes: storeBytes, start: time.Since(start)}
	mem, err := loadrig.ReadMem(kw.PID())
	if err != nil {
		return nil, kw.Failure(err)
	}
	r.peak = mem.HWM
	if r.cpu, err = loadrig.ReadCPU(kw.PID()); err != nil {
		return nil, kw.Failure(err)
	}
	if err := checkAllowed(ctx, addr, tokens); err != nil {
		return nil, kw.Failure(err)
	}
	if r.steady, err = settledRSS(ctx, kw.PID()); err != nil {
		return nil, kw.Failure(err)
	}
	progress("  serving after %s (%s CPU), peak %.0f MiB, steady %.0f MiB", r.start.Round(time.Millisecond), r.cpu, mib(r.peak), mib(r.steady))
	return r, nil
}

// checkAllowed calls Check with each token, and fails unless keyward
// allows every one: a start-up is measured only if the store it loaded
// serves.
func checkAllowed(ctx context.Context, addr string, tokens []string) error {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	for i, req := range loadrig.CheckRequests(tokens) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := client.Check(cctx, req)
		cancel()
		if err != nil {
			return fmt.Errorf("check %d: %w", i, err)
		}
		if resp.GetOkResponse() == nil {
			// The denial's body names the reason; it holds no secret.
			return fmt.Errorf("check %d denied a token of the store: %s", i, resp.GetDeniedResponse().GetBody())
		}
	}
	return nil
}

// settledRSS reads pid's VmRSS until it stops falling by more than 1%
// between two reads, or settleMax passed, and returns the last reading.
func settledRSS(ctx context.Context, pid int) (uint64, error) {
	deadline := time.Now().Add(settleMax)
	var last uint64
	for {
		m, err := loadrig.ReadMem(pid)
		if err != nil {
			return 0, err
		}
		if last != 0 && (m.RSS >= last || last-m.RSS < last/100 || time.Now().After(deadline)) {
			return m.RSS, nil
		}
		last = m.RSS
		select {
		case <-ctx.Done():
			return 0, errors.New("interrupted")
		case <-time.After(settleEvery):
		}
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
