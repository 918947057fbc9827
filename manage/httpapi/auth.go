package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/keyward/keyward/manage/httpapi/oidc"
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
	// acts on a user's behalf, which the audit log records. An admin with
	// no user record (the bootstrap admin, an OIDC admin) acts as
	// BootstrapUser, which owns nothing.
	actor string
	// who names the caller in audit events when it is not actor: an
	// OIDC caller's oidc:<issuer host>:<sub>. Set also when a genuine
	// OIDC token is refused (no role, unknown user), for the audit.
	who   string
	admin bool
	// denial says, for the audit log only, why an OIDC token was
	// refused: the client gets the same answer whichever check failed.
	denial string
}

// auditName is how audit events name the caller.
func (c caller) auditName() string {
	if c.who != "" {
		return c.who
	}
	return c.actor
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
	// The prefix decides first: a kwm_ token never goes to the issuer.
	if s.oidc != nil && !strings.HasPrefix(tok, token.ManagementPrefix) && oidc.LooksLikeJWT(tok) {
		return s.oidcCaller(r, tok)
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

// oidcCaller finds the caller from an OIDC JWT. Every failure of the token
// itself answers as a bad management token does (401 invalid_token, one
// message), except the expiry of a genuine one; the audit log gets the
// detail. An admin-role token needs no user record and acts as
// BootstrapUser; a user-role token acts as the existing, enabled keyward
// user its user claim names, and never as an admin, whatever that user's
// role in the store.
func (s *Server) oidcCaller(r *http.Request, tok string) (caller, *apiError) {
	ctx := r.Context()
	id, err := s.oidc.Verify(ctx, tok)
	c := caller{who: id.Who}
	if err != nil {
		c.denial = err.Error()
	}
	switch {
	case errors.Is(err, oidc.ErrExpired):
		return c, &apiError{http.StatusUnauthorized, codeTokenExpired, "The OIDC token has expired."}
	case errors.Is(err, oidc.ErrNoRole):
		return c, &apiError{http.StatusForbidden, codeNoRole, "The OIDC token grants no keyward role."}
	case errors.Is(err, oidc.ErrUnavailable):
		s.log.LogAttrs(ctx, slog.LevelError, "management: OIDC issuer keys unavailable", slog.String("error", err.Error()))
		return c, &apiError{http.StatusServiceUnavailable, codeIssuerUnavailable, "The OIDC issuer's keys could not be loaded; try again."}
	case err != nil:
		return c, errInvalidToken
	case id.Admin:
		c.name, c.actor, c.admin = BootstrapUser, BootstrapUser, true
		return c, nil
	}
	unknown := &apiError{http.StatusForbidden, codeUnknownUser, "The OIDC token names no keyward user."}
	if record.ValidateName("user", id.User) != nil || id.User == BootstrapUser {
		c.denial = "user claim missing or not a user name"
		return c, unknown
	}
	u, err := s.m.User(ctx, id.User)
	switch {
	case errors.Is(err, record.ErrNotFound):
		c.denial = "no user " + id.User
		return c, unknown
	case err != nil:
		return c, s.storeError(ctx, "authenticate", err)
	case u.Disabled:
		return c, &apiError{http.StatusForbidden, codeUserDisabled, "The user is disabled."}
	}
	c.name, c.actor = u.Name, u.Name
	return c, nil
}
