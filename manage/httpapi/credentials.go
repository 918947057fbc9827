package httpapi

import (
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
)

// credentialJSON is a private credential on the wire. The key is never
// sent back, not even in the answer to its creation: KeyMasked shows its
// first and last four characters (record.MaskKey).
type credentialJSON struct {
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Provider  string          `json:"provider"`
	Model     string          `json:"model"`
	BaseURL   string          `json:"base_url"`
	KeyMasked string          `json:"key_masked"`
	Extra     json.RawMessage `json:"extra"`
	Created   time.Time       `json:"created"`
}

func credentialOut(c *record.Credential) credentialJSON {
	extra := c.Extra
	if len(extra) == 0 {
		extra = json.RawMessage("{}")
	}
	return credentialJSON{ID: c.ID, Name: c.Name, Provider: c.Provider, Model: c.Model, BaseURL: c.BaseURL, KeyMasked: record.MaskKey(c.Key), Extra: extra, Created: c.Created}
}

// credentialRequest is the body of POST /v1/credentials and, with absent
// fields kept, of PUT /v1/credentials/{id}.
type credentialRequest struct {
	Name     *string          `json:"name"`
	Provider *string          `json:"provider"`
	Model    *string          `json:"model"`
	BaseURL  *string          `json:"base_url"`
	Key      *string          `json:"key"`
	Extra    *json.RawMessage `json:"extra"`
}

// readCredential decodes a credential request.
func readCredential(body io.Reader) (manage.CredentialPatch, *apiError) {
	var in credentialRequest
	if e := decode(body, &in); e != nil {
		return manage.CredentialPatch{}, e
	}
	return manage.CredentialPatch(in), nil
}

func (s *Server) listCredentials(w http.ResponseWriter, r *http.Request, c caller) {
	creds, err := s.m.Credentials(r.Context(), c.name)
	if err != nil {
		writeError(w, s.errorFor(r.Context(), "credential.list", err))
		return
	}
	out := make([]credentialJSON, 0, len(creds))
	for _, cr := range creds {
		out = append(out, credentialOut(cr))
	}
	writeJSON(w, http.StatusOK, map[string]any{"credentials": out})
}

func (s *Server) getCredential(w http.ResponseWriter, r *http.Request, c caller) {
	cr, err := s.m.Credential(r.Context(), c.name, r.PathValue("id"))
	if err != nil {
		// Audited: a read of someone else's credential is an isolation denial.
		s.fail(w, r, c, "credential.get", target("credential", r.PathValue("id")), s.errorFor(r.Context(), "credential.get", err))
		return
	}
	writeJSON(w, http.StatusOK, credentialOut(cr))
}

func (s *Server) createCredential(w http.ResponseWriter, r *http.Request, c caller) {
	s.saveCredential(w, r, c, "credential.create", "", http.StatusCreated)
}

func (s *Server) putCredential(w http.ResponseWriter, r *http.Request, c caller) {
	s.saveCredential(w, r, c, "credential.update", r.PathValue("id"), http.StatusOK)
}

// saveCredential creates (id "") or updates credential id from the request
// body, answering status with the stored credential, masked.
func (s *Server) saveCredential(w http.ResponseWriter, r *http.Request, c caller, action, id string, status int) {
	p, e := readCredential(r.Body)
	if e != nil {
		s.fail(w, r, c, action, target("credential", id), e)
		return
	}
	var cr *record.Credential
	var err error
	if id == "" {
		if cr, err = s.m.CreateCredential(r.Context(), c.name, p); err == nil {
			id = cr.ID
		}
	} else {
		cr, err = s.m.UpdateCredential(r.Context(), c.name, id, p)
	}
	s.act(w, r, c, action, target("credential", id), err, func() { writeJSON(w, status, credentialOut(cr)) })
}

func (s *Server) deleteCredential(w http.ResponseWriter, r *http.Request, c caller) {
	id := r.PathValue("id")
	err := s.m.DeleteCredential(r.Context(), c.name, id)
	s.act(w, r, c, "credential.delete", target("credential", id), err, func() { w.WriteHeader(http.StatusNoContent) })
}
