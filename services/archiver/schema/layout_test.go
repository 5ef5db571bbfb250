package schema

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// statements renders the whole schema for a layout, in the order Migrate
// runs it.
func statements(t *testing.T, l Layout) []string {
	t.Helper()
	out := []string{l.createDatabase()}
	out = append(out, l.createTable(migrationsSpec)...)
	for _, m := range Migrations() {
		if m.Statements != nil {
			out = append(out, m.Statements(l)...)
		}
		if l.Cluster == "" {
			for _, c := range m.Columns {
				out = append(out, l.addColumn(c).stmt)
			}
			continue
		}
		for _, table := range columnTables(m.Columns) {
			out = append(out, l.addColumns(table, m.Columns).stmt)
			r, err := l.recreateDistributed(table)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, r...)
		}
	}
	r, err := l.RetentionStatements()
	if err != nil {
		t.Fatal(err)
	}
	return append(out, r...)
}

var (
	caps1816 = CapabilitiesOf(Version{18, 16, 1})
	caps1903 = CapabilitiesOf(Version{19, 3, 0})
	caps2408 = CapabilitiesOf(Version{24, 8, 4})
)

func TestDeliveriesDDLPerLayout(t *testing.T) {
	tests := []struct {
		name   string
		layout Layout
		want   []string
	}{
		{"18.16 single node", Layout{Database: "fw", Caps: caps1816}, []string{`CREATE TABLE IF NOT EXISTS fw.deliveries (
	id String,
	alert_id String,
	fingerprint String,
	alert_status String,
	receiver String,
	channel String,
	attempt UInt32,
	outcome String,
	http_status UInt16,
	remote_code String,
	remote_message String,
	hint String,
	bytes UInt32,
	latency_ms UInt64,
	at_ms UInt64,
	date Date
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (receiver, alert_id, id)`}},
		{"24.8 cluster", Layout{Database: "fw", Caps: caps2408, Cluster: "fleet", ZooKeeperPrefix: "/ch/"}, []string{`CREATE TABLE IF NOT EXISTS fw.deliveries_local ON CLUSTER fleet (
	id String,
	alert_id String,
	fingerprint String,
	alert_status LowCardinality(String),
	receiver LowCardinality(String),
	channel LowCardinality(String),
	attempt UInt32,
	outcome LowCardinality(String),
	http_status UInt16,
	remote_code LowCardinality(String),
	remote_message String,
	hint String,
	bytes UInt32,
	latency_ms UInt64,
	at_ms UInt64 CODEC(Delta, LZ4),
	date Date
) ENGINE = ReplicatedReplacingMergeTree('/ch/{shard}/fw/deliveries_local', '{replica}')
PARTITION BY toYYYYMM(date)
ORDER BY (receiver, alert_id, id)`, `CREATE TABLE IF NOT EXISTS fw.deliveries ON CLUSTER fleet AS fw.deliveries_local
ENGINE = Distributed(fleet, fw, deliveries_local, cityHash64(alert_id))`}},
	}
	for _, tt := range tests {
		got := Migrations()[2].Statements(tt.layout)
		if strings.Join(got, "\n;\n") != strings.Join(tt.want, "\n;\n") {
			t.Errorf("%s:\n%s\nwant:\n%s", tt.name, strings.Join(got, "\n;\n"), strings.Join(tt.want, "\n;\n"))
		}
	}
}

func TestSessionsDDLInACluster(t *testing.T) {
	l := Layout{Database: "fw", Caps: caps1816, Cluster: "fleet"}
	got := Migrations()[3].Statements(l)
	if len(got) != 4 {
		t.Fatalf("%d statements, want local table, distributed table, view, backfill", len(got))
	}
	checks := []struct {
		stmt     int
		prefix   string
		contains []string
	}{
		{0, "CREATE TABLE IF NOT EXISTS fw.sessions_local ON CLUSTER fleet (", []string{"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/fw/sessions_local', '{replica}', version)"}},
		{1, "CREATE TABLE IF NOT EXISTS fw.sessions ON CLUSTER fleet AS fw.sessions_local", []string{"Distributed(fleet, fw, sessions_local, cityHash64(device_id))"}},
		{2, "CREATE MATERIALIZED VIEW IF NOT EXISTS fw.sessions_mv ON CLUSTER fleet TO fw.sessions_local", []string{"FROM fw.presence_events_local\n"}},
		{3, "INSERT INTO fw.sessions (device_id, node,", []string{"FROM fw.presence_events\n"}},
	}
	for _, c := range checks {
		s := got[c.stmt]
		if !strings.HasPrefix(s, c.prefix) {
			t.Errorf("statement %d starts %q, want %q", c.stmt, firstLine(s), c.prefix)
		}
		for _, want := range c.contains {
			if !strings.Contains(s, want) {
				t.Errorf("statement %d lacks %q:\n%s", c.stmt, want, s)
			}
		}
	}
	// presence and sessions shard by device, so that a device's events
	// and its connections meet on one shard (the view is shard-local).
	for _, s := range Migrations()[0].Statements(l) {
		if strings.Contains(s, "Distributed(") && !strings.Contains(s, "cityHash64(device_id)") {
			t.Errorf("presence is not sharded by device: %s", s)
		}
	}
}

