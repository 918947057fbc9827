package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// errNotReady means a child did not report SERVING in time.
var errNotReady = errors.New("not ready in time")

// child is a server process under test. Its owner must call stop.
type child struct {
	name   string
	cmd    *exec.Cmd
	output *tailBuffer
	// exited is closed once the process has been waited for; waitErr is
	// set before.
	exited  chan struct{}
	waitErr error
}

// startChild starts path with args and env. The child gets its own process
// group, so that a terminal's ^C reaches only the load test, which then
// stops the child itself; and it is killed if the load test dies.
func startChild(name, path string, args, env []string) (*child, error) {
	c := &child{name: name, output: &tailBuffer{max: 8 << 10}, exited: make(chan struct{})}
	c.cmd = exec.Command(path, args...)
	c.cmd.Env = env
	c.cmd.Stdout = c.output
	c.cmd.Stderr = c.output
	c.cmd.SysProcAttr = childAttr()
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop ends the child: SIGTERM, then SIGKILL if it has not exited within
// grace. It is safe to call more than once.
func (c *child) stop(grace time.Duration) {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// failure describes why the child is not usable, with the end of its
// output.
func (c *child) failure(err error) error {
	select {
	case <-c.exited:
		err = fmt.Errorf("%w (exited: %v)", err, c.waitErr)
	default:
	}
	if out := strings.TrimSpace(c.output.String()); out != "" {
		err = fmt.Errorf("%w; its output ends:\n%s", err, out)
	}
	return fmt.Errorf("%s: %w", c.name, err)
}

// waitReady waits until the child listens on a TCP port and its gRPC
// health service reports SERVING for service "", and returns the address.
func (c *child) waitReady(ctx context.Context, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var (
		addr    string
		conn    *grpc.ClientConn
		lastErr = errors.New("no listening socket yet")
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		select {
		case <-c.exited:
			return "", c.failure(errors.New("exited before it was ready"))
		case <-ctx.Done():
			if err := ctx.Err(); !errors.Is(err, context.DeadlineExceeded) {
				return "", err // interrupted
			}
			return "", c.failure(fmt.Errorf("%w (%s): %w", errNotReady, timeout, lastErr))
		case <-tick.C:
		}
		if addr == "" {
			port, err := listenPort(c.pid())
			if err != nil {
				lastErr = err
				continue
			}
			addr = "127.0.0.1:" + strconv.Itoa(port)
			conn, err = grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return "", c.failure(fmt.Errorf("dial %s: %w", addr, err))
			}
		}
		if lastErr = checkHealth(ctx, conn); lastErr == nil {
			return addr, nil
		}
	}
}

func checkHealth(ctx context.Context, conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health status %s", s)
	}
	return nil
}

// listenPort returns the port of the (first) TCP socket that process pid
// listens on, from /proc: the socket inodes among its open files, matched
// against the kernel's TCP table.
func listenPort(pid int) (int, error) {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return 0, fmt.Errorf("list open files: %w", err)
	}
	inodes := map[string]bool{}
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	for _, table := range []string{"tcp", "tcp6"} {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		if port, ok := findListener(raw, inodes); ok {
			return port, nil
		}
	}
	return 0, errors.New("no listening TCP socket yet")
}

// findListener scans a /proc/net/tcp table for a socket in LISTEN state
// (0A) whose inode is one of inodes.
func findListener(table []byte, inodes map[string]bool) (int, bool) {
	sc := bufio.NewScanner(bytes.NewReader(table))
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		if port, err := strconv.ParseUint(hexPort, 16, 16); err == nil {
			return int(port), true
		}
	}
	return 0, false
}

// memStatus is a process's resident memory, in bytes.
type memStatus struct {
	rss, hwm uint64
}

// readMem reads VmRSS and VmHWM from /proc/pid/status.
func readMem(pid int) (memStatus, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStatus{}, fmt.Errorf("read process status: %w", err)
	}
	var m memStatus
	for line := range strings.Lines(string(raw)) {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return memStatus{}, fmt.Errorf("parse %s %q: %w", key, strings.TrimSpace(val), err)
		}
		if key == "VmRSS" {
			m.rss = kb << 10
		} else {
			m.hwm = kb << 10
		}
	}
	if m.rss == 0 {
		return memStatus{}, errors.New("no VmRSS in process status")
	}
	return m, nil
}

// memSampler polls a process's memory until stopped and keeps the largest
// figures seen.
type memSampler struct {
	cancel context.CancelFunc
	done   chan struct{}
	max    memStatus
	err    error
}

// sampleMem starts polling pid every interval. The caller must call stop.
func sampleMem(ctx context.Context, pid int, interval time.Duration) *memSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &memSampler{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			m, err := readMem(pid)
			if err != nil {
				s.err = err
				return
			}
			s.max.rss = max(s.max.rss, m.rss)
			s.max.hwm = max(s.max.hwm, m.hwm)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends sampling and returns the largest figures seen.
func (s *memSampler) stop() (memStatus, error) {
	s.cancel()
	<-s.done
	return s.max, s.err
}

// tailBuffer keeps the last max bytes written to it; children write their
// output to one so that a failure can show it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// childEnv is the load test's environment for a child: KEYWARD_* variables
// are dropped so that the caller's settings cannot change the run, and the
// provider key is a placeholder.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KEYWARD_") || strings.HasPrefix(kv, providerEnv+"=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, providerEnv+"="+providerKey)
}
