package tracker_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
)

const (
	v0    = int64(1_700_000_000_000)
	grace = 30 * time.Second
)

// vcfg is a tracker config over table: inventory labels from inv, routes
// grouping by groupBy to receiver rc.
func vcfg(t *testing.T, table *labels.Table, inv *labels.Inventory, rc string, groupBy ...string) tracker.Config {
	t.Helper()
	l, err := labels.NewLabeler(labels.Config{}, table, inv)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := route.New(route.Config{GroupBy: groupBy}, route.Defaults{Receivers: []string{rc}, GroupBy: []string{labels.DeviceID}, Grace: grace,
		Severity: "warning"}, "routes")
	if err != nil {
		t.Fatal(err)
	}
	return tracker.Config{Grace: grace, Severity: events.SeverityWarning, Routes: tree, Labeler: l}
}

func pe(t *testing.T, dev string, kind events.Kind, connAt, at int64) *events.PresenceEvent {
	t.Helper()
	e := events.PresenceEvent{DeviceID: dev, Kind: kind, Node: "n1", BrokerTSMS: at, ConnectedAtMS: connAt, Source: "test", ReceivedAtMS: at}
	if kind == events.KindDisconnected {
		e.Reason, e.RawReason = events.ReasonKeepaliveTimeout, "keepalive_timeout"
	}
	out, err := events.NewPresenceEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return &out
}

func sums(ds []tracker.Decision) []string {
	out := []string{}
	for _, d := range ds {
		var devs []string
		for _, dev := range d.Alert.Devices {
			devs = append(devs, dev.DeviceID)
		}
		out = append(out, fmt.Sprintf("%s %s %s new=%d res=%d [%s]", d.Alert.Receiver, d.Alert.Status, d.Alert.GroupKey, d.New, d.Resolved, strings.Join(devs, " ")))
	}
	return out
}

func want(t *testing.T, got []tracker.Decision, w ...string) {
	t.Helper()
	if w == nil {
		w = []string{}
	}
	if g := sums(got); !reflect.DeepEqual(g, w) {
		t.Fatalf("decisions\n%q\nwant\n%q", g, w)
	}
}

func TestViews(t *testing.T) {
	table := labels.NewTable()
	inv, err := labels.ParseInventoryCSV([]byte("device_id,site\na,s1\nb,s1\nc,s2\n"), "", table)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tracker.New(vcfg(t, table, inv, "ops", "site"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.NextDue(); ok {
		t.Fatal("NextDue on an empty tracker")
	}
	for _, d := range []string{"a", "b", "c"} {
		tr.Apply(tracker.Event{PresenceEvent: pe(t, d, events.KindConnected, v0, v0)})
	}
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "a", events.KindDisconnected, v0, v0+1_000)})
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "b", events.KindDisconnected, v0, v0+2_000)})
	if due, ok := tr.NextDue(); !ok || due != v0+31_000 {
		t.Fatalf("NextDue = %d, %v", due-v0, ok)
	}
	want(t, tr.Apply(tracker.Tick{Now: time.UnixMilli(v0 + 31_000)}), `ops firing root{site="s1"} new=1 res=0 [a]`)

	statuses := map[string]tracker.Status{}
	sites := map[string]string{}
	tr.EachDevice(func(v *tracker.DeviceView) bool {
		statuses[v.ID()] = v.Status()
		sites[v.ID()] = v.Label("site")
		if v.State().Status() != v.Status() || v.Labels()["device_id"] != v.ID() {
			t.Errorf("view of %s: %+v", v.ID(), v.State())
		}
		return true
	})
	if !reflect.DeepEqual(statuses, map[string]tracker.Status{"a": tracker.StatusOffline, "b": tracker.StatusPending, "c": tracker.StatusOnline}) ||
		!reflect.DeepEqual(sites, map[string]string{"a": "s1", "b": "s1", "c": "s2"}) {
		t.Fatalf("statuses %v sites %v", statuses, sites)
	}
	n := 0
	tr.EachDevice(func(*tracker.DeviceView) bool { n++; return false })
	if n != 1 {
		t.Fatalf("EachDevice went on after false: %d", n)
	}
	gs := tr.GroupStates(10)
	if len(gs) != 1 || gs[0].Key != `root{site="s1"}` || gs[0].Firing != 1 || !gs[0].Notified || gs[0].Seq != 1 ||
		!slices.Equal(gs[0].Devices, []string{"a"}) || gs[0].Labels["site"] != "s1" || gs[0].StartsAtMS != v0+1_000 {
		t.Fatalf("groups %+v", gs)
	}
}

