package vault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"
)

// Where credentials come from when the configuration names no file.
const (
	envToken       = "VAULT_TOKEN"
	envSecretID    = "VAULT_APPROLE_SECRET_ID"
	defaultJWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

const (
	// maxSecretFile bounds a credential file: a token, role id, secret id
	// or JWT is far smaller, and a mistaken path must not load a big file.
	maxSecretFile = 64 << 10
	// maxLoginBackoff caps the wait between failed logins.
	maxLoginBackoff = 30 * time.Second
)

// authMethod is an api.AuthMethod with a name for logs. Each Login reads its
// files again, so a credential the platform rotates (a projected service
// account token, a token written by Vault Agent) is picked up at the next
// login without a restart.
type authMethod struct {
	name  string
	login func(ctx context.Context, client *api.Client) (*api.Secret, error)
}

var _ api.AuthMethod = (*authMethod)(nil)

func (m *authMethod) Login(ctx context.Context, client *api.Client) (*api.Secret, error) {
	return m.login(ctx, client)
}

func (m *authMethod) String() string { return m.name }

// newAuthMethod checks cfg and returns the login it describes. Files are read
// once here, so that a missing or empty file is a configuration error at
// start, and again at every login. getenv is os.Getenv outside tests.
// Errors name the offending field (vault.auth.<field>) and never carry a
// secret.
func newAuthMethod(cfg AuthConfig, getenv func(string) string) (api.AuthMethod, error) {
	method := cfg.Method
	if method == "" {
		method = "token"
	}
	if err := checkUnused(cfg, method); err != nil {
		return nil, err
	}
	switch method {
	case "token":
		return newTokenMethod(cfg, getenv)
	case "approle":
		return newAppRoleMethod(cfg, getenv)
	case "kubernetes":
		return newKubernetesMethod(cfg)
	default:
		return nil, fmt.Errorf("vault.auth.method: %q is not token, approle or kubernetes", cfg.Method)
	}
}

// checkUnused rejects fields that belong to another method: they are a
// mistake (a half-finished switch of methods), never intended.
func checkUnused(cfg AuthConfig, method string) error {
	fields := []struct {
		name, value string
		methods     []string
	}{
		{"mount_path", cfg.MountPath, []string{"approle", "kubernetes"}},
		{"token_file", cfg.TokenFile, []string{"token"}},
		{"role_id", cfg.RoleID, []string{"approle"}},
		{"role_id_file", cfg.RoleIDFile, []string{"approle"}},
		{"secret_id_file", cfg.SecretIDFile, []string{"approle"}},
		{"role", cfg.Role, []string{"kubernetes"}},
		{"jwt_file", cfg.JWTFile, []string{"kubernetes"}},
	}
	for _, f := range fields {
		if f.value == "" {
			continue
		}
		used := false
		for _, m := range f.methods {
			used = used || m == method
		}
		if !used {
			// The value itself stays out: role_id and friends are credentials.
			return fmt.Errorf("vault.auth.%s: not used by method %s (only by %s)",
				f.name, method, strings.Join(f.methods, ", "))
		}
	}
	return nil
}

func newTokenMethod(cfg AuthConfig, getenv func(string) string) (api.AuthMethod, error) {
	token, err := credential("token_file", cfg.TokenFile, getenv(envToken),
		fmt.Sprintf("vault.auth.token_file: no token: set token_file or $%s", envToken))
	if err != nil {
		return nil, err
	}
	return &authMethod{name: "token", login: func(ctx context.Context, client *api.Client) (*api.Secret, error) {
		tok, err := token()
		if err != nil {
			return nil, err
		}
		return tokenLogin(ctx, client, tok)
	}}, nil
}

// tokenLogin "logs in" with a token Vault already issued: it asks Vault about
// the token so that the LifetimeWatcher knows whether and when to renew it,
// then sets it on client. The lookup runs on a clone so that a refused token
// does not replace the client's working one.
func tokenLogin(ctx context.Context, client *api.Client, token string) (*api.Secret, error) {
	c, err := client.CloneWithHeaders()
	if err != nil {
		return nil, fmt.Errorf("token login: clone client: %w", err)
	}
	c.SetToken(token)
	self, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("token login: look up the token (it needs the default policy's lookup-self): %w", err)
	}
	renewable, err := self.TokenIsRenewable()
	if err != nil {
		return nil, fmt.Errorf("token login: %w", err)
	}
	ttl, err := self.TokenTTL()
	if err != nil {
		return nil, fmt.Errorf("token login: %w", err)
	}
	accessor, _ := self.TokenAccessor() // for the record only
	policies, _ := self.TokenPolicies()
	client.SetToken(token)
	return &api.Secret{Auth: &api.SecretAuth{
		ClientToken:   token,
		Accessor:      accessor,
		Policies:      policies,
		Renewable:     renewable,
		LeaseDuration: int(ttl / time.Second),
	}}, nil
}

