package archiver_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/archiver"
	"github.com/fleetwatch/fleetwatch/services/archiver/analytics"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
)

// clusterDay is the first day of the cluster test's outage history: the
// window is [clusterDay, clusterDay+24h).
var clusterDay = time.Date(2024, 6, 10, 0, 0, 0, 0, time.UTC)

func clusterAt(d time.Duration) int64 { return clusterDay.Add(d).UnixMilli() }

func clusterPresence(t *testing.T, dev string, kind events.Kind, reason events.Reason, ts, connectedAt int64) events.PresenceEvent {
	t.Helper()
	e, err := events.NewPresenceEvent(events.PresenceEvent{
		DeviceID: dev, Kind: kind, Reason: reason, RawReason: string(reason), Node: "emqx@n1",
		BrokerTSMS: ts, ConnectedAtMS: connectedAt, IP: "203.0.113.7", Source: "emqx_sys_v5", ReceivedAtMS: ts,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// clusterHistory is 20 devices per site, each online from an hour before
// the window, down for 30 minutes at hour 1 + k%10 (keepalive), and then
// online; site-b's devices also go down for good at hour 20 (closed).
func clusterHistory(t *testing.T) []events.PresenceEvent {
	var out []events.PresenceEvent
	for _, site := range []string{"site-a", "site-b"} {
		for k := 1; k <= 20; k++ {
			dev := fmt.Sprintf("%s-dev-%d", site, k)
			c1, down := clusterAt(-time.Hour), clusterAt(time.Duration(1+k%10)*time.Hour)
			c2 := down + (30 * time.Minute).Milliseconds()
			out = append(out,
				clusterPresence(t, dev, events.KindConnected, "", c1, c1),
				clusterPresence(t, dev, events.KindDisconnected, events.ReasonKeepaliveTimeout, down, c1),
				clusterPresence(t, dev, events.KindConnected, "", c2, c2))
			if site == "site-b" {
				out = append(out, clusterPresence(t, dev, events.KindDisconnected, events.ReasonClosed, clusterAt(20*time.Hour), c2))
			}
		}
	}
	return out
}

// clusterNotifications: ops gets two alerts, both delivered (after 5 s and
// 2 s); chat gets three: one failed, one pending, one delivered after 3 s.
func clusterNotifications(t *testing.T) ([]events.AlertEvent, []events.DeliveryEvent) {
	t.Helper()
	var alerts []events.AlertEvent
	for i, receiver := range []string{"ops", "ops", "chat", "chat", "chat"} {
		created := clusterAt(time.Duration(i+2) * time.Hour)
		a, err := events.NewAlertEvent(events.AlertEvent{
			Fingerprint: fmt.Sprintf("f%d", i), Receiver: receiver, Status: events.StatusFiring, Kind: events.AlertDeviceOffline,
			Severity: events.SeverityCritical, GroupKey: fmt.Sprintf("{}:f%d", i),
			Devices:    []events.AlertDevice{{DeviceID: fmt.Sprintf("site-a-dev-%d", i+1), Status: events.StatusFiring, SinceMS: created - 30_000}},
			StartsAtMS: created - 30_000, CreatedAtMS: created,
		})
		if err != nil {
			t.Fatal(err)
		}
		alerts = append(alerts, a)
	}
	delivery := func(a events.AlertEvent, attempt int, outcome events.Outcome, after, latency time.Duration) events.DeliveryEvent {
		d, err := events.NewDeliveryEvent(events.DeliveryEvent{
			AlertID: a.ID, Fingerprint: a.Fingerprint, AlertStatus: a.Status, Receiver: a.Receiver, Channel: "dingtalk",
			Attempt: attempt, Outcome: outcome, HTTPStatus: 200, RemoteCode: "0",
			LatencyMS: latency.Milliseconds(), AtMS: a.CreatedAtMS + after.Milliseconds(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	s := time.Second
	return alerts, []events.DeliveryEvent{
		delivery(alerts[0], 1, events.OutcomeRetryable, s, 100*time.Millisecond),
		delivery(alerts[0], 2, events.OutcomeDelivered, 4*s, s),
		delivery(alerts[1], 1, events.OutcomeDelivered, s, s),
		delivery(alerts[2], 1, events.OutcomePermanent, s, 80*time.Millisecond),
		delivery(alerts[3], 1, events.OutcomeRetryable, s, 2*s),
		delivery(alerts[4], 1, events.OutcomeDelivered, 2*s, s),
	}
}

// publishCluster publishes the history and the notifications; suffix makes
// the message ids of a replay new.
func (e *env) publishCluster(suffix string) (presence, alerts, deliveries int) {
	ctx := context.Background()
	history := clusterHistory(e.t)
	for _, ev := range history {
		e.publish(ctx, ev.Subject(events.DefaultPartitions), ev.ID+suffix, ev)
	}
	as, ds := clusterNotifications(e.t)
	for _, a := range as {
		e.publish(ctx, a.Subject(), a.ID+suffix, a)
	}
	for _, d := range ds {
		e.publish(ctx, d.Subject(), d.ID+suffix, d)
	}
	return len(history), len(as), len(ds)
}

// TestArchiveOnCluster runs two archivers on the cluster of
// FLEETWATCH_CLICKHOUSE_CLUSTER (scripts/chcluster.sh), started at once and
// connected to different nodes: they migrate the schema ON CLUSTER, archive
// every event through the Distributed tables onto the shard its sharding
// key names, replicated to every replica of that shard, and a replay of
// every event changes no deduplicated figure: the analytics queries give
// the exact expected answers before and after it, from any node.
func TestArchiveOnCluster(t *testing.T) {
	t.Parallel()
	cl := chtest.OpenCluster(t)
	members := cl.Members()
	e := newEnvOn(t, members[len(members)-1].Conn, func() string { return cl.FreshDatabase(t) })
	nPresence, nAlerts, nDeliveries := e.publishCluster("")

	var services []*archiver.Service
	for _, n := range []chtest.Node{members[0], members[len(members)-1]} {
		cfg := e.config(n.Addr)
		cfg.ClickHouse.Cluster = cl.Name
		cfg.BatchSize = 50
		cfg.InsertTimeout = 10 * time.Second
		svc, _ := e.start(cfg)
		services = append(services, svc)
	}
	for _, svc := range services {
		e.waitReady(svc)
	}
	drained := func() {
		for _, c := range [][2]string{
			{events.StreamPresence, events.ConsumerArchiverPresence},
			{events.StreamAlerts, events.ConsumerArchiverAlerts},
			{events.StreamDeliveries, events.ConsumerArchiverDeliveries},
		} {
			e.waitDrained(c[0], c[1])
		}
	}
	total := int64(nPresence + nAlerts + nDeliveries)
	eventually(t, "every event archived", func() string {
		if got := e.counter("fleetwatch_archiver_rows_total"); got != total {
			return fmt.Sprintf("rows_total %d, want %d", got, total)
		}
		return ""
	})
	drained()

	// Every row is on the shard of its sharding key, and on every replica
	// of that shard; every shard holds some.
	// Sharding key and row identity per table; a session is a connection.
	keys := map[string][2]string{
		"presence_events": {"device_id", "id"},
		"alerts":          {"fingerprint", "id"},
		"deliveries":      {"alert_id", "id"},
		"sessions":        {"device_id", "concat(device_id, '/', toString(connected_ms))"},
	}
	want := map[string]uint64{"presence_events": uint64(nPresence), "alerts": uint64(nAlerts), "deliveries": uint64(nDeliveries), "sessions": 80}
	checkPlacement := func() {
		t.Helper()
		for table, k := range keys {
			key, id := k[0], k[1]
			local := e.db + "." + table + "_local"
			perShard := map[uint32][]string{}
			for _, n := range members {
				if err := n.Conn.Exec(t.Context(), "SYSTEM SYNC REPLICA "+local); err != nil {
					t.Fatalf("%s: sync %s: %v", n.Addr, local, err)
				}
				if bad := chtest.Count(t, n.Conn, fmt.Sprintf("SELECT count() FROM %s WHERE cityHash64(%s) %% %d + 1 != %d", local, key, cl.Shards(), n.ShardNum)); bad != 0 {
					t.Errorf("%s (shard %d): %d rows of %s belong to another shard", n.Addr, n.ShardNum, bad, table)
				}
				var rows []string
				if err := n.Conn.QueryRow(t.Context(), "SELECT arraySort(groupUniqArray("+id+")) FROM "+local).Scan(&rows); err != nil {
					t.Fatal(err)
				}
				if other, ok := perShard[n.ShardNum]; ok && !slices.Equal(rows, other) {
					t.Errorf("%s: %s differs from the other replica of shard %d: %d rows, %d rows", n.Addr, table, n.ShardNum, len(rows), len(other))
				}
				perShard[n.ShardNum] = rows
			}
			var sum uint64
			for shard, rows := range perShard {
				if len(rows) == 0 {
					t.Errorf("shard %d holds no %s", shard, table)
				}
				sum += uint64(len(rows))
			}
			if sum != want[table] {
				t.Errorf("%s: %d distinct rows over the shards, want %d", table, sum, want[table])
			}
		}
	}
	checkPlacement()

	// The analytics give the same exact answers from every node.
	checkQueries := func(stage string) {
		t.Helper()
		a := analytics.Args{Database: e.db, From: clusterDay, To: clusterDay.Add(24 * time.Hour)}
		for _, n := range members {
			got := runQuery(t, n, "reliability-site", a)
			// site-a: 20 outages of 1800 s; site-b: those and 20 of 14400 s
			// still going at the end. MTBF = online time / outages.
			checkTable(t, stage+" "+n.Addr+" reliability-site", got,
				"site devices outages offline_s mttr_s mtbf_s availability_pct",
				"site-a | 20 | 20 | 36000 | 1800 | 84600 | 97.917",
				"site-b | 20 | 40 | 324000 | 1800 | 35100 | 81.25")
			d := a
			d.Device = "site-b-dev-3"
			checkTable(t, stage+" "+n.Addr+" outages", runQuery(t, n, "outages", d),
				"start end device_id site duration_s reason ongoing",
				"2024-06-10 04:00:00 | 2024-06-10 04:30:00 | site-b-dev-3 | site-b | 1800 | keepalive_timeout | 0",
				"2024-06-10 20:00:00 | 2024-06-11 00:00:00 | site-b-dev-3 | site-b | 14400 | closed | 1")
			checkTable(t, stage+" "+n.Addr+" delivery-health", runQuery(t, n, "delivery-health", a),
				"receiver alerts delivered failed pending attempts success_pct p50_latency_s p99_latency_s max_latency_s",
				"chat | 3 | 1 | 1 | 1 | 3 | 33.333 | 3 | 3 | 3",
				"ops | 2 | 2 | 0 | 0 | 3 | 100 | 5 | 5 | 5")
			for table, w := range want {
				if got := chtest.Count(t, n.Conn, "SELECT count() FROM "+e.db+"."+table+" FINAL"); got != w {
					t.Errorf("%s %s: count() FROM %s FINAL = %d, want %d", stage, n.Addr, table, got, w)
				}
			}
		}
	}
	checkQueries("first delivery")

	// Replay: every event stored again in the streams (new message ids)
	// is inserted again (rows_total doubles); nothing deduplicated changes.
	e.publishCluster("-replay")
	eventually(t, "replay archived", func() string {
		if got := e.counter("fleetwatch_archiver_rows_total"); got != 2*total {
			return fmt.Sprintf("rows_total %d, want %d", got, 2*total)
		}
		return ""
	})
	drained()
	checkPlacement()
	checkQueries("after replay")
}

func runQuery(t *testing.T, n chtest.Node, name string, a analytics.Args) analytics.Table {
	t.Helper()
	q, ok := analytics.Lookup(name)
	if !ok {
		t.Fatalf("no query %s", name)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	tab, err := analytics.Run(ctx, n.Conn, q, a)
	if err != nil {
		t.Fatalf("%s: %v", n.Addr, err)
	}
	return tab
}

func checkTable(t *testing.T, what string, got analytics.Table, cols string, rows ...string) {
	t.Helper()
	if g := strings.Join(got.Columns, " "); g != cols {
		t.Errorf("%s columns:\n got %s\nwant %s", what, g, cols)
	}
	var g []string
	for _, r := range got.Rows {
		g = append(g, strings.Join(r, " | "))
	}
	if !slices.Equal(g, rows) {
		t.Errorf("%s rows:\n got\n\t%s\nwant\n\t%s", what, strings.Join(g, "\n\t"), strings.Join(rows, "\n\t"))
	}
}
