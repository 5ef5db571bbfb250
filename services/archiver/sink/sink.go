// Package sink turns decoded fleetwatch events into ClickHouse rows and
// inserts them in batches over the native protocol.
//
// Rows collects one table's rows column by column (one typed slice per
// column, reused between batches), and Writer sends them with
// PrepareBatch + column appends + Send, naming every column in the INSERT
// (ClickHouse 18.16 needs the explicit list; it also keeps inserts working
// when later migrations add columns).
package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ErrOutOfRange is returned by Rows.Add for an event whose time cannot be
// stored in a ClickHouse DateTime or Date column (1970-01-01 to 2105-12-31).
// Such an event would make the whole batch fail, so it is rejected alone.
var ErrOutOfRange = errors.New("time outside the range ClickHouse can store (1970-01-01 to 2105-12-31)")

// maxMS is the last epoch millisecond a DateTime column holds on every
// supported server (2105-12-31 23:59:59.999 UTC).
var maxMS = time.Date(2106, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli() - 1

func checkTime(field string, ms int64) error {
	if ms < 0 || ms > maxMS {
		return fmt.Errorf("%s %d: %w", field, ms, ErrOutOfRange)
	}
	return nil
}

// RowSet is a set of rows for one table, ready to be appended to a batch.
type RowSet interface {
	// Table is the table name (without database).
	Table() string
	// Columns lists the column names in INSERT order.
	Columns() []string
	// Len is the number of rows.
	Len() int
	// AppendTo appends every column to a batch prepared for InsertQuery.
	AppendTo(b driver.Batch) error
}

// InsertQuery is the INSERT statement for a row set in a database, with the
// explicit column list.
func InsertQuery(database string, rs RowSet) string {
	return "INSERT INTO " + database + "." + rs.Table() + " (" + strings.Join(rs.Columns(), ", ") + ")"
}

// Conn is the part of a ClickHouse connection a Writer needs. clickhouse-go's
// driver.Conn implements it.
type Conn interface {
	PrepareBatch(ctx context.Context, query string, opts ...driver.PrepareBatchOption) (driver.Batch, error)
}

// Writer inserts row sets into one database.
type Writer struct {
	conn     Conn
	database string
}

// NewWriter returns a Writer for database over conn.
func NewWriter(conn Conn, database string) *Writer {
	return &Writer{conn: conn, database: database}
}

// Insert sends every row of rs in one INSERT. An empty set is a no-op. On
// error nothing is known to be stored: the caller retries the same rows
// (the tables deduplicate by event id).
func (w *Writer) Insert(ctx context.Context, rs RowSet) error {
	if rs.Len() == 0 {
		return nil
	}
	b, err := w.conn.PrepareBatch(ctx, InsertQuery(w.database, rs))
	if err != nil {
		return fmt.Errorf("prepare insert into %s.%s: %w", w.database, rs.Table(), err)
	}
	if err := rs.AppendTo(b); err != nil {
		_ = b.Abort()
		return fmt.Errorf("append %d rows to %s.%s: %w", rs.Len(), w.database, rs.Table(), err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert %d rows into %s.%s: %w", rs.Len(), w.database, rs.Table(), err)
	}
	return nil
}

// Rows collects rows of type E column by column. It is not safe for
// concurrent use; Reset makes it reusable without reallocating.
type Rows[E any] struct {
	table string
	names []string
	cols  []column[E]
	check func(*E) error
	n     int
	cur   E // the event being added: a field, so that &cur does not escape per row
}

var _ RowSet = (*Rows[struct{}])(nil)

func newRows[E any](table string, check func(*E) error, cols ...column[E]) *Rows[E] {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name()
	}
	return &Rows[E]{table: table, names: names, cols: cols, check: check}
}

// Add appends the row of one event. An event whose times cannot be stored
// is rejected with ErrOutOfRange and leaves the rows unchanged.
func (r *Rows[E]) Add(e E) error {
	r.cur = e
	defer clear1(&r.cur)
	if r.check != nil {
		if err := r.check(&r.cur); err != nil {
			return err
		}
	}
	for _, c := range r.cols {
		c.add(&r.cur)
	}
	r.n++
	return nil
}

// clear1 zeroes *p so that Rows does not keep the last event alive.
func clear1[E any](p *E) {
	var zero E
	*p = zero
}

// Table is the table name.
func (r *Rows[E]) Table() string { return r.table }

// Columns lists the column names in INSERT order.
func (r *Rows[E]) Columns() []string { return r.names }

// Len is the number of rows added since the last Reset.
func (r *Rows[E]) Len() int { return r.n }

// Reset empties the rows, keeping their memory.
func (r *Rows[E]) Reset() {
	for _, c := range r.cols {
		c.reset()
	}
	r.n = 0
}

// AppendTo appends every column to b, which must have been prepared with
// InsertQuery for these rows.
func (r *Rows[E]) AppendTo(b driver.Batch) error {
	for i, c := range r.cols {
		if err := c.appendTo(b.Column(i)); err != nil {
			return fmt.Errorf("column %s: %w", c.name(), err)
		}
	}
	return nil
}

// column is one typed column of a table: how to get its value from an event
// and the values collected so far.
type column[E any] interface {
	name() string
	add(e *E)
	appendTo(c driver.BatchColumn) error
	reset()
}

type typedColumn[E, T any] struct {
	n    string
	get  func(*E) T
	vals []T
}

func col[E, T any](name string, get func(*E) T) column[E] {
	return &typedColumn[E, T]{n: name, get: get}
}

func (c *typedColumn[E, T]) name() string                         { return c.n }
func (c *typedColumn[E, T]) add(e *E)                             { c.vals = append(c.vals, c.get(e)) }
func (c *typedColumn[E, T]) appendTo(bc driver.BatchColumn) error { return bc.Append(c.vals) }
func (c *typedColumn[E, T]) reset() {
	clear(c.vals) // drop references to strings and slices of the last batch
	c.vals = c.vals[:0]
}

// Conversions that saturate instead of wrapping: the wire types are int, the
// columns unsigned and narrower.

func u64(v int64) uint64 {
	if v < 0 {
		return 0
	}
	return uint64(v)
}

func u32(v int) uint32 {
	switch {
	case v < 0:
		return 0
	case int64(v) > 1<<32-1:
		return 1<<32 - 1
	}
	return uint32(v)
}

func u16(v int) uint16 {
	switch {
	case v < 0:
		return 0
	case v > 1<<16-1:
		return 1<<16 - 1
	}
	return uint16(v)
}

func u8(v int) uint8 {
	switch {
	case v < 0:
		return 0
	case v > 1<<8-1:
		return 1<<8 - 1
	}
	return uint8(v)
}

func boolU8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// utc converts epoch milliseconds to a UTC time (DateTime keeps seconds,
// Date the UTC day).
func utc(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
