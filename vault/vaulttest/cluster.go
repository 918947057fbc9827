package vaulttest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// ClusterTimeout is a hang guard for each step of a cluster's life: its
// start, a leader election, a node's restart. Far above what a busy
// machine needs (a failover takes seconds), it is never a measure of
// speed.
const ClusterTimeout = 2 * time.Minute

// Cluster is a real OpenBao cluster on integrated storage (Raft): one
// `bao server` process per node on loopback ports, initialized with one
// Shamir unseal key, every node a voter, and a KV v2 mount. As OpenBao
// ships them, its standbys answer reads themselves, from their own copy of
// the data. Start it with StartCluster; it is stopped when the test ends,
// and its logs are printed if the test failed.
type Cluster struct {
	// RootToken is the cluster's initial root token.
	RootToken string
	// Nodes are the nodes, in the order they were started; the first one
	// was initialized and was the first leader.
	Nodes []*Node

	bin       string
	mount     string
	unsealKey string
}

// Node is one node of a Cluster.
type Node struct {
	// Name is the node's Raft node id: n1, n2, ...
	Name string
	// Addr is the node's API address, http://127.0.0.1:PORT.
	Addr string

	config  string
	logPath string

	mu   sync.Mutex
	proc *process // nil while killed
}

// StartCluster starts an OpenBao cluster of n nodes, initializes it on the
// first node, joins and unseals the others, waits until every node is a
// voter, and enables a KV v2 mount (unless mount is "") that every node
// serves. Raft's timing is tuned for tests (performance_multiplier 1), so
// that a failover takes seconds rather than tens of them.
func StartCluster(t testing.TB, n int, mount string) *Cluster {
	t.Helper()
	c := &Cluster{bin: Binary(t), mount: strings.Trim(mount, "/")}
	dir := t.TempDir()
	// An API port and a cluster port per node.
	ports, err := stablePorts(2 * n)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	apiPorts, clusterPorts := ports[:n], ports[n:]
	for i, hostport := range apiPorts {
		node := &Node{Name: fmt.Sprintf("n%d", i+1), Addr: "http://" + hostport}
		node.config = filepath.Join(dir, node.Name+".hcl")
		node.logPath = filepath.Join(dir, node.Name+".log")
		if err := os.WriteFile(node.config, []byte(nodeConfig(node.Name, filepath.Join(dir, node.Name), apiPorts, clusterPorts[i], i)), 0o600); err != nil {
			t.Fatalf("vaulttest: %v", err)
		}
		if err := os.MkdirAll(filepath.Join(dir, node.Name), 0o700); err != nil {
			t.Fatalf("vaulttest: %v", err)
		}
		c.Nodes = append(c.Nodes, node)
	}
	t.Cleanup(func() {
		for _, node := range c.Nodes {
			node.stop()
		}
		if t.Failed() {
			for _, node := range c.Nodes {
				t.Logf("vaulttest: bao log of %s (%s):\n%s", node.Name, node.logPath, node.Log())
			}
		}
	})
	for _, node := range c.Nodes {
		if err := node.start(c.bin); err != nil {
			t.Fatalf("vaulttest: %s: %v", node.Name, err)
		}
	}
	c.initialize(t)
	c.setup(t)
	return c
}

// nodeConfig is node i's server configuration: Raft storage in dir, the
// API on ports[i] and cluster traffic on clusterPort, and retry_join to
// every other node.
func nodeConfig(name, dir string, ports []string, clusterPort string, i int) string {
	var join strings.Builder
	for j, hostport := range ports {
		if j != i {
			fmt.Fprintf(&join, "  retry_join {\n    leader_api_addr = \"http://%s\"\n  }\n", hostport)
		}
	}
	host, cport, _ := strings.Cut(clusterPort, ":")
	return fmt.Sprintf(`ui = false
api_addr = "http://%[1]s"
cluster_addr = "https://%[2]s:%[3]s"
storage "raft" {
  path = %[4]q
  node_id = %[5]q
  performance_multiplier = 1
%[6]s}
listener "tcp" {
  address = "%[1]s"
  cluster_address = "%[2]s:%[3]s"
  tls_disable = true
}
`, ports[i], host, cport, dir, name, join.String())
}

