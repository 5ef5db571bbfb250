package bench

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for p, want := range map[float64]float64{0.5: 5, 0.99: 10, 0.1: 1, 0: 1} {
		if got := percentile(xs, p); got != want {
			t.Errorf("percentile(%v) = %v, want %v", p, got, want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing")
	}
}

func TestReportRendering(t *testing.T) {
	r := &Report{Machine: "test box"}
	r.add(Result{Name: rowRawPublish, Value: 80000, Unit: "msgs/s", CPU: 25.5})
	v := 60000.0
	r.add(Result{Name: "ingest", Value: v, Unit: "events/s", Ratio: ratio(v, r.value(rowRawPublish)), Baseline: "raw publish",
		Target: "≥ 40,000 events/s", Met: atLeast(v, 40000)})
	r.add(Result{Name: "memory", Value: 250, Unit: "B/device", Target: "≤ 200 B/device", Met: atMost(250, 200)})
	r.fail("archiver throughput", errNoClickHouse)
	table := r.Table()
	for _, want := range []string{"80,000 msgs/s", "25.5 µs/msg", "75% of raw publish", " met ", "NOT met", "FAILED archiver throughput: skipped"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	md := r.Markdown()
	for _, want := range []string{"# Benchmarks", "machine: test box", "| ingest | 60,000 events/s |  | 75% of raw publish | ≥ 40,000 events/s | met |",
		"| " + rowRawPublish + " | 80,000 msgs/s | 25.5 µs/msg |", "- memory: 250 B/device, target ≤ 200 B/device.", "--cpuprofile cpu.out --memprofile mem.out"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestRunCoreMemoryAndSnapshotSmall(t *testing.T) {
	cfg := Config{Events: 2000, MemoryDevices: []int{5000}, SnapshotDevices: 4000, Only: []string{"core", "memory", "snapshot"}}
	r := Run(t.Context(), cfg)
	if len(r.Failures) != 0 {
		t.Fatalf("failures: %v", r.Failures)
	}
	var names []string
	for _, x := range r.Results {
		names = append(names, x.Name)
		if x.Value <= 0 {
			t.Errorf("%s: value %v", x.Name, x.Value)
		}
	}
	want := []string{"evaluator core: Apply on one core (pre-decoded)", "evaluator memory at 5,000 devices",
		"evaluator snapshot of 4,000 devices: size", "evaluator snapshot of 4,000 devices: write", "evaluator snapshot of 4,000 devices: restore"}
	if !slices.Equal(names, want) {
		t.Fatalf("rows %q\nwant %q", names, want)
	}
}

func TestSelectStepsAddsBaselines(t *testing.T) {
	run := selectSteps([]string{"ingest", "archiver"})
	var got []string
	for _, s := range Steps {
		if run[s] {
			got = append(got, s)
		}
	}
	if want := []string{"jetstream", "clickhouse", "ingest", "archiver"}; !slices.Equal(got, want) {
		t.Fatalf("steps %q, want %q", got, want)
	}
	if run := selectSteps(nil); len(run) != len(Steps) || !run["latency"] {
		t.Fatalf("no --only: %v, want every step", run)
	}
}

func TestFormatCPU(t *testing.T) {
	for _, tc := range []struct {
		x    Result
		want string
	}{
		{Result{CPU: 93.27, Unit: "events/s"}, "93.3 µs/event"},
		{Result{CPU: 0.123, Unit: "events/s"}, "0.12 µs/event"},
		{Result{CPU: 1234, Unit: "notifications/s"}, "1,234 µs/notification"},
		{Result{CPU: 0, Unit: "msgs/s"}, ""},
	} {
		if got := formatCPU(tc.x); got != tc.want {
			t.Errorf("formatCPU(%+v) = %q, want %q", tc.x, got, tc.want)
		}
	}
}

func TestPresenceEventsAreValidAndDistinct(t *testing.T) {
	evs, err := presenceEvents(1000, 100, testTime)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range evs {
		if err := e.Validate(); err != nil {
			t.Fatal(err)
		}
		if seen[e.ID] {
			t.Fatalf("duplicate id %s", e.ID)
		}
		seen[e.ID] = true
	}
}

var testTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
