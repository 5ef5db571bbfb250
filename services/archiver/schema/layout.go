package schema

import (
	"errors"
	"fmt"
	"strings"
)

// Layout says how the schema is laid out: which database, on which
// server capabilities, on one node or on a cluster, with which retention.
// Migrations render their DDL through it.
type Layout struct {
	// Database holds every object.
	Database string
	// Caps gate the optional features: LowCardinality string columns,
	// column codecs on time columns, TTL retention.
	Caps Capabilities
	// Cluster, when set, names the cluster (remote_servers) to create
	// every object on (ON CLUSTER): each table is a Replicated* table
	// <name>_local on every node, with a Distributed table <name> over
	// them that the archiver inserts into and the queries read; the
	// materialized views run on the local tables. The servers need the
	// {shard} and {replica} macros and ZooKeeper, and every shard of the
	// cluster internal_replication (scripts/chcluster.sh starts such a
	// cluster on one machine).
	Cluster string
	// ZooKeeperPrefix roots the replication paths (default
	// /clickhouse/tables): <prefix>/{shard}/<database>/<table>.
	ZooKeeperPrefix string
	// RetentionDays deletes event rows older than this many days (by
	// their date column) with a table TTL; 0 keeps everything. Needs
	// Caps.TTL.
	RetentionDays int
}

// ErrUnsupported is wrapped by Migrate's error when the configuration
// needs a feature the server lacks: retrying cannot help.
var ErrUnsupported = errors.New("not supported by this ClickHouse server")

// DefaultZooKeeperPrefix is the default root of the replication paths.
const DefaultZooKeeperPrefix = "/clickhouse/tables"

// column is one column of a table spec.
type column struct {
	name, typ string
	// lowCard: a String with few distinct values, LowCardinality(String)
	// where the server supports it.
	lowCard bool
	// delta: a time or counter that grows, compressed with
	// CODEC(Delta, LZ4) where the server supports codecs.
	delta bool
}

// tableSpec describes one MergeTree table.
type tableSpec struct {
	name    string
	columns []column
	// version is the ReplacingMergeTree version column ("": none).
	version   string
	partition string
	order     string
	// shardKey routes rows to shards in a cluster: every copy of an
	// event (and every event of a device's connection) must land on one
	// shard so that deduplication and the sessions view work.
	shardKey string
	// global: one replicated table for the whole cluster (its path has
	// no {shard}), for schema_migrations.
	global bool
}

// Local is the name of the table that stores a table's rows on a node:
// the table itself on a single node, <table>_local in a cluster.
func (l Layout) Local(table string) string {
	if l.Cluster == "" {
		return table
	}
	return table + "_local"
}

// onCluster is the ON CLUSTER clause ("" on a single node).
func (l Layout) onCluster() string {
	if l.Cluster == "" {
		return ""
	}
	return " ON CLUSTER " + l.Cluster
}

func (l Layout) zkPrefix() string {
	if l.ZooKeeperPrefix == "" {
		return DefaultZooKeeperPrefix
	}
	return strings.TrimRight(l.ZooKeeperPrefix, "/")
}

// createDatabase is the CREATE DATABASE statement.
func (l Layout) createDatabase() string {
	return "CREATE DATABASE IF NOT EXISTS " + l.Database + l.onCluster()
}

func (l Layout) columnType(c column) string {
	t := c.typ
	if c.lowCard && l.Caps.LowCardinality {
		t = "LowCardinality(" + t + ")"
	}
	if c.delta && l.Caps.Codecs {
		t += " CODEC(Delta, LZ4)"
	}
	return t
}

// createTable renders a table spec: one CREATE on a single node; the
// replicated local table and its Distributed table in a cluster.
func (l Layout) createTable(t tableSpec) []string {
	var cols strings.Builder
	for i, c := range t.columns {
		if i > 0 {
			cols.WriteString(",\n")
		}
		cols.WriteString("\t" + c.name + " " + l.columnType(c))
	}
	local := l.Local(t.name)
	if t.global {
		local = t.name
	}
	engine := "ReplacingMergeTree(" + t.version + ")"
	if l.Cluster != "" {
		shard := "{shard}"
		replica := "{replica}"
		if t.global {
			shard, replica = "all", "{shard}-{replica}"
		}
		args := fmt.Sprintf("'%s/%s/%s/%s', '%s'", l.zkPrefix(), shard, l.Database, local, replica)
		if t.version != "" {
			args += ", " + t.version
		}
		engine = "ReplicatedReplacingMergeTree(" + args + ")"
	}
	stmt := "CREATE TABLE IF NOT EXISTS " + l.Database + "." + local + l.onCluster() + " (\n" + cols.String() + "\n) ENGINE = " + engine
	if t.partition != "" {
		stmt += "\nPARTITION BY " + t.partition
	}
	stmt += "\nORDER BY " + t.order
	out := []string{stmt}
	if l.Cluster != "" && !t.global {
		out = append(out, l.createDistributed(t))
	}
	return out
}

