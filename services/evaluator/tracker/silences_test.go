package tracker

import (
	"reflect"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
)

func sil(id string, from, to int64, expire bool, matchers ...string) silence.Silence {
	return silence.Silence{ID: id, Matchers: matchers, StartsAt: time.UnixMilli(t0 + from), EndsAt: time.UnixMilli(t0 + to),
		ExpireWhenResolved: expire, CreatedBy: "test"}
}

// ssum summarises a decision's silencing.
func ssum(d Decision) string {
	a := d.Alert
	s := a.Receiver + " " + string(a.Status) + " " + a.GroupKey
	if a.Silenced {
		s += " silenced"
		for _, id := range a.SilenceIDs {
			s += " " + id
		}
	}
	return s
}

func runSilences(t *testing.T, tr *Tracker, steps []gstep) {
	t.Helper()
	for i, s := range steps {
		var got []string
		for _, d := range tr.Apply(s.in) {
			if err := d.Alert.Validate(); err != nil {
				t.Fatal(err)
			}
			got = append(got, ssum(d))
		}
		if !reflect.DeepEqual(got, s.want) {
			t.Fatalf("step %d:\n got %q\nwant %q", i, got, s.want)
		}
	}
}

func TestSilences(t *testing.T) {
	tr := routedTracker(t, siteLabels, `
receivers: [ops]
routes:
  - matchers: [site=c]
    group_by: [site]
`)
	set := Silences{Now: time.UnixMilli(t0), Active: []silence.Silence{
		sil("s2", 0, 3_600_000, true, `device_id="a-1"`),
		sil("s1", 0, 3_600_000, false, `site="a"`),
		sil("s3", 100_000, 3_600_000, false, `site="b"`),
		sil("s4", 0, 3_600_000, false, `device_id="c-1"`),
		{ID: "bad", Matchers: []string{"x=~("}, StartsAt: time.UnixMilli(t0), EndsAt: time.UnixMilli(t0 + 1)},
	}}
	runSilences(t, tr, []gstep{
		{set, nil},
		{Event{disc(t, "a-1", "n1", 0, 10_000, events.ReasonClosed)}, nil},
		{Event{disc(t, "a-2", "n1", 0, 10_000, events.ReasonClosed)}, nil},
		{Event{disc(t, "b-1", "n1", 0, 10_000, events.ReasonClosed)}, nil},
		{Event{disc(t, "c-1", "n1", 0, 10_000, events.ReasonClosed)}, nil},
		{Event{disc(t, "c-2", "n1", 0, 10_000, events.ReasonClosed)}, nil},
		{at(40_000), []string{
			`ops firing root.0{site="c"}`, // c-2 is not silenced: the group is delivered
			`ops firing root{device_id="a-1"} silenced s1 s2`,
			`ops firing root{device_id="a-2"} silenced s1`,
			`ops firing root{device_id="b-1"}`, // s3 starts at 100 s
		}},
		// c-2 is listed as recovered and not silenced.
		{Event{conn(t, "c-2", "n1", 50_000)}, []string{`ops firing root.0{site="c"}`}},

		{Event{conn(t, "b-1", "n1", 150_000)}, []string{`ops resolved root{device_id="b-1"} silenced s3`}},
		{Event{conn(t, "a-1", "n1", 200_000)}, []string{`ops resolved root{device_id="a-1"} silenced s1 s2`}},
	})
	// s2's only device recovered: it expired, and no longer applies.
	if got := tr.ExpiredSilences(); !reflect.DeepEqual(got, []string{"s2"}) {
		t.Fatalf("expired %v", got)
	}
	// The same set again keeps the state; s1 ended at 1 h.
	runSilences(t, tr, []gstep{
		{set, nil},
		{Event{disc(t, "a-1", "n1", 200_000, 300_000, events.ReasonClosed)}, nil},
		{at(330_000), []string{`ops firing root{device_id="a-1"} silenced s1`}},
		{Event{conn(t, "a-2", "n1", 4_000_000)}, []string{`ops resolved root{device_id="a-2"}`}},
	})
	if got := tr.ExpiredSilences(); !reflect.DeepEqual(got, []string{"s2"}) {
		t.Fatalf("expired %v", got)
	}
	// The owner deleted s2.
	tr.Apply(Silences{Active: set.Active[1:]})
	if got := tr.ExpiredSilences(); got != nil || tr.Stats().SilencesInvalid != 3 {
		t.Fatalf("expired %v, stats %+v", got, tr.Stats())
	}
}

func TestSilenceAggregates(t *testing.T) {
	tr := correlatedTracker(t, "receivers: [ops]\n", Correlation{Keys: []string{"site"}, Window: time.Minute, MinDevices: 2})
	runSilences(t, tr, []gstep{
		{Silences{Active: []silence.Silence{
			sil("maint", 0, 3_600_000, true, `alertname=~"group_outage|node_silent"`, `site=~"a|"`),
		}}, nil},
		{Event{disc(t, "a-1", "n1", 0, 10_000, events.ReasonClosed)}, nil},
		{Event{disc(t, "a-2", "n1", 0, 10_000, events.ReasonClosed)}, nil},
		{Event{disc(t, "a-3", "n1", 0, 10_000, events.ReasonClosed)}, nil},
		{at(40_000), []string{
			`ops firing group_outage:root{site="a"} silenced maint`,
			`ops firing root{device_id="a-1"}~group_outage{site="a"}`,
			`ops firing root{device_id="a-2"}~group_outage{site="a"}`,
			`ops firing root{device_id="a-3"}~group_outage{site="a"}`,
		}},
		{nodeEvent(t, "n9", events.NodeSilent, 50_000, 50_000), []string{`ops firing node_silent:root{node="n9"} silenced maint`}},
		{Event{conn(t, "a-1", "n1", 60_000)}, []string{
			`ops firing group_outage:root{site="a"} silenced maint`,
			`ops resolved root{device_id="a-1"}~group_outage{site="a"}`,
		}},
	})
	if tr.ExpiredSilences() != nil {
		t.Fatal("expired while its alerts fire")
	}
	runSilences(t, tr, []gstep{
		// One of three left: the mass outage ends, a-3 alerts on its own
		// after its grace.
		{Event{conn(t, "a-2", "n1", 70_000)}, []string{
			`ops resolved group_outage:root{site="a"} silenced maint`,
			`ops resolved root{device_id="a-2"}~group_outage{site="a"}`,
			`ops resolved root{device_id="a-3"}~group_outage{site="a"}`,
		}},
		{at(99_999), nil},
		{at(100_000), []string{`ops firing root{device_id="a-3"}`}},
		{nodeEvent(t, "n9", events.NodeBack, 80_000, 80_000), []string{`ops resolved node_silent:root{node="n9"} silenced maint`}},
	})
	if got := tr.ExpiredSilences(); !reflect.DeepEqual(got, []string{"maint"}) {
		t.Fatalf("expired %v", got)
	}
}
