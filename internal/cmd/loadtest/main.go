// Command loadtest measures keyward's ext_authz server against a floor: an
// allow-everything ext_authz server with the same gRPC setup, so that what
// remains is keyward's own cost. It generates a store (100,000 tokens over
// 1,000 groups by default), starts `keyward serve` and the floor as child
// processes on ports the kernel picks, drives each with concurrent Check
// calls over shared connections (as Envoy multiplexes over few HTTP/2
// connections), and reports throughput, latency percentiles, keyward's
// resident memory and PASS/MISS against the targets. The last line of
// output is the same figures as one JSON object.
//
//	go build -o bin/keyward ./cmd/keyward
//	go run ./internal/cmd/loadtest -keyward bin/keyward [-duration 10s] [-strict]
//
// or scripts/load.sh, which does both. With -sweep it measures instead
// keyward over several sizes of active token set and keyward against the
// floor at several concurrencies, with each server's CPU per check (see
// sweep.go); with -envoy, the three ways through a real Envoy that
// scripts/envoyload.sh runs (see envoyload.go). Exit status: 0 when the run worked,
// whether or not the targets were met (a miss is a figure to report); 3
// instead with -strict when a target was missed; 1 when the run did not
// work (a server failed to start or crashed, a call failed, or keyward
// denied a valid token); 2 for bad flags.
//
// The load generator shares the machine with the server under test, so
// the absolute figures say little; the ratios to the floor are the result.
// Linux only: ports and memory are read from /proc.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/keyward/keyward/internal/loadrig"
)

func main() {
	os.Exit(mainStatus(os.Args[1:], os.Stdout, os.Stderr))
}

func mainStatus(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(args) > 0 && args[0] == allowServerCmd {
		if err := serveAllow(ctx, args[1:], stderr); err != nil {
			fmt.Fprintln(stderr, "loadtest allow-server:", err)
			return loadrig.ExitFailed
		}
		return loadrig.ExitOK
	}
	opts, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return loadrig.ExitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return loadrig.ExitUsage
	}
	err = run(ctx, opts, stdout, stderr)
	switch {
	case err == nil:
		return loadrig.ExitOK
	case errors.Is(err, loadrig.ErrMissed):
		fmt.Fprintln(stderr, "loadtest:", err)
		return loadrig.ExitMissed
	default:
		fmt.Fprintln(stderr, "loadtest: FAILED:", err)
		return loadrig.ExitFailed
	}
}

