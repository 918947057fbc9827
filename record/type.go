package record

// Type is what sort of record a change is about: the Vault store's change
// marker names it beside the record's name, and the record caches drop
// entries by it. (A provider's Kind is something else: its wire
// convention.)
type Type string

// The types of stored records.
const (
	TypeToken      Type = "token"
	TypeUser       Type = "user"
	TypeGroup      Type = "group"
	TypeProvider   Type = "provider"
	TypeCredential Type = "credential"
	TypeAPIToken   Type = "api-token"
	// TypeIdentity is a principal mapping (Identity).
	TypeIdentity Type = "identity"
	// TypeSystem is keyward's own records: the token signing keys.
	TypeSystem Type = "system"
)
