package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version and commit are stamped in at build time, as the Dockerfile does:
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=$(git rev-parse HEAD)" ./cmd/keyward
//
// Unstamped, they are "dev" and "unknown", and buildVersion falls back to
// what the Go toolchain recorded: the module version under go install, the
// vcs.revision of a build from a git checkout.
var (
	version = "dev"
	commit  = "unknown"
)

// buildVersion returns the version and commit of this binary: the stamped
// values, else those of debug.ReadBuildInfo, else "dev" and "unknown".
func buildVersion() (ver, rev string) {
	ver, rev = version, commit
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ver, rev
	}
	if ver == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		ver = info.Main.Version
	}
	if rev == "unknown" {
		var modified bool
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && rev != "unknown" {
			rev += "-dirty"
		}
	}
	return ver, rev
}

// printVersion writes "keyward VERSION (commit COMMIT, GOVERSION OS/ARCH)".
func printVersion(w io.Writer) {
	ver, rev := buildVersion()
	fmt.Fprintf(w, "keyward %s (commit %s, %s %s/%s)\n", ver, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
