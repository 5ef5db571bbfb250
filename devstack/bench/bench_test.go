package bench

import (
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
	r.add(Result{Name: rowRawPublish, Value: 80000, Unit: "msgs/s"})
	v := 60000.0
	r.add(Result{Name: "ingest", Value: v, Unit: "events/s", Ratio: ratio(v, r.value(rowRawPublish)), Baseline: "raw publish",
		Target: "≥ 40,000 events/s", Met: atLeast(v, 40000)})
	r.add(Result{Name: "memory", Value: 250, Unit: "B/device", Target: "≤ 200 B/device", Met: atMost(250, 200)})
	r.fail("archiver throughput", errNoClickHouse)
	table := r.Table()
	for _, want := range []string{"80,000 msgs/s", "75% of raw publish", "yes", "NO", "FAILED archiver throughput: skipped"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	md := r.Markdown()
	for _, want := range []string{"# Benchmarks", "machine: test box", "| ingest | 60,000 events/s | 75% of raw publish | ≥ 40,000 events/s | yes |", "--cpuprofile"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestRunCoreAndMemorySmall(t *testing.T) {
	cfg := Config{Events: 2000, MemoryDevices: []int{5000}, Only: []string{"core", "memory"}}
	r := Run(t.Context(), cfg)
	if len(r.Failures) != 0 {
		t.Fatalf("failures: %v", r.Failures)
	}
	if len(r.Results) != 2 || r.Results[0].Value <= 0 || r.Results[1].Value <= 0 {
		t.Fatalf("results %+v, want a core rate and a memory figure", r.Results)
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
