package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natsconn"
	"github.com/fleetwatch/fleetwatch/pkg/stage"
	"github.com/fleetwatch/fleetwatch/services/archiver"
	"github.com/fleetwatch/fleetwatch/services/archiver/analytics"
)

const replayUsage = `Usage: fleetwatch-archiver replay --from <time> [flags]

Re-archives the messages JetStream stored in [from, to) into ClickHouse,
with an ordered consumer per stream starting at from. Rows already archived
collapse (the tables deduplicate by event id), so a replay can be repeated.
The durable consumers of the running archivers are not touched. Times as in
report: RFC 3339, a date, now, or -24h.

Flags:
`

// replay runs `fleetwatch-archiver replay`; it returns the exit code.
func replay(ctx context.Context, args []string, stdout, stderr io.Writer, now func() time.Time) int {
	fs := flag.NewFlagSet("fleetwatch-archiver replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "archiver config file (nats and archiver sections)")
	natsURL := fs.String("nats-url", "", "NATS URL, overriding nats.url")
	addr := fs.String("clickhouse", "", "ClickHouse native host:port, overriding archiver.clickhouse.addr")
	database := fs.String("database", "", "database, overriding archiver.clickhouse.database")
	from := fs.String("from", "", "start of the window (inclusive), required")
	to := fs.String("to", "now", "end of the window (exclusive)")
	streams := fs.String("streams", "", "comma-separated streams (presence, alerts, deliveries); default: the configured ones")
	fs.Usage = func() {
		fmt.Fprint(stderr, replayUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "fleetwatch-archiver replay: %v\n", err)
		return code
	}
	if fs.NArg() > 0 {
		return fail(2, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if *from == "" {
		return fail(2, errors.New("--from is required, e.g. --from -6h"))
	}
	cfg := defaultConfig()
	if *configPath != "" {
		if err := stage.LoadFile(*configPath, cfg); err != nil {
			return fail(2, err)
		}
	}
	if *natsURL != "" {
		cfg.NATS.URL = *natsURL
	}
	if *addr != "" {
		cfg.Archiver.ClickHouse.Addr = []string{*addr}
	}
	if *database != "" {
		cfg.Archiver.ClickHouse.Database = *database
	}
	if err := stage.Validate(cfg, "config"); err != nil {
		return fail(2, err)
	}
	opts := archiver.ReplayOptions{}
	var err error
	t := now()
	if opts.From, err = parseWhen(*from, t); err != nil {
		return fail(2, fmt.Errorf("--from: %w", err))
	}
	if opts.To, err = parseWhen(*to, t); err != nil {
		return fail(2, fmt.Errorf("--to: %w", err))
	}
	if *streams != "" {
		opts.Streams = strings.Split(*streams, ",")
	}
	logger := stage.NewLogger(cfg.Log, stderr).With("stage", archiver.Stage, "command", "replay")
	nc, err := natsconn.Connect(cfg.NATS, logger)
	if err != nil {
		return fail(1, err)
	}
	defer nc.Close()
	res, err := archiver.Replay(ctx, cfg.Archiver, archiver.Deps{NATS: nc, Logger: logger}, opts)
	tab := analytics.Table{Columns: []string{"stream", "messages", "rows", "skipped"}}
	for _, r := range res {
		tab.Rows = append(tab.Rows, []string{r.Stream, fmt.Sprint(r.Messages), fmt.Sprint(r.Rows), fmt.Sprint(r.Skipped)})
	}
	fmt.Fprintf(stdout, "Replayed %s to %s (UTC) into %s\n\n", opts.From.UTC().Format(time.DateTime), opts.To.UTC().Format(time.DateTime), cfg.Archiver.ClickHouse.Database)
	_ = tab.Print(stdout)
	if err != nil {
		return fail(1, err)
	}
	return 0
}
