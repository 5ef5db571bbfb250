package schema

// Table names in the archiver's database.
const (
	TablePresence   = "presence_events"
	TableAlerts     = "alerts"
	TableDeliveries = "deliveries"
	// TableMigrations records the applied migrations.
	TableMigrations = "schema_migrations"
)

// Migration is one versioned schema change.
type Migration struct {
	// Version orders migrations; it is recorded in schema_migrations.
	Version uint32
	// Name says what the migration does.
	Name string
	// Statements returns the migration's DDL for a database and a server.
	// Every statement must be idempotent (IF NOT EXISTS) and must
	// reference tables as database.table.
	Statements func(database string, caps Capabilities) []string
}

// Migrations returns every migration, in version order.
func Migrations() []Migration {
	return []Migration{
		{Version: 1, Name: "create presence_events", Statements: presenceEventsV1},
		{Version: 2, Name: "create alerts", Statements: alertsV1},
		{Version: 3, Name: "create deliveries", Statements: deliveriesV1},
	}
}

// Each event table is a ReplacingMergeTree: rows with the same sorting key
// in one partition collapse on merge. The sorting key ends with id and its
// other columns, like the partition's date, are derived from the content
// the id is derived from, so two copies of an event always meet.
//
// ORDER BY serves the common queries: per device over time for presence,
// per alert fingerprint for alerts, per receiver and alert for deliveries;
// time ranges prune by the monthly partitions.

func presenceEventsV1(db string, _ Capabilities) []string {
	return []string{`CREATE TABLE IF NOT EXISTS ` + db + `.` + TablePresence + ` (
	id String,
	device_id String,
	kind String,
	reason String,
	raw_reason String,
	node String,
	broker_ts DateTime,
	broker_ts_ms UInt64,
	connected_at_ms UInt64,
	conn_version Int64,
	ip String,
	username String,
	protocol String,
	proto_ver UInt8,
	keepalive_s UInt32,
	source String,
	received_at_ms UInt64,
	date Date
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (device_id, broker_ts_ms, id)`}
}

func alertsV1(db string, _ Capabilities) []string {
	return []string{`CREATE TABLE IF NOT EXISTS ` + db + `.` + TableAlerts + ` (
	id String,
	fingerprint String,
	receiver String,
	status String,
	kind String,
	severity String,
	group_key String,
	group_label_keys Array(String),
	group_label_values Array(String),
	device_ids Array(String),
	devices_total UInt32,
	starts_at_ms UInt64,
	ends_at_ms UInt64,
	created_at_ms UInt64,
	silenced UInt8,
	date Date
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (fingerprint, starts_at_ms, id)`}
}

func deliveriesV1(db string, _ Capabilities) []string {
	return []string{`CREATE TABLE IF NOT EXISTS ` + db + `.` + TableDeliveries + ` (
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
ORDER BY (receiver, alert_id, id)`}
}

func migrationsTable(db string) string {
	return `CREATE TABLE IF NOT EXISTS ` + db + `.` + TableMigrations + ` (
	version UInt32,
	name String,
	applied_at DateTime,
	server_version String
) ENGINE = ReplacingMergeTree()
ORDER BY version`
}
