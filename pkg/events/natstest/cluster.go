package natstest

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is an embedded JetStream cluster on loopback: every node has its
// own client port, route port and store directory, all fixed for the life
// of the test so that a stopped node restarts at the same addresses with
// the same data.
type Cluster struct {
	t       testing.TB
	name    string
	ports   []int // client ports
	routes  []int // cluster (route) ports
	stores  []string
	mu      sync.Mutex
	servers []*server.Server // nil while a node is stopped
}

// clusterReady bounds how long a cluster (or a restarted node) may take to
// elect a JetStream meta leader and catch up.
const clusterReady = 30 * time.Second

// StartCluster runs an n-node JetStream cluster (n >= 1; 3 for R3 streams)
// and waits until every node is ready for connections and the JetStream
// meta group has a leader that every node follows. It is shut down when the
// test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest.StartCluster: %d nodes: want at least 1", n)
	}
	ports := freePorts(t, 2*n)
	c := &Cluster{
		t:       t,
		name:    "natstest",
		ports:   ports[:n],
		routes:  ports[n:],
		servers: make([]*server.Server, n),
	}
	for range n {
		c.stores = append(c.stores, t.TempDir())
	}
	t.Cleanup(c.shutdown)
	var (
		wg   sync.WaitGroup
		errs = make([]error, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.servers[i], errs[i] = c.start(i)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start cluster node %d: %v", i, err)
		}
	}
	c.WaitReady()
	return c
}

// freePorts reserves n distinct loopback ports by listening on them at once,
// then frees them for the nodes to bind.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	out := make([]int, n)
	lns := make([]net.Listener, n)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("reserve a port: %v", err)
		}
		lns[i] = ln
		out[i] = ln.Addr().(*net.TCPAddr).Port
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return out
}

// options builds node i's configuration; every start uses fresh options.
func (c *Cluster) options(i int) *server.Options {
	routes := make([]string, len(c.routes))
	for j, p := range c.routes {
		routes[j] = "nats-route://127.0.0.1:" + strconv.Itoa(p)
	}
	return &server.Options{
		ServerName:         fmt.Sprintf("n%d", i),
		Host:               "127.0.0.1",
		Port:               c.ports[i],
		JetStream:          true,
		StoreDir:           c.stores[i],
		JetStreamMaxMemory: maxResources,
		JetStreamMaxStore:  maxResources,
		NoLog:              true,
		NoSigs:             true,
		Cluster: server.ClusterOpts{
			Name: c.name,
			Host: "127.0.0.1",
			Port: c.routes[i],
		},
		Routes: server.RoutesFromStr(strings.Join(routes, ",")),
	}
}

func (c *Cluster) start(i int) (*server.Server, error) {
	ns, err := server.NewServer(c.options(i))
	if err != nil {
		return nil, err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errNotReady
	}
	return ns, nil
}

// Size is the number of nodes, running or stopped.
func (c *Cluster) Size() int { return len(c.ports) }

// URL is node i's client URL (valid while it is stopped, too).
func (c *Cluster) URL(i int) string { return "nats://127.0.0.1:" + strconv.Itoa(c.ports[i]) }

// URLs lists every node's client URL, comma-separated, for nats.Connect.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.ports))
	for i := range c.ports {
		urls[i] = c.URL(i)
	}
	return strings.Join(urls, ",")
}

// Server is node i's running server, or nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

// Stop shuts node i down (a clean shutdown: its Raft leaderships are handed
// to other nodes first) and waits until it is gone. Like Restart and
// WaitReady, call it from the test's goroutine.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	c.mu.Lock()
	s := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if s == nil {
		c.t.Fatalf("natstest: cluster node %d is already stopped", i)
	}
	s.Shutdown()
	s.WaitForShutdown()
}

// Restart starts a stopped node i again, with its store, and waits until
// the cluster is ready (see WaitReady).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Server(i) != nil {
		c.t.Fatalf("natstest: cluster node %d is running", i)
	}
	s, err := c.start(i)
	if err != nil {
		c.t.Fatalf("restart cluster node %d: %v", i, err)
	}
	c.mu.Lock()
	c.servers[i] = s
	c.mu.Unlock()
	c.WaitReady()
}

// WaitReady waits until every running node is routed to every other running
// node and follows a JetStream meta leader that counts every running node
// as an online peer (so that streams can be placed on all of them).
func (c *Cluster) WaitReady() {
	c.t.Helper()
	Eventually(c.t, clusterReady, func() bool {
		running := c.running()
		peers := 0
		for _, s := range running {
			if s.NumRoutes() < len(running)-1 || !s.JetStreamIsCurrent() {
				return false
			}
			if s.JetStreamIsLeader() {
				peers = len(s.JetStreamClusterPeers())
			}
		}
		return peers == len(running)
	})
}

func (c *Cluster) running() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*server.Server
	for _, s := range c.servers {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// StreamLeader is the index of the running node that leads stream (in the
// global account), or -1 when none does.
func (c *Cluster) StreamLeader(stream string) int {
	for i := range c.servers {
		if s := c.Server(i); s != nil && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// Connect opens a client connection to every node (it reconnects to another
// node when one stops), closed when the test ends.
func (c *Cluster) Connect(t testing.TB, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(c.URLs(), opts...)
	if err != nil {
		t.Fatalf("connect to embedded nats cluster: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream context: %v", err)
	}
	return nc, js
}

func (c *Cluster) shutdown() {
	for i := range c.servers {
		c.mu.Lock()
		s := c.servers[i]
		c.servers[i] = nil
		c.mu.Unlock()
		if s != nil {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
}
