package tracker

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"gopkg.in/yaml.v3"
)

// variant is a tracker config in YAML, for Reconfigure.
type variant struct {
	name, labels, routes string
	corr                 Correlation
}

// config builds the variant's Config on tr's label table.
func (v variant) config(t testing.TB, tr *Tracker) Config {
	t.Helper()
	var lc labels.Config
	var rc route.Config
	for _, d := range []struct {
		y   string
		dst any
	}{{v.labels, &lc}, {v.routes, &rc}} {
		dec := yaml.NewDecoder(bytes.NewReader([]byte(d.y)))
		dec.KnownFields(true)
		if err := dec.Decode(d.dst); err != nil {
			t.Fatal(err)
		}
	}
	l, err := labels.NewLabeler(lc, tr.table, nil)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := route.New(rc, route.Defaults{Receivers: []string{"default"}, GroupBy: []string{labels.DeviceID}, Grace: grace}, "routes")
	if err != nil {
		t.Fatal(err)
	}
	return Config{Grace: grace, Severity: events.SeverityWarning, Routes: tree, Labeler: l, Correlation: v.corr}
}

var rich = variant{"rich", siteLabels, richRoutes, richCorrelation}

// variants differ from rich in every way Reconfigure handles: grouping and
// receivers, grace, flap suppression, escalations, correlation keys and
// thresholds, and labels (devices a-00..a-03 move to site b).
var variants = []variant{
	rich,
	{"by site, short grace, no flap", siteLabels, `
receivers: [ops]
group_by: [site]
grace: 10s
group_wait: 5s
escalations:
  - after: 1m
    receivers: [oncall]
  - after: 4m
routes:
  - matchers: [alertname=group_outage]
    receivers: [ops]
`, richCorrelation},
	{"no correlation, hard flap", siteLabels, `
receivers: [ops]
group_by: [device_id]
flap: {penalty: 1000, half_life: 1m, suppress: 1500, reuse: 900}
routes:
  - matchers: [site=a]
    receivers: [site-a]
    group_by: [site]
    repeat_interval: 3m
`, Correlation{}},
	{"node correlation, relabelled", `
client_id:
  - prefix: a-0
    labels: {site: b}
  - regex: '^(?P<site>[a-z]+)-'
`, richRoutes, Correlation{Keys: []string{"node", "site"}, Window: 2 * time.Minute, MinDevices: 3}},
	{"rich, other thresholds", siteLabels, richRoutes, Correlation{Keys: []string{"site", "node"}, Window: time.Minute, MinRatio: 0.9}},
}

// checkConsistent verifies the tracker's derived state against its
// devices: node and topology counters, group membership of alerting and
// flapping devices, and the device invariants.
func checkConsistent(t testing.TB, tr *Tracker, where string) {
	t.Helper()
	nodes := make([]int32, len(tr.nodeInfo))
	for i := range tr.devs {
		d := &tr.devs[i]
		if err := invariant(tr.view(d)); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if int(d.node) < len(nodes) {
			nodes[d.node]++
		}
	}
	for n := range tr.nodeInfo {
		if nodes[n] != tr.nodeInfo[n].devices {
			t.Fatalf("%s: node %q counts %d devices, has %d", where, tr.nodes.name(uint32(n)), tr.nodeInfo[n].devices, nodes[n])
		}
	}
	if tr.topo.on {
		type counts struct{ known, down, recent int32 }
		want := make([]counts, len(tr.topo.groups))
		for i := range tr.devs {
			d := &tr.devs[i]
			for _, id := range tr.topoIDs(d) {
				if id == 0 {
					continue
				}
				g, c := tr.topo.groups[id-1], &want[id-1]
				c.known++
				if d.state == stateOffline {
					c.down++
					if d.since > g.horizon {
						c.recent++
					}
				}
			}
		}
		for i, g := range tr.topo.groups {
			if got := (counts{g.known, g.down, g.recent}); got != want[i] {
				t.Fatalf("%s: topology group %s=%s counts %+v, devices say %+v", where, tr.topo.keys[g.key], g.value, got, want[i])
			}
		}
	}
	in := func(key string, slot uint32) bool {
		g := tr.groups[key]
		if g == nil {
			return false
		}
		_, ok := g.firing.get(slot)
		return ok
	}
	for i := range tr.devs {
		d, slot := &tr.devs[i], uint32(i)
		id := tr.ids.get(d.id)
		if d.flags&flagAlerting != 0 {
			for _, tg := range tr.offlineTargets(slot, d) {
				if !in(tg.key, slot) {
					t.Fatalf("%s: alerting %s is not in its group %s", where, id, tg.key)
				}
			}
			if d.fold != 0 {
				og := tr.topo.groupOf(tr, d, int(d.fold-1))
				if og == nil || !og.active {
					t.Fatalf("%s: %s is folded into a topology group not in a mass outage", where, id)
				}
				for _, tg := range tr.outageTargets(og) {
					if !in(tg.key, slot) {
						t.Fatalf("%s: folded %s is not in its group_outage %s", where, id, tg.key)
					}
				}
			}
		}
		if (d.flags&flagFlapping != 0) != (tr.flapGroups[slot] != nil) {
			t.Fatalf("%s: %s flapping %v with flap groups %v", where, id, d.flags&flagFlapping != 0, tr.flapGroups[slot])
		}
		for _, k := range tr.flapGroups[slot] {
			if !in(k, slot) {
				t.Fatalf("%s: flapping %s is not in its group %s", where, id, k)
			}
		}
	}
	for k, g := range tr.groups {
		if g.key != k {
			t.Fatalf("%s: group %q under key %q", where, g.key, k)
		}
		for slot := range g.firing.all {
			d := &tr.devs[slot]
			ok := d.flags&flagAlerting != 0
			if g.kind == events.AlertDeviceFlapping {
				ok = d.flags&flagFlapping != 0
			}
			if !ok {
				t.Fatalf("%s: group %s holds %s, which is not alerting/flapping", where, k, tr.ids.get(d.id))
			}
		}
	}
}

