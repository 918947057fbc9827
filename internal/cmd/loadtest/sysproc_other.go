//go:build !linux

package main

import "syscall"

// childAttr has nothing to set: the load test reads /proc for ports and
// memory, so it only works on Linux; this file keeps the package building
// elsewhere.
func childAttr() *syscall.SysProcAttr { return nil }
