package mgmt

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

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

// apply sets the fields the request names on c.
func (in *credentialRequest) apply(c *record.Credential) {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&c.Name, in.Name)
	set(&c.Provider, in.Provider)
	set(&c.Model, in.Model)
	set(&c.BaseURL, in.BaseURL)
	set(&c.Key, in.Key)
	if in.Extra != nil {
		c.Extra = *in.Extra
		if string(c.Extra) == "null" {
			c.Extra = nil
		}
	}
}

func (s *Server) listCredentials(w http.ResponseWriter, r *http.Request, c caller) {
	creds, err := s.st.Credentials(r.Context(), c.name)
	if err != nil && !errors.Is(err, record.ErrNotFound) {
		writeError(w, s.storeError(r.Context(), "credential.list", err))
		return
	}
	out := make([]credentialJSON, 0, len(creds))
	for _, cr := range creds {
		out = append(out, credentialOut(cr))
	}
	writeJSON(w, http.StatusOK, map[string]any{"credentials": out})
}

// ownCredential returns the caller's credential, or a 404 for one that is
// missing or someone else's: stores look credentials up by owner and id,
// so another user's id is simply not found.
func (s *Server) ownCredential(r *http.Request, c caller, action string) (*record.Credential, *apiError) {
	id := r.PathValue("id")
	if !record.ValidCredentialID(id) {
		return nil, errNoSuchCredential
	}
	cr, err := s.st.Credential(r.Context(), c.name, id)
	switch {
	case errors.Is(err, record.ErrNotFound) || (err == nil && cr.User != c.name):
		return nil, errNoSuchCredential
	case err != nil:
		return nil, s.storeError(r.Context(), action, err)
	}
	return cr, nil
}

var errNoSuchCredential = &apiError{http.StatusNotFound, codeNotFound, "No such credential."}

func (s *Server) getCredential(w http.ResponseWriter, r *http.Request, c caller) {
	cr, e := s.ownCredential(r, c, "credential.get")
	if e != nil {
		// Audited: a read of someone else's credential is an isolation denial.
		s.fail(w, r, c, "credential.get", target("credential", r.PathValue("id")), e)
		return
	}
	writeJSON(w, http.StatusOK, credentialOut(cr))
}

func (s *Server) createCredential(w http.ResponseWriter, r *http.Request, c caller) {
	cr := &record.Credential{ID: record.NewCredentialID(), User: c.name, Created: s.now().UTC()}
	s.saveCredential(w, r, c, "credential.create", cr, http.StatusCreated)
}

func (s *Server) putCredential(w http.ResponseWriter, r *http.Request, c caller) {
	old, e := s.ownCredential(r, c, "credential.update")
	if e != nil {
		s.fail(w, r, c, "credential.update", target("credential", r.PathValue("id")), e)
		return
	}
	cr := *old // records are immutable: change a copy
	s.saveCredential(w, r, c, "credential.update", &cr, http.StatusOK)
}

// saveCredential applies the request body to cr, checks the result and
// stores it, answering status with the stored credential, masked.
func (s *Server) saveCredential(w http.ResponseWriter, r *http.Request, c caller, action string, cr *record.Credential, status int) {
	tgt := target("credential", cr.ID)
	if e := readCredential(r.Body, cr); e != nil {
		s.fail(w, r, c, action, tgt, e)
		return
	}
	if e := s.checkCredential(r, c, cr); e != nil {
		s.fail(w, r, c, action, tgt, e)
		return
	}
	if err := s.st.PutCredential(r.Context(), cr); err != nil {
		e := s.classify(r.Context(), action, err)
		if e.status == http.StatusNotFound {
			// The owner has no user record (the bootstrap admin, or a
			// user deleted meanwhile): a bad request, not a missing route.
			e = &apiError{http.StatusBadRequest, codeInvalidRequest, "Cannot store the credential: " + c.name + " has no user record."}
		}
		s.fail(w, r, c, action, tgt, e)
		return
	}
	s.done(r, c, action, tgt)
	writeJSON(w, status, credentialOut(cr))
}

// readCredential decodes a credential request from body onto c, then
// checks the result's fields. The messages name fields, never the key.
func readCredential(body io.Reader, c *record.Credential) *apiError {
	var in credentialRequest
	if e := decodeFrom(body, &in); e != nil {
		return e
	}
	in.apply(c)
	if err := c.Validate(); err != nil {
		return &apiError{http.StatusBadRequest, codeInvalidRequest, "Invalid credential: " + err.Error()}
	}
	return nil
}

func (s *Server) deleteCredential(w http.ResponseWriter, r *http.Request, c caller) {
	tgt := target("credential", r.PathValue("id"))
	cr, e := s.ownCredential(r, c, "credential.delete")
	if e != nil {
		s.fail(w, r, c, "credential.delete", tgt, e)
		return
	}
	if err := s.st.DeleteCredential(r.Context(), c.name, cr.ID); err != nil {
		s.fail(w, r, c, "credential.delete", tgt, s.classify(r.Context(), "credential.delete", err))
		return
	}
	s.done(r, c, "credential.delete", tgt)
	w.WriteHeader(http.StatusNoContent)
}

// checkCredential checks a credential against the store before it is
// stored: a provider keyward knows, and a name the user has not given
// another of their credentials.
func (s *Server) checkCredential(r *http.Request, c caller, cr *record.Credential) *apiError {
	ctx := r.Context()
	switch _, err := s.st.Provider(ctx, cr.Provider); {
	case errors.Is(err, record.ErrNotFound):
		return &apiError{http.StatusBadRequest, codeInvalidRequest, "provider: no provider named " + cr.Provider + "."}
	case err != nil:
		return s.storeError(ctx, "credential.check", err)
	}
	others, err := s.st.Credentials(ctx, c.name)
	if err != nil && !errors.Is(err, record.ErrNotFound) {
		return s.storeError(ctx, "credential.check", err)
	}
	for _, o := range others {
		if o.Name == cr.Name && o.ID != cr.ID {
			return &apiError{http.StatusConflict, codeConflict, "You already have a credential named " + cr.Name + "; change it with PUT."}
		}
	}
	return nil
}
