package tracker

import (
	"fmt"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// TestRestoreMidScenarioDecidesTheSame: a tracker restored from a snapshot
// taken at any point of a history decides, for the rest of it, exactly what
// the uninterrupted tracker decides (the hand-over of a lease partition).
func TestRestoreMidScenarioDecidesTheSame(t *testing.T) {
	var in []Input
	for i := range 60 {
		d := fmt.Sprintf("dev-%02d", i)
		in = append(in, Event{conn(t, d, "n1", int64(i))}, Event{disc(t, d, "n1", int64(i), 1000+int64(i), events.ReasonKeepaliveTimeout)})
	}
	for i := 0; i < 60; i += 3 {
		in = append(in, Event{conn(t, fmt.Sprintf("dev-%02d", i), "n1", 2000+int64(i))})
	}
	in = append(in, at(40_000))
	for i := 1; i < 60; i += 3 {
		in = append(in, Event{conn(t, fmt.Sprintf("dev-%02d", i), "n1", 50_000+int64(i))})
	}
	in = append(in, at(90_000))
	decide := func(tr *Tracker, in []Input) []string {
		var out []string
		for _, x := range in {
			for _, d := range tr.Apply(x) {
				out = append(out, summary(d))
			}
		}
		return out
	}
	want := decide(newTracker(t), in)
	for cut := 0; cut <= len(in); cut++ {
		tr := newTracker(t)
		head := decide(tr, in[:cut])
		snap, err := tr.MarshalSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		back := newTracker(t)
		if err := back.RestoreSnapshot(snap); err != nil {
			t.Fatal(err)
		}
		got := append(head, decide(back, in[cut:])...)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("restored after %d inputs:\n got %v\nwant %v", cut, got, want)
		}
	}
}
