package testbin_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/testbin"
)

// fakeTB records how Find ended the test; Fatal and Skip stop the calling
// goroutine like the real ones do.
type fakeTB struct {
	testing.TB
	fatal, skipped bool
	msg            string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatal(args ...any) {
	f.fatal, f.msg = true, strings.TrimSpace(fmt.Sprint(args...))
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) { f.Fatal(fmt.Sprintf(format, args...)) }
func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, strings.TrimSpace(fmt.Sprint(args...))
	runtime.Goexit()
}

// egctl runs Egctl against fakeTB on its own goroutine, as Goexit needs.
func egctl() (string, *fakeTB) { return run(testbin.Egctl) }

// run runs find against fakeTB on its own goroutine, as Goexit needs.
func run(find func(testing.TB) string) (string, *fakeTB) {
	f := &fakeTB{}
	var path string
	done := make(chan struct{})
	go func() {
		defer close(done)
		path = find(f)
	}()
	<-done
	return path, f
}

// TestPython: $KEYWARD_PYTHON first (a wrong one is a mistake, never a
// skip), then the repository's .tools/venv from a module below it, never a
// python on PATH.
func TestPython(t *testing.T) {
	root := t.TempDir()
	sub := filepath.Join(root, "deploy", "image")
	venv := filepath.Join(root, ".tools", "venv", "bin")
	for _, dir := range []string{sub, venv} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(sub)
	t.Setenv("PATH", venv) // a python on PATH does not count
	t.Setenv("CI", "")
	t.Setenv(testbin.EnvRequire, "1")
	t.Setenv(testbin.EnvPython, "")
	if path, f := run(testbin.Python); path != "" || !f.fatal || !strings.Contains(f.msg, "scripts/setup.sh") {
		t.Errorf("no venv: %q fatal=%v (%q), want a failure saying how to install", path, f.fatal, f.msg)
	}
	python := filepath.Join(venv, "python")
	if err := os.WriteFile(python, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if path, f := run(testbin.Python); path != python || f.fatal || f.skipped {
		t.Errorf("venv at the repository root: %q (%+v), want %q", path, f, python)
	}
	t.Setenv(testbin.EnvPython, filepath.Join(root, "nothing"))
	if _, f := run(testbin.Python); !f.fatal {
		t.Errorf("%s pointing at nothing: %+v, want a failure", testbin.EnvPython, f)
	}
}

// TestEgctl checks where Egctl looks: the module's .tools/bin (where
// scripts/setup.sh installs Go programs) after .tools/venv/bin, and that a
// missing egctl fails the test when the end-to-end tests are required.
func TestEgctl(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	t.Setenv("PATH", t.TempDir())
	t.Setenv(testbin.EnvEgctl, "")
	install := func(dir string) string {
		t.Helper()
		dir = filepath.Join(root, dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "egctl")
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}

	tests := []struct {
		name                string
		install             string // directory under the module root to put egctl in, in order
		env                 map[string]string
		wantPath            string // relative to the module root
		wantFatal, wantSkip bool
	}{
		{name: "absent skips", wantSkip: true},
		{name: "absent, required", env: map[string]string{testbin.EnvRequire: "1"}, wantFatal: true},
		{name: "absent in CI", env: map[string]string{"CI": "true"}, wantFatal: true},
		{name: "module .tools/bin", install: ".tools/bin", wantPath: ".tools/bin/egctl"},
		{name: "venv first", install: ".tools/venv/bin", wantPath: ".tools/venv/bin/egctl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{testbin.EnvRequire, "CI"} {
				t.Setenv(k, tc.env[k])
			}
			if tc.install != "" {
				install(tc.install)
			}
			want := ""
			if tc.wantPath != "" {
				want = filepath.Join(root, tc.wantPath)
			}
			path, f := egctl()
			if path != want || f.fatal != tc.wantFatal || f.skipped != tc.wantSkip {
				t.Errorf("Egctl() = %q fatal=%v skip=%v, want %q fatal=%v skip=%v (msg %q)",
					path, f.fatal, f.skipped, want, tc.wantFatal, tc.wantSkip, f.msg)
			}
			if path == "" && !strings.Contains(f.msg, "go install github.com/envoyproxy/gateway/cmd/egctl@"+testbin.EgctlVersion) {
				t.Errorf("message %q does not say how to install egctl", f.msg)
			}
		})
	}
}
