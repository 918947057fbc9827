package authz

import (
	"strings"

	"github.com/keyward/keyward/record"
)

// checkModels applies the model restriction of group g to a request for
// provider p (nil when it has no record). The request must be for an
// endpoint of p's table (see endpoints) and name at least one model where
// that endpoint says models live, and every model it names must be
// allowed: the one there, every top-level "model" of the body in any
// letter case (some provider may read it), and the model header, which is
// client-controlled in plain Envoy and so never names the model alone.
// keyward needs the whole body for this (see wholeBody). On a refusal
// d.Model is the model refused, for the audit log. A group without
// restrictions costs nothing here: neither path nor body is read.
func (a *Authorizer) checkModels(req *Request, g *record.Group, p *record.Provider, d *Decision) Reason {
	if len(g.Models) == 0 {
		return ""
	}
	d.modelRead = true
	if m := req.Headers[a.opts.ModelHeader]; m != "" && !g.AllowsModel(m) {
		d.Model = m
		return ReasonModelNotAllowed
	}
	var kind record.Kind
	if p != nil {
		kind = p.Kind
	}
	head, tail, ok := upstreamPath(req)
	if !ok {
		return ReasonEndpointNotAllowed
	}
	e, model, m := find(a.endpoints.table(d.ProviderName, kind), req.Method, head, tail)
	switch {
	case m == noMatch || e.none:
		return ReasonEndpointNotAllowed
	case m == badModel, queryNamesModel(req.Path):
		return ReasonModelUnknown
	}
	body, r := wholeBody(req)
	if r != "" {
		return r
	}
	return e.checkModels(model, body, g, d)
}

// checkModels checks the models a request for e names: model, the path's
// (when e's model lives in the path), and those of body.
func (e *endpoint) checkModels(model, body string, g *record.Group, d *Decision) Reason {
	named := false
	if e.inPath {
		if !g.AllowsModel(model) {
			d.Model = model
			return ReasonModelNotAllowed
		}
		d.Model, named = model, true
	}
	if body == "" {
		return namedAny(named)
	}
	var refused string
	allow := func(m string) {
		if refused == "" && !g.AllowsModel(m) {
			refused = m
		}
	}
	top, r := scanBody(body, allow)
	switch {
	case r == bodyInvalid:
		return ReasonModelUnknown
	case refused != "":
		d.Model = refused
		return ReasonModelNotAllowed
	case r == bodyModel && e.topLevel():
		d.Model, named = top, true
	case len(e.body) > 0 && !e.topLevel():
		return e.checkNestedModels(body, g, named, d)
	}
	return namedAny(named)
}

// checkNestedModels checks the models that live below body's top level,
// where e says: every one must be allowed, and one model for the whole
// request is d.Model (it picks a user's own credential for it; several
// pick one for any model).
func (e *endpoint) checkNestedModels(body string, g *record.Group, named bool, d *Decision) Reason {
	var first, refused string
	same := true
	ok := scanPath(body, e.body, func(m string) {
		if refused == "" && !g.AllowsModel(m) {
			refused = m
		}
		if !named {
			first, named = m, true
		}
		same = same && m == first
	})
	switch {
	case !ok:
		return ReasonModelUnknown
	case refused != "":
		d.Model = refused
		return ReasonModelNotAllowed
	case same:
		d.Model = first
	}
	return namedAny(named)
}

// topLevel reports whether e's model is the body's top-level "model",
// which scanBody reads.
func (e *endpoint) topLevel() bool { return len(e.body) == 1 && e.body[0] == step{key: "model"} }

// namedAny is the reason for a request that named a model where its
// endpoint says models live (named) or did not.
func namedAny(named bool) Reason {
	if named {
		return ""
	}
	return ReasonModelNotAllowed
}

// wholeBody is the request's body when keyward has all of it ("" for a
// request without one), or why it has not: Envoy cut it at
// max_request_bytes (model_unknown: the rest may hold another model), or
// Envoy did not forward it (body_not_forwarded). A request without Envoy's
// PartialBodyHeader has a body keyward did not see unless it says it has
// none: a content-length of 0, or a GET or HEAD without one. A chunked
// HTTP/1.1 or an HTTP/2 body carries no content-length to Envoy's check
// request, so its absence proves nothing.
func wholeBody(req *Request) (string, Reason) {
	v, forwarded := req.Headers[PartialBodyHeader]
	length := req.Headers["content-length"]
	switch {
	case forwarded && v == "false":
		return req.Body, ""
	case forwarded:
		// Anything but "false" counts as cut: a client copy joined to
		// Envoy's ("false,true") must not hide a truncation.
		return "", ReasonModelUnknown
	case length == "0", length == "" && (req.Method == "GET" || req.Method == "HEAD"):
		return "", ""
	}
	return "", ReasonBodyNotForwarded
}

// queryNamesModel reports whether the query of path has a parameter some
// provider reads a model from (OpenAI's realtime ?model=, Azure's
// ?deployment=), in any spelling (see spells). No endpoint keyward knows
// takes its model there, so a request that carries one names a model
// keyward does not check.
func queryNamesModel(path string) bool {
	_, query, _ := strings.Cut(path, "?")
	for query != "" {
		part := query
		if i := strings.IndexAny(query, "&;"); i >= 0 {
			part, query = query[:i], query[i+1:]
		} else {
			query = ""
		}
		name, _, _ := strings.Cut(part, "=")
		if spells(name, "model") || spells(name, "deployment") {
			return true
		}
	}
	return false
}
