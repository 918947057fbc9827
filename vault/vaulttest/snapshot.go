package vaulttest

import (
	"context"
	"fmt"
	"strings"
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
	out := map[string]string{}
	if err := walk(ctx, client.KVv2(mount), client.Logical(), mount, "", out); err != nil {
		t.Fatalf("vaulttest: snapshot of %s: %v", mount, err)
	}
	return out
}

func walk(ctx context.Context, kv *api.KVv2, logical *api.Logical, mount, dir string, out map[string]string) error {
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
		if strings.HasSuffix(name, "/") {
			if err := walk(ctx, kv, logical, mount, dir+name, out); err != nil {
				return err
			}
			continue
		}
		meta, err := kv.GetMetadata(ctx, dir+name)
		if err != nil {
			return fmt.Errorf("metadata of %s: %w", dir+name, err)
		}
		deleted := ""
		if v, ok := meta.Versions[fmt.Sprint(meta.CurrentVersion)]; ok && !v.DeletionTime.IsZero() {
			deleted = v.DeletionTime.String()
		}
		out[dir+name] = fmt.Sprintf("v%d updated %s deleted %q", meta.CurrentVersion, meta.UpdatedTime, deleted)
	}
	return nil
}
