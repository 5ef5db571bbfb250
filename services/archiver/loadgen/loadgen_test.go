package loadgen_test

import (
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/fleetwatch/fleetwatch/services/archiver/analytics"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
	"github.com/fleetwatch/fleetwatch/services/archiver/loadgen"
	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
)

func small(db string) loadgen.Config {
	c := loadgen.DefaultConfig()
	c.Database = db
	c.Events = 100_000
	c.Devices = 1000
	c.Sites = 10
	c.Chunk = 30_000 // four chunks, the last one short
	return c
}

func migrated(t *testing.T) (driver.Conn, string) {
	t.Helper()
	conn := chtest.Open(t)
	db := chtest.FreshDatabase(t, conn)
	if _, err := schema.Migrate(t.Context(), conn, db, schema.Options{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	return conn, db
}

// TestGeneratesTheModel checks the generated history against the model in
// the package doc, with queries independent of the generator's SQL.
func TestGeneratesTheModel(t *testing.T) {
	conn, db := migrated(t)
	c := small(db)
	var progress []int
	res, err := loadgen.Run(t.Context(), conn, c, func(done int) { progress = append(progress, done) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != 100_000 || !slices.Equal(progress, []int{30_000, 60_000, 90_000, 100_000}) {
		t.Fatalf("Run = %+v, progress %v", res, progress)
	}
	startMS, endMS := c.Start.UnixMilli(), c.End().UnixMilli()
	slotMS := c.Span.Milliseconds() / 50 // 100 events per device: 50 connections
	count := func(q string) uint64 {
		t.Helper()
		return chtest.Count(t, conn, strings.NewReplacer("DB", db, "SLOT", itoa(slotMS)).Replace(q))
	}
	checks := []struct {
		what  string
		query string
		want  uint64
	}{
		{"events", "SELECT count() FROM DB.presence_events", 100_000},
		{"distinct ids", "SELECT uniqExact(id) FROM DB.presence_events", 100_000},
		{"devices", "SELECT uniqExact(device_id) FROM DB.presence_events", 1000},
		{"sites", "SELECT uniqExact(extract(device_id, '^(.+?)-dev-')) FROM DB.presence_events", 10},
		{"connects", "SELECT count() FROM DB.presence_events WHERE kind = 'connected' AND reason = '' AND connected_at_ms = broker_ts_ms", 50_000},
		{"disconnects", "SELECT count() FROM DB.presence_events WHERE kind = 'disconnected' AND reason != '' AND reason = raw_reason AND connected_at_ms < broker_ts_ms", 50_000},
		{"outside the span", "SELECT count() FROM DB.presence_events WHERE broker_ts_ms < " + itoa(startMS) + " OR broker_ts_ms >= " + itoa(endMS), 0},
		{"date is the UTC day", "SELECT count() FROM DB.presence_events WHERE date != toDate(toDateTime(intDiv(broker_ts_ms, 1000)), 'UTC') OR toUInt64(broker_ts) != intDiv(broker_ts_ms, 1000)", 0},
		{"closed sessions", "SELECT count() FROM DB.sessions FINAL WHERE disconnected_ms > connected_ms", 50_000},
		{"open sessions", "SELECT count() FROM DB.sessions FINAL WHERE disconnected_ms = 0", 0},
		// A device's connections never overlap: each ends before the
		// next one starts.
		{"overlapping connections", `SELECT count() FROM (
			SELECT arraySort(groupArray((connected_ms, disconnected_ms))) AS s FROM DB.sessions FINAL GROUP BY device_id
		) WHERE arrayExists(i -> i < length(s) AND s[i + 1].1 <= s[i].2, arrayEnumerate(s))`, 0},
		// Flappers: connections under a minute, only on 1 % of devices
		// (the figures below are exact for seed 1; the comments say what
		// the model expects).
		{"flapping devices (about 10)", "SELECT uniqExact(device_id) FROM DB.sessions FINAL WHERE duration_ms <= 60000", 9},
		// An alert per outage: the connections that lasted 20-80 % of
		// their slot (the others last under a minute or over 95 %).
		{"outages (about 3 % of 50,000)", "SELECT count() FROM DB.sessions FINAL WHERE duration_ms > 60000 AND duration_ms < SLOT * 9 / 10", 1491},
		{"alerts", "SELECT count() FROM DB.alerts", 1491},
		{"alerts match outages", `SELECT count() FROM DB.alerts WHERE (device_ids[1], starts_at_ms) NOT IN (
			SELECT device_id, disconnected_ms FROM DB.sessions FINAL WHERE duration_ms > 60000 AND duration_ms < SLOT * 9 / 10)`, 0},
		{"silenced alerts (about 5 %)", "SELECT count() FROM DB.alerts WHERE silenced = 1", 76},
		{"deliveries without alert", "SELECT count() FROM DB.deliveries WHERE alert_id NOT IN (SELECT id FROM DB.alerts)", 0},
		{"deliveries of silenced alerts", "SELECT count() FROM DB.deliveries WHERE alert_id IN (SELECT id FROM DB.alerts WHERE silenced = 1)", 0},
		{"alerts with a first attempt: every unsilenced one", "SELECT count() FROM DB.deliveries WHERE attempt = 1", 1491 - 76},
		{"retries, all delivered (about 8 %)", "SELECT count() FROM DB.deliveries WHERE attempt = 2 AND outcome = 'delivered' AND alert_id IN (SELECT alert_id FROM DB.deliveries WHERE attempt = 1 AND outcome = 'retryable')", 108},
		{"retries", "SELECT count() FROM DB.deliveries WHERE attempt = 2", 108},
		{"permanent failures (about 2 %)", "SELECT count() FROM DB.deliveries WHERE outcome = 'permanent'", 26},
	}
	for _, ch := range checks {
		if got := count(ch.query); got != ch.want {
			t.Errorf("%s: %d, want %d", ch.what, got, ch.want)
		}
	}
}

// TestRunTwiceIsAReplay runs the generator twice and checks that every
// documented query gives the same result as after one run: the second
// run's rows are duplicates that the queries deduplicate, merged or not.
func TestRunTwiceIsAReplay(t *testing.T) {
	conn, db := migrated(t)
	c := small(db)
	c.Events, c.Chunk = 20_000, 0
	if _, err := loadgen.Run(t.Context(), conn, c, nil); err != nil {
		t.Fatal(err)
	}
	a := analytics.Args{Database: db, From: c.Start.Add(24 * time.Hour), To: c.Start.Add(72 * time.Hour), Device: "site-3-dev-3", Limit: 5}
	results := func() map[string]analytics.Table {
		out := map[string]analytics.Table{}
		for _, q := range analytics.Queries() {
			tab, err := analytics.Run(t.Context(), conn, q, a)
			if err != nil {
				t.Fatal(err)
			}
			out[q.Name] = tab
		}
		return out
	}
	once := results()
	for _, name := range []string{"availability", "outages", "flappers", "delivery-health", "device-history"} {
		if len(once[name].Rows) == 0 {
			t.Errorf("%s: no rows over the generated history", name)
		}
	}
	if _, err := loadgen.Run(t.Context(), conn, c, nil); err != nil {
		t.Fatal(err)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+db+".presence_events"); n != 40_000 {
		t.Fatalf("%d presence rows after two runs, want 40000 (duplicates not merged yet)", n)
	}
	twice := results()
	for _, q := range analytics.Queries() {
		if !slices.EqualFunc(once[q.Name].Rows, twice[q.Name].Rows, slices.Equal) {
			t.Errorf("%s changed after the replay:\n once %v\ntwice %v", q.Name, once[q.Name].Rows, twice[q.Name].Rows)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	tests := []struct {
		change func(*loadgen.Config)
		want   string
	}{
		{func(c *loadgen.Config) { c.Database = "a-b" }, `database name "a-b": not a plain identifier: use letters, digits and _, not starting with a digit`},
		{func(c *loadgen.Config) { c.Events = 0 }, "events is 0: generate at least 1"},
		{func(c *loadgen.Config) { c.Devices = 0 }, "devices is 0: use at least 1"},
		{func(c *loadgen.Config) { c.Sites = 20_000 }, "sites is 20000: use 1 to the number of devices (10000)"},
		{func(c *loadgen.Config) { c.Chunk = -1 }, "chunk is -1: use 0 (1,000,000) or more"},
		{func(c *loadgen.Config) { c.Events = 100_000_000 }, "100000000 events over 10000 devices in 720h0m0s leave 8m38s per connection, less than 10m0s: raise the span or the devices"},
	}
	for _, tt := range tests {
		c := loadgen.DefaultConfig()
		c.Database, c.Events = "fw", 10_000_000
		tt.change(&c)
		if err := c.Check(); err == nil || err.Error() != tt.want {
			t.Errorf("Check() = %v\nwant %s", err, tt.want)
		}
	}
	c := loadgen.DefaultConfig()
	c.Database, c.Events = "fw", 10_000_000
	if err := c.Check(); err != nil {
		t.Errorf("10M events, defaults: %v", err)
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
