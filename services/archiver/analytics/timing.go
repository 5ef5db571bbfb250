package analytics

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// Timing is how long a query took, run after run.
type Timing struct {
	// Query is the query's name.
	Query string
	// Rows is the number of result rows; ReadRows the rows the server
	// read for it (from its progress reports, last run).
	Rows     int
	ReadRows uint64
	// Runs are the wall times of the runs: query, transfer and formatting,
	// as the report command sees them.
	Runs []time.Duration
}

// Time runs q with a runs times (at least once) and measures each run.
func Time(ctx context.Context, conn Conn, q Query, a Args, runs int) (Timing, error) {
	t := Timing{Query: q.Name}
	for range max(runs, 1) {
		var read atomic.Uint64
		pctx := clickhouse.Context(ctx, clickhouse.WithProgress(func(p *clickhouse.Progress) { read.Add(p.Rows) }))
		start := time.Now()
		tab, err := Run(pctx, conn, q, a)
		if err != nil {
			return t, err
		}
		t.Runs = append(t.Runs, time.Since(start))
		t.Rows, t.ReadRows = len(tab.Rows), read.Load()
	}
	return t, nil
}

// TimingTable lays timings out as a table: query, result rows, rows read,
// runs, and the fastest, median and slowest run in milliseconds.
func TimingTable(ts []Timing) Table {
	t := Table{Columns: []string{"query", "result_rows", "read_rows", "runs", "min_ms", "median_ms", "max_ms"}}
	for _, x := range ts {
		d := slices.Clone(x.Runs)
		slices.Sort(d)
		t.Rows = append(t.Rows, []string{
			x.Query, strconv.Itoa(x.Rows), strconv.FormatUint(x.ReadRows, 10), strconv.Itoa(len(d)),
			ms(d[0]), ms(d[len(d)/2]), ms(d[len(d)-1]),
		})
	}
	return t
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }
