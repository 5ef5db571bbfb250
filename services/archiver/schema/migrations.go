package schema

// Table names in the archiver's database.
const (
	TablePresence   = "presence_events"
	TableAlerts     = "alerts"
	TableDeliveries = "deliveries"
	// TableSessions holds one row per connection (see sessionsV1).
	TableSessions = "sessions"
	// ViewSessions is the materialized view that fills sessions from
	// every insert into presence_events.
	ViewSessions = "sessions_mv"
	// TableMigrations records the applied migrations.
	TableMigrations = "schema_migrations"
)

// Migration is one versioned schema change.
type Migration struct {
	// Version orders migrations; it is recorded in schema_migrations.
	Version uint32
	// Name says what the migration does.
	Name string
	// Statements returns the migration's DDL for a layout (database,
	// server capabilities, single node or cluster). Every statement must
	// be idempotent (IF NOT EXISTS) and must reference tables as
	// database.table. Nil: none.
	Statements func(l Layout) []string
	// Columns are added to existing tables, after Statements. ClickHouse
	// 18.16 has no ADD COLUMN IF NOT EXISTS, so Migrate adds each column
	// only where system.columns lacks it, and takes "already exists" from
	// a concurrent migrator as done.
	Columns []NewColumn
}

// NewColumn is a column that a migration adds to an existing table. Rows
// stored before have the type's default value (0, the empty string, the empty array).
type NewColumn struct {
	// Table is the table's name (in a cluster: <table>_local gets the
	// column, and the Distributed <table> is created again over it).
	Table string
	// Name and Type of the column; Type is a plain ClickHouse type that
	// every supported server knows.
	Name, Type string
	// After names the column it follows ("": at the end).
	After string
}

// Migrations returns every migration, in version order.
func Migrations() []Migration {
	return []Migration{
		{Version: 1, Name: "create presence_events", Statements: func(l Layout) []string { return l.createTable(presenceSpec) }},
		{Version: 2, Name: "create alerts", Statements: func(l Layout) []string { return l.createTable(alertsSpec) }},
		{Version: 3, Name: "create deliveries", Statements: func(l Layout) []string { return l.createTable(deliveriesSpec) }},
		{Version: 4, Name: "create sessions", Statements: sessionsV1},
		{Version: 5, Name: "alerts: silence ids, inhibition, group totals, flap count, tier", Columns: alertsV2Columns},
	}
}

// alertsV2Columns store the AlertEvent fields added after the walking
// skeleton: which silences matched, whether (and by which alert) the alert
// was inhibited, the group notification's device counts by status, the
// group's known size, the flap count and the escalation tier.
var alertsV2Columns = []NewColumn{
	{Table: TableAlerts, Name: "silence_ids", Type: "Array(String)", After: "silenced"},
	{Table: TableAlerts, Name: "inhibited", Type: "UInt8", After: "silence_ids"},
	{Table: TableAlerts, Name: "inhibited_by", Type: "String", After: "inhibited"},
	{Table: TableAlerts, Name: "new_total", Type: "UInt32", After: "devices_total"},
	{Table: TableAlerts, Name: "resolved_total", Type: "UInt32", After: "new_total"},
	{Table: TableAlerts, Name: "firing_total", Type: "UInt32", After: "resolved_total"},
	{Table: TableAlerts, Name: "known_total", Type: "UInt32", After: "firing_total"},
	{Table: TableAlerts, Name: "flap_count", Type: "UInt32", After: "known_total"},
	{Table: TableAlerts, Name: "tier", Type: "UInt16", After: "flap_count"},
}

// Each event table is a ReplacingMergeTree: rows with the same sorting key
// in one partition collapse on merge. The sorting key ends with id and its
// other columns, like the partition's date, are derived from the content
// the id is derived from, so two copies of an event always meet (in a
// cluster, the sharding key is derived from the same content too).
//
// ORDER BY serves the common queries: per device over time for presence,
// per alert fingerprint for alerts, per receiver and alert for deliveries;
// time ranges prune by the monthly partitions.

func str(name string) column      { return column{name: name, typ: "String"} }
func lowCard(name string) column  { return column{name: name, typ: "String", lowCard: true} }
func col(name, typ string) column { return column{name: name, typ: typ} }
func delta(name, typ string) column {
	return column{name: name, typ: typ, delta: true}
}

// specOf returns the spec of a table by name.
func specOf(table string) (tableSpec, bool) {
	for _, t := range []tableSpec{presenceSpec, alertsSpec, deliveriesSpec, sessionsSpec, migrationsSpec} {
		if t.name == table {
			return t, true
		}
	}
	return tableSpec{}, false
}

var presenceSpec = tableSpec{
	name: TablePresence,
	columns: []column{
		str("id"), str("device_id"), lowCard("kind"), lowCard("reason"), lowCard("raw_reason"), lowCard("node"),
		delta("broker_ts", "DateTime"), delta("broker_ts_ms", "UInt64"), col("connected_at_ms", "UInt64"), col("conn_version", "Int64"),
		str("ip"), str("username"), lowCard("protocol"), col("proto_ver", "UInt8"), col("keepalive_s", "UInt32"),
		lowCard("source"), delta("received_at_ms", "UInt64"), col("date", "Date"),
	},
	partition: "toYYYYMM(date)",
	order:     "(device_id, broker_ts_ms, id)",
	shardKey:  "cityHash64(device_id)",
}

