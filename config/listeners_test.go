package config_test

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward/config"
)

const mtls = "tls: {cert_file: tls.crt, key_file: tls.key, client_ca_file: ca.crt, allowed_clients: ['spiffe://td/envoy']}\n"

// TestListenerSettings covers the listeners' TLS, unix sockets, replicas
// and the drain: valid configurations, and every problem named by its
// field.
func TestListenerSettings(t *testing.T) {
	tests := map[string]struct {
		yaml   string
		fields []string // nil: valid
	}{
		"mtls":                      {yaml: mtls},
		"unix socket":               {yaml: "listen: unix:/run/keyward/authz.sock\n"},
		"unix socket relative":      {yaml: "listen: unix:authz.sock\n", fields: []string{"listen", "envoy.authz_address"}},
		"management tls, no client": {yaml: "management: {listen: 127.0.0.1:9292, tls: {cert_file: a, key_file: b}}\n"},
		"metrics tls with clients":  {yaml: "metrics: {listen: 127.0.0.1:9464, tls: {cert_file: a, key_file: b, client_ca_file: c, allowed_clients: [prometheus.svc]}}\n"},
		"tls without client ca": {
			yaml:   "tls: {cert_file: a, key_file: b}\n",
			fields: []string{"tls.client_ca_file", "tls.allowed_clients"},
		},
		"tls without allow-list": {yaml: "tls: {cert_file: a, key_file: b, client_ca_file: c}\n", fields: []string{"tls.allowed_clients"}},
		"tls without key":        {yaml: "tls: {cert_file: a, client_ca_file: c, allowed_clients: [envoy.svc]}\n", fields: []string{"tls.key_file"}},
		"tls wildcard identity": {
			yaml: "tls: {cert_file: a, key_file: b, client_ca_file: c, allowed_clients: ['*.svc']}\n", fields: []string{"tls.allowed_clients[0]"},
		},
		"tls reload too often": {yaml: mtls[:len(mtls)-2] + ", reload_interval: 1ms}\n", fields: []string{"tls.reload_interval"}},
		"management tls, no listen": {
			yaml: "management: {tls: {cert_file: a, key_file: b}}\n", fields: []string{"management.tls"},
		},
		"management allow-list without CA": {
			yaml:   "management: {listen: 127.0.0.1:9292, tls: {cert_file: a, key_file: b, allowed_clients: [admin.svc]}}\n",
			fields: []string{"management.tls.allowed_clients"},
		},
		"metrics tls, no listen": {yaml: "metrics: {tls: {cert_file: a, key_file: b}}\n", fields: []string{"metrics.tls"}},
		"shutdown_drain":         {yaml: "shutdown_drain: -1s\n", fields: []string{"shutdown_drain"}},
		"replicas":               {yaml: "envoy: {authz_addresses: [10.0.0.1:9191, 'keyward-1.keyward:9191']}\n"},
		"replicas and address": {
			yaml: "envoy: {authz_address: 10.0.0.1:9191, authz_addresses: [10.0.0.2:9191]}\n", fields: []string{"envoy.authz_addresses"},
		},
		"replica not host:port": {yaml: "envoy: {authz_addresses: [10.0.0.1:9191, keyward]}\n", fields: []string{"envoy.authz_addresses[1]"}},
		"envoy authz tls": {
			yaml: "envoy: {authz_tls: {cert_file: /e/tls.crt, key_file: /e/tls.key, ca_file: /e/ca.crt, server_identities: ['spiffe://td/keyward']}}\n",
		},
		"envoy tracing": {yaml: "envoy: {tracing: {otlp_address: 'otel-collector:4317', service_name: mesh, sampling: 12.5}}\n"},
		"envoy tracing without address": {
			yaml: "envoy: {tracing: {sampling: 101}}\n", fields: []string{"envoy.tracing.otlp_address", "envoy.tracing.sampling"},
		},
		"envoy downstream mtls": {
			yaml: "envoy: {downstream_tls: {cert_file: /e/llm.crt, key_file: /e/llm.key, client_ca_file: /e/mesh-ca.crt, require_client_cert: true}}\n",
		},
		"envoy downstream mtls without ca": {
			yaml:   "envoy: {downstream_tls: {cert_file: /e/llm.crt, key_file: e/llm.key, require_client_cert: true}}\n",
			fields: []string{"envoy.downstream_tls.key_file", "envoy.downstream_tls.require_client_cert"},
		},
		"envoy authz tls incomplete": {
			yaml:   "envoy: {authz_tls: {cert_file: e/tls.crt, key_file: /e/tls.key, ca_file: /e/ca.crt}}\n",
			fields: []string{"envoy.authz_tls.cert_file", "envoy.authz_tls.server_identities"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := writeConfig(t, tc.yaml)
			_, err := config.Load(path, env(nil))
			if tc.fields == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("valid, want problems with %v", tc.fields)
			}
			wantPaths(t, err, tc.fields)
		})
	}
}

// TestListenerDefaults: TLS file paths are relative to the configuration
// file, reloads default to 10s, the drain to 5s (0s turns it off), and the
// Envoy authz address follows a unix socket listen.
func TestListenerDefaults(t *testing.T) {
	path := writeConfig(t, mtls+"listen: unix:/run/k.sock\nmanagement: {listen: 127.0.0.1:9292, tls: {cert_file: /abs/m.crt, key_file: m.key}}\n")
	c, err := config.Load(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	got := []string{c.TLS.CertFile, c.TLS.KeyFile, c.TLS.ClientCAFile, c.Management.TLS.CertFile, c.Management.TLS.KeyFile}
	want := []string{filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt"), "/abs/m.crt", filepath.Join(dir, "m.key")}
	if !slices.Equal(got, want) {
		t.Errorf("tls paths %v, want %v", got, want)
	}
	if c.TLS.ReloadInterval != 10*time.Second || c.Management.TLS.ReloadInterval != 10*time.Second || c.Metrics.TLS.ReloadInterval != 0 {
		t.Errorf("reload intervals %v %v %v, want 10s where TLS is on", c.TLS.ReloadInterval, c.Management.TLS.ReloadInterval, c.Metrics.TLS.ReloadInterval)
	}
	if c.ShutdownDrain != 5*time.Second || c.Envoy.AuthzAddress != "unix:/run/k.sock" {
		t.Errorf("shutdown_drain %v, envoy.authz_address %q", c.ShutdownDrain, c.Envoy.AuthzAddress)
	}
	if c.AllowPlaintext || c.Management.AllowPlaintext || c.Metrics.AllowPlaintext {
		t.Error("plaintext allowed by default")
	}

	c, err = config.Load(writeConfig(t, "shutdown_drain: 0s\nenvoy: {authz_addresses: [10.0.0.1:9191]}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.ShutdownDrain != 0 || c.Envoy.AuthzAddress != "" {
		t.Errorf("shutdown_drain %v (want 0), envoy.authz_address %q (want none beside authz_addresses)", c.ShutdownDrain, c.Envoy.AuthzAddress)
	}
	if d := config.Default(); d.ShutdownDrain != 5*time.Second {
		t.Errorf("Default().ShutdownDrain = %v", d.ShutdownDrain)
	}
}