// options are the command-line settings.
type options struct {
	keyward string
	fixture loadrig.Spec
	sample  int
	load    loadSpec
	rounds  int
	strict  bool
	keepDir bool
	// sweep, samples and callers: see sweep.go.
	sweep   bool
	samples []int
	callers []int
	// envoy, when set, is the Envoy binary of the Envoy comparison (see
	// envoyload.go), which then runs instead.
	envoy string
	// vault, when set, is the bao binary of the OpenBao dev server that
	// holds keyward's store instead of a file.
	vault string
	// startTimeout bounds keyward's start-up: it loads and validates the
	// whole store before it listens.
	startTimeout time.Duration
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: loadtest [flags]\n\nLoad-tests keyward serve against an allow-everything ext_authz floor.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.keyward, "keyward", "", "keyward `binary`; default: keyward next to this program, else on $PATH")
	fs.IntVar(&o.fixture.Tokens, "tokens", 100_000, "tokens in the generated store")
	fs.IntVar(&o.fixture.Groups, "groups", 1_000, "groups the tokens are spread over")
	fs.IntVar(&o.fixture.Users, "users", 1_000, "users owning the tokens (each a member of several groups)")
	fs.IntVar(&o.sample, "sample", 10_000, "distinct tokens the load cycles through, drawn at random from the store")
	fs.IntVar(&o.load.concurrency, "concurrency", 32, "goroutines calling Check in a loop")
	fs.IntVar(&o.load.conns, "conns", 1, "gRPC connections the goroutines share")
	fs.DurationVar(&o.load.warmup, "warmup", 2*time.Second, "unmeasured warm-up before each measured phase")
	fs.DurationVar(&o.load.duration, "duration", 10*time.Second, "measured phase per server run")
	fs.IntVar(&o.rounds, "rounds", 1, "keyward runs, each between two floor runs (floor, keyward, floor, ...)")
	fs.BoolVar(&o.strict, "strict", false, fmt.Sprintf("exit %d when a target is missed", loadrig.ExitMissed))
	fs.DurationVar(&o.startTimeout, "start-timeout", 30*time.Second, "how long keyward may take to load the store and report SERVING")
	fs.BoolVar(&o.keepDir, "keep", false, "keep the generated config and store (the folder is printed)")
	fs.BoolVar(&o.sweep, "sweep", false, "measure the sweep instead: keyward over each of -samples distinct tokens, and keyward and the floor at each of -callers (-sample and -concurrency are then unused)")
	fs.DurationVar(&o.fixture.CacheTTL, "cache-ttl", 0, "keyward's cache.ttl (how long a record loaded from the store is trusted); 0 keeps its default")
	fs.StringVar(&o.vault, "vault", "", "bao `binary`: keyward serves from an OpenBao dev server filled like the file store (records loaded lazily, as in production), instead of the file store")
	fs.StringVar(&o.envoy, "envoy", "", "Envoy `binary`: compare instead Envoy without ext_authz, with the floor and with keyward, driven by wrk over the first of -samples tokens with the first of -callers connections")
	samples := fs.String("samples", "10000,30000,100000", "with -sweep: distinct tokens in the traffic, the first the baseline the others are compared with")
	callers := fs.String("callers", "32,4", "with -sweep: concurrent callers, each compared with the floor")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var err error
	if o.samples, err = parseInts(*samples); err != nil {
		return nil, fmt.Errorf("-samples: %w", err)
	}
	if o.callers, err = parseInts(*callers); err != nil {
		return nil, fmt.Errorf("-callers: %w", err)
	}
	for i := range o.samples {
		o.samples[i] = min(o.samples[i], o.fixture.Tokens)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case o.fixture.Tokens < 1 || o.fixture.Groups < 1 || o.fixture.Users < 1:
		return nil, errors.New("-tokens, -groups and -users must be at least 1")
	case o.sample < 1:
		return nil, errors.New("-sample must be at least 1")
	case o.load.concurrency < 1 || o.load.conns < 1 || o.rounds < 1:
		return nil, errors.New("-concurrency, -conns and -rounds must be at least 1")
	case o.fixture.CacheTTL < 0:
		return nil, errors.New("-cache-ttl must not be negative")
	case o.load.duration <= 0 || o.load.warmup < 0 || o.startTimeout <= 0:
		return nil, errors.New("-duration and -start-timeout must be positive and -warmup not negative")
	}
	o.sample = min(o.sample, o.fixture.Tokens)
	return o, nil
}

// keywardPath finds the keyward binary: the flag, else a keyward beside
// this program (scripts/load.sh builds both into one folder), else $PATH.
func keywardPath(flagValue string) (string, error) {
	if flagValue != "" {
		p, err := filepath.Abs(flagValue)
		if err != nil {
			return "", fmt.Errorf("-keyward: %w", err)
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("-keyward: %w", err)
		}
		return p, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "keyward")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("keyward"); err == nil {
		return p, nil
	}
	return "", errors.New("no keyward binary: pass -keyward PATH (scripts/load.sh builds one)")
}

const (
	floorStartTimeout = 10 * time.Second
	stopGrace         = 3 * time.Second
	memSampleInterval = 100 * time.Millisecond
)

