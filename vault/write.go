package vault

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

// Writes go to the record, then to the change marker, which every replica
// polls: the record is in place before anyone is told to reload it.

// markerHistory is how many changes the marker keeps. A replica that falls
// further behind (it was cut off from Vault) drops all its caches instead.
const markerHistory = 256

// PutGroup creates or replaces a group, whatever is stored (a raw write:
// package manage creates and changes groups with CreateGroup and
// UpdateGroup).
func (s *Store) PutGroup(ctx context.Context, g *record.Group) error {
	if err := checkName("group", g.Name); err != nil {
		return err
	}
	return s.put(ctx, record.TypeGroup, g.Name, groupsDir+g.Name, encodeGroup(g))
}

// CreateGroup stores g unless a group of that name exists
// (record.ErrExists).
func (s *Store) CreateGroup(ctx context.Context, g *record.Group) error {
	if err := checkName("group", g.Name); err != nil {
		return err
	}
	return s.createNamed(ctx, record.TypeGroup, g.Name, groupsDir+g.Name, encodeGroup(g))
}

// UpdateGroup applies change to the stored group and stores the result.
func (s *Store) UpdateGroup(ctx context.Context, name string, change func(*record.Group) error) (*record.Group, error) {
	if err := checkName("group", name); err != nil {
		return nil, notFound(err)
	}
	return updateRecord(ctx, s, record.TypeGroup, name, groupsDir+name, codec[record.Group]{decodeGroup, encodeGroup}, change)
}

// DeleteGroup removes a group. Its tokens stay, and are denied. Deleting a
// deleted group announces it again.
func (s *Store) DeleteGroup(ctx context.Context, name string) error {
	if err := checkName("group", name); err != nil {
		return err
	}
	if err := s.bury(ctx, groupsDir+name); err != nil {
		return err
	}
	return s.announce(ctx, change{kind: record.TypeGroup, name: name})
}

// PutUser creates or replaces a user, whatever is stored (a raw write:
// package manage creates and changes users with CreateUser and UpdateUser).
func (s *Store) PutUser(ctx context.Context, u *record.User) error {
	if err := checkName("user", u.Name); err != nil {
		return err
	}
	return s.put(ctx, record.TypeUser, u.Name, usersDir+u.Name, encodeUser(u))
}

// CreateUser stores u unless a user of that name exists
// (record.ErrExists).
func (s *Store) CreateUser(ctx context.Context, u *record.User) error {
	if err := checkName("user", u.Name); err != nil {
		return err
	}
	return s.createNamed(ctx, record.TypeUser, u.Name, usersDir+u.Name, encodeUser(u))
}

// UpdateUser applies change to the stored user and stores the result.
func (s *Store) UpdateUser(ctx context.Context, name string, change func(*record.User) error) (*record.User, error) {
	if err := checkName("user", name); err != nil {
		return nil, notFound(err)
	}
	return updateRecord(ctx, s, record.TypeUser, name, usersDir+name, codec[record.User]{decodeUser, encodeUser}, change)
}

// DeleteUser removes a user, every token and management token they own
// and every credential they stored. The user is buried first: a write of
// theirs still under way then either finishes before and is swept, or
// fails and undoes itself (see ownedWrite). Deleting a deleted user sweeps
// and announces again.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	if err := checkName("user", name); err != nil {
		return err
	}
	if err := s.bury(ctx, usersDir+name); err != nil {
		return err
	}
	changes := []change{{kind: record.TypeUser, name: name}}
	for _, sweep := range []func(context.Context, string) ([]change, error){s.sweepTokens, s.sweepAPITokens, s.sweepCredentials, s.sweepIdentities} {
		swept, err := sweep(ctx, name)
		if err != nil {
			return fmt.Errorf("delete the records of user %q: %w", name, err)
		}
		changes = append(changes, swept...)
	}
	return s.announce(ctx, changes...)
}

// sweepTokens removes every token in user's index.
func (s *Store) sweepTokens(ctx context.Context, user string) ([]change, error) {
	ids, err := s.list(ctx, userTokensDir(user))
	if err != nil {
		return nil, err
	}
	changes := make([]change, 0, len(ids))
	for _, id := range ids {
		if !token.ValidID(id) {
			continue
		}
		if err := s.removeToken(ctx, user, id); err != nil {
			return nil, err
		}
		changes = append(changes, change{kind: record.TypeToken, name: id})
	}
	return changes, nil
}

// userTokensDir indexes a user's tokens: an entry per token id, holding
// nothing secret, so that one user's tokens are listed (and swept) without
// reading every token in Vault.
func userTokensDir(user string) string { return usersDir + user + "/tokens/" }

// PutToken creates or replaces a token record, whatever is stored (a raw
// write: package manage uses CreateToken and UpdateToken). Its owner's
// index entry is written first: a token is never stored without one, so
// UserTokens and DeleteUser miss none.
func (s *Store) PutToken(ctx context.Context, t *record.Token) error {
	if err := checkToken(t); err != nil {
		return err
	}
	if err := s.writeToken(ctx, t); err != nil {
		return err
	}
	return s.announce(ctx, change{kind: record.TypeToken, name: t.ID})
}

// writeToken writes t and its owner's index entry, the entry first (see
// PutToken), and announces nothing.
func (s *Store) writeToken(ctx context.Context, t *record.Token) error {
	if err := s.putIndex(ctx, t); err != nil {
		return err
	}
	return s.write(ctx, tokensDir+t.ID, encodeToken(t))
}

