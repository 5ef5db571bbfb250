package analytics_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/archiver/analytics"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
	"github.com/fleetwatch/fleetwatch/services/archiver/sink"
)

// d0 is 2024-06-10 00:00:00 UTC; the fixture's window is [d0, d0+48h).
var d0 = time.Date(2024, 6, 10, 0, 0, 0, 0, time.UTC)

const (
	a1     = "site-a-dev-1"
	a2     = "site-a-dev-2"
	b1     = "site-b-dev-1"
	lonely = "lonely"
	n1     = "emqx@n1"
	n2     = "emqx@n2"
)

func at(d time.Duration) int64 { return d0.Add(d).UnixMilli() }

func hm(h, m int) time.Duration { return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute }

func conn(t *testing.T, dev, node string, ts int64) events.PresenceEvent {
	return presence(t, dev, node, events.KindConnected, "", ts, ts)
}

func disc(t *testing.T, dev, node string, reason events.Reason, ts, connectedAt int64) events.PresenceEvent {
	return presence(t, dev, node, events.KindDisconnected, reason, ts, connectedAt)
}

func presence(t *testing.T, dev, node string, kind events.Kind, reason events.Reason, ts, connectedAt int64) events.PresenceEvent {
	t.Helper()
	e, err := events.NewPresenceEvent(events.PresenceEvent{
		DeviceID: dev, Kind: kind, Reason: reason, RawReason: string(reason), Node: node,
		BrokerTSMS: ts, ConnectedAtMS: connectedAt, IP: "203.0.113.7", Source: "emqx_sys_v5", ReceivedAtMS: ts,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// fixturePresence is the fleet's history (see docs/analytics.md, "test
// fixture", for the timeline and the expected figures).
func fixturePresence(t *testing.T) []events.PresenceEvent {
	var (
		a1s1, a1s2, a1s3, a1s4, a1s5 = at(-time.Hour), at(3 * time.Hour), at(4 * time.Hour), at(23*time.Hour + 10*time.Second), at(28 * time.Hour)
		a2s1                         = at(12 * time.Hour)
		b1s1, b1s2, b1s3             = at(-48 * time.Hour), at(time.Hour), at(hm(1, 50))
		ls1                          = at(-72 * time.Hour)
	)
	return []events.PresenceEvent{
		// a1: down 2h-3h (keepalive), 3h00:30-4h (closed), a handover at
		// 23h (the new connection on n2 starts 10 s later), down 26h-28h
		// (keepalive), then online to the end.
		conn(t, a1, n1, a1s1),
		disc(t, a1, n1, events.ReasonKeepaliveTimeout, at(2*time.Hour), a1s1),
		conn(t, a1, n1, a1s2),
		disc(t, a1, n1, events.ReasonClosed, at(3*time.Hour+30*time.Second), a1s2),
		conn(t, a1, n1, a1s3),
		disc(t, a1, n1, events.ReasonTakenOver, at(23*time.Hour), a1s3),
		conn(t, a1, n2, a1s4),
		disc(t, a1, n2, events.ReasonKeepaliveTimeout, at(26*time.Hour), a1s4),
		conn(t, a1, n2, a1s5),
		// a2: first seen at 12h, down from 40h to the end.
		conn(t, a2, n1, a2s1),
		disc(t, a2, n1, events.ReasonKeepaliveTimeout, at(40*time.Hour), a2s1),
		// b1: a connection from two days ago that never got a disconnect
		// (EMQX v4 takeover) is superseded at 1h; down 1h20-1h50.
		conn(t, b1, n1, b1s1),
		conn(t, b1, n2, b1s2),
		disc(t, b1, n2, events.ReasonKeepaliveTimeout, at(hm(1, 20)), b1s2),
		conn(t, b1, n1, b1s3),
		// lonely: gone since three days before the window.
		conn(t, lonely, n1, ls1),
		disc(t, lonely, n1, events.ReasonNormal, at(-48*time.Hour), ls1),
	}
}

func alert(t *testing.T, receiver, fp string, created int64, devices ...string) events.AlertEvent {
	t.Helper()
	var ds []events.AlertDevice
	for _, d := range devices {
		ds = append(ds, events.AlertDevice{DeviceID: d, Status: events.StatusFiring, SinceMS: created - 30_000})
	}
	a, err := events.NewAlertEvent(events.AlertEvent{
		Fingerprint: fp, Receiver: receiver, Status: events.StatusFiring, Kind: events.AlertDeviceOffline,
		Severity: events.SeverityCritical, GroupKey: "{}:" + fp, Devices: ds,
		StartsAtMS: created - 30_000, CreatedAtMS: created,
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// muted marks an alert silenced (by silences) or inhibited (by the alert
// with fingerprint inhibitedBy); such alerts are recorded, never delivered.
func muted(t *testing.T, a events.AlertEvent, silences []string, inhibitedBy string) events.AlertEvent {
	t.Helper()
	a.ID = ""
	a.Silenced, a.SilenceIDs = len(silences) > 0, silences
	a.Inhibited, a.InhibitedBy = inhibitedBy != "", inhibitedBy
	a, err := events.NewAlertEvent(a)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func delivery(t *testing.T, a events.AlertEvent, attempt int, outcome events.Outcome, atMS, latencyMS int64) events.DeliveryEvent {
	t.Helper()
	d, err := events.NewDeliveryEvent(events.DeliveryEvent{
		AlertID: a.ID, Fingerprint: a.Fingerprint, AlertStatus: a.Status, Receiver: a.Receiver, Channel: "dingtalk",
		Attempt: attempt, Outcome: outcome, HTTPStatus: 200, RemoteCode: "0", LatencyMS: latencyMS, AtMS: atMS,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func fixtureAlerts(t *testing.T) ([]events.AlertEvent, []events.DeliveryEvent) {
	s := time.Second
	alerts := []events.AlertEvent{
		alert(t, "ops", "f1", at(2*time.Hour+30*s), a1),
		alert(t, "ops", "f2", at(26*time.Hour+30*s), a1),
		alert(t, "ops", "f3", at(40*time.Hour+30*s), a2),
		alert(t, "chat", "f3", at(40*time.Hour+30*s), a2),
		alert(t, "chat", "f4", at(41*time.Hour), b1),
		muted(t, alert(t, "ops", "f5", at(2*time.Hour+40*s), a1), nil, "f1"),
		muted(t, alert(t, "chat", "f6", at(2*time.Hour+50*s), a1), []string{"sil-1", "sil-2"}, ""),
	}
	ms := time.Millisecond
	deliveries := []events.DeliveryEvent{
		delivery(t, alerts[0], 1, events.OutcomeRetryable, at(2*time.Hour+31*s), 100),
		delivery(t, alerts[0], 2, events.OutcomeDelivered, at(2*time.Hour+35*s), 500),
		delivery(t, alerts[1], 1, events.OutcomeDelivered, at(26*time.Hour+30*s+200*ms), 300),
		delivery(t, alerts[2], 1, events.OutcomePermanent, at(40*time.Hour+31*s), 80),
		delivery(t, alerts[3], 1, events.OutcomeDelivered, at(40*time.Hour+32*s), 1000),
		delivery(t, alerts[4], 1, events.OutcomeRetryable, at(41*time.Hour+s), 2000),
	}
	return alerts, deliveries
}

var quiet = slog.New(slog.DiscardHandler)

// loadFixture migrates a fresh database and stores the fixture twice (a
// replay), in separate inserts so that the duplicates stay unmerged.
func loadFixture(t *testing.T) (driver.Conn, string) {
	t.Helper()
	c := chtest.Open(t)
	db := chtest.FreshDatabase(t, c)
	if _, err := schema.Migrate(t.Context(), c, db, schema.Options{Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	storeFixture(t, c, db, t.Context())
	return c, db
}

// storeFixture stores the fixture twice, in separate inserts; ctx carries
// the insert settings.
func storeFixture(t *testing.T, c driver.Conn, db string, ctx context.Context) {
	t.Helper()
	w := sink.NewWriter(c, db)
	alerts, deliveries := fixtureAlerts(t)
	for range 2 {
		p := sink.NewPresenceRows()
		for _, e := range fixturePresence(t) {
			if err := p.Add(e); err != nil {
				t.Fatal(err)
			}
		}
		a := sink.NewAlertRows()
		for _, e := range alerts {
			if err := a.Add(e); err != nil {
				t.Fatal(err)
			}
		}
		d := sink.NewDeliveryRows()
		for _, e := range deliveries {
			if err := d.Add(e); err != nil {
				t.Fatal(err)
			}
		}
		for _, rs := range []sink.RowSet{p, a, d} {
			if err := w.Insert(ctx, rs); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := chtest.Count(t, c, "SELECT count() FROM "+db+".presence_events"); n != 2*uint64(len(fixturePresence(t))) {
		t.Fatalf("presence_events has %d rows: the duplicates merged before the test", n)
	}
}

func args(db string) analytics.Args {
	return analytics.Args{Database: db, From: d0, To: d0.Add(48 * time.Hour)}
}

func run(t *testing.T, c driver.Conn, name string, a analytics.Args) analytics.Table {
	t.Helper()
	q, ok := analytics.Lookup(name)
	if !ok {
		t.Fatalf("no query %s", name)
	}
	tab, err := analytics.Run(t.Context(), c, q, a)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func check(t *testing.T, name string, got analytics.Table, cols string, rows ...string) {
	t.Helper()
	if g := strings.Join(got.Columns, " "); g != cols {
		t.Errorf("%s columns:\n got %s\nwant %s", name, g, cols)
	}
	var g []string
	for _, r := range got.Rows {
		g = append(g, strings.Join(r, " | "))
	}
	if !slices.Equal(g, rows) {
		t.Errorf("%s rows:\n got\n\t%s\nwant\n\t%s", name, strings.Join(g, "\n\t"), strings.Join(rows, "\n\t"))
	}
}

func TestQueriesOnFixture(t *testing.T) {
	c, db := loadFixture(t)
	a := args(db)
	// The same figures with the replayed duplicates unmerged, then merged.
	t.Run("unmerged", func(t *testing.T) { checkFixture(t, c, a) })
	for _, table := range []string{"presence_events", "alerts", "deliveries", "sessions"} {
		if err := c.Exec(t.Context(), "OPTIMIZE TABLE "+db+"."+table+" FINAL"); err != nil {
			t.Fatal(err)
		}
	}
	if n := chtest.Count(t, c, "SELECT count() FROM "+db+".presence_events"); n != uint64(len(fixturePresence(t))) {
		t.Fatalf("presence_events has %d rows after OPTIMIZE FINAL, want %d", n, len(fixturePresence(t)))
	}
	t.Run("merged", func(t *testing.T) { checkFixture(t, c, a) })
}

func checkFixture(t *testing.T, c driver.Conn, a analytics.Args) {
	t.Run("availability", func(t *testing.T) {
		check(t, "availability", run(t, c, "availability", a),
			"device_id site observed_s offline_s outages availability_pct",
			"lonely |  | 172800 | 172800 | 1 | 0",
			"site-a-dev-2 | site-a | 129600 | 28800 | 1 | 77.778",
			"site-a-dev-1 | site-a | 172800 | 14370 | 3 | 91.684",
			"site-b-dev-1 | site-b | 172800 | 1800 | 1 | 98.958",
		)
	})
	t.Run("availability-device-day", func(t *testing.T) {
		check(t, "availability-device-day", run(t, c, "availability-device-day", a),
			"day device_id site observed_s offline_s availability_pct",
			"2024-06-10 | lonely |  | 86400 | 86400 | 0",
			"2024-06-10 | site-a-dev-1 | site-a | 86400 | 7170 | 91.701",
			"2024-06-10 | site-a-dev-2 | site-a | 43200 | 0 | 100",
			"2024-06-10 | site-b-dev-1 | site-b | 86400 | 1800 | 97.917",
			"2024-06-11 | lonely |  | 86400 | 86400 | 0",
			"2024-06-11 | site-a-dev-1 | site-a | 86400 | 7200 | 91.667",
			"2024-06-11 | site-a-dev-2 | site-a | 86400 | 28800 | 66.667",
			"2024-06-11 | site-b-dev-1 | site-b | 86400 | 0 | 100",
		)
	})
	t.Run("availability-site-day", func(t *testing.T) {
		check(t, "availability-site-day", run(t, c, "availability-site-day", a),
			"day site devices observed_s offline_s availability_pct",
			"2024-06-10 |  | 1 | 86400 | 86400 | 0",
			"2024-06-10 | site-a | 2 | 129600 | 7170 | 94.468",
			"2024-06-10 | site-b | 1 | 86400 | 1800 | 97.917",
			"2024-06-11 |  | 1 | 86400 | 86400 | 0",
			"2024-06-11 | site-a | 2 | 172800 | 36000 | 79.167",
			"2024-06-11 | site-b | 1 | 86400 | 0 | 100",
		)
	})
	t.Run("outages", func(t *testing.T) {
		check(t, "outages", run(t, c, "outages", a),
			"start end device_id site duration_s reason ongoing",
			"2024-06-10 00:00:00 | 2024-06-12 00:00:00 | lonely |  | 172800 | normal | 1",
			"2024-06-10 01:20:00 | 2024-06-10 01:50:00 | site-b-dev-1 | site-b | 1800 | keepalive_timeout | 0",
			"2024-06-10 02:00:00 | 2024-06-10 03:00:00 | site-a-dev-1 | site-a | 3600 | keepalive_timeout | 0",
			"2024-06-10 03:00:30 | 2024-06-10 04:00:00 | site-a-dev-1 | site-a | 3570 | closed | 0",
			"2024-06-11 02:00:00 | 2024-06-11 04:00:00 | site-a-dev-1 | site-a | 7200 | keepalive_timeout | 0",
			"2024-06-11 16:00:00 | 2024-06-12 00:00:00 | site-a-dev-2 | site-a | 28800 | keepalive_timeout | 1",
		)
	})
	t.Run("reliability-device", func(t *testing.T) {
		check(t, "reliability-device", run(t, c, "reliability-device", a),
			"device_id site outages offline_s mttr_s mtbf_s availability_pct",
			"site-a-dev-1 | site-a | 3 | 14370 | 4790 | 52810 | 91.684",
			"lonely |  | 1 | 172800 | 0 | 0 | 0",
			"site-a-dev-2 | site-a | 1 | 28800 | 0 | 100800 | 77.778",
			"site-b-dev-1 | site-b | 1 | 1800 | 1800 | 171000 | 98.958",
		)
	})
	t.Run("reliability-site", func(t *testing.T) {
		// site-a: 4 outages, 43170 s offline; 3 recovered (14370 s);
		// online 172800+129600-43170 = 259230 s of 302400 observed.
		check(t, "reliability-site", run(t, c, "reliability-site", a),
			"site devices outages offline_s mttr_s mtbf_s availability_pct",
			" | 1 | 1 | 172800 | 0 | 0 | 0",
			"site-a | 2 | 4 | 43170 | 4790 | 64807.5 | 85.724",
			"site-b | 1 | 1 | 1800 | 1800 | 171000 | 98.958",
		)
	})
	t.Run("flappers", func(t *testing.T) {
		check(t, "flappers", run(t, c, "flappers", a),
			"device_id site disconnects short median_session_s first last",
			"site-a-dev-1 | site-a | 3 | 1 | 10790 | 2024-06-10 02:00:00 | 2024-06-11 02:00:00",
			"site-a-dev-2 | site-a | 1 | 0 | 100800 | 2024-06-11 16:00:00 | 2024-06-11 16:00:00",
			"site-b-dev-1 | site-b | 1 | 0 | 1200 | 2024-06-10 01:20:00 | 2024-06-10 01:20:00",
		)
	})
	t.Run("mass-outage", func(t *testing.T) {
		w := a
		w.From, w.To = d0.Add(hm(1, 48)), d0.Add(hm(2, 1))
		var want []string
		for m := 48; m <= 60; m++ {
			minute := d0.Add(hm(1, m)).Format("2006-01-02 15:04:05")
			want = append(want, minute+" |  | 1")
			if m < 50 {
				want = append(want, minute+" | site-b | 1")
			}
			if m == 60 {
				want = append(want, minute+" | site-a | 1")
			}
		}
		check(t, "mass-outage", run(t, c, "mass-outage", w), "minute site devices_offline", want...)
	})
	t.Run("delivery-health", func(t *testing.T) {
		check(t, "delivery-health", run(t, c, "delivery-health", a),
			"receiver alerts delivered failed pending attempts success_pct p50_latency_s p99_latency_s max_latency_s",
			"chat | 2 | 1 | 0 | 1 | 2 | 50 | 3 | 3 | 3",
			"ops | 3 | 2 | 1 | 0 | 4 | 66.667 | 5.5 | 5.5 | 5.5",
		)
	})
	t.Run("device-history", func(t *testing.T) {
		w := a
		w.Device, w.From, w.To = a1, d0.Add(time.Hour), d0.Add(3*time.Hour)
		check(t, "device-history", run(t, c, "device-history", w),
			"at at_ms what event detail",
			fmt.Sprintf("2024-06-10 02:00:00 | %d | presence | disconnected | node=emqx@n1 reason=keepalive_timeout ip=203.0.113.7", at(2*time.Hour)),
			fmt.Sprintf("2024-06-10 02:00:30 | %d | alert | device_offline firing | receiver=ops severity=critical devices=1", at(2*time.Hour+30*time.Second)),
			fmt.Sprintf("2024-06-10 02:00:31 | %d | delivery | retryable | receiver=ops attempt=1 latency_ms=100 code=0", at(2*time.Hour+31*time.Second)),
			fmt.Sprintf("2024-06-10 02:00:35 | %d | delivery | delivered | receiver=ops attempt=2 latency_ms=500 code=0", at(2*time.Hour+35*time.Second)),
			fmt.Sprintf("2024-06-10 02:00:40 | %d | alert | device_offline firing | receiver=ops severity=critical devices=1 inhibited by f1", at(2*time.Hour+40*time.Second)),
			fmt.Sprintf("2024-06-10 02:00:50 | %d | alert | device_offline firing | receiver=chat severity=critical devices=1 silenced by sil-1,sil-2", at(2*time.Hour+50*time.Second)),
		)
	})
	t.Run("filters", func(t *testing.T) {
		w := a
		w.Site = "site-a"
		check(t, "reliability-site site=site-a", run(t, c, "reliability-site", w),
			"site devices outages offline_s mttr_s mtbf_s availability_pct",
			"site-a | 2 | 4 | 43170 | 4790 | 64807.5 | 85.724",
		)
		w = a
		w.Device = b1
		check(t, "outages device=b1", run(t, c, "outages", w),
			"start end device_id site duration_s reason ongoing",
			"2024-06-10 01:20:00 | 2024-06-10 01:50:00 | site-b-dev-1 | site-b | 1800 | keepalive_timeout | 0",
		)
		w = a
		w.Limit = 1
		check(t, "flappers limit=1", run(t, c, "flappers", w),
			"device_id site disconnects short median_session_s first last",
			"site-a-dev-1 | site-a | 3 | 1 | 10790 | 2024-06-10 02:00:00 | 2024-06-11 02:00:00",
		)
	})
}
