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
	"gopkg.in/yaml.v3"
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

func nodeIn(t *testing.T, node string, st events.NodeStatus, at int64) tracker.Node {
	t.Helper()
	e, err := events.NewNodeEvent(events.NodeEvent{Node: node, Status: st, LastSeenMS: at - 5_000, AtMS: at, Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return tracker.Node{NodeEvent: &e}
}

// TestUnknownStatus: the devices of a silent node are unknown, whatever
// their last known state, until the node is back.
func TestUnknownStatus(t *testing.T) {
	tr, err := tracker.New(vcfg(t, labels.NewTable(), nil, "ops"))
	if err != nil {
		t.Fatal(err)
	}
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "a", events.KindConnected, v0, v0)})
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "b", events.KindConnected, v0, v0)})
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "b", events.KindDisconnected, v0, v0+1_000)})
	statuses := func() map[string]tracker.Status {
		out := map[string]tracker.Status{}
		tr.EachDevice(func(v *tracker.DeviceView) bool {
			if v.State().Status() != v.Status() {
				t.Errorf("%s: state says %s, view %s", v.ID(), v.State().Status(), v.Status())
			}
			out[v.ID()] = v.Status()
			return true
		})
		return out
	}
	want(t, tr.Apply(nodeIn(t, "n1", events.NodeSilent, v0+2_000)), `ops firing node_silent:root{node="n1"} new=0 res=0 []`)
	if got := statuses(); !reflect.DeepEqual(got, map[string]tracker.Status{"a": tracker.StatusUnknown, "b": tracker.StatusUnknown}) {
		t.Fatalf("while silent: %v", got)
	}
	// b's grace ends while the node is silent: held, no device alert.
	want(t, tr.Apply(tracker.Tick{Now: time.UnixMilli(v0 + 40_000)}))
	want(t, tr.Apply(nodeIn(t, "n1", events.NodeBack, v0+50_000)),
		`ops resolved node_silent:root{node="n1"} new=0 res=0 []`, `ops firing root{device_id="b"} new=1 res=0 [b]`)
	if got := statuses(); !reflect.DeepEqual(got, map[string]tracker.Status{"a": tracker.StatusOnline, "b": tracker.StatusOffline}) {
		t.Fatalf("after back: %v", got)
	}
}

// TestRelabelMovesTopology: a relabelled device counts in its new topology
// group (correlation), and an offline one is relabelled once it is back.
func TestRelabelMovesTopology(t *testing.T) {
	table := labels.NewTable()
	file, err := labels.ParseInventoryCSV([]byte("device_id,site\na,s1\nb,s1\nc,s2\n"), "", table)
	if err != nil {
		t.Fatal(err)
	}
	dyn := labels.NewDynamic(table, file)
	cfg := vcfg(t, table, dyn.Inventory(), "ops")
	cfg.Correlation = tracker.Correlation{Keys: []string{"site"}, Window: time.Minute, MinDevices: 2}
	tr, err := tracker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a", "b", "c"} {
		tr.Apply(tracker.Event{PresenceEvent: pe(t, d, events.KindConnected, v0, v0)})
	}
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "b", events.KindDisconnected, v0, v0+1_000)})
	old, err := dyn.Set("c", map[string]string{"site": "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Relabel("c", old) || tr.Labels("c")["site"] != "s1" {
		t.Fatalf("c not relabelled: %v", tr.Labels("c"))
	}
	oldB, err := dyn.Set("b", map[string]string{"site": "s3"})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Relabel("b", oldB) {
		t.Fatal("relabelled b while offline")
	}
	// c now counts in s1: with b, two devices of s1 down within the
	// window make a mass outage.
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "c", events.KindDisconnected, v0, v0+2_000)})
	want(t, tr.Apply(tracker.Tick{Now: time.UnixMilli(v0 + 40_000)}),
		`ops firing group_outage:root{site="s1"} new=2 res=0 [b c]`,
		`ops firing root{device_id="b"}~group_outage{site="s1"} new=1 res=0 [b]`,
		`ops firing root{device_id="c"}~group_outage{site="s1"} new=1 res=0 [c]`)
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "b", events.KindConnected, v0+50_000, v0+50_000)})
	if !tr.Relabel("b", oldB) || tr.Labels("b")["site"] != "s3" {
		t.Fatalf("b not relabelled once back: %v", tr.Labels("b"))
	}
}

