# keyward-admin.hcl: the policy of administrators and of keyward's CLI, which
# create, change and delete keyward's records.
#
# It assumes keyward's KV v2 mount is "keyward" (vault.mount); with another
# mount, replace the "keyward/" prefix of every path.
#
# Write it with: bao policy write keyward-admin keyward-admin.hcl

# Records: write (create, update, patch), read and soft-delete the latest
# version.
path "keyward/data/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list"]
}

# Listing, versions and history; delete here removes a record with all its
# versions, which is how a group or user is deleted for good.
path "keyward/metadata/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# Soft-delete chosen versions (kv delete -versions=...).
path "keyward/delete/*" {
  capabilities = ["update"]
}
