// Command fakeprovider serves the fake LLM provider of package fakeprovider
// on a local port, for the end-to-end tests and the quickstart demo. It prints
// "listening on ADDR" on stdout once it accepts connections.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/keyward/keyward/internal/fakeprovider"
)

// shutdownTimeout bounds how long open streams may take to finish on exit.
const shutdownTimeout = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		log.Printf("fakeprovider: %v", err)
		stop()
		os.Exit(1)
	}
}

// run serves until ctx ends, then shuts down gracefully.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("fakeprovider", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	addrFile := fs.String("addr-file", "", "if set, write the bound address to this file")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("parse flags: %w", err)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	addr := ln.Addr().String()
	srv := &http.Server{
		Handler:           fakeprovider.New(),
		ReadHeaderTimeout: 10 * time.Second,
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	if *addrFile != "" {
		if err := writeFileAtomic(*addrFile, addr+"\n"); err != nil {
			_ = srv.Close()
			<-errc
			return err
		}
	}
	if _, err := fmt.Fprintf(stdout, "listening on %s\n", addr); err != nil {
		_ = srv.Close()
		<-errc
		return fmt.Errorf("announce address: %w", err)
	}

	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", addr, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve on %s: %w", addr, err)
	}
	return nil
}

// writeFileAtomic writes via a rename so a script polling for the file never
// reads it half written.
func writeFileAtomic(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".fakeprovider-addr-*")
	if err != nil {
		return fmt.Errorf("write address file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	// CreateTemp makes the file private; the address is no secret and other
	// users' scripts may need it.
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write address file: %w", err)
	}
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return fmt.Errorf("write address file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write address file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write address file: %w", err)
	}
	return nil
}
