package loadrig

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

// ErrNotReady means a child did not report SERVING in time.
var ErrNotReady = errors.New("not ready in time")

// Child is a server process under test. Its owner must call Stop.
type Child struct {
	name   string
	cmd    *exec.Cmd
	output *tailBuffer
	// exited is closed once the process has been waited for; waitErr is
	// set before.
	exited  chan struct{}
	waitErr error
}

// StartChild starts path with args and env. The child gets its own process
// group, so that a terminal's ^C reaches only the test program, which then
// stops the child itself; and it is killed if the test program dies.
func StartChild(name, path string, args, env []string) (*Child, error) {
	c := &Child{name: name, output: &tailBuffer{max: 8 << 10}, exited: make(chan struct{})}
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

// PID is the child's process id.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// Stop ends the child: SIGTERM, then SIGKILL if it has not exited within
// grace. It is safe to call more than once.
func (c *Child) Stop(grace time.Duration) {
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

// Failure describes why the child is not usable, with the end of its
// output.
func (c *Child) Failure(err error) error {
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

// Exited is closed once the child's process has ended.
func (c *Child) Exited() <-chan struct{} { return c.exited }

// WaitReady waits until the child listens on a TCP port and its gRPC
// health service reports SERVING for service (the whole server for ""),
// and returns the address.
func (c *Child) WaitReady(ctx context.Context, timeout time.Duration, service string) (string, error) {
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
			return "", c.Failure(errors.New("exited before it was ready"))
		case <-ctx.Done():
			if err := ctx.Err(); !errors.Is(err, context.DeadlineExceeded) {
				return "", err // interrupted
			}
			return "", c.Failure(fmt.Errorf("%w (%s): %w", ErrNotReady, timeout, lastErr))
		case <-tick.C:
		}
		if addr == "" {
			port, err := listenPort(c.PID())
			if err != nil {
				lastErr = err
				continue
			}
			addr = "127.0.0.1:" + strconv.Itoa(port)
			conn, err = grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return "", c.Failure(fmt.Errorf("dial %s: %w", addr, err))
			}
		}
		if lastErr = checkHealth(ctx, conn, service); lastErr == nil {
			return addr, nil
		}
	}
}

func checkHealth(ctx context.Context, conn *grpc.ClientConn, service string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
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

// MemStatus is a process's resident memory, in bytes.
type MemStatus struct {
	RSS, HWM uint64
}

// ReadMem reads VmRSS and VmHWM from /proc/pid/status.
func ReadMem(pid int) (MemStatus, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return MemStatus{}, fmt.Errorf("read process status: %w", err)
	}
	var m MemStatus
	for line := range strings.Lines(string(raw)) {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return MemStatus{}, fmt.Errorf("parse %s %q: %w", key, strings.TrimSpace(val), err)
		}
		if key == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.HWM = kb << 10
		}
	}
	if m.RSS == 0 {
		return MemStatus{}, errors.New("no VmRSS in process status")
	}
	return m, nil
}

// ReadCPU reads the CPU time process pid has used, user and system, from
// /proc/pid/stat.
func ReadCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read process stat: %w", err)
	}
	return parseStatCPU(string(raw))
}

// clockTicks is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which is 100 on every Linux the kernel ABI allows user space to see.
const clockTicks = 100

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/PID/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from its last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("process stat: no command name")
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, fmt.Errorf("process stat: %d fields after the name, want at least 13", len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("process stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// MemSampler polls a process's memory until stopped and keeps the largest
// figures seen.
type MemSampler struct {
	cancel context.CancelFunc
	done   chan struct{}
	max    MemStatus
	err    error
}

// SampleMem starts polling pid every interval. The caller must call Stop.
func SampleMem(ctx context.Context, pid int, interval time.Duration) *MemSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &MemSampler{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			m, err := ReadMem(pid)
			if err != nil {
				s.err = err
				return
			}
			s.max.RSS = max(s.max.RSS, m.RSS)
			s.max.HWM = max(s.max.HWM, m.HWM)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the largest figures seen.
func (s *MemSampler) Stop() (MemStatus, error) {
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

// ChildEnv is the load test's environment for a child: KEYWARD_* variables
// are dropped so that the caller's settings cannot change the run, and the
// provider key is a placeholder.
func ChildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KEYWARD_") || strings.HasPrefix(kv, ProviderEnv+"=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, ProviderEnv+"="+ProviderKey)
}
