package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// AdminTokenEnv names the environment variable that holds the bootstrap
// admin credential; the caller reads it and passes it as
// Options.AdminToken.
const AdminTokenEnv = "KEYWARD_ADMIN_TOKEN"

// AdminTokenFileEnv names the environment variable that may instead give
// the path of a file holding the bootstrap admin credential: a Kubernetes
// secret or a file rendered by Vault Agent, so that the credential can live
// in Vault and stay out of the process environment.
const AdminTokenFileEnv = "KEYWARD_ADMIN_TOKEN_FILE"

// AdminToken returns the bootstrap admin credential the environment gives,
// from AdminTokenEnv or the file AdminTokenFileEnv names (surrounding white
// space trimmed); "" when neither is set. Errors name the variable or the
// file, never the credential.
func AdminToken(getenv func(string) string) (string, error) {
	tok, file := getenv(AdminTokenEnv), getenv(AdminTokenFileEnv)
	switch {
	case file == "":
		return tok, nil
	case tok != "":
		return "", fmt.Errorf("set %s or %s, not both", AdminTokenEnv, AdminTokenFileEnv)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", AdminTokenFileEnv, err)
	}
	if tok = strings.TrimSpace(string(raw)); tok == "" {
		return "", fmt.Errorf("%s: %s is empty", AdminTokenFileEnv, file)
	}
	return tok, nil
}

// caller is who is asking, and for whom.
type caller struct {
	// name is the user the request acts for: the authenticated user, or
	// the user an admin named with ?user=.
	name string
	// actor is the authenticated user; it differs from name when an admin
	// acts on a user's behalf, which the audit log records.
	actor string
	admin bool
}

var errInvalidToken = &apiError{http.StatusUnauthorized, codeInvalidToken, "The management token is not valid."}

// authenticate finds the caller from the bearer credential. A management
// token is verified offline first, so that a forged one costs no store
// read; the messages never echo the credential.
func (s *Server) authenticate(r *http.Request) (caller, *apiError) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if tok = strings.TrimSpace(tok); !ok || tok == "" {
		return caller{}, &apiError{http.StatusUnauthorized, codeMissingCredential, "No management credential provided. Send a management token as a Bearer token."}
	}
	if s.hasAdmin {
		h := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(h[:], s.adminHash[:]) == 1 {
			return caller{name: BootstrapUser, actor: BootstrapUser, admin: true}, nil
		}
	}
	if !strings.HasPrefix(tok, token.ManagementPrefix) {
		return caller{}, &apiError{http.StatusUnauthorized, codeInvalidToken, "Not a management credential: the management API takes management tokens (" + token.ManagementPrefix + "…), not keyward LLM tokens or provider keys."}
	}
	id, hash, err := s.keys.VerifyManagement(tok)
	switch {
	case errors.Is(err, token.ErrMalformed):
		return caller{}, &apiError{http.StatusUnauthorized, codeMalformedToken, "The management token is malformed (truncated or mistyped)."}
	case errors.Is(err, token.ErrNotReady):
		return caller{}, s.storeError(r.Context(), "authenticate", err)
	case err != nil:
		return caller{}, errInvalidToken
	}
	return s.tokenOwner(r, id, hash)
}

// tokenOwner finds the enabled user a verified management token belongs
// to.
func (s *Server) tokenOwner(r *http.Request, id string, hash [sha256.Size]byte) (caller, *apiError) {
	ctx := r.Context()
	t, err := s.m.APIToken(ctx, id)
	switch {
	case errors.Is(err, record.ErrNotFound):
		return caller{}, errInvalidToken
	case err != nil:
		return caller{}, s.storeError(ctx, "authenticate", err)
	case !token.HashEqual(hash, t.Hash):
		return caller{}, errInvalidToken
	case t.Revoked:
		return caller{}, &apiError{http.StatusUnauthorized, codeTokenRevoked, "The management token has been revoked."}
	}
	u, err := s.m.User(ctx, t.User)
	switch {
	case errors.Is(err, record.ErrNotFound):
		return caller{}, errInvalidToken
	case err != nil:
		return caller{}, s.storeError(ctx, "authenticate", err)
	case u.Disabled:
		return caller{}, &apiError{http.StatusForbidden, codeUserDisabled, "The user is disabled."}
	}
	return caller{name: u.Name, actor: u.Name, admin: u.Role == record.RoleAdmin}, nil
}
