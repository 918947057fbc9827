// Package vault is keyward's production store: HashiCorp Vault or OpenBao
// KV v2, read through github.com/hashicorp/vault/api. It logs in (token,
// AppRole or Kubernetes auth), keeps its token alive, reads and writes the
// records of the layout below under one mount, and polls a change marker so
// that a change made through keyward reaches every replica within a second
// or two while an idle replica costs Vault a constant few requests per poll.
//
// Three rules keep what it reads right and what it writes where it was
// meant: it talks only to the active node of a cluster, found among the
// configured addresses (active.go), so no standby's stale copy is ever
// read; it checks every name and id before it becomes a path (names.go);
// and it never follows a redirect (redirect.go).
//
//	<mount>/providers/<provider>   kind, key_<id>..., header, value_template, anthropic_version
//	<mount>/groups/<group>         providers, models, disable_custom_keys, disabled
//	<mount>/users/<user>           role, groups, disabled
//	<mount>/users/<user>/credentials/<id>
//	                               the user's own provider credential: name, provider,
//	                               model, base_url, key, extra (a JSON object as a string), created
//	<mount>/tokens/<token-id>      user, group, name, hash, created, expires, revoked
//	<mount>/system/signing-keys    key_<id>: base64 token signing keys
//	<mount>/system/changes         the change marker: seq and the latest changes
package vault
