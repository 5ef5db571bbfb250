package schema_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
)

var quiet = slog.New(slog.DiscardHandler)

var fixedNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func migrate(t *testing.T, conn driver.Conn, db string) schema.Result {
	t.Helper()
	res, err := schema.Migrate(t.Context(), conn, db, schema.Options{Logger: quiet, Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return res
}

type appliedRow struct {
	Version uint32
	Name    string
}

func wantApplied() []appliedRow {
	var want []appliedRow
	for _, m := range schema.Migrations() {
		want = append(want, appliedRow{m.Version, m.Name})
	}
	return want
}

func checkApplied(t *testing.T, conn driver.Conn, db string, serverVersion string) {
	t.Helper()
	applied, err := schema.AppliedMigrations(t.Context(), conn, db)
	if err != nil {
		t.Fatalf("AppliedMigrations: %v", err)
	}
	var got []appliedRow
	for _, a := range applied {
		got = append(got, appliedRow{a.Version, a.Name})
		if !a.AppliedAt.Equal(fixedNow) {
			t.Errorf("migration %d applied_at = %v, want %v", a.Version, a.AppliedAt, fixedNow)
		}
		if a.ServerVersion != serverVersion {
			t.Errorf("migration %d server_version = %q, want %q", a.Version, a.ServerVersion, serverVersion)
		}
	}
	if !slices.Equal(got, wantApplied()) {
		t.Fatalf("schema_migrations = %v, want %v", got, wantApplied())
	}
	for _, table := range []string{schema.TablePresence, schema.TableAlerts, schema.TableDeliveries, schema.TableSessions} {
		n := chtest.Count(t, conn, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", db, table)
		if n != 1 {
			t.Errorf("table %s.%s: %d in system.tables, want 1", db, table, n)
		}
		engine := ""
		if err := conn.QueryRow(t.Context(), "SELECT engine FROM system.tables WHERE database = ? AND name = ?", db, table).Scan(&engine); err != nil {
			t.Fatalf("engine of %s: %v", table, err)
		}
		if engine != "ReplacingMergeTree" {
			t.Errorf("table %s engine = %q, want ReplacingMergeTree", table, engine)
		}
	}
}

func serverVersion(t *testing.T, conn driver.Conn) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(t.Context(), "SELECT version()").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMigrateTwice(t *testing.T) {
	conn := chtest.Open(t)
	db := chtest.FreshDatabase(t, conn)
	sv := serverVersion(t, conn)
	wantCaps := schema.CapabilitiesOf(mustParse(t, sv))

	first := migrate(t, conn, db)
	if want := []uint32{1, 2, 3, 4, 5}; !slices.Equal(first.Ran, want) {
		t.Errorf("first run applied %v, want %v", first.Ran, want)
	}
	if first.Capabilities != wantCaps {
		t.Errorf("capabilities = %+v, want %+v", first.Capabilities, wantCaps)
	}
	second := migrate(t, conn, db)
	if len(second.Ran) != 0 || len(second.Unknown) != 0 {
		t.Errorf("second run applied %v, unknown %v; want nothing", second.Ran, second.Unknown)
	}
	// Nothing was recorded twice: no FINAL needed after sequential runs.
	if n := chtest.Count(t, conn, "SELECT count() FROM "+db+".schema_migrations"); n != 5 {
		t.Errorf("schema_migrations has %d rows, want 5", n)
	}
	checkApplied(t, conn, db, mustParse(t, sv).String())
}

func TestMigrateConcurrently(t *testing.T) {
	conn := chtest.Open(t)
	db := chtest.FreshDatabase(t, conn)
	sv := mustParse(t, serverVersion(t, conn)).String()
	const migrators = 4
	conns := make([]driver.Conn, migrators)
	for i := range conns {
		conns[i] = chtest.Open(t)
	}
	for round := range 2 {
		var wg sync.WaitGroup
		errs := make([]error, migrators)
		for i := range migrators {
			wg.Go(func() {
				_, errs[i] = schema.Migrate(context.Background(), conns[i], db, schema.Options{Logger: quiet, Now: func() time.Time { return fixedNow }})
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d migrator %d: %v", round, i, err)
			}
		}
		checkApplied(t, conn, db, sv)
	}
}

func TestMigrateReportsUnknownVersions(t *testing.T) {
	conn := chtest.Open(t)
	db := chtest.FreshDatabase(t, conn)
	migrate(t, conn, db)
	b, err := conn.PrepareBatch(t.Context(), "INSERT INTO "+db+".schema_migrations (version, name, applied_at, server_version)")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append(uint32(99), "from the future", fixedNow, "99.1.1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	res := migrate(t, conn, db)
	if len(res.Ran) != 0 || !slices.Equal(res.Unknown, []uint32{99}) {
		t.Errorf("Migrate = ran %v unknown %v, want ran [] unknown [99]", res.Ran, res.Unknown)
	}
}

func TestMigrateRejectsBadDatabaseName(t *testing.T) {
	_, err := schema.Migrate(t.Context(), nil, "fleet-watch", schema.Options{})
	if err == nil || err.Error() != `database name "fleet-watch": not a plain identifier: use letters, digits and _, not starting with a digit` {
		t.Fatalf("Migrate error = %v", err)
	}
}

func mustParse(t *testing.T, s string) schema.Version {
	t.Helper()
	v, err := schema.ParseVersion(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func ExampleMigrations() {
	for _, m := range schema.Migrations() {
		fmt.Println(m.Version, m.Name)
	}
	// Output:
	// 1 create presence_events
	// 2 create alerts
	// 3 create deliveries
	// 4 create sessions
	// 5 alerts: silence ids, inhibition, group totals, flap count, tier
}
