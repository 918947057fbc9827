package authz

import "fmt"

// KeyDelivery is how an allowed answer hands a provider's key to Envoy.
type KeyDelivery string

// The ways a key leaves keyward.
const (
	// KeyInHeader sets the provider's own auth header (Authorization:
	// Bearer, x-api-key, …) on the request. The default.
	KeyInHeader KeyDelivery = "header"
	// KeyInMetadata sets no auth header: the raw key goes only into the
	// dynamic metadata field MetadataKeyField, where Envoy AI Gateway's
	// BackendSecurityPolicy.credentialOverride.fromDynamicMetadata reads
	// it and signs (and retries) each upstream attempt itself. Every client
	// credential is still removed from the request.
	KeyInMetadata KeyDelivery = "metadata"
)

// MetadataKeyField is the dynamic metadata field (in MetadataNamespace)
// that carries the raw provider key under KeyInMetadata: AI Gateway's
// default name for an APIKey policy. It is the only place keyward ever puts
// a secret in metadata.
const MetadataKeyField = "x-aigw-api-key"

// Validate reports whether d is one of the known deliveries; "" counts as
// KeyInHeader.
func (d KeyDelivery) Validate() error {
	switch d {
	case "", KeyInHeader, KeyInMetadata:
		return nil
	}
	return fmt.Errorf("%q is not %s or %s", string(d), KeyInHeader, KeyInMetadata)
}
