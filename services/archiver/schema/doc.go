// Package schema owns the archiver's ClickHouse schema: the database, the
// tables presence_events, alerts and deliveries, the sessions table (one
// row per device connection, filled from presence_events by the
// materialized view sessions_mv), and the versioned migrations that create
// them, recorded in the schema_migrations table.
//
// # Compatibility
//
// The DDL works on ClickHouse 18.16 (what Debian ships and CI runs) and on
// current releases. Newer features (LowCardinality, DateTime64, TTL, column
// codecs) are only described by Capabilities, detected from SELECT version();
// a migration may use them only behind a capability check, with an
// 18.16-compatible fallback.
//
// # Migrations
//
// Migrate runs at every start. Every statement is idempotent (CREATE ... IF
// NOT EXISTS), so several archivers starting at once may all run the same
// migration: the outcome is the same and schema_migrations, a
// ReplacingMergeTree keyed by version, collapses the duplicate records.
// Read it with FINAL (or DISTINCT version). ClickHouse has no DDL
// transactions: a migration that cannot be written idempotently must
// guard itself. Columns added to existing tables (Migration.Columns) are:
// each is added only where system.columns lacks it, and "already exists"
// from a concurrent migrator counts as done (18.16 has no ADD COLUMN IF
// NOT EXISTS). In a cluster the missing columns of a table are added to
// its local table in one ALTER ... ON CLUSTER, and its Distributed table is
// created again over it (Layout.recreateDistributed).
//
// # Deduplication and correct queries
//
// The event tables are ReplacingMergeTree engines whose sorting key ends
// with the event id, and every other sorting-key and partition column is
// derived from the same content as the id. A replayed or redelivered event
// is inserted again as a duplicate row and removed only when ClickHouse
// merges the parts, at a time of its choosing. Queries that count or sum
// must therefore deduplicate themselves:
//
//	SELECT count() FROM fleetwatch.presence_events FINAL WHERE date = today()
//	SELECT uniqExact(id) FROM fleetwatch.presence_events WHERE date = today()
//	SELECT device_id, argMax(kind, broker_ts_ms) AS last_kind
//	FROM fleetwatch.presence_events GROUP BY device_id
//
// A plain count() without FINAL over-counts after a replay. The date column
// is the UTC day of the event time the partition is built from:
// presence_events.broker_ts_ms, alerts.starts_at_ms, deliveries.at_ms.
package schema
