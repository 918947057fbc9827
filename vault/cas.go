package vault

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyward/keyward/record"
)

// Check-and-set: every write that depends on what it read (a create, an
// update, a delete, a write owned by a user) names the KV version it read,
// and Vault refuses it if another writer came between.

// casAttempts bounds the tries of a check-and-set that other writers keep
// winning.
const casAttempts = 50

// errCASLost reports a check-and-set write that another writer beat.
var errCASLost = errors.New("check-and-set lost to another writer")

// version is a record as read for a check-and-set.
type version struct {
	// data is nil when the record does not exist or its latest version
	// is deleted.
	data map[string]any
	// n is the latest KV version, deleted or not; 0 when the path was
	// never written (or its metadata was deleted).
	n int
}

// live reports whether the record exists and is not a tombstone.
func (v version) live() bool { return v.data != nil && !isTombstone(v.data) }

// tombstoneField marks a deleted user or group record (see deleteNamed).
const tombstoneField = "deleted"

func tombstone() map[string]any { return map[string]any{tombstoneField: true} }

func isTombstone(data map[string]any) bool { return data[tombstoneField] == true }

// readVersion reads path's latest version, deleted or not.
func (s *Store) readVersion(ctx context.Context, path string) (version, error) {
	sec, err := s.kv.Get(ctx, path)
	switch {
	case errors.Is(err, api.ErrSecretNotFound):
		return version{}, nil
	case err != nil:
		return version{}, fmt.Errorf("vault read %s: %w", path, err)
	}
	v := version{data: sec.Data}
	if sec.VersionMetadata != nil {
		v.n = sec.VersionMetadata.Version
	}
	return v, nil
}

// casPut writes data to path only if its latest version is still n (0:
// the path was never written). A write beaten by another writer is
// errCASLost, told apart from other refusals by reading the version again
// rather than by Vault's error text.
func (s *Store) casPut(ctx context.Context, path string, data map[string]any, n int) error {
	_, err := s.kv.Put(ctx, path, data, api.WithCheckAndSet(n))
	if err == nil {
		return nil
	}
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest {
		if cur, rerr := s.readVersion(ctx, path); rerr == nil && cur.n != n {
			return errCASLost
		}
	}
	return fmt.Errorf("vault write %s: %w", path, err)
}

// retryCAS runs attempt again while it loses a check-and-set, at most
// casAttempts times, waiting a little at random between tries so that a
// crowd of writers spreads out instead of colliding again.
func retryCAS(ctx context.Context, path string, attempt func() error) error {
	for n := range casAttempts {
		err := attempt()
		if !errors.Is(err, errCASLost) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(mrand.Int64N(int64(5*time.Millisecond) << min(n, 4)))):
		}
	}
	return fmt.Errorf("vault write %s: too many concurrent writers", path)
}

// pathNotFound is record.ErrNotFound for a path.
func pathNotFound(path string) error { return fmt.Errorf("%s: %w", path, record.ErrNotFound) }

// createNamed stores data at path unless a live record is there
// (record.ErrExists); a path never written or holding a tombstone takes
// it. The change is announced.
func (s *Store) createNamed(ctx context.Context, kind record.Type, name, path string, data map[string]any) error {
	err := retryCAS(ctx, path, func() error {
		cur, err := s.readVersion(ctx, path)
		switch {
		case err != nil:
			return err
		case cur.live():
			return fmt.Errorf("%s %q: %w", kind, name, record.ErrExists)
		}
		return s.casPut(ctx, path, data, cur.n)
	})
	if err != nil {
		return err
	}
	return s.announce(ctx, change{kind: kind, name: name})
}

// codec reads and writes one kind of record.
type codec[R any] struct {
	decode func(name string, data map[string]any) (*R, error)
	encode func(*R) map[string]any
}

// updateRecord applies apply to the live record at path and writes the
// result with check-and-set, trying again from the read when another
// writer came between. The change is announced.
func updateRecord[R any](ctx context.Context, s *Store, kind record.Type, name, path string, c codec[R], apply func(*R) error) (*R, error) {
	var out *R
	err := retryCAS(ctx, path, func() error {
		cur, err := s.readVersion(ctx, path)
		switch {
		case err != nil:
			return err
		case !cur.live():
			return pathNotFound(path)
		}
		r, err := c.decode(name, cur.data)
		if err != nil {
			return err
		}
		if err := apply(r); err != nil {
			return err
		}
		out = r
		return s.casPut(ctx, path, c.encode(r), cur.n)
	})
	if err != nil {
		return nil, err
	}
	return out, s.announce(ctx, change{kind: kind, name: name})
}

// bury deletes the user or group record at path by writing a tombstone
// over it with check-and-set: a concurrent update cannot bring it back,
// and its version count goes on, so that a record created later under the
// same name is never mistaken for the old one by a check-and-set. It
// reports whether the record was live; a tombstone (or a version deleted
// by hand) is buried already, and only a path never written is
// record.ErrNotFound, so that a delete whose announcement failed can be
// run again.
func (s *Store) bury(ctx context.Context, path string) error {
	return retryCAS(ctx, path, func() error {
		cur, err := s.readVersion(ctx, path)
		switch {
		case err != nil:
			return err
		case cur.n == 0:
			return pathNotFound(path)
		case !cur.live():
			return nil
		}
		return s.casPut(ctx, path, tombstone(), cur.n)
	})
}

// undoFunc removes what an owned write wrote.
type undoFunc func(ctx context.Context) error

// ownedWrite writes a record that user owns. write runs once the user's
// record is read and live, and when it is done the user record is written
// again, unchanged, with check-and-set on the version read. Any change of
// the user meanwhile — an update, a deletion, another owned write — makes
// that fail: undo removes what write wrote and all is tried again. So a
// check inside write sees the user and their records as they stay until
// the write is in, and DeleteUser, which buries the user before it sweeps
// their records, either sweeps the new record or makes its writer undo it.
func (s *Store) ownedWrite(ctx context.Context, user string, write func(u *record.User) (undoFunc, error)) error {
	path := usersDir + user
	return retryCAS(ctx, path, func() error {
		cur, err := s.readVersion(ctx, path)
		switch {
		case err != nil:
			return err
		case !cur.live():
			return pathNotFound(path)
		}
		u, err := decodeUser(user, cur.data)
		if err != nil {
			return err
		}
		undo, err := write(u)
		if err != nil {
			return err
		}
		err = s.casPut(ctx, path, cur.data, cur.n)
		if err == nil {
			return nil
		}
		if uerr := undo(context.WithoutCancel(ctx)); uerr != nil {
			// Not errCASLost any more: trying again could leave two.
			return fmt.Errorf("owned write of %s: %v; and undoing it failed: %w", path, err, uerr)
		}
		return err
	})
}