// start runs the node's server and waits until its API answers (any
// sys/health status: it may be uninitialized or sealed).
func (n *Node) start(bin string) error {
	p, err := launch(bin, n.logPath, "bao node "+n.Name+" on "+n.Addr, "server", "-config="+n.config)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), ClusterTimeout)
	defer cancel()
	if err := waitHealth(ctx, p, n.Addr, func(int) bool { return true }); err != nil {
		n.stop()
		return err
	}
	return nil
}

// stop stops the node if it runs (SIGTERM, then SIGKILL).
func (n *Node) stop() {
	n.mu.Lock()
	p := n.proc
	n.proc = nil
	n.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

// Kill kills the node with SIGKILL, as a crash would, and returns once it
// is gone. Its data stays: Restart brings it back.
func (n *Node) Kill() {
	n.mu.Lock()
	p := n.proc
	n.proc = nil
	n.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL) // fails only if already gone
	<-p.exited
}

// Log returns what the node has logged so far, across restarts.
func (n *Node) Log() string {
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read bao log: %v)", err)
	}
	return strings.TrimRight(string(b), "\n")
}

// Client returns an api client for the node (default retries and timeout)
// with token ("" for none).
func (n *Node) Client(t testing.TB, token string) *api.Client {
	t.Helper()
	return newClient(t, n.Addr, token)
}

// Addrs returns every node's API address, in node order.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// initialize inits the first node, unseals it, lets autopilot promote new
// nodes within a second, then joins and unseals the others.
func (c *Cluster) initialize(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ClusterTimeout)
	defer cancel()
	first := c.Nodes[0].Client(t, "")
	init, err := first.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		t.Fatalf("vaulttest: init %s: %v", c.Nodes[0].Name, err)
	}
	c.RootToken, c.unsealKey = init.RootToken, init.KeysB64[0]
	c.unseal(t, c.Nodes[0])
	c.waitActive(t, c.Nodes[0])
	// Autopilot makes a new node a voter once it has been healthy for
	// server_stabilization_time, 10s by default: a failover before that
	// would find no quorum.
	_, err = c.Nodes[0].Client(t, c.RootToken).Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration",
		map[string]any{"server_stabilization_time": "1s"})
	if err != nil {
		t.Fatalf("vaulttest: autopilot configuration: %v", err)
	}
	for _, node := range c.Nodes[1:] {
		c.unseal(t, node)
	}
	c.waitVoters(t)
}

// unseal submits the unseal key to node until it is unsealed. A node that
// has yet to join (retry_join) needs the key for that too, so the key is
// sent again until the node reports itself unsealed.
func (c *Cluster) unseal(t testing.TB, node *Node) {
	t.Helper()
	client := node.Client(t, "")
	client.SetMaxRetries(0)
	c.eventually(t, node.Name+" unsealed", func(ctx context.Context) error {
		status, err := client.Sys().UnsealWithContext(ctx, c.unsealKey)
		if err != nil {
			return err
		}
		if status.Sealed {
			return errors.New("still sealed")
		}
		return nil
	})
}

// waitActive waits until node reports itself the active node.
func (c *Cluster) waitActive(t testing.TB, node *Node) {
	t.Helper()
	c.eventually(t, node.Name+" active", func(ctx context.Context) error {
		return node.isActive(ctx)
	})
}

// waitVoters waits until the Raft configuration lists every node as a
// voter.
func (c *Cluster) waitVoters(t testing.TB) {
	t.Helper()
	c.eventually(t, "every node a voter", func(ctx context.Context) error {
		leader, err := c.activeNode(ctx)
		if err != nil {
			return err
		}
		sec, err := leader.Client(t, c.RootToken).Logical().ReadWithContext(ctx, "sys/storage/raft/configuration")
		if err != nil || sec == nil {
			return fmt.Errorf("raft configuration: %v", err)
		}
		cfg, _ := sec.Data["config"].(map[string]any)
		servers, _ := cfg["servers"].([]any)
		voters := 0
		for _, s := range servers {
			if m, _ := s.(map[string]any); m["voter"] == true {
				voters++
			}
		}
		if voters != len(c.Nodes) {
			return fmt.Errorf("%d voters of %d nodes", voters, len(c.Nodes))
		}
		return nil
	})
}

