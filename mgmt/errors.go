package mgmt

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
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
	codeStoreUnavailable  = "store_unavailable"
)

// apiError is a failed request: its status, stable code and a message that
// never echoes a credential.
type apiError struct {
	status  int
	code    string
	message string
}

// errorBody is the OpenAI-style error body, as authz denials have.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, e *apiError) {
	var body errorBody
	body.Error.Message = e.message
	body.Error.Type = errorType(e.status)
	body.Error.Code = e.code
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

// classify turns a management or store error into the client's answer.
func (s *Server) classify(ctx context.Context, action string, err error) *apiError {
	switch {
	case errors.Is(err, manage.ErrInvalid):
		return &apiError{http.StatusBadRequest, codeInvalidRequest, err.Error()}
	case errors.Is(err, record.ErrNotFound):
		return &apiError{http.StatusNotFound, codeNotFound, "Not found."}
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

// fail answers a failed change and audits it.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, c caller, action, target string, e *apiError) {
	s.audit(r.Context(), c, action, target, outcome(e), slog.String("reason", e.code))
	writeError(w, e)
}

// done audits a successful change.
func (s *Server) done(r *http.Request, c caller, action, target string, extra ...slog.Attr) {
	s.audit(r.Context(), c, action, target, "ok", extra...)
}

// decode reads a JSON body into v, refusing unknown fields so that a typo
// is an error rather than a silent no-op.
func decode(r *http.Request, v any) *apiError { return decodeFrom(r.Body, v) }

// decodeFrom is decode for any reader.
func decodeFrom(body io.Reader, v any) *apiError {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &apiError{http.StatusBadRequest, codeInvalidRequest, "Request body: " + err.Error()}
	}
	return nil
}