func TestAlertsColumnsDDL(t *testing.T) {
	m := Migrations()[4]
	if m.Version != 5 || m.Statements != nil {
		t.Fatalf("migration 5 = %d %q", m.Version, m.Name)
	}
	var single []string
	for _, c := range m.Columns {
		a := (Layout{Database: "fw", Caps: caps1816}).addColumn(c)
		single = append(single, a.table+": "+a.stmt)
	}
	wantSingle := []string{
		"alerts: ALTER TABLE fw.alerts ADD COLUMN silence_ids Array(String) AFTER silenced",
		"alerts: ALTER TABLE fw.alerts ADD COLUMN inhibited UInt8 AFTER silence_ids",
		"alerts: ALTER TABLE fw.alerts ADD COLUMN inhibited_by String AFTER inhibited",
		"alerts: ALTER TABLE fw.alerts ADD COLUMN new_total UInt32 AFTER devices_total",
		"alerts: ALTER TABLE fw.alerts ADD COLUMN resolved_total UInt32 AFTER new_total",
		"alerts: ALTER TABLE fw.alerts ADD COLUMN firing_total UInt32 AFTER resolved_total",
		"alerts: ALTER TABLE fw.alerts ADD COLUMN known_total UInt32 AFTER firing_total",
		"alerts: ALTER TABLE fw.alerts ADD COLUMN flap_count UInt32 AFTER known_total",
		"alerts: ALTER TABLE fw.alerts ADD COLUMN tier UInt16 AFTER flap_count",
	}
	if strings.Join(single, "\n") != strings.Join(wantSingle, "\n") {
		t.Errorf("single node:\n%s\nwant:\n%s", strings.Join(single, "\n"), strings.Join(wantSingle, "\n"))
	}
	// In a cluster the columns go to the replicated local table, in one
	// ALTER; the Distributed table is created again over it (18.16 rejects
	// ALTER ON CLUSTER of a Distributed table when a shard has
	// internal_replication).
	a := (Layout{Database: "fw", Caps: caps2408, Cluster: "fleet"}).addColumns(TableAlerts, m.Columns)
	wantCluster := "alerts_local: ALTER TABLE fw.alerts_local ON CLUSTER fleet ADD COLUMN silence_ids Array(String) AFTER silenced, " +
		"ADD COLUMN inhibited UInt8 AFTER silence_ids, ADD COLUMN inhibited_by String AFTER inhibited, " +
		"ADD COLUMN new_total UInt32 AFTER devices_total, ADD COLUMN resolved_total UInt32 AFTER new_total, " +
		"ADD COLUMN firing_total UInt32 AFTER resolved_total, ADD COLUMN known_total UInt32 AFTER firing_total, " +
		"ADD COLUMN flap_count UInt32 AFTER known_total, ADD COLUMN tier UInt16 AFTER flap_count"
	if got := a.table + ": " + a.stmt; got != wantCluster {
		t.Errorf("cluster:\n%s\nwant:\n%s", got, wantCluster)
	}
	re, err := (Layout{Database: "fw", Caps: caps2408, Cluster: "fleet"}).recreateDistributed(TableAlerts)
	wantRe := []string{
		"DROP TABLE IF EXISTS fw.alerts ON CLUSTER fleet",
		"CREATE TABLE IF NOT EXISTS fw.alerts ON CLUSTER fleet AS fw.alerts_local\nENGINE = Distributed(fleet, fw, alerts_local, cityHash64(fingerprint))",
	}
	if err != nil || !slices.Equal(re, wantRe) {
		t.Errorf("recreateDistributed(alerts) = %q, %v; want %q", re, err, wantRe)
	}
	for _, l := range []Layout{{Database: "fw", Cluster: "fleet"}, {Database: "fw"}} {
		for _, table := range []string{TableMigrations, "nope", TableAlerts} {
			if table == TableAlerts && l.Cluster != "" {
				continue
			}
			if _, err := l.recreateDistributed(table); err == nil {
				t.Errorf("recreateDistributed(%s) in cluster %q: no error", table, l.Cluster)
			}
		}
	}
}

var createStmt = regexp.MustCompile(`^CREATE (TABLE|DATABASE|MATERIALIZED VIEW) IF NOT EXISTS (\w+(\.\w+)?)`)

