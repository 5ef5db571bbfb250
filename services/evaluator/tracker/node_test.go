package tracker

import (
	"reflect"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

func nodeEvent(t testing.TB, node string, status events.NodeStatus, lastSeen, at int64) Node {
	t.Helper()
	e, err := events.NewNodeEvent(events.NodeEvent{Node: node, Status: status, LastSeenMS: t0 + lastSeen, AtMS: t0 + at, Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return Node{&e}
}

func TestNodeSilent(t *testing.T) {
	tr := routedTracker(t, "{}", "receivers: [ops]\n")
	const nodeKey = `node_silent:root{node="n1"}`
	all := runGroups(t, tr, []gstep{
		{Event{conn(t, "a", "n1", 0)}, nil},
		{Event{conn(t, "b", "n1", 0)}, nil},
		{Event{conn(t, "c", "n2", 0)}, nil},
		{Event{conn(t, "m", "n1", 0)}, nil},
		{Event{disc(t, "b", "n1", 0, 95_000, events.ReasonKeepaliveTimeout)}, nil},
		{nodeEvent(t, "n1", events.NodeSilent, 90_000, 100_000), []string{
			"ops firing " + nodeKey + " new=0 res=0 firing=0 total=3 []"}},
		{nodeEvent(t, "n1", events.NodeSilent, 90_000, 101_000), nil}, // a duplicate
		{at(130_000), nil}, // b's grace ended: held
		{Event{disc(t, "a", "n1", 0, 140_000, events.ReasonKeepaliveTimeout)}, nil}, // received while silent: counts
		{Event{conn(t, "m", "n2", 145_000)}, nil},                                   // moved: known again
		{Event{disc(t, "c", "n2", 0, 150_000, events.ReasonKeepaliveTimeout)}, nil},
		{at(200_000), []string{`ops firing root{device_id="c"} new=1 res=0 firing=1 total=1 [c:f]`}},
		{nodeEvent(t, "n1", events.NodeBack, 295_000, 300_000), []string{
			"ops resolved " + nodeKey + " new=0 res=0 firing=0 total=2 []",
			`ops firing root{device_id="a"} new=1 res=0 firing=1 total=1 [a:f]`,
			`ops firing root{device_id="b"} new=1 res=0 firing=1 total=1 [b:f]`,
		}},
		{nodeEvent(t, "n1", events.NodeBack, 295_000, 301_000), nil},
	})
	silent, back := all[0].Alert, all[2].Alert
	if silent.Kind != events.AlertNodeSilent || silent.StartsAtMS != t0+90_000 || silent.KnownTotal != 3 ||
		silent.Severity != events.SeverityWarning || !reflect.DeepEqual(silent.GroupLabels, map[string]string{"node": "n1"}) ||
		silent.CreatedAtMS != t0+100_000 || silent.Fingerprint != back.Fingerprint || silent.ID == back.ID {
		t.Fatalf("node_silent %+v", silent)
	}
	if back.EndsAtMS != t0+295_000 || back.StartsAtMS != t0+90_000 || back.DevicesTotal != 2 {
		t.Fatalf("resolved %+v", back)
	}
	if b := all[4].Alert; b.StartsAtMS != t0+95_000 || b.CreatedAtMS != t0+300_000 {
		t.Fatalf("held alert %+v", b)
	}
	if s := tr.Stats(); s.Held != 2 || s.NodesSilent != 1 || s.NodeEvents != 4 {
		t.Fatalf("stats %+v", s)
	}
}

func TestNodeSilentUnknownAndBack(t *testing.T) {
	tr := newTracker(t, "ops")
	tr.Apply(Event{conn(t, "a", "n1", 0)})
	tr.Apply(Event{conn(t, "b", "n2", 0)})
	tr.Apply(nodeEvent(t, "n1", events.NodeSilent, 10_000, 20_000))
	if got := tr.SilentNodes(); !reflect.DeepEqual(got, []string{"n1"}) {
		t.Fatalf("silent nodes %v", got)
	}
	a, _ := tr.Device("a")
	b, _ := tr.Device("b")
	if !a.Unknown || !a.Online || b.Unknown {
		t.Fatalf("a %+v b %+v", a, b)
	}
	// Back: a was not refreshed by any event and stays as it was, online.
	if got := tr.Apply(nodeEvent(t, "n1", events.NodeBack, 50_000, 50_000)); len(got) != 1 || got[0].Alert.Status != events.StatusResolved {
		t.Fatalf("back %+v", got)
	}
	if a, _ := tr.Device("a"); a.Unknown || !a.Online || a.Pending {
		t.Fatalf("a after back %+v", a)
	}
	// A held device that reconnected meanwhile is not alerted.
	tr.Apply(Event{disc(t, "a", "n1", 0, 60_000, events.ReasonClosed)})
	tr.Apply(nodeEvent(t, "n1", events.NodeSilent, 61_000, 62_000))
	tr.Apply(Tick{Now: at(100_000).Now})
	tr.Apply(Event{conn(t, "a", "n1", 110_000)})
	if got := tr.Apply(nodeEvent(t, "n1", events.NodeBack, 120_000, 120_000)); len(got) != 1 || got[0].Alert.Kind != events.AlertNodeSilent {
		t.Fatalf("back %+v", got)
	}
	if s := tr.Stats(); s.Fired != 0 || s.Held != 1 || s.Unalerted != 1 {
		t.Fatalf("stats %+v", s)
	}
}
