package main

import (
	"fmt"

	"github.com/keyward/keyward/envoy"
)

// envoyConfig prints an Envoy bootstrap: a listener with keyward's ext_authz
// filter, routing each configured path prefix to its provider.
func (e *env) envoyConfig(args []string) error {
	c := e.newCommand("envoy-config")
	forwardBody := c.Bool("forward-body", false, "send up to 64 KiB of the request body to keyward")
	if pos, err := c.parse(args); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("envoy-config: unexpected arguments %q", pos)
	}
	cfg, err := c.config()
	if err != nil {
		return err
	}
	opts := envoy.Options{
		ListenAddress:   cfg.Envoy.Listen,
		AdminAddress:    cfg.Envoy.Admin,
		AuthzAddress:    cfg.Envoy.AuthzAddress,
		AuthzTimeout:    cfg.Envoy.AuthzTimeout,
		ForwardBody:     *forwardBody,
		MaxRequestBytes: cfg.Envoy.MaxRequestBytes,
	}
	for _, r := range cfg.Routes {
		if r.PathPrefix != "" {
			opts.Routes = append(opts.Routes, envoy.Route{Provider: r.Provider, PathPrefix: r.PathPrefix, Upstream: r.Upstream})
		}
	}
	b, err := envoy.Bootstrap(opts)
	if err != nil {
		return fmt.Errorf("envoy-config: %w", err)
	}
	out, err := envoy.MarshalYAML(b)
	if err != nil {
		return fmt.Errorf("envoy-config: %w", err)
	}
	_, err = e.stdout.Write(out)
	return err
}
