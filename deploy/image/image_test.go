package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keyward/keyward/envoy/envoytest"
	"github.com/keyward/keyward/internal/fakeprovider"
	"github.com/keyward/keyward/internal/freeport"
)

const (
	testVersion  = "v0.0.0-imagetest"
	testRevision = "0123456789abcdef0123456789abcdef01234567"
	nonroot      = 65532

	// keyEnv names the variable the image's keyward reads the provider
	// key from; providerKey is its value, grepped for in the logs.
	keyEnv      = "OPENAI_KEY"
	providerKey = "sk-image-test-9d3e71c0"
)

// requireEnv makes a missing prerequisite (here: root) a failure.
const requireEnv = "KEYWARD_REQUIRE_E2E"

// TestImage builds keyward as the Dockerfile does, assembles the image the
// Dockerfile describes into an OCI layout, reads it back and checks what
// it holds, then runs keyward from its file system as UID 65532.
func TestImage(t *testing.T) {
	d, err := parseDockerfile("../../Dockerfile", map[string]string{
		"VERSION": testVersion, "REVISION": testRevision,
		"TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkDockerfile(t, d)

	bin := filepath.Join(t.TempDir(), "keyward")
	// go build -o BIN, then the Dockerfile's flags and package.
	build := exec.Command("go", append([]string{d.buildArgs[0], "-o", bin}, d.buildArgs[1:]...)...)
	build.Dir = "../.."
	build.Env = append(os.Environ(), d.buildEnv...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(build.Args[1:], " "), err, out)
	}
	checkStatic(t, bin)

	img := readBack(t, writeLayout(t, assemble(t, d, bin)))
	checkConfig(t, img, d)
	root := extract(t, img)

	t.Run("runs as 65532 without a shell", func(t *testing.T) {
		if os.Geteuid() != 0 {
			reason := "running keyward from the image's file system as UID 65532 needs chroot and setuid, so root"
			if os.Getenv(requireEnv) == "1" {
				t.Fatalf("%s (%s=1)", reason, requireEnv)
			}
			t.Skip(reason)
		}
		runImage(t, d, root)
	})
}

// checkDockerfile checks the Dockerfile says what the image must be.
func checkDockerfile(t *testing.T, d *dockerfile) {
	t.Helper()
	if !slices.Contains(d.buildEnv, "CGO_ENABLED=0") {
		t.Errorf("go build without CGO_ENABLED=0: %q", d.buildEnv)
	}
	ldflags := ""
	for i, a := range d.buildArgs {
		if a == "-ldflags" && i+1 < len(d.buildArgs) {
			ldflags = d.buildArgs[i+1]
		}
	}
	for _, want := range []string{"-trimpath"} {
		if !slices.Contains(d.buildArgs, want) {
			t.Errorf("go build without %s: %q", want, d.buildArgs)
		}
	}
	for _, want := range []string{"-s", "-w", "main.version=" + testVersion, "main.commit=" + testRevision} {
		if !slices.Contains(strings.Fields(ldflags), want) {
			t.Errorf("-ldflags %q lacks %s", ldflags, want)
		}
	}
	if d.user != "65532:65532" {
		t.Errorf("USER %q, want 65532:65532", d.user)
	}
}

// checkStatic checks the binary has no interpreter and no dynamic section,
// so that it runs on an image with no libc, and that -s stripped it.
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("keyward has a %v program header: not statically linked", p.Type)
		}
	}
	for _, name := range []string{".interp", ".dynamic", ".symtab"} {
		if f.Section(name) != nil {
			t.Errorf("keyward has a %s section", name)
		}
	}
}

// assemble makes the image: one layer with the binary at the COPY
// destination, the Dockerfile's settings in the config.
func assemble(t *testing.T, d *dockerfile, bin string) v1.Image {
	t.Helper()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: strings.TrimPrefix(d.binaryDest, "/"), Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	ports := map[string]struct{}{}
	for _, p := range d.ports {
		ports[p] = struct{}{}
	}
	img, err = mutate.Config(img, v1.Config{
		User: d.user, Labels: d.labels, ExposedPorts: ports, Env: d.env,
		Entrypoint: d.entrypoint, Cmd: d.cmd, WorkingDir: d.workdir,
	})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = runtime.GOOS, runtime.GOARCH
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// writeLayout writes img as an OCI image layout and returns its directory.
func writeLayout(t *testing.T, img v1.Image) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	return dir
}

