package schema

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Conn is the part of a ClickHouse connection the schema needs.
// clickhouse-go's driver.Conn implements it.
type Conn interface {
	Exec(ctx context.Context, query string, args ...any) error
	QueryRow(ctx context.Context, query string, args ...any) driver.Row
	Query(ctx context.Context, query string, args ...any) (driver.Rows, error)
	PrepareBatch(ctx context.Context, query string, opts ...driver.PrepareBatchOption) (driver.Batch, error)
}

// ErrBadDatabaseName is returned for a database name that is not a plain
// identifier.
var ErrBadDatabaseName = errors.New("not a plain identifier: use letters, digits and _, not starting with a digit")

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// CheckDatabaseName reports whether name can be used unquoted in DDL.
func CheckDatabaseName(name string) error {
	if !identifier.MatchString(name) {
		return fmt.Errorf("database name %q: %w", name, ErrBadDatabaseName)
	}
	return nil
}

// Applied is one row of schema_migrations.
type Applied struct {
	Version       uint32
	Name          string
	AppliedAt     time.Time
	ServerVersion string
}

// Result says what Migrate did.
type Result struct {
	// Capabilities of the server.
	Capabilities Capabilities
	// Ran lists the versions this call applied (empty when up to date).
	Ran []uint32
	// Unknown lists recorded versions this build does not know: a newer
	// archiver migrated the database.
	Unknown []uint32
}

// Options tune Migrate.
type Options struct {
	// Logger receives one line per applied migration (nil: slog.Default()).
	Logger *slog.Logger
	// Now is the clock recorded as applied_at (nil: time.Now).
	Now func() time.Time
	// UpTo stops after this version (0: apply every migration). Tests use
	// it to build a database as an older archiver left it.
	UpTo uint32
	// Cluster, ZooKeeperPrefix and RetentionDays shape the layout (see
	// Layout); zero values: a single node, keep everything.
	Cluster         string
	ZooKeeperPrefix string
	RetentionDays   int
}

// Layout returns the layout Migrate uses for a database on a server with
// caps.
func (o Options) Layout(database string, caps Capabilities) Layout {
	return Layout{Database: database, Caps: caps, Cluster: o.Cluster, ZooKeeperPrefix: o.ZooKeeperPrefix, RetentionDays: o.RetentionDays}
}

// Migrate creates the database if needed and applies every migration not
// yet recorded in schema_migrations, in version order, then the retention
// TTL when one is configured. It is idempotent and safe to run from
// several processes at once (see the package doc).
func Migrate(ctx context.Context, conn Conn, database string, opts Options) (Result, error) {
	if err := opts.Layout(database, Capabilities{}).Check(); err != nil {
		return Result{}, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	caps, err := Detect(ctx, conn)
	if err != nil {
		return Result{}, err
	}
	res := Result{Capabilities: caps}
	layout := opts.Layout(database, caps)
	retention, err := layout.RetentionStatements()
	if err != nil {
		return res, err
	}
	if err := execDDL(ctx, conn, layout.createDatabase()); err != nil {
		return res, err
	}
	for _, stmt := range layout.createTable(migrationsSpec) {
		if err := execDDL(ctx, conn, stmt); err != nil {
			return res, err
		}
	}
	done, err := appliedVersions(ctx, conn, database)
	if err != nil {
		return res, err
	}
	known := map[uint32]bool{}
	for _, m := range Migrations() {
		known[m.Version] = true
		if done[m.Version] || opts.UpTo != 0 && m.Version > opts.UpTo {
			continue
		}
		var stmts []string
		if m.Statements != nil {
			stmts = m.Statements(layout)
		}
		for _, stmt := range stmts {
			if err := execDDL(ctx, conn, stmt); err != nil {
				return res, fmt.Errorf("migration %d (%s): %w", m.Version, m.Name, err)
			}
		}
		if layout.Cluster == "" {
			for _, c := range m.Columns {
				if err := addColumn(ctx, conn, database, c.Name, layout.addColumn(c)); err != nil {
					return res, fmt.Errorf("migration %d (%s): %w", m.Version, m.Name, err)
				}
			}
		} else {
			for _, table := range columnTables(m.Columns) {
				if err := addClusterColumns(ctx, conn, layout, table, m.Columns); err != nil {
					return res, fmt.Errorf("migration %d (%s): %w", m.Version, m.Name, err)
				}
				if err := syncDistributed(ctx, conn, layout, table); err != nil {
					return res, fmt.Errorf("migration %d (%s): %w", m.Version, m.Name, err)
				}
			}
		}
		if err := record(ctx, conn, database, m, caps, now()); err != nil {
			return res, fmt.Errorf("migration %d (%s): %w", m.Version, m.Name, err)
		}
		res.Ran = append(res.Ran, m.Version)
		logger.Info("clickhouse migration applied", "database", database, "version", m.Version, "name", m.Name)
	}
	for _, stmt := range retention {
		if err := execDDL(ctx, conn, stmt); err != nil {
			return res, fmt.Errorf("retention: %w", err)
		}
	}
	for v := range done {
		if !known[v] {
			res.Unknown = append(res.Unknown, v)
		}
	}
	slices.Sort(res.Unknown)
	return res, nil
}

// AppliedMigrations lists schema_migrations, one row per version (FINAL
// collapses records written by concurrent migrators), in version order.
func AppliedMigrations(ctx context.Context, conn Conn, database string) ([]Applied, error) {
	if err := CheckDatabaseName(database); err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, "SELECT version, name, applied_at, server_version FROM "+
		database+"."+TableMigrations+" FINAL ORDER BY version")
	if err != nil {
		return nil, fmt.Errorf("read %s.%s: %w", database, TableMigrations, err)
	}
	defer rows.Close()
	var out []Applied
	for rows.Next() {
		var a Applied
		if err := rows.Scan(&a.Version, &a.Name, &a.AppliedAt, &a.ServerVersion); err != nil {
			return nil, fmt.Errorf("read %s.%s: %w", database, TableMigrations, err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s.%s: %w", database, TableMigrations, err)
	}
	return out, nil
}

func appliedVersions(ctx context.Context, conn Conn, database string) (map[uint32]bool, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM "+database+"."+TableMigrations)
	if err != nil {
		return nil, fmt.Errorf("read %s.%s: %w", database, TableMigrations, err)
	}
	defer rows.Close()
	done := map[uint32]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read %s.%s: %w", database, TableMigrations, err)
		}
		done[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s.%s: %w", database, TableMigrations, err)
	}
	return done, nil
}

// record writes a schema_migrations row. It uses a native batch: ClickHouse
// 18.16 does not parse inline INSERT ... VALUES sent over the native
// protocol (the query hangs waiting for a data block).
func record(ctx context.Context, conn Conn, database string, m Migration, caps Capabilities, at time.Time) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+database+"."+TableMigrations+" (version, name, applied_at, server_version)")
	if err != nil {
		return fmt.Errorf("record in %s: %w", TableMigrations, err)
	}
	if err := b.Append(m.Version, m.Name, at.UTC(), caps.Version.String()); err != nil {
		_ = b.Abort()
		return fmt.Errorf("record in %s: %w", TableMigrations, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("record in %s: %w", TableMigrations, err)
	}
	return nil
}