// TestReconfigureFlapAndCorrelation: turning flap suppression off calms a
// flapping device at once (its real state fires), and turning correlation
// off unfolds the devices of a mass outage: the group_outage resolves and
// each still-down device gets its own alert a grace later.
func TestReconfigureFlapAndCorrelation(t *testing.T) {
	table := labels.NewTable()
	inv, err := labels.ParseInventoryCSV([]byte("device_id,site\nf,s0\na,s1\nb,s1\n"), "", table)
	if err != nil {
		t.Fatal(err)
	}
	tree := func(yml string) tracker.Config {
		t.Helper()
		cfg := vcfg(t, table, inv, "ops")
		var rc route.Config
		if err := yaml.Unmarshal([]byte(yml), &rc); err != nil {
			t.Fatal(err)
		}
		r, err := route.New(rc, route.Defaults{Receivers: []string{"ops"}, GroupBy: []string{labels.DeviceID}, Grace: grace, Severity: "warning"}, "routes")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Routes = r
		return cfg
	}
	before := tree("flap: {penalty: 1000, half_life: 10m, suppress: 2500, reuse: 500}\n")
	before.Correlation = tracker.Correlation{Keys: []string{"site"}, Window: time.Minute, MinDevices: 2}
	tr, err := tracker.New(before)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"f", "a", "b"} {
		tr.Apply(tracker.Event{PresenceEvent: pe(t, d, events.KindConnected, v0, v0)})
	}
	// f flaps: three disconnects within seconds.
	var got []string
	for i := range int64(3) {
		at := v0 + 1_000 + i*2_000
		got = append(got, sums(tr.Apply(tracker.Event{PresenceEvent: pe(t, "f", events.KindDisconnected, at-1_000, at)}))...)
		if i < 2 {
			got = append(got, sums(tr.Apply(tracker.Event{PresenceEvent: pe(t, "f", events.KindConnected, at+1_000, at+1_000)}))...)
		}
	}
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "a", events.KindDisconnected, v0, v0+10_000)})
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "b", events.KindDisconnected, v0, v0+11_000)})
	got = append(got, sums(tr.Apply(tracker.Tick{Now: time.UnixMilli(v0 + 45_000)}))...)
	if !slices.Equal(got, []string{
		`ops firing device_flapping:root{device_id="f"} new=1 res=0 [f]`,
		`ops firing group_outage:root{site="s1"} new=2 res=0 [a b]`,
		`ops firing root{device_id="a"}~group_outage{site="s1"} new=1 res=0 [a]`,
		`ops firing root{device_id="b"}~group_outage{site="s1"} new=1 res=0 [b]`,
	}) {
		t.Fatalf("before: %q", got)
	}
	ds, err := tr.Reconfigure(tree("{}\n"), time.UnixMilli(v0+50_000), false)
	if err != nil {
		t.Fatal(err)
	}
	want(t, ds,
		`ops resolved group_outage:root{site="s1"} new=0 res=0 []`, // no correlation: flushed under the old routes
		`ops resolved device_flapping:root{device_id="f"} new=0 res=1 [f]`,
		`ops resolved root{device_id="a"}~group_outage{site="s1"} new=0 res=0 []`,
		`ops resolved root{device_id="b"}~group_outage{site="s1"} new=0 res=0 []`,
		`ops firing root{device_id="f"} new=1 res=0 [f]`)
	if s, _ := tr.Device("a"); s.Status() != tracker.StatusPending || s.Inhibited {
		t.Fatalf("a after reconfigure: %+v", s)
	}
	want(t, tr.Apply(tracker.Tick{Now: time.UnixMilli(v0 + 80_000)}),
		`ops firing root{device_id="a"} new=1 res=0 [a]`, `ops firing root{device_id="b"} new=1 res=0 [b]`)
}

