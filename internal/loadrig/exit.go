package loadrig

import "errors"

// Exit statuses of the measurement tools (the load test, the scale test),
// which scripts read: 0 the run worked, targets met or not; 3 a target
// was missed under -strict.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
	ExitMissed = 3
)

// ErrMissed is what a tool's run returns when a target was missed under
// -strict.
var ErrMissed = errors.New("targets missed")