// createDistributed is the CREATE of a cluster table's Distributed table,
// with the columns its local table has when it runs.
func (l Layout) createDistributed(t tableSpec) string {
	local := l.Local(t.name)
	return "CREATE TABLE IF NOT EXISTS " + l.Database + "." + t.name + l.onCluster() +
		" AS " + l.Database + "." + local +
		"\nENGINE = Distributed(" + l.Cluster + ", " + l.Database + ", " + local + ", " + t.shardKey + ")"
}

// recreateDistributed drops a cluster table's Distributed table and
// creates it again over the local table, to give it the columns added to
// the local table. ClickHouse 18.16 rejects ALTER ... ON CLUSTER of a
// Distributed table when a shard has internal_replication ("isn't
// replicated, but shard #2 is replicated according to its cluster
// definition"); DROP and CREATE are not checked. A Distributed table holds
// no rows (the archiver inserts synchronously), so nothing is lost; inserts
// and queries that run in between fail and are retried.
func (l Layout) recreateDistributed(table string) ([]string, error) {
	t, ok := specOf(table)
	if !ok || t.global || l.Cluster == "" {
		return nil, fmt.Errorf("%s has no Distributed table", table)
	}
	return []string{
		"DROP TABLE IF EXISTS " + l.Database + "." + t.name + l.onCluster(),
		l.createDistributed(t),
	}, nil
}

// alteration is one ALTER TABLE statement and the table it changes.
type alteration struct {
	table string // as named in system.columns
	stmt  string
}

// addColumn renders the ALTER TABLE ... ADD COLUMN statement of c on a
// single node.
func (l Layout) addColumn(c NewColumn) alteration {
	return l.addColumns(c.Table, []NewColumn{c})
}

// addColumns renders one ALTER TABLE that adds the columns of cols that
// belong to table: to the table on a single node; to the replicated local
// table in a cluster, where one ALTER per table instead of one per column
// saves a round of distributed DDL and replication per column (the
// Distributed table gets the columns from recreateDistributed).
func (l Layout) addColumns(table string, cols []NewColumn) alteration {
	var clauses []string
	for _, c := range cols {
		if c.Table != table {
			continue
		}
		clause := "ADD COLUMN " + c.Name + " " + c.Type
		if c.After != "" {
			clause += " AFTER " + c.After
		}
		clauses = append(clauses, clause)
	}
	return alteration{l.Local(table), "ALTER TABLE " + l.Database + "." + l.Local(table) + l.onCluster() + " " + strings.Join(clauses, ", ")}
}

// RetentionTables are the tables a retention TTL applies to.
var RetentionTables = []string{TablePresence, TableAlerts, TableDeliveries, TableSessions}

// RetentionStatements set (or change) the retention TTL of the event
// tables; Migrate runs them at every start when RetentionDays > 0. They
// are idempotent.
func (l Layout) RetentionStatements() ([]string, error) {
	if l.RetentionDays <= 0 {
		return nil, nil
	}
	if !l.Caps.TTL {
		return nil, fmt.Errorf("retention of %d days needs table TTL (ClickHouse 19.6 or newer); the server is %s: "+
			"set retention_days to 0 and drop old monthly partitions with ALTER TABLE ... DROP PARTITION: %w", l.RetentionDays, l.Caps.Version, ErrUnsupported)
	}
	var out []string
	for _, t := range RetentionTables {
		out = append(out, fmt.Sprintf("ALTER TABLE %s.%s%s MODIFY TTL date + INTERVAL %d DAY", l.Database, l.Local(t), l.onCluster(), l.RetentionDays))
	}
	return out, nil
}

// Check validates the layout's names.
func (l Layout) Check() error {
	if err := CheckDatabaseName(l.Database); err != nil {
		return err
	}
	if l.Cluster != "" && !identifier.MatchString(l.Cluster) {
		return fmt.Errorf("cluster name %q: %w", l.Cluster, ErrBadDatabaseName)
	}
	if strings.ContainsAny(l.ZooKeeperPrefix, "'\\ ") {
		return fmt.Errorf("zookeeper prefix %q holds a quote, backslash or space: use a plain path such as /clickhouse/tables", l.ZooKeeperPrefix)
	}
	if l.RetentionDays < 0 {
		return fmt.Errorf("retention of %d days: use 0 (keep everything) or more", l.RetentionDays)
	}
	return nil
}