// newAppRoleMethod reads the secret id itself rather than through
// approle.SecretID{FromFile, FromEnv}: one reader trims every file the same
// way, names the field in its errors and honours the injected getenv.
func newAppRoleMethod(cfg AuthConfig, getenv func(string) string) (api.AuthMethod, error) {
	roleID, err := credential("role_id_file", cfg.RoleIDFile, cfg.RoleID,
		"vault.auth.role_id: missing: set role_id or role_id_file")
	if err != nil {
		return nil, err
	}
	secretID, err := credential("secret_id_file", cfg.SecretIDFile, getenv(envSecretID),
		fmt.Sprintf("vault.auth.secret_id_file: missing: set secret_id_file or $%s", envSecretID))
	if err != nil {
		return nil, err
	}
	var opts []approle.LoginOption
	if mount := mountPath(cfg); mount != "" {
		opts = append(opts, approle.WithMountPath(mount))
	}
	return &authMethod{name: "approle", login: func(ctx context.Context, client *api.Client) (*api.Secret, error) {
		rid, err := roleID()
		if err != nil {
			return nil, err
		}
		sid, err := secretID()
		if err != nil {
			return nil, err
		}
		a, err := approle.NewAppRoleAuth(rid, &approle.SecretID{FromString: sid}, opts...)
		if err != nil {
			return nil, fmt.Errorf("approle login: %w", err)
		}
		return a.Login(ctx, client)
	}}, nil
}

func newKubernetesMethod(cfg AuthConfig) (api.AuthMethod, error) {
	if strings.TrimSpace(cfg.Role) == "" {
		return nil, fmt.Errorf("vault.auth.role: missing: the Vault role keyward logs in as")
	}
	role := strings.TrimSpace(cfg.Role)
	path := cfg.JWTFile
	if path == "" {
		path = defaultJWTFile
	}
	if _, err := readSecretFile("jwt_file", path); err != nil {
		return nil, err
	}
	mount := mountPath(cfg)
	return &authMethod{name: "kubernetes", login: func(ctx context.Context, client *api.Client) (*api.Secret, error) {
		// Read on every login: Kubernetes rotates projected tokens (hourly
		// by default), and the library would keep the first one forever.
		jwt, err := readSecretFile("jwt_file", path)
		if err != nil {
			return nil, err
		}
		opts := []kubernetes.LoginOption{kubernetes.WithServiceAccountToken(jwt)}
		if mount != "" {
			opts = append(opts, kubernetes.WithMountPath(mount))
		}
		a, err := kubernetes.NewKubernetesAuth(role, opts...)
		if err != nil {
			return nil, fmt.Errorf("kubernetes login: %w", err)
		}
		return a.Login(ctx, client)
	}}, nil
}

// mountPath returns the configured auth mount without surrounding slashes;
// empty means the method's default.
// credential returns a reader of a login credential: from file when one
// is named (read again at every login, so a rotated file is picked up, and
// checked now so a bad path fails at start), else the fixed value. missing
// is the error when there is neither; no error ever holds the credential.
func credential(fileField, file, value, missing string) (func() (string, error), error) {
	if file != "" {
		read := func() (string, error) { return readSecretFile(fileField, file) }
		if _, err := read(); err != nil {
			return nil, err
		}
		return read, nil
	}
	if v := strings.TrimSpace(value); v != "" {
		return func() (string, error) { return v, nil }, nil
	}
	return nil, errors.New(missing)
}

func mountPath(cfg AuthConfig) string { return strings.Trim(cfg.MountPath, "/ ") }

// readSecretFile returns the trimmed content of a credential file; errors
// name the field and the path, never the content.
func readSecretFile(field, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("vault.auth.%s: %w", field, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("vault.auth.%s: read %s: %w", field, path, err)
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("vault.auth.%s: %s is larger than %d bytes", field, path, maxSecretFile)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("vault.auth.%s: %s is empty", field, path)
	}
	return s, nil
}

