package schema_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
	"github.com/fleetwatch/fleetwatch/services/archiver/sink"
)

// The cluster tests run against the cluster of FLEETWATCH_CLICKHOUSE_CLUSTER
// (scripts/chcluster.sh start: 2 shards, the second with 2 replicas).

const zkPrefix = "/fwtest/tables"

func clusterOptions(c *chtest.Cluster) schema.Options {
	return schema.Options{Logger: quiet, Cluster: c.Name, ZooKeeperPrefix: zkPrefix + "/", Now: func() time.Time { return fixedNow }}
}

// rows runs a query whose columns are all strings and returns each row
// joined by " ".
func rows(t *testing.T, conn driver.Conn, query string, args ...any) []string {
	t.Helper()
	r, err := conn.Query(t.Context(), query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer r.Close()
	var out []string
	for r.Next() {
		vals := make([]string, len(r.Columns()))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := r.Scan(ptrs...); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		out = append(out, strings.Join(vals, " "))
	}
	if err := r.Err(); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

// ddlQueue lists the distributed DDL queries ever queued for db, in queue
// order (first line of each).
func ddlQueue(t *testing.T, conn driver.Conn, db string) []string {
	t.Helper()
	var out []string
	for _, v := range rows(t, conn, "SELECT value FROM system.zookeeper WHERE path = '/clickhouse/task_queue/ddl' AND position(value, ?) > 0 ORDER BY name", db) {
		_, q, _ := strings.Cut(v, "\nquery: ")
		q, _, _ = strings.Cut(q, "\n")
		if i := strings.Index(q, " ("); i > 0 {
			q = q[:i]
		}
		out = append(out, q)
	}
	return out
}

// TestMigrateOnCluster: two archivers migrating at once through different
// nodes build the whole schema ON CLUSTER, every node ends with the same
// tables, engines, replication paths and columns, schema_migrations
// (replicated to every node) lists every version once, and migrating
// again from any node changes nothing.
func TestMigrateOnCluster(t *testing.T) {
	c := chtest.OpenCluster(t)
	db := c.FreshDatabase(t)
	members := c.Members()
	first, last := members[0], members[len(members)-1]
	sv := mustParse(t, serverVersion(t, first.Conn)).String()

	var wg sync.WaitGroup
	results := make([]schema.Result, 2)
	errs := make([]error, 2)
	for i, n := range []chtest.Node{first, last} {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			results[i], errs[i] = schema.Migrate(ctx, n.Conn, db, clusterOptions(c))
		})
	}
	wg.Wait()
	var ran []uint32
	for i, err := range errs {
		if err != nil {
			t.Fatalf("migrator %d: %v", i, err)
		}
		ran = append(ran, results[i].Ran...)
	}
	t.Logf("migrator 0 applied %v, migrator 1 %v", results[0].Ran, results[1].Ran)
	slices.Sort(ran)
	if got := slices.Compact(ran); !slices.Equal(got, []uint32{1, 2, 3, 4, 5}) {
		t.Errorf("the migrators applied %v together, want every version", got)
	}

	wantTables := []string{
		"alerts Distributed", "alerts_local ReplicatedReplacingMergeTree",
		"deliveries Distributed", "deliveries_local ReplicatedReplacingMergeTree",
		"presence_events Distributed", "presence_events_local ReplicatedReplacingMergeTree",
		"schema_migrations ReplicatedReplacingMergeTree",
		"sessions Distributed", "sessions_local ReplicatedReplacingMergeTree",
		"sessions_mv MaterializedView",
	}
	for _, n := range members {
		if got := rows(t, n.Conn, "SELECT name, engine FROM system.tables WHERE database = ? ORDER BY name", db); !slices.Equal(got, wantTables) {
			t.Errorf("%s: tables\n got %q\nwant %q", n.Addr, got, wantTables)
		}
		// Replication paths: per shard for the event tables, one for the
		// whole cluster for schema_migrations.
		var wantReplicas []string
		for _, table := range []string{"alerts_local", "deliveries_local", "presence_events_local"} {
			wantReplicas = append(wantReplicas, fmt.Sprintf("%s %s/%s/%s/%s %s", table, zkPrefix, n.Shard, db, table, n.Replica))
		}
		wantReplicas = append(wantReplicas,
			fmt.Sprintf("schema_migrations %s/all/%s/schema_migrations %s-%s", zkPrefix, db, n.Shard, n.Replica),
			fmt.Sprintf("sessions_local %s/%s/%s/sessions_local %s", zkPrefix, n.Shard, db, n.Replica))
		if got := rows(t, n.Conn, "SELECT table, zookeeper_path, replica_name FROM system.replicas WHERE database = ? ORDER BY table", db); !slices.Equal(got, wantReplicas) {
			t.Errorf("%s: replicas\n got %q\nwant %q", n.Addr, got, wantReplicas)
		}
		// Every Distributed table has its local table's columns, the ones
		// migration 5 added included.
		for _, table := range []string{schema.TablePresence, schema.TableAlerts, schema.TableDeliveries, schema.TableSessions} {
			q := "SELECT name, type FROM system.columns WHERE database = ? AND table = ?"
			local, dist := rows(t, n.Conn, q, db, table+"_local"), rows(t, n.Conn, q, db, table)
			if !slices.Equal(local, dist) || len(local) == 0 {
				t.Errorf("%s: %s has columns %q, %s_local %q", n.Addr, table, dist, table, local)
			}
			if table == schema.TableAlerts && !slices.Contains(dist, "tier UInt16") {
				t.Errorf("%s: alerts lacks migration 5's columns: %q", n.Addr, dist)
			}
		}
		if err := n.Conn.Exec(t.Context(), "SYSTEM SYNC REPLICA "+db+".schema_migrations"); err != nil {
			t.Fatalf("%s: %v", n.Addr, err)
		}
		checkAppliedOn(t, n, db, sv)
	}

	// Migrating again, from every node, queues only the two statements
	// Migrate always runs (both IF NOT EXISTS) and records nothing.
	for _, n := range members {
		queued := ddlQueue(t, n.Conn, db)
		counts := rows(t, n.Conn, "SELECT toString(count()) FROM "+db+".schema_migrations")
		res, err := schema.Migrate(t.Context(), n.Conn, db, clusterOptions(c))
		if err != nil {
			t.Fatalf("%s: migrate again: %v", n.Addr, err)
		}
		if len(res.Ran) != 0 || len(res.Unknown) != 0 {
			t.Errorf("%s: migrating again applied %v, unknown %v; want nothing", n.Addr, res.Ran, res.Unknown)
		}
		want := append(queued,
			"CREATE DATABASE IF NOT EXISTS "+db+" ON CLUSTER "+c.Name,
			"CREATE TABLE IF NOT EXISTS "+db+".schema_migrations ON CLUSTER "+c.Name)
		if got := ddlQueue(t, n.Conn, db); !slices.Equal(got, want) {
			t.Errorf("%s: migrating again queued %q", n.Addr, got[len(queued):])
		}
		if got := rows(t, n.Conn, "SELECT toString(count()) FROM "+db+".schema_migrations"); !slices.Equal(got, counts) {
			t.Errorf("%s: schema_migrations has %v rows after migrating again, %v before", n.Addr, got, counts)
		}
		checkAppliedOn(t, n, db, sv)
	}
}

