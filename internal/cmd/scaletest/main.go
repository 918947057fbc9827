// Command scaletest measures how keyward's start-up grows with the size of
// its file store. For each size it generates a store (N tokens, N/10
// groups, N/10 users; generation is not measured), starts the real
// `keyward serve` as a child process, and measures the time from exec to
// gRPC health SERVING on envoy.service.auth.v3.Authorization (keyward
// reports it once the store is loaded), the peak resident memory during
// the load (VmHWM) and the steady memory once keyward has served a few
// allowed Check calls with tokens from the store (VmRSS). It prints a
// table and PASS/MISS lines against the targets:
//
//   - serving within 30 s at 10^6 tokens, 10^5 groups, 10^5 users;
//   - peak memory during the load at most 2x the steady memory;
//   - linear load: keyward's CPU time per record at each size at most
//     1.5x that at the size 10 times smaller, each net of a run with an
//     almost empty store (the process's own start). Wall time per record
//     is printed too; on a machine shared with other work it measures
//     the neighbours as well.
//
// Run it with a keyward binary:
//
//	go build -o bin/keyward ./cmd/keyward
//	go run ./internal/cmd/scaletest -keyward bin/keyward [-sizes 10000,100000,1000000] [-strict]
//
// or scripts/scale.sh, which does both. Exit status: 0 when the runs
// worked, whether or not the targets were met; 3 instead with -strict
// when a target was missed; 1 when a run did not work (keyward failed to
// start or denied a token of its store); 2 for bad flags. Linux only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keyward/keyward/internal/loadrig"
)

func main() {
	os.Exit(mainStatus(os.Args[1:], os.Stdout, os.Stderr))
}

func mainStatus(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return loadrig.ExitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "scaletest:", err)
		return loadrig.ExitUsage
	}
	switch err := run(ctx, opts, stdout, stderr); {
	case err == nil:
		return loadrig.ExitOK
	case errors.Is(err, loadrig.ErrMissed):
		fmt.Fprintln(stderr, "scaletest:", err)
		return loadrig.ExitMissed
	default:
		fmt.Fprintln(stderr, "scaletest: FAILED:", err)
		return loadrig.ExitFailed
	}
}

// options are the command-line settings.
type options struct {
	keyward string
	// sizes are the token counts measured, ascending.
	sizes  []int
	checks int
	strict bool
	// startTimeout bounds each start-up: a safety net, not a target.
	startTimeout time.Duration
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("scaletest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: scaletest [flags]\n\nMeasures keyward's start-up on generated file stores of growing size.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	sizes := fs.String("sizes", "10000,100000,1000000", "comma-separated token counts, each with a tenth as many groups and users")
	fs.StringVar(&o.keyward, "keyward", "", "keyward `binary` (scripts/scale.sh builds one)")
	fs.IntVar(&o.checks, "checks", 100, "allowed Check calls made after start-up, before the steady memory is read")
	fs.BoolVar(&o.strict, "strict", false, fmt.Sprintf("exit %d when a target is missed", loadrig.ExitMissed))
	fs.DurationVar(&o.startTimeout, "start-timeout", 15*time.Minute, "how long keyward may take to report SERVING before the run fails")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.keyward == "" {
		return nil, errors.New("-keyward is required")
	}
	p, err := filepath.Abs(o.keyward)
	if err != nil {
		return nil, fmt.Errorf("-keyward: %w", err)
	}
	o.keyward = p
	for f := range strings.SplitSeq(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 10 {
			return nil, fmt.Errorf("-sizes: %q is not a token count of at least 10", f)
		}
		if len(o.sizes) > 0 && n <= o.sizes[len(o.sizes)-1] {
			return nil, errors.New("-sizes must be ascending")
		}
		o.sizes = append(o.sizes, n)
	}
	if o.checks < 1 || o.startTimeout <= 0 {
		return nil, errors.New("-checks and -start-timeout must be positive")
	}
	return o, nil
}

// run measures the baseline and every size, and prints the report.
func run(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	progress := func(format string, args ...any) {
		fmt.Fprintf(stderr, "scaletest: "+format+"\n", args...)
	}
	base, err := measure(ctx, o, size{tokens: 1, groups: 1, users: 1}, progress)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	rep := &report{base: base}
	for _, n := range o.sizes {
		r, err := measure(ctx, o, size{tokens: n, groups: n / 10, users: n / 10}, progress)
		if err != nil {
			return fmt.Errorf("%d tokens: %w", n, err)
		}
		rep.runs = append(rep.runs, r)
	}
	rep.print(stdout)
	if o.strict && !rep.pass() {
		return loadrig.ErrMissed
	}
	return nil
}