// tokenKeeper logs in and keeps the client's token valid: it renews with
// api.LifetimeWatcher and logs in again when the token reaches its max TTL
// or renewal fails, with backoff on login errors. It owns its goroutine.
type tokenKeeper struct {
	client *api.Client
	method api.AuthMethod
	name   string // of the method, for logs
	log    *slog.Logger

	// backoff is the wait after the n-th failed login in a row (n >= 1).
	backoff func(n int) time.Duration
	// minInterval spaces logins that follow each other without failure:
	// a token handed out with a TTL below the watcher's grace period would
	// otherwise make the keeper log in back to back.
	minInterval time.Duration
	// clock times the waits between logins; watch keeps one token alive
	// and returns when it is time to log in again (renewUntilDone outside
	// tests). Both are seams, so that tests drive the loop by events.
	clock clock
	watch func(ctx context.Context, secret *api.Secret)

	kick     chan struct{} // relogin's request, buffered 1
	logins   atomic.Int64
	renewals atomic.Int64
}

func newTokenKeeper(client *api.Client, method api.AuthMethod, log *slog.Logger) *tokenKeeper {
	name := fmt.Sprintf("%T", method)
	if s, ok := method.(fmt.Stringer); ok {
		name = s.String()
	}
	k := &tokenKeeper{
		client:      client,
		method:      method,
		name:        name,
		log:         log,
		backoff:     loginBackoff,
		minInterval: time.Second,
		clock:       realClock{},
		kick:        make(chan struct{}, 1),
	}
	k.watch = k.renewUntilDone
	return k
}

// clock is what the keeper needs of time.
type clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// loginBackoff doubles from 1s up to maxLoginBackoff, with jitter so that
// replicas restarted together do not log in together.
func loginBackoff(n int) time.Duration {
	d := min(time.Second<<min(n-1, 5), maxLoginBackoff)
	return d/2 + rand.N(d/2+1)
}

// login logs in once (used at start: the first login's error is returned to
// the caller) and sets the token on the client.
func (k *tokenKeeper) login(ctx context.Context) (*api.Secret, error) {
	secret, err := k.client.Auth().Login(ctx, k.method)
	if err != nil {
		return nil, fmt.Errorf("vault login (%s): %w", k.name, err)
	}
	k.logins.Add(1)
	k.log.Info("vault login", "method", k.name,
		"ttl", (time.Duration(secret.Auth.LeaseDuration) * time.Second).String(),
		"renewable", secret.Auth.Renewable)
	return secret, nil
}

// run keeps the token alive until ctx is done, starting from secret (the
// result of login; nil logs in first). It returns once ctx is done and its
// watcher has stopped; a renewal request in flight then ends within the
// client's timeout, as the api's renewal takes no context.
func (k *tokenKeeper) run(ctx context.Context, secret *api.Secret) {
	last := k.clock.Now()
	for {
		if secret != nil {
			k.watch(ctx, secret)
		}
		if !k.sleep(ctx, last.Add(k.minInterval).Sub(k.clock.Now())) {
			return
		}
		if secret = k.loginUntilDone(ctx); secret == nil {
			return
		}
		last = k.clock.Now()
		select { // a request made for the old token is answered
		case <-k.kick:
		default:
		}
	}
}

// relogin asks run to log in again now, e.g. after Vault refused the token
// (it was revoked, or Vault lost it): the LifetimeWatcher would otherwise
// wait for the old token's expiry. It never blocks, repeated calls coalesce,
// and run still spaces logins by minInterval.
func (k *tokenKeeper) relogin() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// loginUntilDone logs in, retrying with backoff; nil means ctx is done.
func (k *tokenKeeper) loginUntilDone(ctx context.Context) *api.Secret {
	for failures := 1; ; failures++ {
		secret, err := k.login(ctx)
		if err == nil {
			return secret
		}
		if ctx.Err() != nil {
			return nil
		}
		wait := k.backoff(failures)
		k.log.Error("vault login failed", "method", k.name, "failures", failures, "retry_in", wait.String(), "err", err)
		if !k.sleep(ctx, wait) {
			return nil
		}
	}
}