// addColumn runs an ADD COLUMN alteration unless the table already has
// the column; losing a race with another migrator that added it is success.
func addColumn(ctx context.Context, conn Conn, database, column string, a alteration) error {
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?",
		database, a.table, column).Scan(&n); err != nil {
		return fmt.Errorf("read system.columns of %s.%s: %w", database, a.table, err)
	}
	if n > 0 {
		return nil
	}
	err := execDDL(ctx, conn, a.stmt)
	var ex *clickhouse.Exception
	if errors.As(err, &ex) && ex.Code == codeDuplicateColumn {
		return nil
	}
	return err
}

// columnTables lists the tables cols add to, in order of first mention.
func columnTables(cols []NewColumn) []string {
	var out []string
	for _, c := range cols {
		if !slices.Contains(out, c.Table) {
			out = append(out, c.Table)
		}
	}
	return out
}

// addClusterColumns adds the columns of cols that belong to table and that
// its local table lacks (on this node), in one ALTER ... ON CLUSTER. When a
// concurrent migrator added some first (ClickHouse reports "already
// exists" from the hosts that ran the second ALTER), it looks again.
func addClusterColumns(ctx context.Context, conn Conn, l Layout, table string, cols []NewColumn) error {
	const attempts = 3
	var err error
	for range attempts {
		var have []string
		if have, err = columnNames(ctx, conn, l.Database, l.Local(table)); err != nil {
			return err
		}
		var missing []NewColumn
		for _, c := range cols {
			if c.Table == table && !slices.Contains(have, c.Name) {
				missing = append(missing, c)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		err = execDDL(ctx, conn, l.addColumns(table, missing).stmt)
		var ex *clickhouse.Exception
		if !errors.As(err, &ex) || ex.Code != codeDuplicateColumn {
			return err
		}
	}
	return err
}

// syncDistributed gives a cluster table's Distributed table the columns of
// its local table, by creating it again (see Layout.recreateDistributed),
// unless it has them all on this node already: a concurrent migrator did it.
func syncDistributed(ctx context.Context, conn Conn, l Layout, table string) error {
	local, err := columnNames(ctx, conn, l.Database, l.Local(table))
	if err != nil {
		return err
	}
	dist, err := columnNames(ctx, conn, l.Database, table)
	if err != nil {
		return err
	}
	if len(dist) > 0 && !slices.ContainsFunc(local, func(c string) bool { return !slices.Contains(dist, c) }) {
		return nil
	}
	stmts, err := l.recreateDistributed(table)
	if err != nil {
		return err
	}
	for _, stmt := range stmts {
		if err := execDDL(ctx, conn, stmt); err != nil {
			return err
		}
	}
	return nil
}

// columnNames lists a table's columns on the connected node (none when it
// does not exist).
func columnNames(ctx context.Context, conn Conn, database, table string) ([]string, error) {
	rows, err := conn.Query(ctx, "SELECT name FROM system.columns WHERE database = ? AND table = ?", database, table)
	if err != nil {
		return nil, fmt.Errorf("read system.columns of %s.%s: %w", database, table, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("read system.columns of %s.%s: %w", database, table, err)
		}
		out = append(out, name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read system.columns of %s.%s: %w", database, table, err)
	}
	return out, nil
}

// codeDuplicateColumn is ClickHouse's error for ADD COLUMN of a column the
// table has ("column with this name already exists").
const codeDuplicateColumn = 44

// ClickHouse error codes of a CREATE that raced with the same CREATE from
// another process: on old servers IF NOT EXISTS is checked before the
// object is registered, so the loser may see these.
const (
	codeTableAlreadyExists    = 57
	codeDatabaseAlreadyExists = 82
)

// execDDL runs an idempotent statement, retrying a few times when it lost a
// race with the same statement from another migrator.
func execDDL(ctx context.Context, conn Conn, stmt string) error {
	const attempts = 5
	var err error
	for i := range attempts {
		if err = conn.Exec(ctx, stmt); err == nil || !lostCreateRace(err) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(i+1) * 100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("exec %q: %w", firstLine(stmt), err)
	}
	return nil
}

func lostCreateRace(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && (ex.Code == codeTableAlreadyExists || ex.Code == codeDatabaseAlreadyExists)
}

func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i] + " ..."
		}
	}
	return s
}
