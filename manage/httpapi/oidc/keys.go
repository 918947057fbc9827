package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// maxDocument bounds a discovery document or key set read from the
// issuer.
const maxDocument = 1 << 20

// keySet is the issuer's signing keys, cached. It fetches them when it has
// none, when they are older than maxAge, and when a token names a key id
// it lacks (the issuer rotated) — but never more than once per
// minInterval, whatever the tokens say, so that forged tokens with random
// key ids cost the issuer at most one request per interval. A failed
// fetch keeps the keys it had.
type keySet struct {
	fetch       func(ctx context.Context) ([]jose.JSONWebKey, error)
	now         func() time.Time
	timeout     time.Duration
	minInterval time.Duration
	maxAge      time.Duration
	log         *slog.Logger

	// fetching is held while one fetch runs: callers that need one too
	// wait for it and then find it done, rather than fetch again.
	fetching sync.Mutex

	mu     sync.Mutex
	keys   []jose.JSONWebKey
	loaded time.Time // of the keys held; zero when none ever loaded
	tried  time.Time // the last fetch's start, failed or not
}

// candidates returns the keys that may have signed a token with kid (every
// key when kid is empty), fetching the set first when needed and allowed.
// It fails with ErrUnavailable only when no key set was ever loaded.
func (ks *keySet) candidates(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	keys, ok := ks.lookup(kid)
	if ok {
		return keys, nil
	}
	ks.refresh(ctx)
	keys, _ = ks.lookup(kid)
	ks.mu.Lock()
	loaded := !ks.loaded.IsZero()
	ks.mu.Unlock()
	if !loaded {
		return nil, ErrUnavailable
	}
	return keys, nil
}

// lookup returns the keys held for kid, and whether they do without a
// fetch: some are held, and the set is fresh.
func (ks *keySet) lookup(kid string) ([]jose.JSONWebKey, bool) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	var out []jose.JSONWebKey
	for _, k := range ks.keys {
		if kid == "" || k.KeyID == kid {
			out = append(out, k)
		}
	}
	fresh := !ks.loaded.IsZero() && ks.now().Sub(ks.loaded) < ks.maxAge
	return out, len(out) > 0 && fresh
}

// refresh fetches the key set unless one was fetched (or tried) within
// minInterval.
func (ks *keySet) refresh(ctx context.Context) {
	ks.fetching.Lock()
	defer ks.fetching.Unlock()
	now := ks.now()
	ks.mu.Lock()
	if !ks.tried.IsZero() && now.Sub(ks.tried) < ks.minInterval {
		ks.mu.Unlock()
		return
	}
	ks.tried = now
	ks.mu.Unlock()
	// The fetch serves every waiting caller: the one that started it
	// going away must not cut it short.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ks.timeout)
	defer cancel()
	keys, err := ks.fetch(ctx)
	if err != nil {
		ks.log.Warn("oidc: the issuer's keys could not be fetched; keeping the keys held", "error", err.Error())
		return
	}
	ks.mu.Lock()
	ks.keys, ks.loaded = keys, ks.now()
	ks.mu.Unlock()
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, k.KeyID)
	}
	ks.log.Info("oidc: issuer keys loaded", "keys", len(keys), "kids", ids)
}

// parseKeySet decodes a JWKS document, keeping the public signing keys
// and skipping, one by one, keys it cannot use (an unknown key type must
// not take the others down with it).
func parseKeySet(raw []byte) ([]jose.JSONWebKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("key set: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, rawKey := range doc.Keys {
		var k jose.JSONWebKey
		if err := json.Unmarshal(rawKey, &k); err != nil || !k.Valid() || !k.IsPublic() || k.Use == "enc" {
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("key set: no usable public signing key")
	}
	return keys, nil
}

// fileKeys reads the key set from a file.
func fileKeys(path string) func(context.Context) ([]jose.JSONWebKey, error) {
	return func(context.Context) ([]jose.JSONWebKey, error) {
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return parseKeySet(raw)
	}
}

// remoteKeys fetches the key set from jwksURI, or, when it is empty, from
// the jwks_uri of the issuer's discovery document, which must name the
// issuer exactly.
type remoteKeys struct {
	client  *http.Client
	issuer  string
	jwksURI string
	mu      sync.Mutex // guards discovered
	// discovered is the discovery document's jwks_uri, once read.
	discovered string
}

func (rk *remoteKeys) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	uri, err := rk.keysURI(ctx)
	if err != nil {
		return nil, err
	}
	raw, err := rk.get(ctx, uri)
	if err != nil {
		return nil, err
	}
	return parseKeySet(raw)
}

func (rk *remoteKeys) keysURI(ctx context.Context) (string, error) {
	if rk.jwksURI != "" {
		return rk.jwksURI, nil
	}
	rk.mu.Lock()
	uri := rk.discovered
	rk.mu.Unlock()
	if uri != "" {
		return uri, nil
	}
	raw, err := rk.get(ctx, strings.TrimSuffix(rk.issuer, "/")+"/.well-known/openid-configuration")
	if err != nil {
		return "", err
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return "", fmt.Errorf("discovery document: %w", err)
	}
	if doc.Issuer != rk.issuer {
		return "", fmt.Errorf("discovery document: issuer %q is not the configured %q", doc.Issuer, rk.issuer)
	}
	if _, err := checkURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("discovery document: jwks_uri: %w", err)
	}
	rk.mu.Lock()
	rk.discovered = doc.JWKSURI
	rk.mu.Unlock()
	return doc.JWKSURI, nil
}

// get reads a JSON document of at most maxDocument bytes.
func (rk *remoteKeys) get(ctx context.Context, uri string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := rk.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", uri, resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("GET %s: %w", uri, err)
	case len(raw) > maxDocument:
		return nil, fmt.Errorf("GET %s: longer than %d bytes", uri, maxDocument)
	}
	return raw, nil
}