var alertsSpec = tableSpec{
	name: TableAlerts,
	columns: []column{
		str("id"), str("fingerprint"), lowCard("receiver"), lowCard("status"), lowCard("kind"), lowCard("severity"),
		str("group_key"), col("group_label_keys", "Array(String)"), col("group_label_values", "Array(String)"),
		col("device_ids", "Array(String)"), col("devices_total", "UInt32"),
		delta("starts_at_ms", "UInt64"), col("ends_at_ms", "UInt64"), delta("created_at_ms", "UInt64"),
		col("silenced", "UInt8"), col("date", "Date"),
	},
	partition: "toYYYYMM(date)",
	order:     "(fingerprint, starts_at_ms, id)",
	shardKey:  "cityHash64(fingerprint)",
}

var deliveriesSpec = tableSpec{
	name: TableDeliveries,
	columns: []column{
		str("id"), str("alert_id"), str("fingerprint"), lowCard("alert_status"), lowCard("receiver"), lowCard("channel"),
		col("attempt", "UInt32"), lowCard("outcome"), col("http_status", "UInt16"), lowCard("remote_code"),
		str("remote_message"), str("hint"), col("bytes", "UInt32"), col("latency_ms", "UInt64"),
		delta("at_ms", "UInt64"), col("date", "Date"),
	},
	partition: "toYYYYMM(date)",
	order:     "(receiver, alert_id, id)",
	shardKey:  "cityHash64(alert_id)",
}

var sessionsSpec = tableSpec{
	name: TableSessions,
	columns: []column{
		str("device_id"), lowCard("node"), col("conn_version", "Int64"),
		delta("connected_ms", "UInt64"), delta("connected_at", "DateTime"),
		col("disconnected_ms", "UInt64"), col("disconnected_at", "DateTime"), col("duration_ms", "UInt64"),
		lowCard("reason"), lowCard("raw_reason"), str("ip"), str("username"), lowCard("protocol"),
		col("keepalive_s", "UInt32"), col("version", "UInt64"), col("date", "Date"),
	},
	version:   "version",
	partition: "toYYYYMM(date)",
	order:     "(device_id, connected_ms, node, conn_version)",
	shardKey:  "cityHash64(device_id)",
}

var migrationsSpec = tableSpec{
	name: TableMigrations,
	columns: []column{
		col("version", "UInt32"), str("name"), col("applied_at", "DateTime"), str("server_version"),
	},
	order:  "version",
	global: true,
}

// Sessions: one row per connection, keyed like the evaluator keys a
// connection (contracts/emqx.md rule 1): device, connected_at, node and
// conn_version. The materialized view turns every presence event into a
// row of its connection without any state:
//
//   - a connected event writes the connection open (disconnected_ms = 0,
//     version 0);
//   - a disconnected event that names its connection (connected_at_ms > 0)
//     writes it closed, with reason and duration, and a version of
//     2^64-1 - disconnected_ms.
//
// ReplacingMergeTree(version) keeps the highest version of a key: a closed
// row beats the open one whatever order they arrive in, and of two
// disconnects of one connection (EMQX 5.0.10-5.6 sent a second one) the
// earlier wins, deterministically. Both rows of a connection have the
// same date (of connected_at), so they meet in one partition. Replays and
// redeliveries only add rows with an existing key and version.
//
// A disconnect without connected_at (EMQX before 4.3.6, AWS IoT) cannot be
// paired and writes no session row; the analytics then end such a
// connection when the device's next connection starts.
//
// Migration 4 creates the table, then the view, then backfills the table
// from presence_events: an event inserted between the view and the
// backfill is written twice, with the same key and version, which merges
// away. Running the migration twice (or from two archivers) is harmless for
// the same reason.

// sessionsColumns is the INSERT column list of sessions, in select order.
const sessionsColumns = `device_id, node, conn_version, connected_ms, connected_at, disconnected_ms, disconnected_at, duration_ms, reason, raw_reason, ip, username, protocol, keepalive_s, version, date`

// sessionsSelect maps presence_events rows to session rows. Its aliases
// never shadow a presence_events column that another expression reads.
func sessionsSelect(source string) string {
	return `SELECT
	device_id,
	node,
	conn_version,
	if(connected_at_ms = 0, broker_ts_ms, connected_at_ms) AS connected_ms,
	toDateTime(intDiv(if(connected_at_ms = 0, broker_ts_ms, connected_at_ms), 1000)) AS connected_at,
	if(kind = 'disconnected', broker_ts_ms, toUInt64(0)) AS disconnected_ms,
	toDateTime(intDiv(if(kind = 'disconnected', broker_ts_ms, toUInt64(0)), 1000)) AS disconnected_at,
	if(kind = 'disconnected' AND broker_ts_ms > connected_at_ms, toUInt64(broker_ts_ms - connected_at_ms), toUInt64(0)) AS duration_ms,
	reason,
	raw_reason,
	ip,
	username,
	protocol,
	keepalive_s,
	if(kind = 'disconnected', toUInt64(18446744073709551615 - broker_ts_ms), toUInt64(0)) AS version,
	toDate(toDateTime(intDiv(if(connected_at_ms = 0, broker_ts_ms, connected_at_ms), 1000))) AS date
FROM ` + source + `
WHERE kind = 'connected' OR connected_at_ms > 0`
}

// sessionsV1 creates sessions, the view from the (local) presence table
// into the (local) sessions table, and backfills through the tables the
// archiver writes (Distributed in a cluster, so rows reach their shard).
func sessionsV1(l Layout) []string {
	db := l.Database
	return append(l.createTable(sessionsSpec),
		`CREATE MATERIALIZED VIEW IF NOT EXISTS `+db+`.`+ViewSessions+l.onCluster()+` TO `+db+`.`+l.Local(TableSessions)+`
AS `+sessionsSelect(db+`.`+l.Local(TablePresence)),
		`INSERT INTO `+db+`.`+TableSessions+` (`+sessionsColumns+`)
`+sessionsSelect(db+`.`+TablePresence),
	)
}
