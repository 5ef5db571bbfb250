package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/stage"
	"github.com/fleetwatch/fleetwatch/services/archiver"
	"github.com/fleetwatch/fleetwatch/services/archiver/analytics"
)

const reportUsage = `Usage: fleetwatch-archiver report <query> [flags]
       fleetwatch-archiver report [<query>] --timing [--runs N] [flags]

Runs one of the documented analytics queries (docs/analytics.md) against the
archive and prints an aligned table. Times are UTC; --from/--to take
RFC 3339 (2024-06-10T00:00:00Z), a date (2024-06-10), "now", or a duration
back from now (-24h, -90m). The window is [from, to).

With --timing it runs the query (without a name: every query) --runs
times over the whole fleet and prints how long each took instead of the
results; --device only names device-history's device (without it,
device-history is skipped).

Queries:
`

// reportOptions are the report command's flags.
type reportOptions struct {
	config      string
	addr        string
	database    string
	from, to    string
	device      string
	site        string
	sitePattern string
	limit       int
	printSQL    bool
	timing      bool
	runs        int
}

// report runs `fleetwatch-archiver report`. now is the clock for relative
// times; it returns the exit code.
func report(ctx context.Context, args []string, stdout, stderr io.Writer, now func() time.Time) int {
	fs := flag.NewFlagSet("fleetwatch-archiver report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o reportOptions
	fs.StringVar(&o.config, "config", "", "archiver config file: its archiver.clickhouse section says where the archive is")
	fs.StringVar(&o.addr, "clickhouse", "", "ClickHouse native host:port, overriding the config (default 127.0.0.1:9000)")
	fs.StringVar(&o.database, "database", "", "database, overriding the config (default fleetwatch)")
	fs.StringVar(&o.from, "from", "-24h", "start of the window (inclusive)")
	fs.StringVar(&o.to, "to", "now", "end of the window (exclusive)")
	fs.StringVar(&o.device, "device", "", "only this device (required by device-history)")
	fs.StringVar(&o.site, "site", "", "only this site")
	fs.StringVar(&o.sitePattern, "site-pattern", analytics.DefaultSitePattern, "RE2 whose first group is the site in a device id")
	fs.IntVar(&o.limit, "limit", analytics.DefaultLimit, "rows of ranking queries (availability, reliability-device, flappers)")
	fs.BoolVar(&o.printSQL, "sql", false, "print the SQL instead of running it")
	fs.BoolVar(&o.timing, "timing", false, "time the query (or every query) instead of printing its results")
	fs.IntVar(&o.runs, "runs", 3, "runs per query with --timing")
	fs.Usage = func() {
		fmt.Fprint(stderr, reportUsage)
		for _, q := range analytics.Queries() {
			fmt.Fprintf(stderr, "  %-24s %s\n", q.Name, q.Title)
		}
		fmt.Fprint(stderr, "\nFlags:\n")
		fs.PrintDefaults()
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		fs.Usage()
		return 0
	}
	var queries []analytics.Query // empty: every query (--timing only)
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		q, ok := analytics.Lookup(args[0])
		if !ok {
			fmt.Fprintf(stderr, "fleetwatch-archiver report: unknown query %q: use one of %s\n", args[0], strings.Join(analytics.Names(), ", "))
			return 2
		}
		queries, args = []analytics.Query{q}, args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fleetwatch-archiver report: unexpected argument %q: flags go after the query name\n", fs.Arg(0))
		return 2
	}
	if len(queries) == 0 && !o.timing {
		fmt.Fprintln(stderr, "fleetwatch-archiver report: name a query, e.g. report availability (see report --help)")
		return 2
	}
	if o.timing && (o.printSQL || o.runs < 1) {
		fmt.Fprintln(stderr, "fleetwatch-archiver report: --timing needs --runs 1 or more and no --sql")
		return 2
	}
	a, ch, err := o.resolve(now())
	if err != nil {
		fmt.Fprintf(stderr, "fleetwatch-archiver report: %v\n", err)
		return 2
	}
	if o.timing {
		return reportTiming(ctx, queries, a, ch, o.runs, stdout, stderr)
	}
	q := queries[0]
	if o.printSQL {
		sql, err := q.Render(a)
		if err != nil {
			fmt.Fprintf(stderr, "fleetwatch-archiver report: %v\n", err)
			return 2
		}
		fmt.Fprintln(stdout, sql)
		return 0
	}
	conn, err := archiver.OpenClickHouse(ch, 1)
	if err != nil {
		fmt.Fprintf(stderr, "fleetwatch-archiver report: %v\n", err)
		return 2
	}
	defer conn.Close()
	tab, err := analytics.Run(ctx, conn, q, a)
	if err != nil {
		fmt.Fprintf(stderr, "fleetwatch-archiver report: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s — %s to %s (UTC)\n\n", q.Title, a.From.UTC().Format(time.DateTime), a.To.UTC().Format(time.DateTime))
	if err := tab.Print(stdout); err != nil {
		return 1
	}
	return 0
}

// reportTiming times the queries (nil: all), runs times each, and prints
// a table.
func reportTiming(ctx context.Context, queries []analytics.Query, a analytics.Args, ch archiver.ClickHouseConfig,
	runs int, stdout, stderr io.Writer) int {
	if queries == nil {
		queries = analytics.Queries()
	}
	conn, err := archiver.OpenClickHouse(ch, 1)
	if err != nil {
		fmt.Fprintf(stderr, "fleetwatch-archiver report: %v\n", err)
		return 2
	}
	defer conn.Close()
	var (
		timings []analytics.Timing
		skipped []string
	)
	for _, q := range queries {
		if q.NeedsDevice && a.Device == "" {
			skipped = append(skipped, q.Name)
			continue
		}
		qa := a
		if !q.NeedsDevice {
			qa.Device = "" // the whole fleet: --device only picks device-history's device
		}
		tm, err := analytics.Time(ctx, conn, q, qa, runs)
		if err != nil {
			fmt.Fprintf(stderr, "fleetwatch-archiver report: %v\n", err)
			return 1
		}
		timings = append(timings, tm)
	}
	fmt.Fprintf(stdout, "Query times — database %s, %s to %s (UTC), %d run(s) each\n\n", a.Database,
		a.From.UTC().Format(time.DateTime), a.To.UTC().Format(time.DateTime), runs)
	if err := analytics.TimingTable(timings).Print(stdout); err != nil {
		return 1
	}
	for _, name := range skipped {
		fmt.Fprintf(stdout, "%s skipped: set --device\n", name)
	}
	return 0
}

// resolve turns the flags into query arguments and the ClickHouse settings.
func (o reportOptions) resolve(now time.Time) (analytics.Args, archiver.ClickHouseConfig, error) {
	cfg := defaultConfig()
	if o.config != "" {
		if err := stage.LoadFile(o.config, cfg); err != nil {
			return analytics.Args{}, archiver.ClickHouseConfig{}, err
		}
	}
	ch := cfg.Archiver.ClickHouse
	if o.addr != "" {
		ch.Addr = []string{o.addr}
	}
	if o.database != "" {
		ch.Database = o.database
	}
	from, err := parseWhen(o.from, now)
	if err != nil {
		return analytics.Args{}, ch, fmt.Errorf("--from: %w", err)
	}
	to, err := parseWhen(o.to, now)
	if err != nil {
		return analytics.Args{}, ch, fmt.Errorf("--to: %w", err)
	}
	if o.limit < 1 {
		return analytics.Args{}, ch, fmt.Errorf("--limit %d: use 1 or more", o.limit)
	}
	return analytics.Args{
		Database: ch.Database, From: from, To: to,
		Device: o.device, Site: o.site, SitePattern: o.sitePattern, Limit: o.limit,
	}, ch, nil
}

// parseWhen reads an absolute or relative time.
func parseWhen(s string, now time.Time) (time.Time, error) {
	switch {
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "-"):
		d, err := time.ParseDuration(s[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not -<duration> such as -24h: %w", s, err)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", time.DateOnly} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: use RFC 3339 (2024-06-10T00:00:00Z), a date (2024-06-10), now, or -24h", s)
}