// TestRelabelWaitsForRecovery: an alerting device keeps its labels (its
// groups were chosen by them); once it recovered, Relabel applies.
func TestRelabelWaitsForRecovery(t *testing.T) {
	table := labels.NewTable()
	dyn := labels.NewDynamic(table, nil)
	tr, err := tracker.New(vcfg(t, table, dyn.Inventory(), "ops", "site"))
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Relabel("unknown", 0) {
		t.Fatal("Relabel of an unknown device")
	}
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "a", events.KindConnected, v0, v0)})
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "a", events.KindDisconnected, v0, v0+1_000)})
	want(t, tr.Apply(tracker.Tick{Now: time.UnixMilli(v0 + 31_000)}), `ops firing root{} new=1 res=0 [a]`)
	old, err := dyn.Set("a", map[string]string{"site": "s9"})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Relabel("a", old) {
		t.Fatal("relabelled an alerting device")
	}
	want(t, tr.Apply(tracker.Event{PresenceEvent: pe(t, "a", events.KindConnected, v0+40_000, v0+40_000)}),
		`ops resolved root{} new=0 res=1 [a]`)
	if !tr.Relabel("a", old) || tr.Labels("a")["site"] != "s9" {
		t.Fatalf("labels after recovery: %v", tr.Labels("a"))
	}
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "a", events.KindDisconnected, v0+40_000, v0+50_000)})
	want(t, tr.Apply(tracker.Tick{Now: time.UnixMilli(v0 + 80_000)}), `ops firing root{site="s9"} new=1 res=0 [a]`)
}

// TestReconfigure moves alerting devices to the new routes without
// announcing them again, flushes what the old groups had to say, fires a
// pending outage under the new (shorter) grace, and resolves through the
// new groups.
func TestReconfigure(t *testing.T) {
	table := labels.NewTable()
	inv, err := labels.ParseInventoryCSV([]byte("device_id,site\na,s1\nb,s1\nc,s1\n"), "", table)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tracker.New(vcfg(t, table, inv, "ops"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a", "b", "c"} {
		tr.Apply(tracker.Event{PresenceEvent: pe(t, d, events.KindConnected, v0, v0)})
	}
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "a", events.KindDisconnected, v0, v0+1_000)})
	want(t, tr.Apply(tracker.Tick{Now: time.UnixMilli(v0 + 31_000)}), `ops firing root{device_id="a"} new=1 res=0 [a]`)
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "b", events.KindDisconnected, v0, v0+40_000)}) // pending

	// A config with another table is refused, and changes nothing.
	if _, err := tr.Reconfigure(vcfg(t, labels.NewTable(), nil, "x"), time.UnixMilli(v0+45_000), false); err == nil {
		t.Fatal("a labeler on another table was accepted")
	}
	// The new config groups by site for receiver "site-ops", with a 10s grace.
	nc := vcfg(t, table, inv, "site-ops", "site")
	tree, err := route.New(route.Config{GroupBy: []string{"site"}}, route.Defaults{Receivers: []string{"site-ops"}, GroupBy: []string{labels.DeviceID},
		Grace: 10 * time.Second, Severity: "warning"}, "routes")
	if err != nil {
		t.Fatal(err)
	}
	nc.Routes = tree
	ds, err := tr.Reconfigure(nc, time.UnixMilli(v0+45_000), true)
	if err != nil {
		t.Fatal(err)
	}
	want(t, ds) // a was announced: nothing to say
	gs := tr.GroupStates(5)
	if len(gs) != 1 || gs[0].Key != `root{site="s1"}` || !gs[0].Notified || gs[0].Receivers[0] != "site-ops" {
		t.Fatalf("groups after reconfigure %+v", gs)
	}
	// b's outage (since +40s) fires at +50s under the new 10s grace, and is
	// new to the site group.
	want(t, tr.Apply(tracker.Tick{Now: time.UnixMilli(v0 + 50_000)}), `site-ops firing root{site="s1"} new=1 res=0 [b a]`)
	want(t, tr.Apply(tracker.Event{PresenceEvent: pe(t, "a", events.KindConnected, v0+60_000, v0+60_000)}),
		`site-ops firing root{site="s1"} new=0 res=1 [a b]`)
	want(t, tr.Apply(tracker.Event{PresenceEvent: pe(t, "b", events.KindConnected, v0+61_000, v0+61_000)}),
		`site-ops resolved root{site="s1"} new=0 res=1 [b]`)
	if tr.Groups() != 0 {
		t.Fatalf("%d groups left", tr.Groups())
	}
}
