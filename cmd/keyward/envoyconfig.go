package main

import (
	"fmt"
	"strings"

	"github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/envoy"
)

// addrFlags collects repeated -authz-address flags.
type addrFlags []string

func (a *addrFlags) String() string { return strings.Join(*a, ",") }

func (a *addrFlags) Set(v string) error {
	*a = append(*a, v)
	return nil
}

// envoyConfig prints an Envoy bootstrap: a listener with keyward's ext_authz
// filter, routing each configured path prefix to its provider, and the
// keyward cluster of every replica, health-checked, over mutual TLS or a
// unix socket as configured.
func (e *env) envoyConfig(args []string) error {
	c := e.newCommand("envoy-config")
	forwardBody := c.Bool("forward-body", false, "send up to envoy.max_request_bytes of the request body to keyward")
	var authzAddrs addrFlags
	c.Var(&authzAddrs, "authz-address", "a keyward replica, host:port or unix:/path (repeatable; replaces envoy.authz_address(es))")
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
		AuthzAddresses:  cfg.Envoy.AuthzAddresses,
		AuthzTLS:        cfg.Envoy.AuthzTLS,
		DownstreamTLS:   cfg.Envoy.DownstreamTLS,
		AuthzTimeout:    cfg.Envoy.AuthzTimeout,
		ForwardBody:     *forwardBody,
		MaxRequestBytes: cfg.Envoy.MaxRequestBytes,
		Tracing:         cfg.Envoy.Tracing,
		JWT:             cfg.JWT,
	}
	if len(authzAddrs) > 0 {
		opts.AuthzAddress, opts.AuthzAddresses = "", authzAddrs
	}
	for _, r := range cfg.Routes {
		if r.PathPrefix != "" {
			opts.Routes = append(opts.Routes, envoy.Route{Provider: r.Provider, PathPrefix: r.PathPrefix, Upstream: r.Upstream})
			if cfg.KeyDelivery[r.Provider] == authz.KeyInMetadata {
				// The bootstrap maps no metadata to a header: the
				// provider's header convention is in the store, and
				// plain Envoy is what the header mode is for.
				fmt.Fprintf(e.stderr, "envoy-config: note: provider %s has key_delivery metadata: keyward sets no auth header on %s; "+
					"only a consumer of the %s metadata (Envoy AI Gateway's credentialOverride) puts the key on the request\n",
					r.Provider, r.PathPrefix, authz.MetadataKeyField)
			}
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
