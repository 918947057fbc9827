package vaulttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

func TestServerLifecycle(t *testing.T) {
	s := Start(t, "keyward")
	ctx := t.Context()
	root := s.Client(t, s.RootToken)
	if _, err := root.KVv2("keyward").Put(ctx, "groups/g", map[string]any{"disabled": "false"}); err != nil {
		t.Fatalf("write: %v", err)
	}

	s.WritePolicy(t, "reader", `path "keyward/data/*" { capabilities = ["read"] }`)
	reader := s.Client(t, s.Token(t, []string{"reader"}, time.Minute))
	got, err := reader.KVv2("keyward").Get(ctx, "groups/g")
	if err != nil || got.Data["disabled"] != "false" {
		t.Fatalf("read with the reader token: %v, %v", got, err)
	}

	roleID, secretID := s.AppRole(t, "app", []string{"reader"}, 2*time.Second, 10*time.Second)
	login, err := s.Client(t, "").Logical().WriteWithContext(ctx, "auth/approle/login",
		map[string]any{"role_id": roleID, "secret_id": secretID})
	if err != nil || login.Auth == nil || login.Auth.LeaseDuration != 2 {
		t.Fatalf("approle login: %+v, %v", login, err)
	}

	addr := s.Addr
	s.Stop()
	s.Stop() // safe twice
	noRetry := s.Client(t, s.RootToken)
	noRetry.SetMaxRetries(0)
	if _, err := noRetry.Sys().HealthWithContext(ctx); err == nil {
		t.Fatal("health answered while stopped")
	}

	start := time.Now()
	s.Restart(t)
	t.Logf("restart took %v", time.Since(start))
	if s.Addr != addr {
		t.Fatalf("restarted on %s, want %s", s.Addr, addr)
	}
	if _, err := root.Sys().HealthWithContext(ctx); err != nil {
		t.Fatalf("health after restart: %v", err)
	}
	// In memory: the record is gone but the mount is back.
	if _, err := root.KVv2("keyward").Get(ctx, "groups/g"); !errors.Is(err, api.ErrSecretNotFound) {
		t.Fatalf("read after restart: %v, want ErrSecretNotFound", err)
	}
	if _, err := root.KVv2("keyward").Put(ctx, "groups/g", map[string]any{"disabled": "true"}); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
	// AppRole is enabled again on demand.
	s.AppRole(t, "app", nil, 0, 0)
}

// TestPauseResume: a paused server accepts connections but does not
// answer (a request times out rather than being refused), answers what
// was sent meanwhile once resumed, and can be stopped while paused.
func TestPauseResume(t *testing.T) {
	s := Start(t, "keyward")
	health := func(timeout time.Duration) error {
		c := s.Client(t, s.RootToken)
		c.SetMaxRetries(0)
		c.SetClientTimeout(timeout)
		_, err := c.Sys().HealthWithContext(context.Background())
		return err
	}
	s.Pause(t)
	// Hung, not refused: the client gives up, the server never says no.
	var ne net.Error
	if err := health(200 * time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("health while paused: %v, want a client timeout", err)
	}
	pending := make(chan error, 1)
	go func() { pending <- health(30 * time.Second) }() // ends with the test at the latest: 30s
	s.Resume(t)
	if err := <-pending; err != nil {
		t.Fatalf("a request sent while paused, after resume: %v", err)
	}

	s.Pause(t)
	s.Stop() // continues the process so that it acts on SIGTERM
	s.Restart(t)
	if err := health(10 * time.Second); err != nil {
		t.Fatalf("health after a stop while paused and a restart: %v", err)
	}
}

