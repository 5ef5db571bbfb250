package schema_test

import (
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
	"github.com/fleetwatch/fleetwatch/services/archiver/sink"
)

// t0 is 2024-06-10 06:00:00 UTC.
const t0 = int64(1718000000000)

func presence(t *testing.T, device, node string, kind events.Kind, reason events.Reason, tsMS, connectedAtMS int64) events.PresenceEvent {
	t.Helper()
	e, err := events.NewPresenceEvent(events.PresenceEvent{
		DeviceID: device, Kind: kind, Reason: reason, RawReason: string(reason), Node: node,
		BrokerTSMS: tsMS, ConnectedAtMS: connectedAtMS, IP: "203.0.113.7", Username: "u",
		Protocol: "mqtt", ProtoVer: 5, KeepaliveS: 60, Source: "emqx_sys_v5", ReceivedAtMS: tsMS + 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func insertPresence(t *testing.T, conn driver.Conn, db string, evs ...events.PresenceEvent) {
	t.Helper()
	rows := sink.NewPresenceRows()
	for _, e := range evs {
		if err := rows.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.NewWriter(conn, db).Insert(t.Context(), rows); err != nil {
		t.Fatal(err)
	}
}

type sessionRow struct {
	Device, Node   string
	ConnectedMS    uint64
	DisconnectedMS uint64
	Reason         string
	DurationMS     uint64
}

func sessions(t *testing.T, conn driver.Conn, db string) []sessionRow {
	t.Helper()
	// FINAL in a subquery: on a Distributed table, ClickHouse 18.16 fails
	// FINAL with ORDER BY unless every sorting-key column is selected.
	const cols = "device_id, node, connected_ms, disconnected_ms, reason, duration_ms, connected_at, disconnected_at"
	rows, err := conn.Query(t.Context(), "SELECT "+cols+" FROM (SELECT "+cols+" FROM "+db+".sessions FINAL) ORDER BY device_id, connected_ms, node")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []sessionRow
	for rows.Next() {
		var r sessionRow
		var cAt, dAt time.Time
		if err := rows.Scan(&r.Device, &r.Node, &r.ConnectedMS, &r.DisconnectedMS, &r.Reason, &r.DurationMS, &cAt, &dAt); err != nil {
			t.Fatal(err)
		}
		if cAt.Unix() != int64(r.ConnectedMS/1000) || dAt.Unix() != int64(r.DisconnectedMS/1000) {
			t.Errorf("session %+v: connected_at %v disconnected_at %v do not match the ms columns", r, cAt.UTC(), dAt.UTC())
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSessionsUpgradeAndLiveInserts builds a database as the walking
// skeleton left it (migrations 1-3) with history in it, upgrades it, and
// checks that migration 4 backfills sessions and that later inserts fill
// them through the view, in any order, with duplicates and replays.
func TestSessionsUpgradeAndLiveInserts(t *testing.T) {
	conn := chtest.Open(t)
	db := chtest.FreshDatabase(t, conn)
	old, err := schema.Migrate(t.Context(), conn, db, schema.Options{Logger: quiet, Now: func() time.Time { return fixedNow }, UpTo: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(old.Ran, []uint32{1, 2, 3}) {
		t.Fatalf("UpTo 3 applied %v", old.Ran)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM system.tables WHERE database = ? AND name = 'sessions'", db); n != 0 {
		t.Fatalf("sessions exists before migration 4")
	}
	const n1, n2 = "emqx@n1", "emqx@n2"
	c1 := t0
	history := []events.PresenceEvent{
		// a: a closed connection, its connect stored twice (a replay).
		presence(t, "a", n1, events.KindConnected, "", c1, c1),
		presence(t, "a", n1, events.KindDisconnected, events.ReasonKeepaliveTimeout, c1+60_000, c1),
		presence(t, "a", n1, events.KindConnected, "", c1, c1),
		// b: disconnect arrived, its connect was lost.
		presence(t, "b", n1, events.KindDisconnected, events.ReasonClosed, c1+30_000, c1+1000),
		// c: still connected.
		presence(t, "c", n2, events.KindConnected, "", c1+5000, c1+5000),
		// d: a disconnect without connected_at cannot be paired: no row.
		presence(t, "d", n1, events.KindDisconnected, events.ReasonNormal, c1+7000, 0),
	}
	insertPresence(t, conn, db, history...)

	res := migrate(t, conn, db)
	if !slices.Equal(res.Ran, []uint32{4, 5}) {
		t.Fatalf("upgrade applied %v, want [4 5]", res.Ran)
	}
	want := []sessionRow{
		{"a", n1, uint64(c1), uint64(c1 + 60_000), "keepalive_timeout", 60_000},
		{"b", n1, uint64(c1 + 1000), uint64(c1 + 30_000), "closed", 29_000},
		{"c", n2, uint64(c1 + 5000), 0, "", 0},
	}
	if got := sessions(t, conn, db); !slices.Equal(got, want) {
		t.Fatalf("sessions after upgrade:\n got %+v\nwant %+v", got, want)
	}

	// Live inserts go through the view: c disconnects (takeover by a new
	// connection on n1, which arrives first), a second disconnect of the
	// same connection comes later (EMQX 5.0.x), and the whole history is
	// replayed.
	c2 := c1 + 100_000
	live := []events.PresenceEvent{
		presence(t, "c", n1, events.KindConnected, "", c2, c2),
		presence(t, "c", n2, events.KindDisconnected, events.ReasonTakenOver, c2+10, c1+5000),
		presence(t, "c", n2, events.KindDisconnected, events.ReasonClosed, c2+900, c1+5000),
	}
	insertPresence(t, conn, db, live...)
	insertPresence(t, conn, db, history...)
	want = []sessionRow{
		{"a", n1, uint64(c1), uint64(c1 + 60_000), "keepalive_timeout", 60_000},
		{"b", n1, uint64(c1 + 1000), uint64(c1 + 30_000), "closed", 29_000},
		{"c", n2, uint64(c1 + 5000), uint64(c2 + 10), "takenover", uint64(c2 + 10 - c1 - 5000)},
		{"c", n1, uint64(c2), 0, "", 0},
	}
	if got := sessions(t, conn, db); !slices.Equal(got, want) {
		t.Fatalf("sessions after live inserts:\n got %+v\nwant %+v", got, want)
	}
	// Migrating again (a restart, or a second archiver) changes nothing.
	if again := migrate(t, conn, db); len(again.Ran) != 0 {
		t.Fatalf("second upgrade applied %v", again.Ran)
	}
	if got := sessions(t, conn, db); !slices.Equal(got, want) {
		t.Fatalf("sessions after a second migrate:\n got %+v\nwant %+v", got, want)
	}
}