// readBack reads the one image of the OCI layout at dir.
func readBack(t *testing.T, dir string) v1.Image {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("layout holds %d manifests, want 1", len(m.Manifests))
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// checkConfig checks the image's configuration as a runtime reads it.
func checkConfig(t *testing.T, img v1.Image, d *dockerfile) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", c.User)
	}
	for _, p := range []string{"9191/tcp", "9292/tcp", "9464/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed: %v", p, c.ExposedPorts)
		}
	}
	if !reflect.DeepEqual(c.Entrypoint, []string{"/keyward"}) || !reflect.DeepEqual(c.Cmd, []string{"serve"}) {
		t.Errorf("entrypoint %q cmd %q, want [/keyward] [serve]", c.Entrypoint, c.Cmd)
	}
	want := map[string]string{"version": testVersion, "revision": testRevision}
	for _, k := range []string{"source", "version", "revision", "licenses", "title", "description"} {
		v := c.Labels["org.opencontainers.image."+k]
		if v == "" || want[k] != "" && v != want[k] {
			t.Errorf("label org.opencontainers.image.%s = %q", k, v)
		}
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Errorf("%d layers, want 1", len(layers))
	}
}

// extract unpacks the image's file system into a new directory (root-owned,
// read-only to anyone else) and checks it holds the binary and no shell.
func extract(t *testing.T, img v1.Image) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := path.Clean("/" + h.Name)
		names = append(names, name)
		if base := path.Base(name); base == "sh" || base == "bash" || base == "busybox" {
			t.Errorf("the image holds a shell: %s", name)
		}
		dst := filepath.Join(root, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(dst, h.FileInfo().Mode().Perm())
		case tar.TypeReg:
			err = writeFile(dst, tr, h.FileInfo().Mode().Perm())
		default:
			t.Errorf("%s: unexpected entry type %c", name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(names, []string{"/keyward"}) {
		t.Errorf("the image holds %q, want only /keyward", names)
	}
	return root
}

func writeFile(dst string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runImage runs keyward in root as the image would: chrooted, as the
// image's user, with the image's entrypoint, command and environment, with
// no shell to run anything else. Like a production pod, the configuration
// is mounted read-only (root-owned, group 65532) and the file store is on
// the one writable directory, owned by 65532.
func runImage(t *testing.T, d *dockerfile, root string) {
	listen := freeAddr(t)
	cfgPath := configPath(t, d)
	provider := fakeprovider.New()
	upstream := httptest.NewServer(provider)
	defer upstream.Close()
	envoyListen, envoyAdmin := envoytest.FreeAddr(t), envoytest.FreeAddr(t)
	config := fmt.Sprintf(`listen: %s
store:
  file: /var/lib/keyward/keyward-store.yaml
routes:
  - {provider: openai, path_prefix: /openai/, upstream: %s}
envoy:
  listen: %s
  admin: %s
`, listen, upstream.URL, envoyListen, envoyAdmin)
	mustWrite(t, filepath.Join(root, cfgPath), config, 0o640, 0, nonroot)
	data := filepath.Join(root, "var/lib/keyward")
	if err := os.MkdirAll(filepath.Dir(data), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, nonroot, nonroot); err != nil {
		t.Fatal(err)
	}

	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, err := inImage(d, root, args...).CombinedOutput()
		want := fmt.Sprintf("keyward %s (commit %s, ", testVersion, testRevision)
		if err != nil || !strings.HasPrefix(string(out), want) {
			t.Errorf("keyward %s: %v, printed %q, want it to start %q", args[0], err, out, want)
		}
	}
	// Record commands write the store as 65532, reading the config.
	run := func(args ...string) string {
		t.Helper()
		cmd := inImage(d, root, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("keyward %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return string(out)
	}
	run("provider", "set", "openai", "-kind", "openai", "-key", "main="+keyEnv)
	run("group", "add", "eng")
	run("user", "add", "alice", "-groups", "eng")
	token := strings.TrimSpace(run("token", "create", "-user", "alice", "-group", "eng", "-name", "image"))
	if fi, err := os.Stat(filepath.Join(data, "keyward-store.yaml")); err != nil {
		t.Fatalf("the store was not written: %v", err)
	} else if st := fi.Sys().(*syscall.Stat_t); st.Uid != nonroot {
		t.Errorf("the store is owned by UID %d, want %d", st.Uid, nonroot)
	}

	var logs lockedBuffer
	serve := inImage(d, root, d.cmd...)
	serve.Env = append(serve.Env, keyEnv+"="+providerKey)
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = serve.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("keyward serve:\n%s", logs.String())
		}
	}()

	if err := waitServing(listen, exited); err != nil {
		t.Fatal(err)
	}
	if uid := processUID(t, serve.Process.Pid); uid != fmt.Sprint(nonroot) {
		t.Errorf("keyward serve runs as UIDs %s, want all %d", uid, nonroot)
	}
	// The e2e harness's pieces: real Envoy on the image's own envoy-config,
	// the fake provider behind it, and the official OpenAI SDK as client.
	envoytest.Start(t, []byte(run("envoy-config")), envoyAdmin)
	base := "http://" + envoyListen
	if r := sdkChat(t, base, token); !r.OK || r.Text == "" {
		t.Errorf("the OpenAI SDK through Envoy and the image's keyward: %+v, want a reply", r)
	} else if got, ok := provider.Last(); !ok || got.Header.Get("Authorization") != "Bearer "+providerKey {
		t.Errorf("the provider did not get the provider key from the image's keyward")
	} else if strings.Contains(fmt.Sprint(got.Header), token) {
		t.Errorf("the keyward token reached the provider")
	}
	if r := sdkChat(t, base, token[:len(token)-4]+"AAAA"); r.Status != 401 {
		t.Errorf("a bad token through the image's keyward: %+v, want 401", r)
	}
	if strings.Contains(logs.String(), providerKey) || strings.Contains(logs.String(), token) {
		t.Error("keyward's log holds the provider key or the token")
	}
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("keyward serve after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("keyward serve did not stop within 30s of SIGTERM")
	}
}

// inImage is the image's entrypoint with args, chrooted into root as the
// image's user, with only the image's environment.
func inImage(d *dockerfile, root string, args ...string) *exec.Cmd {
	cmd := exec.Command(d.entrypoint[0], append(slices.Clone(d.entrypoint[1:]), args...)...)
	cmd.Env = slices.Clone(d.env)
	cmd.Dir = "/"
	if d.workdir != "" {
		cmd.Dir = d.workdir
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: nonroot, Gid: nonroot, Groups: []uint32{}},
	}
	return cmd
}

// configPath is where the image's environment says the configuration is.
func configPath(t *testing.T, d *dockerfile) string {
	for _, kv := range d.env {
		if v, ok := strings.CutPrefix(kv, "KEYWARD_CONFIG="); ok && path.IsAbs(v) {
			return v
		}
	}
	t.Fatalf("the Dockerfile sets no absolute KEYWARD_CONFIG: %q", d.env)
	return ""
}

// waitServing asks grpc.health.v1 on addr for the server and the
// ext_authz service until both are SERVING.
func waitServing(addr string, exited <-chan error) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("keyward serve exited: %v", err)
		default:
		}
		last = nil
		for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			cancel()
			if err == nil && r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				err = fmt.Errorf("health of %q: %v", svc, r.GetStatus())
			}
			if err != nil {
				last = err
				break
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not SERVING within 30s: %v", last)
}

func processUID(t *testing.T, pid int) string {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "Uid:"); ok {
			return strings.Join(slices.Compact(strings.Fields(v)), " ") // real, effective, saved, file system
		}
	}
	t.Fatal("no Uid line in /proc status")
	return ""
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr(1)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func mustWrite(t *testing.T, name, data string, mode os.FileMode, uid, gid int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(name, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