func TestStartWithoutMount(t *testing.T) {
	s := Start(t, "")
	mounts, err := s.Client(t, s.RootToken).Sys().ListMountsWithContext(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mounts["keyward/"]; ok {
		t.Fatal("mount keyward/ enabled without being asked for")
	}
}

// TestExamplePolicies proves examples/vault/*.hcl parse and grant what
// their comments say: the serve policy reads, and lists a user's
// credentials but nothing else, and cannot write; the admin policy writes
// and deletes.
func TestExamplePolicies(t *testing.T) {
	s := Start(t, "keyward")
	for _, name := range []string{"keyward", "keyward-admin"} {
		hcl, err := os.ReadFile(filepath.Join("..", "..", "examples", "vault", name+".hcl"))
		if err != nil {
			t.Fatal(err)
		}
		s.WritePolicy(t, name, string(hcl))
	}
	ctx := t.Context()
	admin := s.Client(t, s.Token(t, []string{"keyward-admin"}, time.Minute)).KVv2("keyward")
	serve := s.Client(t, s.Token(t, []string{"keyward"}, time.Minute))
	kv := serve.KVv2("keyward")

	if _, err := admin.Put(ctx, "groups/x", map[string]any{"providers": "openai"}); err != nil {
		t.Fatalf("admin write: %v", err)
	}
	if got, err := kv.Get(ctx, "groups/x"); err != nil || got.Data["providers"] != "openai" {
		t.Fatalf("serve read: %v, %v", got, err)
	}
	if _, err := admin.Put(ctx, "providers/openai", map[string]any{"kind": "openai"}); err != nil {
		t.Fatalf("admin write: %v", err)
	}
	if meta, err := kv.GetMetadata(ctx, "providers/openai"); err != nil || meta.CurrentVersion != 1 {
		t.Fatalf("serve reads provider versions: %v, %v", meta, err)
	}

	// A user's credentials: the one folder serve may list.
	for _, p := range []string{"users/ann", "users/ann/credentials/c1", "users/ann/credentials/c2", "tokens/t1"} {
		if _, err := admin.Put(ctx, p, map[string]any{"name": "x"}); err != nil {
			t.Fatalf("admin write %s: %v", p, err)
		}
	}
	for _, p := range []string{"keyward/metadata/users/ann/credentials", "keyward/metadata/users/ann/credentials/"} {
		got, err := serve.Logical().ListWithContext(ctx, p)
		if err != nil || got == nil || fmt.Sprint(got.Data["keys"]) != "[c1 c2]" {
			t.Fatalf("serve list %s: %v, %v", p, got, err)
		}
	}
	// A user without credentials lists as nothing, not as a denial.
	if got, err := serve.Logical().ListWithContext(ctx, "keyward/metadata/users/bob/credentials/"); err != nil || got != nil {
		t.Fatalf("serve list of an empty folder: %v, %v", got, err)
	}
	if got, err := kv.Get(ctx, "users/ann/credentials/c1"); err != nil || got.Data["name"] != "x" {
		t.Fatalf("serve read credential: %v, %v", got, err)
	}

	list := func(path string) func() error {
		return func() error {
			_, err := serve.Logical().ListWithContext(ctx, path)
			return err
		}
	}
	denied := map[string]func() error{
		"list":                   list("keyward/metadata/groups"),
		"list users":             list("keyward/metadata/users"),
		"list a user":            list("keyward/metadata/users/ann"),
		"list tokens":            list("keyward/metadata/tokens"),
		"list providers":         list("keyward/metadata/providers"),
		"list the mount":         list("keyward/metadata"),
		"list below credentials": list("keyward/metadata/users/ann/credentials/c1"),
		"list two levels":        list("keyward/metadata/users/ann/x/credentials"),
		"list data":              list("keyward/data/users/ann/credentials"),
		"credential metadata": func() error {
			_, err := kv.GetMetadata(ctx, "users/ann/credentials/c1")
			return err
		},
		"write credential": func() error {
			_, err := kv.Put(ctx, "users/ann/credentials/c3", map[string]any{"key": "evil"})
			return err
		},
		"delete credential": func() error { return kv.DeleteMetadata(ctx, "users/ann/credentials/c1") },
		"group metadata": func() error {
			_, err := kv.GetMetadata(ctx, "groups/x")
			return err
		},
		"write": func() error {
			_, err := kv.Put(ctx, "groups/x", map[string]any{"providers": "evil"})
			return err
		},
		"delete":          func() error { return kv.Delete(ctx, "groups/x") },
		"delete versions": func() error { return kv.DeleteVersions(ctx, "groups/x", []int{1}) },
		"delete metadata": func() error { return kv.DeleteMetadata(ctx, "groups/x") },
	}
	for name, op := range denied {
		var re *api.ResponseError
		if err := op(); !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
			t.Errorf("serve %s: %v, want 403", name, err)
		}
	}

	if _, err := admin.Put(ctx, "groups/x", map[string]any{"providers": "anthropic"}); err != nil {
		t.Fatalf("admin update: %v", err)
	}
	if err := admin.DeleteVersions(ctx, "groups/x", []int{1}); err != nil {
		t.Fatalf("admin delete versions: %v", err)
	}
	if err := admin.Delete(ctx, "groups/x"); err != nil {
		t.Fatalf("admin delete: %v", err)
	}
	if err := admin.DeleteMetadata(ctx, "groups/x"); err != nil {
		t.Fatalf("admin delete metadata: %v", err)
	}
	if _, err := kv.Get(ctx, "groups/x"); !errors.Is(err, api.ErrSecretNotFound) {
		t.Fatalf("read after delete: %v, want ErrSecretNotFound", err)
	}
}

func TestBinaryFromEnv(t *testing.T) {
	bin := Binary(t) // skips when bao is missing
	t.Setenv(EnvBinary, bin)
	if got := Binary(t); got != bin {
		t.Fatalf("Binary() = %q, want $%s = %q", got, EnvBinary, bin)
	}
}
