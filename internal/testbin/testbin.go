// Package testbin finds the real programs keyward's tests run — Envoy and
// OpenBao, which scripts/setup.sh installs into .tools/venv, and Envoy
// Gateway's egctl, which it installs into .tools/bin — and decides whether
// a missing one skips a test or fails it.
package testbin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// EnvRequire set to "1" (or CI=true) turns a missing program into a test
// failure instead of a skip.
const EnvRequire = "KEYWARD_REQUIRE_E2E"

// Program describes one program the tests need.
type Program struct {
	// Name is the executable's name, on PATH and in .tools/venv/bin.
	Name string
	// EnvVar names an explicit path to it.
	EnvVar string
	// Install says how to get it.
	Install string
}

// Required reports whether a missing program must fail the test.
func Required() bool {
	return os.Getenv(EnvRequire) == "1" || os.Getenv("CI") == "true"
}

// Find returns the program's path: $EnvVar, else Name on PATH, else
// .tools/venv/bin/Name (the Python wheels' programs), else .tools/bin/Name
// (Go programs), in the working directory or the nearest directory above
// it that has one. When none is found the test is
// skipped, or fails with the install hint when Required. An EnvVar that
// does not point at an executable always fails the test: it is a mistake,
// not an absence.
func Find(t testing.TB, p Program) string {
	t.Helper()
	if path := os.Getenv(p.EnvVar); path != "" {
		if err := executable(path); err != nil {
			t.Fatalf("%s=%q: %v", p.EnvVar, path, err)
		}
		return path
	}
	if path, err := exec.LookPath(p.Name); err == nil {
		return path
	}
	venv := filepath.Join(".tools", "venv", "bin", p.Name)
	gobin := filepath.Join(".tools", "bin", p.Name)
	if path, ok := inTools(venv, gobin); ok {
		return path
	}
	return missing(t, fmt.Sprintf("%s binary not found (%s, PATH, <repository>/%s, <repository>/%s); %s", p.Name, p.EnvVar, venv, gobin, p.Install))
}

// EnvPython names the Python interpreter that has the official SDKs.
const EnvPython = "KEYWARD_PYTHON"

// Python returns the interpreter of the test venv, which has the official
// openai and anthropic SDKs: $KEYWARD_PYTHON, else .tools/venv/bin/python
// of the repository (never a python on PATH, which may lack the SDKs).
// Missing, the test skips, or fails when Required.
func Python(t testing.TB) string {
	t.Helper()
	if path := os.Getenv(EnvPython); path != "" {
		if err := executable(path); err != nil {
			t.Fatalf("%s=%q: %v", EnvPython, path, err)
		}
		return path
	}
	rel := filepath.Join(".tools", "venv", "bin", "python")
	if path, ok := inTools(rel); ok {
		return path
	}
	return missing(t, fmt.Sprintf("no Python with the official SDKs (%s, <repository>/%s): run scripts/setup.sh, which installs them", EnvPython, rel))
}

// inTools returns the first of rels (paths under the repository) that is
// an executable in the working directory or a directory above it: the
// repository's test modules (deploy/image, examples/istio) sit below the
// .tools that scripts/setup.sh fills at its root.
func inTools(rels ...string) (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		for _, rel := range rels {
			if path := filepath.Join(dir, rel); executable(path) == nil {
				return path, true
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// missing fails the test with msg when Required, else skips it.
func missing(t testing.TB, msg string) string {
	t.Helper()
	if Required() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

// EgctlVersion is the Envoy Gateway release whose egctl scripts/setup.sh
// installs and whose translation the Envoy Gateway example is tested with.
const EgctlVersion = "v1.9.1"

// EnvEgctl names an explicit egctl binary.
const EnvEgctl = "KEYWARD_EGCTL"

// Egctl returns the path of Envoy Gateway's egctl, found as Find finds
// programs; scripts/setup.sh installs it into <module root>/.tools/bin.
func Egctl(t testing.TB) string {
	t.Helper()
	return Find(t, Program{
		Name:   "egctl",
		EnvVar: EnvEgctl,
		Install: "install it with: GOBIN=$PWD/.tools/bin go install github.com/envoyproxy/gateway/cmd/egctl@" +
			EgctlVersion + " (scripts/setup.sh does), or set " + EnvEgctl,
	})
}
