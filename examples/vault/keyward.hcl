# keyward.hcl: the policy of `keyward serve`, which only reads (and lists a
# user's own credentials, see the end).
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
# Metadata holds versions and timestamps, never a value.
path "keyward/metadata/providers/*" {
  capabilities = ["read"]
}

# Users' own provider credentials: where policy allows, a user's request
# goes out on their own key, so keyward lists the credentials of a user
# whose token is in use (and reads them under keyward/data/ above). A list
# shows credential ids only. This is the one list keyward serve may make:
# "+" is exactly one path segment, so users/, tokens/ and every other
# folder stay unlistable. Vault lists with a trailing "/", hence the one here.
path "keyward/metadata/users/+/credentials/" {
  capabilities = ["list"]
}

# Principal mappings (mesh identity): a request without a token is matched
# against every mapping, so keyward lists them all (names only; each is
# read under keyward/data/ above) when a mapping changes.
path "keyward/metadata/identities/" {
  capabilities = ["list"]
}
