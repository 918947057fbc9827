//go:build !linux

package loadrig

import "syscall"

// childAttr has nothing to set: the rig reads /proc for ports and
// memory, so it only works on Linux; this file keeps the package building
// elsewhere.
func childAttr() *syscall.SysProcAttr { return nil }