// run performs the whole load test and prints the report to stdout and
// progress to stderr.
func run(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	progress := func(format string, args ...any) {
		fmt.Fprintf(stderr, "loadtest: "+format+"\n", args...)
	}
	kwPath, self, err := binaries(o)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "keyward-load-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	if o.keepDir {
		progress("keeping %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	t0 := time.Now()
	fix, stopStore, err := writeStore(ctx, o, dir)
	if err != nil {
		return err
	}
	defer stopStore()
	if o.vault != "" {
		progress("store: OpenBao dev server, %d tokens, %d groups, %d users, written in %s",
			o.fixture.Tokens, o.fixture.Groups, o.fixture.Users, time.Since(t0).Round(time.Millisecond))
	} else {
		progress("store: %d tokens, %d groups, %d users, %.1f MiB, written in %s",
			o.fixture.Tokens, o.fixture.Groups, o.fixture.Users, mib(uint64(fix.StoreBytes)), time.Since(t0).Round(time.Millisecond))
	}
	sample := o.sample
	if o.sweep {
		sample = slices.Max(o.samples)
	}
	reqs := loadrig.CheckRequests(fix.Tokens[:sample])

	t0 = time.Now()
	floor, kw, err := startServers(ctx, o, fix, kwPath, self)
	defer floor.stop(stopGrace) // nil-safe: see server.stop
	defer kw.stop(stopGrace)
	if err != nil {
		return err
	}
	// Both started together; keyward is the slow one.
	startup := time.Since(t0)
	progress("servers ready: keyward %s (pid %d) after %s, floor %s (pid %d)",
		kw.addr, kw.PID(), startup.Round(time.Millisecond), floor.addr, floor.PID())
	idle, err := loadrig.ReadMem(kw.PID())
	if err != nil {
		return kw.Failure(err)
	}

	if o.envoy != "" {
		return envoyLoad(ctx, o, progress, dir, fix.Tokens[:o.samples[0]], servers(floor, kw), stdout)
	}
	if o.sweep {
		return sweep(ctx, o, progress, reqs, servers(floor, kw), stdout)
	}
	m := &measurement{opts: o, fix: fix, idle: idle, startup: startup, order: runOrder(o.rounds), runs: map[string][]*result{}}
	return m.run(ctx, progress, reqs, servers(floor, kw), stdout)
}

// writeStore writes keyward's configuration and fills its store: a file,
// or with -vault an OpenBao dev server that the returned func stops.
func writeStore(ctx context.Context, o *options, dir string) (*loadrig.Fixture, func(), error) {
	if o.vault == "" {
		fix, err := loadrig.WriteFixture(ctx, dir, o.fixture)
		return fix, func() {}, err
	}
	bao, err := loadrig.StartBao(ctx, o.vault)
	if err != nil {
		return nil, nil, err
	}
	stop := func() { bao.Stop(stopGrace) }
	fix, err := loadrig.WriteVaultFixture(ctx, dir, bao, o.fixture)
	if err != nil {
		stop()
		return nil, nil, bao.Failure(err)
	}
	return fix, stop, nil
}

func servers(floor, kw *server) map[string]*server {
	return map[string]*server{"floor": floor, "keyward": kw}
}

// startServers starts the floor and keyward on fix and waits until both
// listen. The servers it returns, nil when not started, are the caller's
// to stop, whatever the error.
func startServers(ctx context.Context, o *options, fix *loadrig.Fixture, kwPath, self string) (floor, kw *server, err error) {
	env := loadrig.ChildEnv()
	fc, err := loadrig.StartChild("floor", self, []string{allowServerCmd, "-listen", "127.0.0.1:0"}, env)
	if err != nil {
		return nil, nil, err
	}
	floor = &server{Child: fc}
	kc, err := loadrig.StartChild("keyward", kwPath, []string{"serve", "-config", fix.ConfigPath}, env)
	if err != nil {
		return floor, nil, err
	}
	kw = &server{Child: kc}
	if floor.addr, err = fc.WaitReady(ctx, floorStartTimeout, ""); err != nil {
		return floor, kw, err
	}
	kw.addr, err = kc.WaitReady(ctx, o.startTimeout, "")
	if errors.Is(err, loadrig.ErrNotReady) {
		err = fmt.Errorf("%w\n(keyward loads and validates the whole store, %d tokens, before it listens; -start-timeout waits longer)", err, o.fixture.Tokens)
	}
	return floor, kw, err
}

// binaries returns the keyward binary to measure and this program's own,
// which serves as the floor.
func binaries(o *options) (keyward, self string, err error) {
	if keyward, err = keywardPath(o.keyward); err != nil {
		return "", "", err
	}
	if self, err = os.Executable(); err != nil {
		return "", "", fmt.Errorf("find own binary for the floor server: %w", err)
	}
	return keyward, self, nil
}

// run measures the servers, prints the report to stdout, and fails when
// a measurement failed, or, with -strict, when a target was missed.
func (m *measurement) run(ctx context.Context, progress func(string, ...any), reqs []*authv3.CheckRequest, servers map[string]*server, stdout io.Writer) error {
	if err := m.measure(ctx, progress, reqs, servers); err != nil {
		return err
	}
	rep := m.report()
	rep.print(stdout)
	if err := rep.failure(); err != nil {
		return err
	}
	if m.opts.strict && !rep.AllPass {
		return loadrig.ErrMissed
	}
	return nil
}

// server is a ready child and its address.
type server struct {
	*loadrig.Child
	addr string
}

// stop stops the server's process; a nil server has none.
func (s *server) stop(grace time.Duration) {
	if s != nil {
		s.Child.Stop(grace)
	}
}

// measurement collects the phases of one run.
type measurement struct {
	opts  *options
	fix   *loadrig.Fixture
	idle  loadrig.MemStatus
	order []string
	// runs holds each server's measured runs, in order.
	runs    map[string][]*result
	kwMem   loadrig.MemStatus
	memErr  error
	startup time.Duration
}

// runOrder is the sequence of measured runs: the floor before and after
// each keyward run, rounds times, so that drift of a noisy machine over
// the run hits both servers alike and shows in the spread of the runs.
// Runs of one server are merged.
func runOrder(rounds int) []string {
	order := []string{"floor"}
	for range rounds {
		order = append(order, "keyward", "floor")
	}
	return order
}

// measure runs the phases of m.order, each with its own warm-up and its
// own connections, and samples keyward's memory during its measured phases.
func (m *measurement) measure(ctx context.Context, progress func(string, ...any), reqs []*authv3.CheckRequest, servers map[string]*server) error {
	for i, name := range m.order {
		srv := servers[name]
		progress("run %d/%d: %s, %d workers over %d conn(s), warm-up %s, measured %s",
			i+1, len(m.order), name, m.opts.load.concurrency, m.opts.load.conns, m.opts.load.warmup, m.opts.load.duration)
		l, err := newLoader(srv.addr, m.opts.load, reqs)
		if err != nil {
			return srv.Failure(err)
		}
		var onMeasure func() func()
		if name == "keyward" {
			onMeasure = func() func() {
				s := loadrig.SampleMem(ctx, srv.PID(), memSampleInterval)
				return func() {
					mem, err := s.Stop()
					m.kwMem.RSS, m.kwMem.HWM = max(m.kwMem.RSS, mem.RSS), max(m.kwMem.HWM, mem.HWM)
					m.memErr = cmp.Or(m.memErr, err)
				}
			}
		}
		r, err := l.run(ctx, onMeasure)
		l.close()
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", ctx.Err())
		}
		select {
		case <-srv.Exited():
			return srv.Failure(errors.New("exited during the load"))
		default:
		}
		if err != nil {
			return srv.Failure(err)
		}
		progress("  %s: %.0f checks/s, p50 %s, p99 %s, %d denied, %d errors", name, r.throughput(),
			r.hist.quantile(0.5).Round(time.Microsecond), r.hist.quantile(0.99).Round(time.Microsecond), r.denied, r.errors)
		m.runs[name] = append(m.runs[name], r)
	}
	if m.memErr != nil {
		return servers["keyward"].Failure(fmt.Errorf("memory sampling: %w", m.memErr))
	}
	return nil
}