// TestReconfigureSameConfig: a reconfiguration with the config in force
// decides nothing and changes no later decision.
func TestReconfigureSameConfig(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for round := range 40 {
		in := genInputs(t, rng, 150+rng.IntN(400))
		whole := richTracker(t)
		var want []string
		for _, x := range in {
			want = append(want, mustJSON(t, whole.Apply(x)))
		}
		tr := richTracker(t)
		for i, x := range in {
			if got := mustJSON(t, tr.Apply(x)); got != want[i] {
				t.Fatalf("round %d input %d (%T): decisions differ after reconfigurations\n got %s\nwant %s", round, i, x, got, want[i])
			}
			tk, ok := x.(Tick)
			if !ok || rng.IntN(8) != 0 {
				continue
			}
			ds, err := tr.Reconfigure(rich.config(t, tr), tk.Now, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) != 0 {
				t.Fatalf("round %d input %d: the same config decided %s", round, i, mustJSON(t, ds))
			}
			checkConsistent(t, tr, fmt.Sprintf("round %d input %d", round, i))
		}
		if !reflect.DeepEqual(tr.Devices(), whole.Devices()) || tr.Stats() != whole.Stats() {
			t.Fatalf("round %d: final state differs:\n%+v\n%+v", round, tr.Stats(), whole.Stats())
		}
	}
}

// TestReconfigureConsistent switches between configs at random ticks of
// random histories: the derived state stays consistent with the devices
// after every input, a snapshot of the reconfigured tracker restores into
// a tracker created with the config in force, and once every device is
// back and every node heard from, every group has resolved.
func TestReconfigureConsistent(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	seen := map[string]bool{}
	defer func() {
		for _, f := range []string{"folded", "flapping", "pending", "silent node", "tier", "waiting group"} {
			if !seen[f] {
				t.Errorf("no reconfiguration happened with a %s", f)
			}
		}
	}()
	for round := range 40 {
		in := genInputs(t, rng, 150+rng.IntN(400))
		tr := richTracker(t)
		cur := rich
		for i, x := range in {
			tr.Apply(x)
			checkConsistent(t, tr, fmt.Sprintf("round %d input %d (%T) under %q", round, i, x, cur.name))
			tk, ok := x.(Tick)
			if !ok || rng.IntN(6) != 0 {
				continue
			}
			next := variants[rng.IntN(len(variants))]
			for i := range tr.devs {
				d := &tr.devs[i]
				seen["folded"] = seen["folded"] || d.fold != 0
				seen["flapping"] = seen["flapping"] || d.flags&flagFlapping != 0
				seen["pending"] = seen["pending"] || d.flags&flagPending != 0
				seen["silent node"] = seen["silent node"] || tr.silent(d.node)
			}
			for _, g := range tr.groups {
				seen["tier"] = seen["tier"] || g.tier > 0
				seen["waiting group"] = seen["waiting group"] || (g.firing.len() == 0 && g.next != 0)
			}
			if _, err := tr.Reconfigure(next.config(t, tr), tk.Now, next.labels != cur.labels || rng.IntN(4) == 0); err != nil {
				t.Fatal(err)
			}
			cur = next
			checkConsistent(t, tr, fmt.Sprintf("round %d after reconfiguring to %q at input %d", round, cur.name, i))
		}
		snap, err := tr.MarshalSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		back, err := New(cur.config(t, tr))
		if err != nil {
			t.Fatal(err)
		}
		if err := back.RestoreSnapshot(snap); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		// Every device back, every node heard from, then time passes.
		end := in[len(in)-1].(Tick).Now.UnixMilli()
		var tail []Input
		for _, n := range tr.SilentNodes() {
			e, err := events.NewNodeEvent(events.NodeEvent{Node: n, Status: events.NodeBack, LastSeenMS: end, AtMS: end, Source: "test"})
			if err != nil {
				t.Fatal(err)
			}
			tail = append(tail, Node{&e})
		}
		for _, s := range tr.Devices() {
			if s.Online {
				continue
			}
			e := mustPresence(t, events.PresenceEvent{DeviceID: s.DeviceID, Kind: events.KindConnected, Node: "n1", BrokerTSMS: end + 1000,
				ConnectedAtMS: end + 1000, Source: "test"})
			tail = append(tail, Event{&e})
		}
		tail = append(tail, Silences{Now: time.UnixMilli(end)}, Tick{Now: time.UnixMilli(end + 24*3_600_000)})
		for i, x := range tail {
			a, b := mustJSON(t, tr.Apply(x)), mustJSON(t, back.Apply(x))
			if a != b {
				t.Fatalf("round %d tail %d: the restored tracker decides otherwise\n got %s\nwant %s", round, i, b, a)
			}
			checkConsistent(t, tr, fmt.Sprintf("round %d tail %d", round, i))
		}
		if tr.Groups() != 0 {
			t.Fatalf("round %d: %d groups open after every device came back: %+v", round, tr.Groups(), tr.GroupStates(3))
		}
	}
}
