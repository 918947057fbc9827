package vault

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Writes go to the record, then to the change marker, which every replica
// polls: the record is in place before anyone is told to reload it.

// markerHistory is how many changes the marker keeps. A replica that falls
// further behind (it was cut off from Vault) drops all its caches instead.
const markerHistory = 256

// Change kinds in the marker.
const (
	KindToken    = "token"
	KindUser     = "user"
	KindGroup    = "group"
	KindProvider = "provider"
	KindSystem   = "system"
)

// PutGroup creates or replaces a group.
func (s *Store) PutGroup(ctx context.Context, g *record.Group) error {
	if err := checkName("group", g.Name); err != nil {
		return err
	}
	return s.put(ctx, KindGroup, g.Name, groupsDir+g.Name, encodeGroup(g))
}

// DeleteGroup removes a group. Its tokens stay, and are denied.
func (s *Store) DeleteGroup(ctx context.Context, name string) error {
	if err := checkName("group", name); err != nil {
		return err
	}
	return s.delete(ctx, KindGroup, name, groupsDir+name)
}

// PutUser creates or replaces a user.
func (s *Store) PutUser(ctx context.Context, u *record.User) error {
	if err := checkName("user", u.Name); err != nil {
		return err
	}
	return s.put(ctx, KindUser, u.Name, usersDir+u.Name, encodeUser(u))
}

// DeleteUser removes a user, every token and management token they own
// and every credential they stored.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	if err := checkName("user", name); err != nil {
		return err
	}
	tokens, err := s.Tokens(ctx)
	if err != nil {
		return err
	}
	if err := s.delete(ctx, KindUser, name, usersDir+name); err != nil {
		return err
	}
	for _, t := range tokens {
		if t.User == name {
			if err := s.DeleteToken(ctx, t.ID); err != nil && !errors.Is(err, record.ErrNotFound) {
				return err
			}
		}
	}
	if err := s.deleteAPITokens(ctx, name); err != nil {
		return err
	}
	return s.deleteCredentials(ctx, name)
}

// userTokensDir indexes a user's tokens: an entry per token id, holding
// nothing secret, so that one user's tokens are listed without reading
// every token in Vault.
func userTokensDir(user string) string { return usersDir + user + "/tokens/" }

// PutToken creates or replaces a token record. Its owner's index entry is
// written first: a token is never stored without one, so UserTokens
// misses none.
func (s *Store) PutToken(ctx context.Context, t *record.Token) error {
	if err := errors.Join(checkTokenID("token", t.ID), checkName("user", t.User), checkName("group", t.Group)); err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, userTokensDir(t.User)+t.ID, map[string]any{"token": t.ID}); err != nil {
		return fmt.Errorf("vault write %s: %w", userTokensDir(t.User)+t.ID, err)
	}
	return s.put(ctx, KindToken, t.ID, tokensDir+t.ID, encodeToken(t))
}

// DeleteToken removes a token record and its owner's index entry.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	if err := checkTokenID("token", id); err != nil {
		return err
	}
	t, err := s.Token(ctx, id)
	if err != nil {
		return err
	}
	if err := s.delete(ctx, KindToken, id, tokensDir+id); err != nil {
		return err
	}
	if err := s.kv.DeleteMetadata(ctx, userTokensDir(t.User)+id); err != nil {
		return fmt.Errorf("vault delete %s: %w", userTokensDir(t.User)+id, err)
	}
	return nil
}

// UserTokens lists user's tokens through the user's index: one list and
// one read per token of theirs.
func (s *Store) UserTokens(ctx context.Context, user string) ([]*record.Token, error) {
	if err := checkName("user", user); err != nil {
		return nil, notFound(err)
	}
	all, err := listRecords(ctx, s, userTokensDir(user), s.Token)
	if err != nil {
		return nil, err
	}
	// The index is only a pointer: the token record says who owns it.
	return slices.DeleteFunc(all, func(t *record.Token) bool { return t.User != user }), nil
}

// EnsureSigningKey adds a random token signing key if Vault holds none.
// Check-and-set makes concurrent first runs agree on one key.
func (s *Store) EnsureSigningKey(ctx context.Context) error {
	keys, err := s.SigningKeys(ctx)
	if err != nil || len(keys) > 0 {
		return err
	}
	secret := make([]byte, token.KeySize)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	_, err = s.kv.Put(ctx, signingKeyPath, map[string]any{keyPrefix + "1": base64.StdEncoding.EncodeToString(secret)}, api.WithCheckAndSet(0))
	if err != nil && !isCASMismatch(err) {
		return fmt.Errorf("vault write %s: %w", signingKeyPath, err)
	}
	return s.bump(ctx, KindSystem, "signing-keys")
}

func (s *Store) put(ctx context.Context, kind, name, path string, data map[string]any) error {
	if _, err := s.kv.Put(ctx, path, data); err != nil {
		return fmt.Errorf("vault write %s: %w", path, err)
	}
	return s.bump(ctx, kind, name)
}

