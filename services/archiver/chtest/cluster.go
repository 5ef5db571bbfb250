package chtest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Environment variables that point the cluster tests at a ClickHouse
// cluster; scripts/chcluster.sh start prints them.
const (
	// EnvClusterAddrs lists every node's native host:port, comma-separated.
	EnvClusterAddrs = "FLEETWATCH_CLICKHOUSE_CLUSTER_ADDRS"
	// EnvCluster names the cluster (remote_servers) the nodes form.
	EnvCluster = "FLEETWATCH_CLICKHOUSE_CLUSTER"
)

// Cluster is a ClickHouse cluster under test: every node of it, each with
// its own connection, and where it sits in the cluster.
type Cluster struct {
	// Name is the cluster in remote_servers.
	Name string
	// Nodes are the servers of EnvClusterAddrs, in that order.
	Nodes []Node
}

// Node is one server of a cluster.
type Node struct {
	Addr string
	// Conn inserts into Distributed tables synchronously
	// (insert_distributed_sync = 1), like the archiver.
	Conn driver.Conn
	// ShardNum is the node's shard in the cluster (system.clusters,
	// from 1); 0 when the node is not in it.
	ShardNum uint32
	// Shard and Replica are the node's {shard} and {replica} macros.
	Shard, Replica string
}

// OpenCluster connects to every node of EnvClusterAddrs and reads the
// topology of the cluster EnvCluster. Without the variables, or when a node
// cannot be reached, it fails the test when the CI environment variable is
// set and skips it otherwise, naming the script that starts a local
// cluster. The connections close when the test ends.
func OpenCluster(t testing.TB) *Cluster {
	t.Helper()
	raw, name := os.Getenv(EnvClusterAddrs), os.Getenv(EnvCluster)
	if raw == "" || name == "" {
		clusterUnavailable(t, EnvClusterAddrs+" and "+EnvCluster+" are not set")
	}
	c := &Cluster{Name: name}
	for _, addr := range strings.Split(raw, ",") {
		addr = strings.TrimSpace(addr)
		conn, err := OpenAddr(addr, clickhouse.Settings{"insert_distributed_sync": 1})
		if err != nil {
			clusterUnavailable(t, err.Error())
		}
		t.Cleanup(func() { _ = conn.Close() })
		n := Node{Addr: addr, Conn: conn}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = conn.QueryRow(ctx, `SELECT
			(SELECT substitution FROM system.macros WHERE macro = 'shard'),
			(SELECT substitution FROM system.macros WHERE macro = 'replica')`).Scan(&n.Shard, &n.Replica)
		if err == nil {
			n.ShardNum, err = shardNum(ctx, conn, name, addr)
		}
		cancel()
		if err != nil {
			t.Fatalf("cluster node %s: %v", addr, err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	if len(c.Members()) == 0 {
		t.Fatalf("none of %s is a node of cluster %s (system.clusters)", raw, name)
	}
	return c
}

// shardNum finds the node at addr among the cluster's replicas.
func shardNum(ctx context.Context, conn driver.Conn, cluster, addr string) (uint32, error) {
	_, port, _ := strings.Cut(addr, ":")
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port of %q: %w", addr, err)
	}
	rows, err := conn.Query(ctx, "SELECT shard_num FROM system.clusters WHERE cluster = ? AND port = ? AND is_local", cluster, uint16(p))
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var n uint32
	for rows.Next() {
		if err := rows.Scan(&n); err != nil {
			return 0, err
		}
	}
	return n, rows.Err()
}

// OpenAddr connects to the server at addr (LZ4, native protocol) with
// settings and pings it.
func OpenAddr(addr string, settings clickhouse.Settings) (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Settings:    settings,
		Protocol:    clickhouse.Native,
		Addr:        []string{addr},
		DialTimeout: 2 * time.Second,
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("ping %s: %w", addr, err)
	}
	return conn, nil
}

func clusterUnavailable(t testing.TB, why string) {
	t.Helper()
	msg := "no ClickHouse cluster: " + why + " (run scripts/chcluster.sh start and export what it prints)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Addrs lists the nodes' addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// Members are the nodes that belong to the cluster (ShardNum > 0).
func (c *Cluster) Members() []Node {
	var out []Node
	for _, n := range c.Nodes {
		if n.ShardNum > 0 {
			out = append(out, n)
		}
	}
	return out
}

// Shards returns the number of shards of the cluster.
func (c *Cluster) Shards() uint32 {
	var m uint32
	for _, n := range c.Nodes {
		m = max(m, n.ShardNum)
	}
	return m
}

// FreshDatabase returns the name of a database that does not exist yet and
// drops it on the whole cluster (ON CLUSTER, which also removes the
// replicas' ZooKeeper metadata) when the test ends.
func (c *Cluster) FreshDatabase(t testing.TB) string {
	t.Helper()
	name := DatabaseName(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Members()[0].Conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" ON CLUSTER "+c.Name); err != nil {
			t.Errorf("drop test database %s on cluster %s: %v", name, c.Name, err)
		}
	})
	return name
}