// renewUntilDone renews secret's token until it is time to log in again
// or ctx is done.
//
// The api.LifetimeWatcher alone reacts late to a token's end, which matters
// with short TTLs: it retries failed renewals with a 10s initial backoff;
// the client retries the 500 Vault answers in the token's last second
// ("past the max TTL") for a second or more; and a renewal refused with 403
// (the token is gone: expired early, revoked, or Vault lost it) makes it
// wait silently for the old lease to run out. So the watcher renews through
// a clone of the client without retries, stops at the first error
// (RenewBehaviorErrorOnErrors), and reports 403s here.
func (k *tokenKeeper) renewUntilDone(ctx context.Context, secret *api.Secret) {
	if secret.Auth == nil || (!secret.Auth.Renewable && secret.Auth.LeaseDuration <= 0) {
		// A token without TTL (root, or created with none) never expires:
		// nothing to renew, and the watcher would return at once.
		select {
		case <-ctx.Done():
		case <-k.kick:
			k.log.Info("vault login requested", "method", k.name)
		}
		return
	}
	w, refused, err := k.newWatcher(secret)
	if err != nil {
		k.log.Error("vault token watcher", "err", err)
		return
	}
	var wg sync.WaitGroup
	wg.Go(w.Start)
	defer wg.Wait()
	defer w.Stop()
	k.followWatcher(ctx, w, refused, secret.Auth.LeaseDuration)
}

// newWatcher returns a lifetime watcher for secret on a clone of the client
// without retries, and a channel that receives when Vault refuses a
// renewal with 403.
func (k *tokenKeeper) newWatcher(secret *api.Secret) (*api.LifetimeWatcher, <-chan struct{}, error) {
	refused := make(chan struct{}, 1)
	renewer, err := k.client.CloneWithHeaders()
	if err != nil {
		return nil, nil, fmt.Errorf("clone client: %w", err)
	}
	renewer.SetMaxRetries(0)
	renewer = renewer.WithResponseCallbacks(func(r *api.Response) {
		if r.StatusCode == http.StatusForbidden {
			select {
			case refused <- struct{}{}:
			default:
			}
		}
	})
	behavior := api.RenewBehaviorErrorOnErrors
	if !secret.Auth.Renewable {
		behavior = api.RenewBehaviorRenewDisabled // watch the TTL only
	}
	w, err := renewer.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret, RenewBehavior: behavior})
	return w, refused, err
}

// followWatcher returns when the token needs a new login (or ctx is done):
// a login was asked for, a renewal failed or was refused after one had
// succeeded, or Vault capped a renewal below the longest lease so far
// (the token is in its last period before its max TTL).
func (k *tokenKeeper) followWatcher(ctx context.Context, w *api.LifetimeWatcher, refused <-chan struct{}, longest int) {
	renewed := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.kick:
			k.log.Info("vault login requested", "method", k.name)
			return
		case <-refused:
			if renewed {
				k.log.Warn("vault token refused on renewal; logging in again", "method", k.name)
				return
			}
			// Refused from the start: the token may not renew itself (no
			// default policy). The watcher then keeps it until it expires;
			// logging in again now would only repeat this.
			k.log.Warn("vault token may not renew itself; using it until it expires", "method", k.name)
		case err := <-w.DoneCh():
			if err != nil {
				k.log.Warn("vault token renewal failed; logging in again", "method", k.name, "err", err)
			} else {
				k.log.Debug("vault token at the end of its lifetime; logging in again", "method", k.name)
			}
			return
		case r := <-w.RenewCh():
			k.renewals.Add(1)
			renewed = true
			lease := 0
			if r.Secret != nil && r.Secret.Auth != nil {
				lease = r.Secret.Auth.LeaseDuration
			}
			ttl := time.Duration(lease) * time.Second
			k.log.Debug("vault token renewed", "method", k.name, "ttl", ttl.String())
			if lease < longest {
				k.log.Debug("vault token reached its max TTL; logging in again", "method", k.name, "ttl", ttl.String())
				return
			}
			longest = lease
		}
	}
}

// Logins returns how many logins succeeded (for tests and logs).
func (k *tokenKeeper) Logins() int64 { return k.logins.Load() }

// Renewals returns how many renewals succeeded (for tests and logs).
func (k *tokenKeeper) Renewals() int64 { return k.renewals.Load() }

// sleep waits d on the keeper's clock or until ctx is done, and reports
// whether ctx is still live.
func (k *tokenKeeper) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-k.clock.After(d):
		return true
	}
}