// setup enables the KV v2 mount and waits until every node serves it
// (a standby answers "upgrading" for a moment after the mount appears).
func (c *Cluster) setup(t testing.TB) {
	t.Helper()
	if c.mount == "" {
		return
	}
	c.eventually(t, "the KV mount enabled", func(ctx context.Context) error {
		leader, err := c.activeNode(ctx)
		if err != nil {
			return err
		}
		client := leader.Client(t, c.RootToken)
		mounts, err := client.Sys().ListMountsWithContext(ctx)
		if err != nil {
			return err
		}
		if _, ok := mounts[c.mount+"/"]; ok {
			return nil
		}
		return client.Sys().MountWithContext(ctx, c.mount, &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}})
	})
	for _, node := range c.Nodes {
		client := node.Client(t, c.RootToken)
		c.eventually(t, "the KV mount on "+node.Name, func(ctx context.Context) error {
			_, err := client.Logical().ReadWithContext(ctx, c.mount+"/config")
			return err
		})
	}
}

// Active waits until one of the running nodes reports itself active, and
// returns it: the leader, after an election if one is under way.
func (c *Cluster) Active(t testing.TB) *Node {
	t.Helper()
	var leader *Node
	c.eventually(t, "an active node", func(ctx context.Context) error {
		var err error
		leader, err = c.activeNode(ctx)
		return err
	})
	return leader
}

// activeNode returns the running node that reports itself active.
func (c *Cluster) activeNode(ctx context.Context) (*Node, error) {
	var why []string
	for _, node := range c.Nodes {
		if !node.running() {
			continue
		}
		err := node.isActive(ctx)
		if err == nil {
			return node, nil
		}
		why = append(why, fmt.Sprintf("%s: %v", node.Name, err))
	}
	return nil, fmt.Errorf("no active node (%s)", strings.Join(why, "; "))
}

func (n *Node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc != nil
}

// isActive asks the node's sys/health, which answers 200 on the active
// node only.
func (n *Node) isActive(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.Addr+"/v1/sys/health", nil)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("sys/health %d", resp.StatusCode)
	}
	return nil
}

// WritePolicy writes the HCL policy name through the active node.
func (c *Cluster) WritePolicy(t testing.TB, name, hcl string) {
	t.Helper()
	writePolicy(t, c.Active(t).Client(t, c.RootToken), name, hcl)
}

// Token creates a renewable token with policies (plus "default") and ttl
// (0: the mount's default) through the active node.
func (c *Cluster) Token(t testing.TB, policies []string, ttl time.Duration) string {
	t.Helper()
	return createToken(t, c.Active(t).Client(t, c.RootToken), tokenRequest(policies, ttl))
}

// Restart starts a killed node again on its address and data, unseals it
// and waits until it is back in the cluster (unsealed, a standby or the
// active node).
func (c *Cluster) Restart(t testing.TB, node *Node) {
	t.Helper()
	node.Kill() // if it still runs
	// The killed process's sockets may linger for a moment.
	c.eventually(t, node.Name+" started again", func(context.Context) error { return node.start(c.bin) })
	c.unseal(t, node)
}

// eventually runs step until it succeeds, at most ClusterTimeout in all,
// each attempt bounded by opTimeout.
func (c *Cluster) eventually(t testing.TB, what string, step func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(ClusterTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		err := step(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("vaulttest: cluster: no %s within %v: %v", what, ClusterTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stablePorts returns n distinct 127.0.0.1:PORT addresses, each free a
// moment ago, taken below the kernel's ephemeral port range. A node binds
// its cluster port only once it has joined and been unsealed, seconds
// after it starts; a port from the ephemeral range could meanwhile become
// the source port of one of the many connections a test opens (it did:
// "bind: address already in use", and the node never caught up).
func stablePorts(n int) ([]string, error) {
	lo, hi := 20000, 32767
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if first, err := strconv.Atoi(f[0]); err == nil && first > 11000 {
				lo, hi = 10000, first-1
			}
		}
	}
	seen := map[int]bool{}
	var out []string
	for range 1000 {
		if len(out) == n {
			return out, nil
		}
		port := lo + rand.IntN(hi-lo+1)
		if seen[port] {
			continue
		}
		seen[port] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		out = append(out, l.Addr().String())
	}
	if len(out) == n {
		return out, nil
	}
	return nil, fmt.Errorf("find %d free ports in %d-%d: found %d", n, lo, hi, len(out))
}
