package main

import (
	"strings"
	"testing"
)

func TestCLIIdentity(t *testing.T) {
	c := newCLI(t)
	c.must("group", "add", "eng")
	c.must("group", "add", "ops")
	c.must("user", "add", "alice", "-groups", "eng")
	c.must("identity", "add", "payments", "-principal", "spiffe://cluster.local/ns/payments/*", "-user", "alice", "-group", "eng")
	if l := c.must("identity", "list"); !strings.Contains(strings.Join(strings.Fields(l), " "), "payments spiffe://cluster.local/ns/payments/* alice eng enabled") {
		t.Fatalf("identity list:\n%s", l)
	}
	c.must("identity", "disable", "payments")
	if l := c.must("identity", "list"); !strings.Contains(l, "disabled") {
		t.Fatalf("after disable:\n%s", l)
	}
	c.must("identity", "enable", "payments")
	tok := strings.TrimSpace(c.must("token", "create", "-user", "alice", "-group", "eng", "-name", "ci", "-principal", "spiffe://cluster.local/ns/ci/sa/runner"))
	if l := c.must("token", "list"); !strings.Contains(l, "BOUND TO") || !strings.Contains(l, "spiffe://cluster.local/ns/ci/sa/runner") {
		t.Fatalf("token list:\n%s", l)
	}
	c.must("token", "revoke", tok[3:19])

	errs := map[string][]string{
		"same principal":    {"identity", "add", "other", "-principal", "spiffe://cluster.local/ns/payments/*", "-user", "alice", "-group", "eng"},
		"exists":            {"identity", "add", "payments", "-principal", "spiffe://cluster.local/ns/x/sa/y", "-user", "alice", "-group", "eng"},
		"may not use group": {"identity", "add", "x", "-principal", "spiffe://cluster.local/ns/x/sa/y", "-user", "alice", "-group", "ops"},
		"does not exist":    {"identity", "add", "x", "-principal", "spiffe://cluster.local/ns/x/sa/y", "-user", "alice", "-group", "nope"},
		"no user record":    {"identity", "add", "x", "-principal", "spiffe://cluster.local/ns/x/sa/y", "-user", "nobody", "-group", "eng"},
		`"..`:               {"identity", "add", "x", "-principal", "spiffe://cluster.local/ns/../y", "-user", "alice", "-group", "eng"},
		"want -principal":   {"identity", "add", "x"},
		"not found":         {"identity", "delete", "nope"},
		"principal:":        {"token", "create", "-user", "alice", "-group", "eng", "-name", "x", "-principal", "https://x/y"},
	}
	for want, args := range errs {
		_, stderr, err := c.run(args...)
		if err == nil || !strings.Contains(err.Error()+stderr, want) {
			t.Errorf("keyward %v: err %v, want it to mention %q", args, err, want)
		}
	}
	c.must("user", "delete", "alice")
	if l := c.must("identity", "list"); strings.Contains(l, "payments") {
		t.Fatalf("deleting the user left their mapping:\n%s", l)
	}
}
