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
// <module root>/.tools/venv/bin/Name (the Python wheels' programs), else
// <module root>/.tools/bin/Name (Go programs). When none is found the test is
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
	if root, err := ModuleRoot(); err == nil {
		for _, rel := range []string{venv, gobin} {
			if path := filepath.Join(root, rel); executable(path) == nil {
				return path
			}
		}
	}
	msg := fmt.Sprintf("%s binary not found (%s, PATH, <module root>/%s, <module root>/%s); %s", p.Name, p.EnvVar, venv, gobin, p.Install)
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

// ModuleRoot is the first directory at or above the working directory that
// holds go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
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
