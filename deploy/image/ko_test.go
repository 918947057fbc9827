package image

import (
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// koConfig is the part of .ko.yaml this test reads.
type koConfig struct {
	DefaultBaseImage string `yaml:"defaultBaseImage"`
	Builds           []struct {
		ID      string   `yaml:"id"`
		Main    string   `yaml:"main"`
		Env     []string `yaml:"env"`
		Flags   []string `yaml:"flags"`
		Ldflags []string `yaml:"ldflags"`
	} `yaml:"builds"`
}

// TestKoMatchesDockerfile checks that ko build ./cmd/keyward builds the
// Dockerfile's binary on the Dockerfile's base image: the same environment,
// flags and -ldflags (with VERSION and REVISION taken from the
// environment), the same package.
func TestKoMatchesDockerfile(t *testing.T) {
	d, err := parseDockerfile("../../Dockerfile", map[string]string{
		"VERSION": testVersion, "REVISION": testRevision,
		"TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH,
	})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("../../.ko.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ko koConfig
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&ko); err != nil {
		t.Fatalf(".ko.yaml: %v", err)
	}
	if ko.DefaultBaseImage != d.base {
		t.Errorf(".ko.yaml base image %q, Dockerfile's %q", ko.DefaultBaseImage, d.base)
	}
	if len(ko.Builds) != 1 {
		t.Fatalf(".ko.yaml has %d builds, want 1", len(ko.Builds))
	}
	b := ko.Builds[0]
	// The Dockerfile's go build: build FLAGS... -ldflags L PACKAGE.
	args := d.buildArgs[1:]
	pkg, args := args[len(args)-1], args[:len(args)-1]
	var flags []string
	var ldflags string
	for i := 0; i < len(args); i++ {
		if args[i] == "-ldflags" && i+1 < len(args) {
			ldflags = args[i+1]
			i++
			continue
		}
		flags = append(flags, args[i])
	}
	if b.Main != pkg {
		t.Errorf(".ko.yaml main %q, Dockerfile builds %q", b.Main, pkg)
	}
	if !slices.Equal(b.Flags, flags) {
		t.Errorf(".ko.yaml flags %q, Dockerfile's %q", b.Flags, flags)
	}
	koLd := strings.NewReplacer("{{.Env.VERSION}}", testVersion, "{{.Env.REVISION}}", testRevision).Replace(strings.Join(b.Ldflags, " "))
	if !slices.Equal(strings.Fields(koLd), strings.Fields(ldflags)) {
		t.Errorf(".ko.yaml ldflags %q, Dockerfile's %q", koLd, ldflags)
	}
	// GOOS and GOARCH are the Dockerfile's cross-compiling; ko sets its own.
	var env []string
	for _, kv := range d.buildEnv {
		if !strings.HasPrefix(kv, "GOOS=") && !strings.HasPrefix(kv, "GOARCH=") {
			env = append(env, kv)
		}
	}
	if !slices.Equal(b.Env, env) {
		t.Errorf(".ko.yaml env %q, Dockerfile's %q", b.Env, env)
	}
}
