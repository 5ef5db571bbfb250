package analytics

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Conn is the part of a ClickHouse connection Run needs. clickhouse-go's
// driver.Conn implements it.
type Conn interface {
	Query(ctx context.Context, query string, args ...any) (driver.Rows, error)
}

// Table is a query result with every value formatted as text.
type Table struct {
	Columns []string
	Rows    [][]string
}

// Run renders q with a and runs it. Values are formatted by Format.
func Run(ctx context.Context, conn Conn, q Query, a Args) (Table, error) {
	sql, err := q.Render(a)
	if err != nil {
		return Table{}, err
	}
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return Table{}, fmt.Errorf("query %s: %w", q.Name, err)
	}
	defer rows.Close()
	t := Table{Columns: rows.Columns()}
	types := rows.ColumnTypes()
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return Table{}, fmt.Errorf("query %s: %w", q.Name, err)
		}
		row := make([]string, len(dest))
		for i, d := range dest {
			v := reflect.ValueOf(d).Elem().Interface()
			if tm, ok := v.(time.Time); ok && types[i].DatabaseTypeName() == "Date" {
				row[i] = tm.UTC().Format(time.DateOnly)
				continue
			}
			row[i] = Format(v)
		}
		t.Rows = append(t.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return Table{}, fmt.Errorf("query %s: %w", q.Name, err)
	}
	return t, nil
}

// Format writes a scanned value as text: times in UTC as
// 2006-01-02 15:04:05 (Run writes Date columns as 2006-01-02), floats in
// the shortest exact form.
func Format(v any) string {
	switch x := v.(type) {
	case time.Time:
		return x.UTC().Format("2006-01-02 15:04:05")
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32)
	case string:
		return x
	}
	return fmt.Sprint(v)
}

// Print writes t as an aligned text table: a header, a rule, the rows;
// numbers right-aligned.
func (t Table) Print(w io.Writer) error {
	widths := make([]int, len(t.Columns))
	numeric := make([]bool, len(t.Columns))
	for i, c := range t.Columns {
		widths[i] = utf8.RuneCountInString(c)
		numeric[i] = len(t.Rows) > 0
	}
	for _, r := range t.Rows {
		for i, v := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(v))
			if numeric[i] && !isNumber(v) {
				numeric[i] = false
			}
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		for i, c := range cells {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i > 0 {
				b.WriteString("  ")
			}
			if numeric[i] {
				b.WriteString(pad + c)
			} else if i == len(cells)-1 {
				b.WriteString(c)
			} else {
				b.WriteString(c + pad)
			}
		}
		b.WriteByte('\n')
	}
	line(t.Columns)
	rule := make([]string, len(t.Columns))
	for i := range rule {
		rule[i] = strings.Repeat("-", widths[i])
	}
	line(rule)
	for _, r := range t.Rows {
		line(r)
	}
	fmt.Fprintf(&b, "(%d rows)\n", len(t.Rows))
	_, err := io.WriteString(w, b.String())
	return err
}

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}
