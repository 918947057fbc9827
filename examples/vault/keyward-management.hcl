# keyward-management.hcl: the policy of a `keyward serve` that also serves
# the management API (management.listen). Use it instead of keyward.hcl on
# those replicas only; replicas that only answer Envoy keep the read-only
# keyward.hcl.
#
# It assumes keyward's KV v2 mount is "keyward" (vault.mount); with another
# mount, replace the "keyward/" prefix of every path.
#
# Write it with: bao policy write keyward-management keyward-management.hcl
#
# What it cannot do, on purpose: write providers (the provider keys stay the
# security team's, written with `bao kv put`) or signing keys (made once by
# an administrator with keyward's CLI and the keyward-admin policy).

# Read every record, as keyward.hcl does.
path "keyward/data/*" {
  capabilities = ["read"]
}

# Write the records the management API manages: groups, users with their
# private credentials (users/<user>/credentials/<id>), LLM tokens,
# management tokens, principal mappings and the claims that keep one
# mapping per principal (identity-principals/<hex SHA-256 of the
# principal>).
path "keyward/data/groups/*" {
  capabilities = ["create", "read", "update"]
}
path "keyward/data/users/*" {
  capabilities = ["create", "read", "update"]
}
path "keyward/data/tokens/*" {
  capabilities = ["create", "read", "update"]
}
path "keyward/data/api-tokens/*" {
  capabilities = ["create", "read", "update"]
}
path "keyward/data/identities/*" {
  capabilities = ["create", "read", "update"]
}
path "keyward/data/identity-principals/*" {
  capabilities = ["create", "read", "update"]
}

# The change marker every replica polls: each change is announced here.
path "keyward/data/system/changes" {
  capabilities = ["create", "read", "update"]
}

# Listings (users, groups, a user's tokens and credentials) and deletion
# with all versions (a deleted user's tokens and credentials are gone for
# good, not soft-deleted).
path "keyward/metadata/groups/*" {
  capabilities = ["list", "delete"]
}
path "keyward/metadata/users/*" {
  capabilities = ["list", "delete"]
}
path "keyward/metadata/tokens/*" {
  capabilities = ["list", "delete"]
}
path "keyward/metadata/api-tokens/*" {
  capabilities = ["list", "delete"]
}
path "keyward/metadata/identities/*" {
  capabilities = ["list", "delete"]
}
path "keyward/metadata/identity-principals/*" {
  capabilities = ["list", "delete"]
}

# Providers: list them and read their versions (names and key ids for
# admins; never written).
path "keyward/metadata/providers/*" {
  capabilities = ["read", "list"]
}
