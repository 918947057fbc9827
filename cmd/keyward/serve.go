package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/keyward/keyward/serve"
)

// serve runs the ext_authz server (package serve) until ctx is done.
func (e *env) serve(ctx context.Context, args []string) error {
	c := e.newCommand("serve")
	if pos, err := c.parse(args); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", pos)
	}
	cfg, err := c.config()
	if err != nil {
		return err
	}
	return serve.Run(ctx, cfg, serve.Options{Log: newLogger(e, cfg.LogLevel), Getenv: e.getenv})
}

func newLogger(e *env, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated by config
	return slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: l}))
}
