package filestore

import (
	"errors"
	"fmt"
)

// ErrFileLost reports a store file that is empty, missing or shorter than
// it was, where the store had one: a crash, a truncation or a bad deploy,
// never an empty store. keyward never writes an empty file (even a store
// without records has a header), so an empty one is always a loss. A
// Store does not load such a file, keeps the last good records in force,
// and writes nothing while it is so. Callers branch on it with errors.Is.
var ErrFileLost = errors.New("store file lost")

// lostFile is ErrFileLost for the file at path, and why.
func lostFile(path, why string) error {
	return fmt.Errorf("%s: %w: %s (restore it from a backup; nothing is written over it)", path, ErrFileLost, why)
}
