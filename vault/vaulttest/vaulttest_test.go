package vaulttest

import (
	"errors"
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
// their comments say: the serve policy reads and lists but cannot write,
// the admin policy writes and deletes.
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

	denied := map[string]func() error{
		"list": func() error {
			_, err := serve.Logical().ListWithContext(ctx, "keyward/metadata/groups")
			return err
		},
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