// TestLabelsCurrent: labels computed from connections (username, IP) and
// the inventory are current for the labeler that computed them, and not
// for one with another inventory.
func TestLabelsCurrent(t *testing.T) {
	table := labels.NewTable()
	inv, err := labels.ParseInventoryCSV([]byte("device_id,site,owner\nplant1-a,plant9,ops\n"), "", table)
	if err != nil {
		t.Fatal(err)
	}
	lc := labels.Config{ClientID: []labels.ClientIDRule{{Regex: `^(?P<site>plant[0-9]+)-`}}, Username: "tenant",
		IPPrefix: labels.IPPrefix{Label: "subnet", IPv4Bits: 24}}
	l, err := labels.NewLabeler(lc, table, inv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := vcfg(t, table, inv, "ops")
	cfg.Labeler = l
	tr, err := tracker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"plant1-a", "plant2-b", "other"} {
		e := events.PresenceEvent{DeviceID: id, Kind: events.KindConnected, Node: "n1", BrokerTSMS: v0, ConnectedAtMS: v0, Source: "test",
			Username: fmt.Sprintf("t%d", i), IP: fmt.Sprintf("10.0.%d.7", i)}
		v, err := events.NewPresenceEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		tr.Apply(tracker.Event{PresenceEvent: &v})
	}
	if got := tr.Labels("plant1-a"); got["site"] != "plant9" || got["tenant"] != "t0" || got["subnet"] != "10.0.0.0/24" {
		t.Fatalf("labels %v", got)
	}
	if !tr.LabelsCurrent() {
		t.Fatal("labels not current for their own labeler")
	}
	other, err := labels.ParseInventoryCSV([]byte("device_id,site\nplant1-a,plant1\n"), "", table)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := labels.NewLabeler(lc, table, other)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Labeler = l2
	if _, err := tr.Reconfigure(cfg, time.UnixMilli(v0+1_000), false); err != nil {
		t.Fatal(err)
	}
	if tr.LabelsCurrent() {
		t.Fatal("labels current for another inventory")
	}
	if _, err := tr.Reconfigure(cfg, time.UnixMilli(v0+2_000), true); err != nil {
		t.Fatal(err)
	}
	if got := tr.Labels("plant1-a"); !tr.LabelsCurrent() || got["site"] != "plant1" || got["owner"] != "" || got["tenant"] != "t0" {
		t.Fatalf("after relabel: current %v, labels %v", tr.LabelsCurrent(), got)
	}
}

// TestAlertingIDs: the ids of Alerting's notifications, without deciding.
func TestAlertingIDs(t *testing.T) {
	table := labels.NewTable()
	inv, err := labels.ParseInventoryCSV([]byte("device_id,site\na,s1\nb,s1\nc,s2\n"), "", table)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tracker.New(vcfg(t, table, inv, "ops", "site"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a", "b", "c"} {
		tr.Apply(tracker.Event{PresenceEvent: pe(t, d, events.KindConnected, v0, v0)})
		tr.Apply(tracker.Event{PresenceEvent: pe(t, d, events.KindDisconnected, v0, v0+1_000)})
	}
	tr.Apply(tracker.Tick{Now: time.UnixMilli(v0 + 40_000)})
	// b recovers: its group's second notification, so it is not re-sent.
	tr.Apply(tracker.Event{PresenceEvent: pe(t, "b", events.KindConnected, v0+50_000, v0+50_000)})
	ids := tr.AlertingIDs()
	var want []string
	for _, d := range tr.Alerting(time.UnixMilli(v0 + 60_000)) {
		want = append(want, d.Alert.ID)
	}
	slices.Sort(want)
	if len(ids) != 1 || !slices.Equal(ids, want) {
		t.Fatalf("AlertingIDs %v, Alerting %v", ids, want)
	}
}
