package vault

// AuthConfig says how keyward logs in to Vault. Method is "token",
// "approle" or "kubernetes"; the other fields belong to one method each.
// Secrets may come from files (preferred: rotated by the platform) or from
// the environment. Files are read at start, where a missing or empty one is
// a configuration error, and again at every login, so a rotated credential
// is used from the next login on.
type AuthConfig struct {
	// Method is token (default), approle or kubernetes.
	Method string `yaml:"method"`
	// MountPath is where the auth method is mounted. Default: the method
	// name ("approle", "kubernetes"). Unused for token.
	MountPath string `yaml:"mount_path"`

	// TokenFile holds the token (method token). Default: $VAULT_TOKEN.
	TokenFile string `yaml:"token_file"`

	// RoleID is the AppRole role id (method approle); RoleIDFile, if set,
	// is read instead.
	RoleID     string `yaml:"role_id"`
	RoleIDFile string `yaml:"role_id_file"`
	// SecretIDFile holds the AppRole secret id. Default:
	// $VAULT_APPROLE_SECRET_ID.
	SecretIDFile string `yaml:"secret_id_file"`

	// Role is the Vault role to log in as (method kubernetes).
	Role string `yaml:"role"`
	// JWTFile is the service account token (method kubernetes). Default
	// /var/run/secrets/kubernetes.io/serviceaccount/token.
	JWTFile string `yaml:"jwt_file"`
}