// ImportTokens writes token records as PutToken does, workers of them at
// a time, and announces them in one write of the change marker: for
// filling a store before keyward serves it (a migration, the load test),
// where a marker write per token would queue every write on the marker's
// check-and-set. (More changes than the marker keeps make every reader
// drop all its cached records, which is what an import of that size
// calls for.) Every token is checked before any is written.
func (s *Store) ImportTokens(ctx context.Context, tokens []*record.Token, workers int) error {
	for _, t := range tokens {
		if err := checkToken(t); err != nil {
			return err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, workers))
	for _, t := range tokens {
		g.Go(func() error { return s.writeToken(gctx, t) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	changes := make([]change, len(tokens))
	for i, t := range tokens {
		changes[i] = change{kind: record.TypeToken, name: t.ID}
	}
	return s.announce(ctx, changes...)
}

// checkToken checks the id, owner and group of a token to be written.
func checkToken(t *record.Token) error {
	return cmp.Or(checkTokenID("token", t.ID), checkName("user", t.User), checkName("group", t.Group))
}

func (s *Store) putIndex(ctx context.Context, t *record.Token) error {
	return s.write(ctx, userTokensDir(t.User)+t.ID, map[string]any{"token": t.ID})
}

// CreateToken stores the new token t once check has accepted its owner and
// the tokens the owner holds, atomically with the owner's other owned
// writes and deletion (see ownedWrite). A new token id is known to no one,
// so nothing is announced.
func (s *Store) CreateToken(ctx context.Context, t *record.Token, check func(*record.User, []*record.Token) error) error {
	if err := checkToken(t); err != nil {
		return err
	}
	return s.ownedWrite(ctx, t.User, func(u *record.User) (undoFunc, error) {
		owned, err := s.UserTokens(ctx, t.User)
		if err != nil {
			return nil, err
		}
		if err := check(u, owned); err != nil {
			return nil, err
		}
		undo := func(ctx context.Context) error { return s.removeToken(ctx, t.User, t.ID) }
		if err := s.putIndex(ctx, t); err != nil {
			return nil, err
		}
		if err := s.casPut(ctx, tokensDir+t.ID, encodeToken(t), 0); err != nil {
			return nil, errors.Join(err, undo(context.WithoutCancel(ctx)))
		}
		return undo, nil
	})
}

// UpdateToken applies change to the stored token and stores the result
// with check-and-set: of two changes at once, the second sees the first.
func (s *Store) UpdateToken(ctx context.Context, id string, change func(*record.Token) error) (*record.Token, error) {
	if err := checkTokenID("token", id); err != nil {
		return nil, notFound(err)
	}
	return updateRecord(ctx, s, record.TypeToken, id, tokensDir+id, codec[record.Token]{decodeToken, encodeToken}, change)
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
	if err := s.removeToken(ctx, t.User, id); err != nil {
		return err
	}
	return s.announce(ctx, change{kind: record.TypeToken, name: id})
}

// removeToken deletes token id of user with every version, and its index
// entry; either being gone already is no error.
func (s *Store) removeToken(ctx context.Context, user, id string) error {
	for _, path := range []string{tokensDir + id, userTokensDir(user) + id} {
		if err := s.kv.DeleteMetadata(ctx, path); err != nil {
			return fmt.Errorf("vault delete %s: %w", path, err)
		}
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
	err = s.casPut(ctx, signingKeyPath, map[string]any{keyPrefix + "1": base64.StdEncoding.EncodeToString(secret)}, 0)
	if err != nil && !errors.Is(err, errCASLost) {
		return err
	}
	return s.announce(ctx, change{kind: record.TypeSystem, name: "signing-keys"})
}

func (s *Store) put(ctx context.Context, kind record.Type, name, path string, data map[string]any) error {
	if err := s.write(ctx, path, data); err != nil {
		return err
	}
	return s.announce(ctx, change{kind: kind, name: name})
}

// write writes data at path, announcing nothing.
func (s *Store) write(ctx context.Context, path string, data map[string]any) error {
	if _, err := s.kv.Put(ctx, path, data); err != nil {
		return fmt.Errorf("vault write %s: %w", path, err)
	}
	return nil
}

// change is one entry of the marker.
type change struct {
	seq  int
	kind record.Type
	name string
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
		out = append(out, change{seq: seq, kind: record.Type(parts[1]), name: parts[2]})
	}
	return out
}

// announce records changes in the marker, with check-and-set so that
// concurrent writers (several CLIs, several admins) lose nothing. A change
// whose announcement fails is stored but unknown to the other replicas:
// that is record.ErrNotAnnounced, and every write announces again when it
// is run again, so the caller can retry until it is announced.
func (s *Store) announce(ctx context.Context, changes ...change) error {
	err := retryCAS(ctx, markerPath, func() error {
		seq, history, version, err := s.readMarker(ctx)
		if err != nil {
			return err
		}
		for _, c := range changes {
			seq++
			history = append(history, change{seq: seq, kind: c.kind, name: c.name})
		}
		if len(history) > markerHistory {
			history = history[len(history)-markerHistory:]
		}
		return s.casPut(ctx, markerPath, map[string]any{"seq": seq, "changes": formatChanges(history)}, version)
	})
	if err != nil {
		return fmt.Errorf("%w: %w", record.ErrNotAnnounced, err)
	}
	return nil
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