// TestDDLPerCapabilitySet checks the whole schema for every capability
// set, on a single node and in a cluster.
func TestDDLPerCapabilitySet(t *testing.T) {
	for _, caps := range []Capabilities{caps1816, caps1903, CapabilitiesOf(Version{19, 6, 0}), CapabilitiesOf(Version{19, 10, 0}), caps2408} {
		for _, cluster := range []string{"", "fleet"} {
			l := Layout{Database: "fw", Caps: caps, Cluster: cluster}
			if caps.TTL {
				l.RetentionDays = 400
			}
			all := strings.Join(statements(t, l), "\n;\n")
			name := caps.Version.String() + " cluster=" + cluster
			if got, want := strings.Contains(all, "LowCardinality("), caps.LowCardinality; got != want {
				t.Errorf("%s: LowCardinality used %v, want %v", name, got, want)
			}
			if got, want := strings.Contains(all, "CODEC("), caps.Codecs; got != want {
				t.Errorf("%s: codecs used %v, want %v", name, got, want)
			}
			if got, want := strings.Count(all, "MODIFY TTL date + INTERVAL 400 DAY"), map[bool]int{true: 4, false: 0}[caps.TTL]; got != want {
				t.Errorf("%s: %d TTL statements, want %d", name, got, want)
			}
			for _, s := range statements(t, l) {
				if strings.Contains(s, "DateTime64") {
					t.Errorf("%s: DateTime64 used: the tables keep epoch ms in UInt64 on every server", name)
				}
				if cluster != "" && !strings.HasPrefix(s, "INSERT") && !strings.Contains(firstLine(s), " ON CLUSTER fleet") {
					t.Errorf("%s: no ON CLUSTER: %s", name, firstLine(s))
				}
				if cluster == "" && (strings.Contains(s, "ON CLUSTER") || strings.Contains(s, "Replicated") || strings.Contains(s, "Distributed")) {
					t.Errorf("%s: cluster DDL on a single node: %s", name, firstLine(s))
				}
				if strings.HasPrefix(s, "CREATE") && !createStmt.MatchString(s) {
					t.Errorf("%s: CREATE without IF NOT EXISTS or db.name: %s", name, firstLine(s))
				}
			}
			if cluster != "" {
				for _, table := range []string{TablePresence, TableAlerts, TableDeliveries, TableSessions} {
					if !strings.Contains(all, "CREATE TABLE IF NOT EXISTS fw."+table+"_local ON CLUSTER fleet (") ||
						!strings.Contains(all, "ENGINE = Distributed(fleet, fw, "+table+"_local, cityHash64(") {
						t.Errorf("%s: %s is not a replicated local table with a Distributed table", name, table)
					}
				}
				if !strings.Contains(all, "fw.schema_migrations ON CLUSTER fleet (") ||
					!strings.Contains(all, "ReplicatedReplacingMergeTree('/clickhouse/tables/all/fw/schema_migrations', '{shard}-{replica}')") {
					t.Errorf("%s: schema_migrations is not one replicated table for the cluster", name)
				}
			}
		}
	}
}

func TestRetentionNeedsTTL(t *testing.T) {
	_, err := Layout{Database: "fw", Caps: caps1816, RetentionDays: 30}.RetentionStatements()
	want := "retention of 30 days needs table TTL (ClickHouse 19.6 or newer); the server is 18.16.1: set retention_days to 0 and drop old monthly partitions with ALTER TABLE ... DROP PARTITION: not supported by this ClickHouse server"
	if err == nil || err.Error() != want || !errors.Is(err, ErrUnsupported) {
		t.Fatalf("RetentionStatements on 18.16 = %v, want %q", err, want)
	}
	got, err := Layout{Database: "fw", Caps: caps2408, Cluster: "c", RetentionDays: 30}.RetentionStatements()
	if err != nil || got[0] != "ALTER TABLE fw.presence_events_local ON CLUSTER c MODIFY TTL date + INTERVAL 30 DAY" {
		t.Fatalf("RetentionStatements = %q, %v", got, err)
	}
}

func TestLayoutCheck(t *testing.T) {
	for _, l := range []Layout{
		{Database: "fw-x"},
		{Database: "fw", Cluster: "a b"},
		{Database: "fw", ZooKeeperPrefix: "/x'y"},
		{Database: "fw", RetentionDays: -1},
	} {
		if err := l.Check(); err == nil {
			t.Errorf("Check(%+v) = nil, want an error", l)
		}
	}
	if err := (Layout{Database: "fw", Cluster: "fleet_1", ZooKeeperPrefix: "/clickhouse/tables", RetentionDays: 30}).Check(); err != nil {
		t.Errorf("Check of a good layout: %v", err)
	}
}
