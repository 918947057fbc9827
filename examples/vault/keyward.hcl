# keyward.hcl: the policy of `keyward serve`, which only reads.
#
# It assumes keyward's KV v2 mount is "keyward" (vault.mount); with another
# mount, replace the "keyward/" prefix of every path. KV v2 keeps records
# under <mount>/data/ and their versions and listings under <mount>/metadata/.
#
# Write it with: bao policy write keyward keyward.hcl  (or: vault policy write)
# and give it to the AppRole or Kubernetes role keyward logs in with. The
# token also needs Vault's "default" policy (attached unless the role sets
# token_no_default_policy): it lets keyward look up and renew its own token.

# Every record: providers (with their keys), groups, users, tokens, signing
# keys and the change marker.
path "keyward/data/*" {
  capabilities = ["read"]
}

# The providers' version metadata: each poll compares the versions of the
# providers in use, so that a key rotated in Vault is picked up at once.
# Metadata holds versions and timestamps, never a value. keyward serve lists
# nothing.
path "keyward/metadata/providers/*" {
  capabilities = ["read"]
}
