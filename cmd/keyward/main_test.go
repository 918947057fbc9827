package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/envoy/envoytest"
)

// cli runs keyward commands in process against one configuration.
type cli struct {
	t      testing.TB
	config string
	env    map[string]string
}

func newCLI(t testing.TB) *cli {
	dir := t.TempDir()
	c := &cli{t: t, config: filepath.Join(dir, "keyward.yaml"), env: map[string]string{"OPENAI_KEY": "sk-cli-test-key-000"}}
	if err := os.WriteFile(c.config, []byte("store:\n  file: store.yaml\nroutes:\n  - {provider: openai, path_prefix: /openai/, upstream: 'https://api.openai.com'}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cli) run(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(context.Background(), append(args, "-config", c.config), &out, &errOut, func(k string) string { return c.env[k] })
	return out.String(), errOut.String(), err
}

func (c *cli) must(args ...string) string {
	c.t.Helper()
	out, stderr, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("keyward %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

func TestCLI(t *testing.T) {
	c := newCLI(t)
	c.must("provider", "set", "openai", "-kind", "openai", "-key", "k1=OPENAI_KEY")
	c.must("group", "add", "eng", "-providers", "openai", "-models", "gpt-4o*")
	c.must("user", "add", "alice", "-groups", "eng")
	tok := strings.TrimSpace(c.must("token", "create", "-user", "alice", "-group", "eng", "-name", "ci", "-expires", "1h"))
	if !strings.HasPrefix(tok, "kw_") || len(tok) != 67 {
		t.Fatalf("token %q", tok)
	}
	list := c.must("token", "list")
	if !strings.Contains(list, tok[3:19]) || strings.Contains(list, tok[19:]) || !strings.Contains(list, "active") {
		t.Fatalf("token list:\n%s", list)
	}
	if m := strings.TrimSpace(c.must("mgmt-token", "create", "-user", "alice")); !strings.HasPrefix(m, "kwm_") {
		t.Fatalf("management token %q", m[:4])
	}
	if _, _, err := c.run("mgmt-token", "create", "-user", "nobody"); err == nil {
		t.Fatal("management token for a user that does not exist")
	}
	c.must("token", "revoke", tok[3:19])
	if list := c.must("token", "list", "-user", "alice"); !strings.Contains(list, "revoked") {
		t.Fatalf("after revoke:\n%s", list)
	}
	c.must("group", "set", "eng", "-disabled") // flags after the name work
	if l := c.must("group", "list"); !strings.Contains(l, "disabled") || !strings.Contains(l, "gpt-4o*") {
		t.Fatalf("group set kept other fields? %s", l)
	}
	if l := c.must("provider", "list"); !strings.Contains(l, "openai  openai  k1") || strings.Contains(l, "sk-cli-test-key") {
		t.Fatalf("provider list:\n%s", l)
	}
	c.must("user", "delete", "alice")
	if l := c.must("token", "list"); strings.Contains(l, tok[3:19]) {
		t.Fatalf("deleting the user left their tokens:\n%s", l)
	}

	errs := map[string][]string{
		"may not use group":   {"token", "create", "-user", "carol", "-group", "ops", "-name", "x"},
		`user "nobody"`:       {"token", "create", "-user", "nobody", "-group", "ops", "-name", "x"},
		"name: say what":      {"token", "create", "-user", "bob", "-group", "eng"},
		"exists":              {"group", "add", "eng"},
		"role":                {"user", "add", "dave", "-role", "root"},
		"want one user name":  {"user", "add"},
		"ID=ENV_VAR":          {"provider", "set", "x", "-kind", "openai", "-key", "sk-raw-key"},
		"kind":                {"provider", "set", "x", "-kind", "bogus"},
		"unknown command":     {"frobnicate"},
		"unknown subcommand":  {"token", "mint"},
		"want -user and":      {"token", "create"},
		"not found":           {"token", "revoke", "AAAAAAAAAAAAAAAA"},
		"must be 1-63":        {"group", "add", "bad/name"},
		"disabled":            {"token", "create", "-user", "bob", "-group", "eng", "-name", "x"},
		"want a subcommand":   {"user"},
		"unexpected argument": {"envoy-config", "extra"},
	}
	c.must("user", "add", "bob", "-groups", "eng")
	c.must("user", "add", "carol")
	c.must("group", "add", "ops")
	for want, args := range errs {
		_, stderr, err := c.run(args...)
		if err == nil || !strings.Contains(err.Error()+stderr, want) {
			t.Errorf("keyward %v: err %v, want it to mention %q", args, err, want)
		}
	}
}

func TestCLIGroupRateLimit(t *testing.T) {
	c := newCLI(t)
	c.must("group", "add", "eng", "-rpm", "30")
	if l := c.must("group", "list"); !strings.Contains(l, "RPM") || !strings.Contains(l, " 30 ") {
		t.Fatalf("group list after add -rpm 30:\n%s", l)
	}
	c.must("group", "set", "eng", "-disabled")
	if l := c.must("group", "list"); !strings.Contains(l, " 30 ") {
		t.Fatalf("group set -disabled lost the limit:\n%s", l)
	}
	c.must("group", "set", "eng", "-rpm", "0")
	if l := c.must("group", "list"); strings.Contains(l, " 30 ") {
		t.Fatalf("group set -rpm 0 kept the limit:\n%s", l)
	}
	for want, args := range map[string][]string{
		"requests_per_minute": {"group", "set", "eng", "-rpm", "-1"},
		"invalid value":       {"group", "add", "ops", "-rpm", "many"},
	} {
		_, stderr, err := c.run(args...)
		if err == nil || !strings.Contains(err.Error()+stderr, want) {
			t.Errorf("keyward %v: err %v, want it to mention %q", args, err, want)
		}
	}
}

func TestEnvoyConfigCommand(t *testing.T) {
	c := newCLI(t)
	out := c.must("envoy-config")
	for _, want := range []string{"envoy.filters.http.ext_authz", "provider_openai", "prefix: /openai/", "port_value: 9191"} {
		if !strings.Contains(out, want) {
			t.Errorf("envoy-config lacks %q", want)
		}
	}
}

func TestBadConfigNamesTheField(t *testing.T) {
	c := newCLI(t)
	os.WriteFile(c.config, []byte("listen: nowhere\ncache:\n  ttl: -1s\n"), 0o600)
	_, _, err := c.run("serve")
	if err == nil || !strings.Contains(err.Error(), "listen:") || !strings.Contains(err.Error(), "cache.ttl:") {
		t.Fatalf("serve with a bad config: %v", err)
	}
	os.WriteFile(c.config, []byte("listen_addr: 127.0.0.1:1\n"), 0o600)
	if _, _, err := c.run("serve"); err == nil || !strings.Contains(err.Error(), "listen_addr") {
		t.Fatalf("unknown field: %v", err)
	}
	c.env["KEYWARD_DISABLE_CUSTOM_KEYS"] = "sometimes"
	os.WriteFile(c.config, nil, 0o600)
	if _, _, err := c.run("serve"); err == nil || !strings.Contains(err.Error(), "KEYWARD_DISABLE_CUSTOM_KEYS") {
		t.Fatalf("bad env: %v", err)
	}
}

// TestExampleConfigValidates runs the reference configuration through
// envoy-config and the real Envoy's validate mode.
func TestExampleConfigValidates(t *testing.T) {
	bin := envoytest.Binary(t)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"envoy-config", "-config", "../../examples/keyward.yaml"}, &out, &errOut, func(string) string { return "" }); err != nil {
		t.Fatalf("envoy-config: %v\n%s", err, errOut.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if msg, err := envoytest.Validate(ctx, bin, out.Bytes()); err != nil {
		t.Fatalf("envoy --mode validate: %v\n%s", err, msg)
	}
}
