package main

import (
	"os"
	"strings"
	"testing"
)

// TestEnvoyConfigReplicas: replicas from the configuration or the flags,
// a unix socket, mutual TLS and tracing reach the bootstrap; a bad address is an
// error that names it.
func TestEnvoyConfigReplicas(t *testing.T) {
	const tlsYAML = "  authz_tls: {cert_file: /e/tls.crt, key_file: /e/tls.key, ca_file: /e/ca.crt, server_identities: ['spiffe://td/keyward']}\n"
	cases := map[string]struct {
		envoy  string   // the envoy: section's lines
		extra  string   // more configuration
		flags  []string // envoy-config flags
		want   []string
		err    string
		stderr string
	}{
		"metadata delivery noted": {extra: "key_delivery: {openai: metadata}\n", want: []string{"provider_openai"}, stderr: "provider openai has key_delivery metadata"},
		"configured replicas":     {envoy: "  authz_addresses: [10.0.0.1:9191, 10.0.0.2:9191]\n", want: []string{"address: 10.0.0.1", "address: 10.0.0.2", "grpc_health_check", "retry_policy"}},
		"replicas by flag":        {flags: []string{"-authz-address", "10.0.0.3:9191", "-authz-address", "keyward-1.keyward:9191"}, want: []string{"address: 10.0.0.3", "address: keyward-1.keyward", "type: STRICT_DNS"}},
		"unix socket":             {envoy: "  authz_address: unix:/run/keyward/authz.sock\n", want: []string{"path: /run/keyward/authz.sock"}},
		"mutual tls":              {envoy: tlsYAML, want: []string{"UpstreamTlsContext", "filename: /e/tls.crt", "exact: spiffe://td/keyward"}},
		"tracing": {envoy: "  tracing: {otlp_address: '10.0.0.9:4317', service_name: mesh}\n", want: []string{
			"name: envoy.tracers.opentelemetry", "cluster_name: opentelemetry_collector", "service_name: mesh", "address: 10.0.0.9", "value: 100",
		}},
		"jwt issuers": {extra: "jwt: [{issuer: 'https://idp', local_jwks: /e/jwks.json}, {issuer: 'https://b', remote_jwks: {uri: 'https://b/keys'}}]\n", want: []string{
			"name: envoy.filters.http.jwt_authn", "payload_in_metadata: https://idp", "filename: /e/jwks.json", "allow_missing_or_failed", "cluster: jwks_1",
			"name: jwks_1", "- envoy.filters.http.jwt_authn", "value_prefix: 'Bearer '",
		}},
		"jwt header keyward does not read": {extra: "jwt: [{issuer: 'https://idp', local_jwks: /e/j.json, from_headers: [{name: x-jwt}]}]\n", err: "jwt[0].from_headers[0].name"},
		"bad flag address":                 {flags: []string{"-authz-address", "keyward"}, err: "authz_addresses[0]"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := newCLI(t)
			cfg := tc.extra + "routes:\n  - {provider: openai, path_prefix: /openai/, upstream: 'https://api.openai.com'}\nenvoy:\n" + tc.envoy
			if err := os.WriteFile(c.config, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			out, stderr, err := c.run(append([]string{"envoy-config"}, tc.flags...)...)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want it to name %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			if !strings.Contains(stderr, tc.stderr) || tc.stderr == "" && stderr != "" {
				t.Errorf("stderr %q, want %q", stderr, tc.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("bootstrap lacks %q", w)
				}
			}
		})
	}
}
