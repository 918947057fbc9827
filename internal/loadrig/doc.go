// Package loadrig is what keyward's load and scale test programs
// (internal/cmd/loadtest, internal/cmd/scaletest) share: a generated
// configuration and file store written through filestore, and `keyward
// serve` run as a child process whose port, readiness and memory are read
// from /proc and its gRPC health service. Linux only.
package loadrig
