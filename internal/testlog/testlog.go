// Package testlog collects what goroutines log during a test, so the test
// can read it while they run (e.g. to assert that no secret was logged).
package testlog

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer that is safe for concurrent use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