// delete removes every version of a record, so that it is gone rather than
// soft-deleted.
func (s *Store) delete(ctx context.Context, kind, name, path string) error {
	if _, err := s.get(ctx, path); err != nil {
		return err
	}
	if err := s.kv.DeleteMetadata(ctx, path); err != nil {
		return fmt.Errorf("vault delete %s: %w", path, err)
	}
	return s.bump(ctx, kind, name)
}

// change is one entry of the marker.
type change struct {
	seq        int
	kind, name string
}

// readMarker returns the marker's sequence number, its recent changes
// (oldest first) and its KV version (0 when it does not exist yet).
func (s *Store) readMarker(ctx context.Context) (seq int, changes []change, version int, err error) {
	sec, err := s.get(ctx, markerPath)
	if errors.Is(err, record.ErrNotFound) {
		return 0, nil, 0, nil
	}
	if err != nil {
		return 0, nil, 0, err
	}
	if sec.VersionMetadata != nil {
		version = sec.VersionMetadata.Version
	}
	f := &fields{path: markerPath, m: sec.Data}
	seq = f.integer("seq")
	changes = parseChanges(f.str("changes"))
	return seq, changes, version, f.err()
}

// The marker keeps its changes as one string, a "seq kind name" line each:
// OpenBao refuses JSON with too many strings in it ("high complexity"),
// which a list of objects reaches long before markerHistory. Names never
// hold spaces or newlines (they are validated), so the lines parse back.
func formatChanges(changes []change) string {
	var b strings.Builder
	for _, c := range changes {
		fmt.Fprintf(&b, "%d %s %s\n", c.seq, c.kind, c.name)
	}
	return b.String()
}

func parseChanges(s string) []change {
	var out []change
	for line := range strings.Lines(s) {
		parts := strings.Fields(line)
		if len(parts) != 3 {
			continue
		}
		seq, err := strconv.Atoi(parts[0])
		if err != nil {
			continue
		}
		out = append(out, change{seq: seq, kind: parts[1], name: parts[2]})
	}
	return out
}

// bump records a change in the marker, with check-and-set so that
// concurrent writers (several CLIs, several admins) lose nothing.
func (s *Store) bump(ctx context.Context, kind, name string) error {
	for attempt := range 50 {
		seq, changes, version, err := s.readMarker(ctx)
		if err != nil {
			return err
		}
		seq++
		changes = append(changes, change{seq: seq, kind: kind, name: name})
		if len(changes) > markerHistory {
			changes = changes[len(changes)-markerHistory:]
		}
		data := map[string]any{"seq": seq, "changes": formatChanges(changes)}
		_, err = s.kv.Put(ctx, markerPath, data, api.WithCheckAndSet(version))
		if err == nil {
			return nil
		}
		if !isCASMismatch(err) {
			return fmt.Errorf("vault write %s: %w", markerPath, err)
		}
		// Another writer won: wait a little, at random, so that a crowd
		// of writers spreads out instead of colliding again.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(mrand.Int64N(int64(5*time.Millisecond) << min(attempt, 4)))):
		}
	}
	return fmt.Errorf("vault write %s: too many concurrent writers", markerPath)
}

func isCASMismatch(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusBadRequest &&
		strings.Contains(strings.Join(re.Errors, " "), "check-and-set")
}

// list returns the names under dir.
func (s *Store) list(ctx context.Context, dir string) ([]string, error) {
	sec, err := s.client.Logical().ListWithContext(ctx, s.cfg.Mount+"/metadata/"+dir)
	if err != nil {
		return nil, fmt.Errorf("vault list %s: %w", dir, err)
	}
	if sec == nil || sec.Data == nil {
		return nil, nil
	}
	raw, _ := sec.Data["keys"].([]any)
	names := make([]string, 0, len(raw))
	for _, k := range raw {
		if name, ok := k.(string); ok && !strings.HasSuffix(name, "/") {
			names = append(names, name)
		}
	}
	return names, nil
}

// listRecords reads every record under dir with get.
func listRecords[V any](ctx context.Context, s *Store, dir string, get func(context.Context, string) (*V, error)) ([]*V, error) {
	names, err := s.list(ctx, dir)
	if err != nil {
		return nil, err
	}
	out := make([]*V, 0, len(names))
	for _, n := range names {
		v, err := get(ctx, n)
		if errors.Is(err, record.ErrNotFound) {
			continue // deleted since the list
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// Tokens lists every token record (one read per token: for the CLI, and
// for DeleteUser, which must find every token of the user, indexed or
// not).
func (s *Store) Tokens(ctx context.Context) ([]*record.Token, error) {
	return listRecords(ctx, s, tokensDir, s.Token)
}

// Users lists the users.
func (s *Store) Users(ctx context.Context) ([]*record.User, error) {
	return listRecords(ctx, s, usersDir, s.User)
}

// Groups lists the groups.
func (s *Store) Groups(ctx context.Context) ([]*record.Group, error) {
	return listRecords(ctx, s, groupsDir, s.Group)
}

// Providers lists the providers (with their keys: callers show key ids
// only).
func (s *Store) Providers(ctx context.Context) ([]*record.Provider, error) {
	return listRecords(ctx, s, providersDir, s.Provider)
}
