//go:build race

package authz

// raceEnabled: the race detector's instrumentation allocates on its own,
// so allocation counts mean nothing under it.
const raceEnabled = true
