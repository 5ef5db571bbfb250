package schema_test

import (
	"context"
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

// alertColumnsV1 is the INSERT column list of the archiver before
// migration 5.
const alertColumnsV1 = "id, fingerprint, receiver, status, kind, severity, group_key, group_label_keys, group_label_values, " +
	"device_ids, devices_total, starts_at_ms, ends_at_ms, created_at_ms, silenced, date"

// alertsV2 is one alert row with the columns of migration 5.
type alertsV2 struct {
	ID                                                          string
	Silenced                                                    uint8
	SilenceIDs                                                  []string
	Inhibited                                                   uint8
	InhibitedBy                                                 string
	NewTotal, ResolvedTotal, FiringTotal, KnownTotal, FlapCount uint32
	Tier                                                        uint16
}

func readAlertsV2(t *testing.T, conn driver.Conn, db string) []alertsV2 {
	t.Helper()
	rows, err := conn.Query(t.Context(), `SELECT id, any(silenced), any(silence_ids), any(inhibited), any(inhibited_by),
		any(new_total), any(resolved_total), any(firing_total), any(known_total), any(flap_count), any(tier)
		FROM `+db+`.alerts GROUP BY id ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []alertsV2
	for rows.Next() {
		var r alertsV2
		if err := rows.Scan(&r.ID, &r.Silenced, &r.SilenceIDs, &r.Inhibited, &r.InhibitedBy,
			&r.NewTotal, &r.ResolvedTotal, &r.FiringTotal, &r.KnownTotal, &r.FlapCount, &r.Tier); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func columnNames(t *testing.T, conn driver.Conn, db, table string) []string {
	t.Helper()
	rows, err := conn.Query(t.Context(), "SELECT name FROM system.columns WHERE database = ? AND table = ?", db, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	return names
}

// TestAlertsUpgradeAddsTheNewColumns builds a database as the previous
// archiver left it (migrations 1-4) with alerts stored with the old column
// list, upgrades it, and checks that the old rows read the new columns as
// their defaults while new rows store every field, replays included.
func TestAlertsUpgradeAddsTheNewColumns(t *testing.T) {
	conn := chtest.Open(t)
	db := chtest.FreshDatabase(t, conn)
	if _, err := schema.Migrate(t.Context(), conn, db, schema.Options{Logger: quiet, Now: func() time.Time { return fixedNow }, UpTo: 4}); err != nil {
		t.Fatal(err)
	}
	// The previous archiver's insert of an old alert.
	b, err := conn.PrepareBatch(t.Context(), "INSERT INTO "+db+".alerts ("+alertColumnsV1+")")
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

	res := migrate(t, conn, db)
	if !slices.Equal(res.Ran, []uint32{5}) {
		t.Fatalf("upgrade applied %v, want [5]", res.Ran)
	}
	want := []string{"id", "fingerprint", "receiver", "status", "kind", "severity", "group_key", "group_label_keys", "group_label_values",
		"device_ids", "devices_total", "new_total", "resolved_total", "firing_total", "known_total", "flap_count", "tier",
		"starts_at_ms", "ends_at_ms", "created_at_ms", "silenced", "silence_ids", "inhibited", "inhibited_by", "date"}
	if got := columnNames(t, conn, db, schema.TableAlerts); !slices.Equal(got, want) {
		t.Fatalf("alerts columns after the upgrade:\n got %v\nwant %v", got, want)
	}

	silenced := alertEvent(t, events.AlertEvent{
		Fingerprint: "fp-group", Receiver: "ops", Status: events.StatusFiring, Kind: events.AlertGroupOutage,
		Severity: events.SeverityCritical, GroupKey: `{}:{site="sh-01"}`, DevicesTotal: 120,
		StartsAtMS: 1718000300411, CreatedAtMS: 1718000330411, Silenced: true, SilenceIDs: []string{"sil-a", "sil-b"},
		NewTotal: 115, ResolvedTotal: 3, FiringTotal: 2, KnownTotal: 150,
	})
	inhibited := alertEvent(t, events.AlertEvent{
		Fingerprint: "fp-dev", Receiver: "ops", Status: events.StatusFiring, Kind: events.AlertDeviceFlapping,
		Severity: events.SeverityWarning, GroupKey: `{}:{device_id="dev-42"}`, StartsAtMS: 1718000300411,
		CreatedAtMS: 1718000300411, Inhibited: true, InhibitedBy: "fp-group", FlapCount: 7, Tier: 2,
	})
	rows := sink.NewAlertRows()
	for _, a := range []events.AlertEvent{silenced, inhibited, silenced} { // a redelivery too
		if err := rows.Add(a); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // and a replay
		if err := sink.NewWriter(conn, db).Insert(t.Context(), rows); err != nil {
			t.Fatal(err)
		}
	}
	wantRows := []alertsV2{
		{ID: inhibited.ID, SilenceIDs: []string{}, Inhibited: 1, InhibitedBy: "fp-group", FlapCount: 7, Tier: 2},
		{ID: silenced.ID, Silenced: 1, SilenceIDs: []string{"sil-a", "sil-b"}, NewTotal: 115, ResolvedTotal: 3, FiringTotal: 2, KnownTotal: 150},
		{ID: "old-1", Silenced: 1, SilenceIDs: []string{}},
	}
	slices.SortFunc(wantRows, func(a, b alertsV2) int { return strings.Compare(a.ID, b.ID) })
	check := func(when string) {
		t.Helper()
		got := readAlertsV2(t, conn, db)
		if len(got) != len(wantRows) {
			t.Fatalf("%s: %d alerts, want %d: %+v", when, len(got), len(wantRows), got)
		}
		for i := range got {
			g, w := got[i], wantRows[i]
			if g.ID != w.ID || g.Silenced != w.Silenced || !slices.Equal(g.SilenceIDs, w.SilenceIDs) || g.Inhibited != w.Inhibited ||
				g.InhibitedBy != w.InhibitedBy || g.NewTotal != w.NewTotal || g.ResolvedTotal != w.ResolvedTotal ||
				g.FiringTotal != w.FiringTotal || g.KnownTotal != w.KnownTotal || g.FlapCount != w.FlapCount || g.Tier != w.Tier {
				t.Errorf("%s: alert %d\n got %+v\nwant %+v", when, i, g, w)
			}
		}
		if n := chtest.Count(t, conn, "SELECT count() FROM "+db+".alerts FINAL"); n != 3 {
			t.Errorf("%s: %d alerts with FINAL, want 3", when, n)
		}
	}
	check("before merges")
	if err := conn.Exec(t.Context(), "OPTIMIZE TABLE "+db+".alerts FINAL"); err != nil {
		t.Fatal(err)
	}
	check("after OPTIMIZE FINAL")
	if n := chtest.Count(t, conn, "SELECT count() FROM "+db+".alerts"); n != 3 {
		t.Errorf("after OPTIMIZE FINAL: %d alert rows, want 3", n)
	}
}

// TestAlertsColumnsMigrationResumes covers a migration 5 that stopped half
// way (some columns added, the version not recorded) and several
// archivers finishing it at once.
func TestAlertsColumnsMigrationResumes(t *testing.T) {
	conn := chtest.Open(t)
	db := chtest.FreshDatabase(t, conn)
	if _, err := schema.Migrate(t.Context(), conn, db, schema.Options{Logger: quiet, Now: func() time.Time { return fixedNow }, UpTo: 4}); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		"ALTER TABLE " + db + ".alerts ADD COLUMN silence_ids Array(String) AFTER silenced",
		"ALTER TABLE " + db + ".alerts ADD COLUMN new_total UInt32 AFTER devices_total",
	} {
		if err := conn.Exec(t.Context(), stmt); err != nil {
			t.Fatal(err)
		}
	}
	const migrators = 3
	var wg sync.WaitGroup
	errs := make([]error, migrators)
	for i := range migrators {
		c := chtest.Open(t)
		wg.Go(func() {
			_, errs[i] = schema.Migrate(context.Background(), c, db, schema.Options{Logger: quiet, Now: func() time.Time { return fixedNow }})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("migrator %d: %v", i, err)
		}
	}
	checkApplied(t, conn, db, mustParse(t, serverVersion(t, conn)).String())
	if got, want := columnNames(t, conn, db, schema.TableAlerts), sink.NewAlertRows().Columns(); !slices.Equal(got, want) {
		t.Fatalf("alerts columns:\n got %v\nwant %v", got, want)
	}
}

func alertEvent(t *testing.T, a events.AlertEvent) events.AlertEvent {
	t.Helper()
	a, err := events.NewAlertEvent(a)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
