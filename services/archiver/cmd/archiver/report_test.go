package main

import (
	"bytes"
	"log/slog"

	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
	"github.com/fleetwatch/fleetwatch/services/archiver/sink"
)

var reportNow = time.Date(2024, 6, 10, 12, 0, 0, 0, time.UTC)

func runReport(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = report(t.Context(), args, &o, &e, func() time.Time { return reportNow })
	return code, o.String(), e.String()
}

func presence(t *testing.T, dev string, kind events.Kind, reason events.Reason, ts, connectedAt time.Time) events.PresenceEvent {
	t.Helper()
	e, err := events.NewPresenceEvent(events.PresenceEvent{
		DeviceID: dev, Kind: kind, Reason: reason, RawReason: string(reason), Node: "emqx@n1",
		BrokerTSMS: ts.UnixMilli(), ConnectedAtMS: connectedAt.UnixMilli(), Source: "emqx_sys_v5", ReceivedAtMS: ts.UnixMilli(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestReportPrintsATable(t *testing.T) {
	conn := chtest.Open(t)
	db := chtest.FreshDatabase(t, conn)
	if _, err := schema.Migrate(t.Context(), conn, db, schema.Options{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	h := func(x float64) time.Time { return reportNow.Add(time.Duration(x * float64(time.Hour))) }
	rows := sink.NewPresenceRows()
	for _, e := range []events.PresenceEvent{
		presence(t, "site-a-dev-1", events.KindConnected, "", h(-30), h(-30)),
		presence(t, "site-a-dev-1", events.KindDisconnected, events.ReasonKeepaliveTimeout, h(-6), h(-30)),
		presence(t, "site-a-dev-1", events.KindConnected, "", h(-5.5), h(-5.5)),
		presence(t, "site-b-dev-7", events.KindConnected, "", h(-20), h(-20)),
		presence(t, "site-b-dev-7", events.KindDisconnected, events.ReasonClosed, h(-1), h(-20)),
	} {
		if err := rows.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.NewWriter(conn, db).Insert(t.Context(), rows); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runReport(t, "outages", "--clickhouse", chtest.Addr(), "--database", db, "--from", "-24h")
	if code != 0 {
		t.Fatalf("report exit %d: %s", code, errOut)
	}
	want := "Outages (offline intervals) with duration — 2024-06-09 12:00:00 to 2024-06-10 12:00:00 (UTC)\n\n" +
		"start                end                  device_id     site    duration_s  reason             ongoing\n" +
		"-------------------  -------------------  ------------  ------  ----------  -----------------  -------\n" +
		"2024-06-10 06:00:00  2024-06-10 06:30:00  site-a-dev-1  site-a        1800  keepalive_timeout        0\n" +
		"2024-06-10 11:00:00  2024-06-10 12:00:00  site-b-dev-7  site-b        3600  closed                   1\n" +
		"(2 rows)\n"
	if out != want {
		t.Errorf("report outages:\n%s\nwant:\n%s", out, want)
	}

	code, out, errOut = runReport(t, "reliability-site", "--clickhouse", chtest.Addr(), "--database", db,
		"--from", "2024-06-10", "--to", "2024-06-10T12:00:00Z", "--site", "site-b")
	if code != 0 {
		t.Fatalf("report exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "site-b        1        1       3600       0   39600            91.667\n(1 rows)\n") {
		t.Errorf("report reliability-site --site site-b:\n%s", out)
	}
}

func TestReportArguments(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		stdout   string
		inStderr string
	}{
		{nil, 2, "", "name a query"},
		{[]string{"nope"}, 2, "", `unknown query "nope": use one of availability, availability-device-day`},
		{[]string{"outages", "extra"}, 2, "", `unexpected argument "extra"`},
		{[]string{"device-history", "--sql"}, 2, "", "query device-history needs a device: set --device"},
		{[]string{"outages", "--from", "yesterday"}, 2, "", `--from: "yesterday": use RFC 3339`},
		{[]string{"outages", "--from", "-1x"}, 2, "", `--from: "-1x" is not -<duration>`},
		{[]string{"outages", "--from", "now", "--to", "-1h", "--sql"}, 2, "", "window [2024-06-10T12:00:00Z, 2024-06-10T11:00:00Z) is empty"},
		{[]string{"flappers", "--limit", "0"}, 2, "", "--limit 0: use 1 or more"},
		{[]string{"outages", "--database", "fw-x", "--sql"}, 2, "", `database "fw-x" is not a plain identifier`},
		{[]string{"--help"}, 0, "", "flappers                 Top flapping devices"},
	}
	for _, tt := range tests {
		code, out, errOut := runReport(t, tt.args...)
		if code != tt.code || out != tt.stdout || !strings.Contains(errOut, tt.inStderr) {
			t.Errorf("report %q = %d, stdout %q, stderr %q; want %d, %q, stderr containing %q", tt.args, code, out, errOut, tt.code, tt.stdout, tt.inStderr)
		}
	}
	code, out, _ := runReport(t, "flappers", "--sql", "--database", "fw", "--from", "-1h", "--limit", "3", "--site", "site-a")
	if code != 0 || !strings.Contains(out, "FROM fw.sessions") || !strings.Contains(out, "d >= 1718017200000 AND d < 1718020800000") ||
		!strings.Contains(out, "('site-a' = '' OR site = 'site-a')") || !strings.HasSuffix(out, "LIMIT 3\n") {
		t.Errorf("report flappers --sql = %d:\n%s", code, out)
	}
}

func FuzzParseWhen(f *testing.F) {
	for _, s := range []string{"now", "-24h", "-90m", "2024-06-10", "2024-06-10T00:00:00Z", "2024-06-10 01:02:03", "-", "yesterday", "-1x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseWhen(s, reportNow)
		if err != nil {
			return
		}
		if s == "now" && !got.Equal(reportNow) {
			t.Fatalf("parseWhen(now) = %v", got)
		}
		if y := got.UTC().Year(); y < 1 || y > 9999 {
			return // RFC 3339 has four-digit years
		}
		// An absolute time written back in RFC 3339 parses to itself.
		again, err := parseWhen(got.UTC().Format(time.RFC3339Nano), reportNow)
		if err != nil || !again.Equal(got) {
			t.Fatalf("parseWhen(%q) = %v does not round-trip: %v, %v", s, got, again, err)
		}
	})
}