func checkAppliedOn(t *testing.T, n chtest.Node, db, serverVersion string) {
	t.Helper()
	applied, err := schema.AppliedMigrations(t.Context(), n.Conn, db)
	if err != nil {
		t.Fatalf("%s: AppliedMigrations: %v", n.Addr, err)
	}
	var got []appliedRow
	for _, a := range applied {
		got = append(got, appliedRow{a.Version, a.Name})
		if !a.AppliedAt.Equal(fixedNow) || a.ServerVersion != serverVersion {
			t.Errorf("%s: migration %d applied_at %v, server %q; want %v, %q", n.Addr, a.Version, a.AppliedAt, a.ServerVersion, fixedNow, serverVersion)
		}
	}
	if !slices.Equal(got, wantApplied()) {
		t.Errorf("%s: schema_migrations = %v, want %v", n.Addr, got, wantApplied())
	}
}

// TestUpgradeOnCluster upgrades a cluster database as the walking skeleton
// left it (migrations 1-3, with history) after a crash half way through
// migration 5 (two of its columns on the local tables only), with two
// archivers at once: the sessions backfill goes through the Distributed
// tables to the devices' shards, and the Distributed alerts table gets
// every new column on every node.
func TestUpgradeOnCluster(t *testing.T) {
	c := chtest.OpenCluster(t)
	db := c.FreshDatabase(t)
	members := c.Members()
	first, last := members[0], members[len(members)-1]
	opts := clusterOptions(c)
	opts.UpTo = 3
	if res, err := schema.Migrate(t.Context(), first.Conn, db, opts); err != nil || !slices.Equal(res.Ran, []uint32{1, 2, 3}) {
		t.Fatalf("UpTo 3 applied %v: %v", res.Ran, err)
	}
	const n1, n2 = "emqx@n1", "emqx@n2"
	c1 := t0
	var history []events.PresenceEvent
	var want []sessionRow
	for _, dev := range []string{"a", "b", "c", "d", "e", "f"} {
		history = append(history,
			presence(t, dev, n1, events.KindConnected, "", c1, c1),
			presence(t, dev, n1, events.KindDisconnected, events.ReasonKeepaliveTimeout, c1+60_000, c1),
			presence(t, dev, n2, events.KindConnected, "", c1+90_000, c1+90_000))
		want = append(want,
			sessionRow{dev, n1, uint64(c1), uint64(c1 + 60_000), "keepalive_timeout", 60_000},
			sessionRow{dev, n2, uint64(c1 + 90_000), 0, "", 0})
	}
	insertPresence(t, first.Conn, db, history...)
	b, err := first.Conn.PrepareBatch(t.Context(), "INSERT INTO "+db+".alerts ("+alertColumnsV1+")")
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2024, 6, 10, 0, 0, 0, 0, time.UTC)
	if err := b.Append("old-1", "fp-old", "ops", "firing", "device_offline", "warning", "{}", []string{}, []string{},
		[]string{"dev-1"}, uint32(1), uint64(1718000000000), uint64(0), uint64(1718000001000), uint8(1), day); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	if err := first.Conn.Exec(t.Context(), "ALTER TABLE "+db+".alerts_local ON CLUSTER "+c.Name+
		" ADD COLUMN silence_ids Array(String) AFTER silenced, ADD COLUMN new_total UInt32 AFTER devices_total"); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, n := range []chtest.Node{first, last} {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, errs[i] = schema.Migrate(ctx, n.Conn, db, clusterOptions(c))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("migrator %d: %v", i, err)
		}
	}
	wantAlerts := sink.NewAlertRows().Columns()
	slices.Sort(wantAlerts)
	for _, n := range members {
		if err := n.Conn.Exec(t.Context(), "SYSTEM SYNC REPLICA "+db+".sessions_local"); err != nil {
			t.Fatalf("%s: %v", n.Addr, err)
		}
		if got := sessions(t, n.Conn, db); !slices.Equal(got, want) {
			t.Errorf("%s: sessions after the upgrade:\n got %+v\nwant %+v", n.Addr, got, want)
		}
		// Each shard's local sessions hold its own devices only.
		if bad := chtest.Count(t, n.Conn, fmt.Sprintf("SELECT count() FROM %s.sessions_local WHERE cityHash64(device_id) %% %d + 1 != %d", db, c.Shards(), n.ShardNum)); bad != 0 {
			t.Errorf("%s: %d sessions of another shard's devices", n.Addr, bad)
		}
		for _, table := range []string{"alerts", "alerts_local"} {
			got := columnNames(t, n.Conn, db, table)
			slices.Sort(got)
			if !slices.Equal(got, wantAlerts) {
				t.Errorf("%s: %s columns\n got %v\nwant %v", n.Addr, table, got, wantAlerts)
			}
		}
		var silenceIDs []string
		var tier uint16
		if err := n.Conn.QueryRow(t.Context(), "SELECT silence_ids, tier FROM "+db+".alerts WHERE id = 'old-1'").Scan(&silenceIDs, &tier); err != nil || len(silenceIDs) != 0 || tier != 0 {
			t.Errorf("%s: old alert reads silence_ids %v, tier %d, %v; want the defaults", n.Addr, silenceIDs, tier, err)
		}
	}
}
