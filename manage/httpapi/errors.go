package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// The error codes of the JSON error body; stable, and the audit log's
// reason.
const (
	codeMissingCredential = "missing_credential"
	codeMalformedToken    = "malformed_token"
	codeInvalidToken      = "invalid_token"
	codeTokenRevoked      = "token_revoked"
	codeUserDisabled      = "user_disabled"
	codeAdminOnly         = "admin_only"
	codeNotFound          = "not_found"
	codeMethodNotAllowed  = "method_not_allowed"
	codeInvalidRequest    = "invalid_request"
	codeConflict          = "conflict"
	codeLimitReached      = "limit_reached"
	codeNotAnnounced      = "not_announced"
	codeStoreUnavailable  = "store_unavailable"
	// The codes of OIDC tokens.
	codeTokenExpired      = "token_expired"
	codeNoRole            = "no_role"
	codeUnknownUser       = "unknown_user"
	codeIssuerUnavailable = "issuer_unavailable"
)

// apiError is a failed request: its status, stable code and a message that
// never echoes a credential.
type apiError struct {
	status  int
	code    string
	message string
}

func writeError(w http.ResponseWriter, e *apiError) {
	body := authz.ErrorBody{Error: authz.ErrorDetail{Message: e.message, Type: errorType(e.status), Code: e.code}}
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyward-management"`)
	}
	writeJSON(w, e.status, body)
}

func errorType(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusServiceUnavailable:
		return "service_unavailable"
	}
	return "invalid_request_error"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do
}

// storeError logs a store failure and hides its detail from the client.
func (s *Server) storeError(ctx context.Context, action string, err error) *apiError {
	s.log.LogAttrs(ctx, slog.LevelError, "management store error", slog.String("action", action), slog.String("error", err.Error()))
	return &apiError{http.StatusServiceUnavailable, codeStoreUnavailable, "The record store is unavailable; try again."}
}

// errorFor turns what package manage or the store returned into the
// client's answer: the one place their errors become statuses. A broken
// rule's message says which rule (names, never a secret); a missing record
// says nothing of the name asked for, which may be anything the client put
// in the path.
func (s *Server) errorFor(ctx context.Context, action string, err error) *apiError {
	switch {
	case errors.Is(err, manage.ErrInvalid):
		return &apiError{http.StatusBadRequest, codeInvalidRequest, err.Error()}
	case errors.Is(err, record.ErrExists), errors.Is(err, manage.ErrConflict):
		return &apiError{http.StatusConflict, codeConflict, err.Error()}
	case errors.Is(err, manage.ErrLimit):
		return &apiError{http.StatusConflict, codeLimitReached, err.Error()}
	case errors.Is(err, record.ErrNotFound):
		return &apiError{http.StatusNotFound, codeNotFound, "Not found."}
	case errors.Is(err, record.ErrInvalidName):
		// A name or id the store refuses to write: the client's input.
		return &apiError{http.StatusBadRequest, codeInvalidRequest, "A name or id in the request breaks the naming rules."}
	case errors.Is(err, record.ErrNotAnnounced):
		s.log.LogAttrs(ctx, slog.LevelError, "management change not announced", slog.String("action", action), slog.String("error", err.Error()))
		return &apiError{http.StatusServiceUnavailable, codeNotAnnounced, "The change is stored, but the other keyward replicas could not be told of it: send the same request again."}
	}
	return s.storeError(ctx, action, err)
}

// outcome is the audit outcome of a failed change.
func outcome(e *apiError) string {
	switch e.status {
	case http.StatusBadRequest:
		return "invalid"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusConflict:
		return "conflict"
	case http.StatusUnauthorized, http.StatusForbidden:
		return "denied"
	}
	return "error"
}

// act answers a change: the error's answer, audited as a failure, or,
// when err is nil, the audit of its success followed by ok, which writes
// the answer.
func (s *Server) act(w http.ResponseWriter, r *http.Request, c caller, action, target string, err error, ok func(), extra ...slog.Attr) {
	if err != nil {
		s.fail(w, r, c, action, target, s.errorFor(r.Context(), action, err))
		return
	}
	s.audit(r.Context(), c, action, target, "ok", extra...)
	ok()
}

// fail answers a failed change and audits it.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, c caller, action, target string, e *apiError) {
	s.audit(r.Context(), c, action, target, outcome(e), slog.String("reason", e.code))
	writeError(w, e)
}

// audit records one management event: who, what, on what, with which
// outcome, and for whom when an admin acts on a user's behalf. Callers pass
// names and ids only, never a credential.
func (s *Server) audit(ctx context.Context, c caller, action, target, outcome string, extra ...slog.Attr) {
	attrs := append(make([]slog.Attr, 0, 6+len(extra)),
		slog.String("who", c.auditName()), slog.String("action", action),
		slog.String("target", target), slog.String("outcome", outcome))
	if c.who != "" && c.actor != "" && c.actor != BootstrapUser {
		// An OIDC caller acting as a keyward user.
		attrs = append(attrs, slog.String("as_user", c.actor))
	}
	if c.name != c.actor {
		attrs = append(attrs, slog.String("on_behalf_of", c.name))
	}
	attrs = append(attrs, extra...)
	s.log.LogAttrs(ctx, slog.LevelInfo, "management", attrs...)
}

// decode reads a JSON body into v, refusing unknown fields so that a typo
// is an error rather than a silent no-op.
func decode(body io.Reader, v any) *apiError {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &apiError{http.StatusBadRequest, codeInvalidRequest, "Request body: " + err.Error()}
	}
	return nil
}

// target names what a change acts on for the audit log. The names come
// from the request: one that is not a valid name or id is not logged, in
// case someone pasted a secret into the path.
func target(kind, name string) string {
	var ok bool
	switch kind {
	case "token", "management-token":
		ok = token.ValidID(name)
	case "credential":
		ok = record.ValidCredentialID(name)
	default:
		ok = record.ValidateName(kind, name) == nil
	}
	if !ok {
		return kind + "/(invalid name)"
	}
	return kind + "/" + name
}
