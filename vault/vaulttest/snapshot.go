package vaulttest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"
)

// Snapshot returns every record under the KV v2 mount as path -> state,
// the state being the current version, when the record was last updated
// and when its current version was deleted (empty if it was not): any
// write, soft delete or full delete of any record changes the map. It
// reads with client, which must be allowed to list and read metadata
// under the mount.
func Snapshot(t testing.TB, client *api.Client, mount string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var paths []string
	if err := walk(ctx, client.Logical(), mount, "", &paths); err != nil {
		t.Fatalf("vaulttest: snapshot of %s: %v", mount, err)
	}
	// The metadata reads are independent: a few at a time keep a snapshot
	// cheap enough to take around every step of a fuzz target.
	states := make([]string, len(paths))
	errs := make([]error, len(paths))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, path := range paths {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			states[i], errs[i] = state(ctx, client.KVv2(mount), path)
		})
	}
	wg.Wait()
	out := make(map[string]string, len(paths))
	for i, path := range paths {
		if errs[i] != nil {
			t.Fatalf("vaulttest: snapshot of %s: %v", mount, errs[i])
		}
		out[path] = states[i]
	}
	return out
}

// walk appends the path of every record under dir.
func walk(ctx context.Context, logical *api.Logical, mount, dir string, paths *[]string) error {
	sec, err := logical.ListWithContext(ctx, mount+"/metadata/"+dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	if sec == nil {
		return nil
	}
	keys, _ := sec.Data["keys"].([]any)
	for _, k := range keys {
		name, _ := k.(string)
		if !strings.HasSuffix(name, "/") {
			*paths = append(*paths, dir+name)
			continue
		}
		if err := walk(ctx, logical, mount, dir+name, paths); err != nil {
			return err
		}
	}
	return nil
}

func state(ctx context.Context, kv *api.KVv2, path string) (string, error) {
	meta, err := kv.GetMetadata(ctx, path)
	if err != nil {
		return "", fmt.Errorf("metadata of %s: %w", path, err)
	}
	deleted := ""
	if v, ok := meta.Versions[fmt.Sprint(meta.CurrentVersion)]; ok && !v.DeletionTime.IsZero() {
		deleted = v.DeletionTime.String()
	}
	return fmt.Sprintf("v%d updated %s deleted %q", meta.CurrentVersion, meta.UpdatedTime, deleted), nil
}
