package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/services/archiver/analytics"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
)

func TestLoadgenThenReportTiming(t *testing.T) {
	conn := chtest.Open(t)
	db := chtest.FreshDatabase(t, conn)
	var out, errOut bytes.Buffer
	code := loadgenCmd(t.Context(), []string{"--clickhouse", chtest.Addr(), "--database", db,
		"--events", "20000", "--devices", "200", "--sites", "4", "--days", "7", "--start", "2024-06-01"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("loadgen exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{
		"generated 20000 presence events (with their alerts and deliveries) into " + db + " in ",
		"presence_events  20000\n",
		"sessions         10000\n",
		"  fleetwatch-archiver report --timing --clickhouse " + chtest.Addr() + " --database " + db +
			" --from 2024-06-01 --to 2024-06-08 --device site-3-dev-3\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("loadgen output lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	code, stdout, stderr := runReport(t, "--timing", "--runs", "2", "--clickhouse", chtest.Addr(), "--database", db,
		"--from", "2024-06-01", "--to", "2024-06-08")
	if code != 0 {
		t.Fatalf("report --timing exit %d: %s", code, stderr)
	}
	lines := strings.Split(stdout, "\n")
	if lines[0] != "Query times — database "+db+", 2024-06-01 00:00:00 to 2024-06-08 00:00:00 (UTC), 2 run(s) each" ||
		!strings.HasPrefix(lines[2], "query ") || !strings.Contains(stdout, "device-history skipped: set --device\n") {
		t.Fatalf("report --timing:\n%s", stdout)
	}
	row := regexp.MustCompile(`^(\S+) +(\d+) +(\d+) +2 +\d+\.\d +\d+\.\d +\d+\.\d$`)
	want := map[string]string{ // result rows: the fleet has 200 devices in 4 sites over 7 days
		"availability": "20", "availability-device-day": "1400", "availability-site-day": "28",
		"reliability-device": "20", "reliability-site": "4", "flappers": "20", "delivery-health": "3",
	}
	seen := 0
	for _, l := range lines[4:] {
		m := row.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		seen++
		if w, ok := want[m[1]]; ok && m[2] != w {
			t.Errorf("%s: %s result rows, want %s", m[1], m[2], w)
		}
		if m[3] == "0" {
			t.Errorf("%s: read no rows", m[1])
		}
	}
	if seen != len(analytics.Queries())-1 {
		t.Errorf("%d timed queries, want all but device-history:\n%s", seen, stdout)
	}
}

func TestLoadgenNeedsADatabase(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := loadgenCmd(t.Context(), []string{"--events", "10"}, &out, &errOut); code != 2 ||
		errOut.String() != "fleetwatch-archiver loadgen: set --database: loadgen writes synthetic events and never into the configured archive by default\n" {
		t.Fatalf("loadgen without --database: exit %d, %q", code, errOut.String())
	}
}
