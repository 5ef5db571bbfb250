package analytics_test

import (
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
)

// TestQueriesOnClusterFixture runs every query on the fixture stored in a
// cluster (scripts/chcluster.sh): through the Distributed tables, twice,
// with the duplicates unmerged on their shards, then merged. Each query is
// asked on every node and gives the single-node figures.
func TestQueriesOnClusterFixture(t *testing.T) {
	cl := chtest.OpenCluster(t)
	db := cl.FreshDatabase(t)
	c := cl.Members()[0].Conn
	if _, err := schema.Migrate(t.Context(), c, db, schema.Options{Logger: quiet, Cluster: cl.Name}); err != nil {
		t.Fatal(err)
	}
	// A replicated table drops an inserted block identical to an earlier
	// one; the replay must store real duplicates to test the queries.
	storeFixture(t, c, db, clickhouse.Context(t.Context(), clickhouse.WithSettings(clickhouse.Settings{"insert_deduplicate": 0})))
	for _, n := range cl.Members() {
		if chtest.Count(t, n.Conn, "SELECT count() FROM "+db+".presence_events_local") == 0 {
			t.Fatalf("%s (shard %d) holds no presence events: the fixture does not span the shards", n.Addr, n.ShardNum)
		}
	}
	a := args(db)
	for _, n := range cl.Members() {
		t.Run("unmerged/"+n.Addr, func(t *testing.T) { checkFixture(t, n.Conn, a) })
	}
	// Merge on every node: 18.16 fails OPTIMIZE ... ON CLUSTER of a
	// replicated table ("Unknown log entry type: 0").
	for _, n := range cl.Members() {
		for _, table := range []string{"presence_events", "alerts", "deliveries", "sessions"} {
			if err := n.Conn.Exec(t.Context(), "OPTIMIZE TABLE "+db+"."+table+"_local FINAL"); err != nil {
				t.Fatalf("%s: %v", n.Addr, err)
			}
			if err := n.Conn.Exec(t.Context(), "SYSTEM SYNC REPLICA "+db+"."+table+"_local"); err != nil {
				t.Fatalf("%s: %v", n.Addr, err)
			}
		}
	}
	if n := chtest.Count(t, c, "SELECT count() FROM "+db+".presence_events"); n != uint64(len(fixturePresence(t))) {
		t.Fatalf("presence_events has %d rows after OPTIMIZE FINAL, want %d", n, len(fixturePresence(t)))
	}
	for _, n := range cl.Members() {
		t.Run("merged/"+n.Addr, func(t *testing.T) { checkFixture(t, n.Conn, a) })
	}
}
