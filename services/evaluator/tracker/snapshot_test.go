package tracker

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
)

// richRoutes exercises every feature: per-site and per-device groups with
// waits and repeats, escalation tiers, flap suppression, and a route for
// the mass outages.
const richRoutes = `
receivers: [ops]
group_by: [device_id]
flap: {penalty: 1000, half_life: 2m, suppress: 2500, reuse: 800}
escalations:
  - after: 3m
    receivers: [oncall]
routes:
  - matchers: [alertname=group_outage]
    receivers: [ops, oncall]
    group_wait: 20s
    group_interval: 1m
  - matchers: ['site=~"b|c"']
    group_by: [site]
    group_wait: 10s
    group_interval: 30s
    repeat_interval: 5m
    continue: true
  - matchers: [site=c]
    receivers: [site-c]
`

var richCorrelation = Correlation{Keys: []string{"site", "node"}, Window: time.Minute, MinDevices: 4, MinRatio: 0.6}

func richTracker(t testing.TB) *Tracker {
	t.Helper()
	return correlatedTracker(t, richRoutes, richCorrelation)
}

// genInputs generates a random but plausible input history: devices of
// three sites on two nodes that drop (alone, or a whole site at once) and
// come back, takeovers, duplicates and late events, ticks, node health
// changes and silence sets.
func genInputs(t testing.TB, rng *rand.Rand, n int) []Input {
	t.Helper()
	type dev struct {
		id     string
		online bool
		node   string
		connAt int64
	}
	var devs []*dev
	for _, site := range []string{"a", "b", "c"} {
		for i := range 8 {
			devs = append(devs, &dev{id: fmt.Sprintf("%s-%02d", site, i)})
		}
	}
	nodes := []string{"n1", "n2"}
	clock := t0
	var in []Input
	var sent []*events.PresenceEvent
	ev := func(e events.PresenceEvent) {
		e.Source = "gen"
		e.ReceivedAtMS = e.BrokerTSMS + rng.Int64N(50)
		v, err := events.NewPresenceEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, &v)
		in = append(in, Event{&v})
	}
	toggle := func(d *dev, reason events.Reason) {
		if d.online {
			ev(events.PresenceEvent{DeviceID: d.id, Kind: events.KindDisconnected, Node: d.node, Reason: reason,
				RawReason: string(reason), BrokerTSMS: clock, ConnectedAtMS: d.connAt})
			d.online = false
			return
		}
		d.online, d.node, d.connAt = true, nodes[rng.IntN(2)], clock
		ev(events.PresenceEvent{DeviceID: d.id, Kind: events.KindConnected, Node: d.node, BrokerTSMS: clock,
			ConnectedAtMS: clock, KeepaliveS: 30})
	}
	silent := map[string]bool{}
	for len(in) < n {
		clock += 1 + rng.Int64N(15_000)
		switch r := rng.IntN(100); {
		case r < 55:
			d := devs[rng.IntN(len(devs))]
			if d.online && rng.IntN(6) == 0 { // takeover, both orders
				old := *d
				d.node, d.connAt = nodes[rng.IntN(2)], clock+1
				takeover := events.PresenceEvent{DeviceID: d.id, Kind: events.KindDisconnected, Node: old.node,
					Reason: events.ReasonTakenOver, RawReason: "takenover", BrokerTSMS: clock, ConnectedAtMS: old.connAt}
				connect := events.PresenceEvent{DeviceID: d.id, Kind: events.KindConnected, Node: d.node,
					BrokerTSMS: clock + 1, ConnectedAtMS: clock + 1}
				if rng.IntN(2) == 0 {
					ev(takeover)
					ev(connect)
				} else {
					ev(connect)
					ev(takeover)
				}
				continue
			}
			reason := []events.Reason{events.ReasonKeepaliveTimeout, events.ReasonClosed, events.ReasonNormal}[rng.IntN(3)]
			toggle(d, reason)
		case r < 60: // a site drops at once
			site := "abc"[rng.IntN(3)]
			for _, d := range devs {
				if d.id[0] == site && d.online && rng.IntN(5) > 0 {
					toggle(d, events.ReasonKeepaliveTimeout)
				}
			}
		case r < 65 && len(sent) > 0: // a duplicate or late event
			in = append(in, Event{sent[rng.IntN(len(sent))]})
		case r < 85:
			in = append(in, Tick{Now: time.UnixMilli(clock)})
		case r < 90:
			node := nodes[rng.IntN(2)]
			st := events.NodeSilent
			if silent[node] {
				st = events.NodeBack
			}
			silent[node] = !silent[node]
			e, err := events.NewNodeEvent(events.NodeEvent{Node: node, Status: st, LastSeenMS: clock - 5000, AtMS: clock, Source: "gen"})
			if err != nil {
				t.Fatal(err)
			}
			in = append(in, Node{&e})
		case r < 94:
			var ss []silence.Silence
			for i := range rng.IntN(3) {
				m := []string{`site="a"`, `device_id=~"b-0[0-3]"`, `alertname=group_outage`, `node="n2"`, `site!="c"`}[rng.IntN(5)]
				from := clock - 60_000 + rng.Int64N(120_000)
				ss = append(ss, silence.Silence{ID: fmt.Sprintf("s%d", i), Matchers: []string{m},
					StartsAt: time.UnixMilli(from), EndsAt: time.UnixMilli(from + 1 + rng.Int64N(1_200_000)),
					ExpireWhenResolved: rng.IntN(2) == 0})
			}
			in = append(in, Silences{Now: time.UnixMilli(clock), Active: ss})
		default:
			clock += rng.Int64N(600_000)
			in = append(in, Tick{Now: time.UnixMilli(clock)})
		}
	}
	return append(in, Tick{Now: time.UnixMilli(clock + 3_600_000)})
}

func TestSnapshotRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	features := map[string]bool{}
	for round := range 60 {
		in := genInputs(t, rng, 150+rng.IntN(400))
		whole := richTracker(t)
		var want []string
		for _, x := range in {
			want = append(want, mustJSON(t, whole.Apply(x)))
		}
		final, err := whole.MarshalSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		s := whole.Stats()
		for name, v := range map[string]uint64{"flapping": s.Flapping, "calmed": s.Calmed, "held": s.Held, "correlated": s.Correlated,
			"folded": s.Folded, "silenced": s.Silenced, "escalated": s.Escalated, "inhibited": s.Inhibited} {
			if v > 0 {
				features[name] = true
			}
		}
		for range 3 {
			k := rng.IntN(len(in) + 1)
			first := richTracker(t)
			for _, x := range in[:k] {
				first.Apply(x)
			}
			snap, err := first.MarshalSnapshot()
			if err != nil {
				t.Fatal(err)
			}
			second := richTracker(t)
			if err := second.RestoreSnapshot(snap); err != nil {
				t.Fatalf("round %d split %d: %v", round, k, err)
			}
			again, err := second.MarshalSnapshot()
			if err != nil || !bytes.Equal(again, snap) {
				t.Fatalf("round %d split %d: the restored tracker's snapshot differs (%v)", round, k, err)
			}
			if !reflect.DeepEqual(first.Devices(), second.Devices()) {
				t.Fatalf("round %d split %d: devices differ", round, k)
			}
			for i, x := range in[k:] {
				if got := mustJSON(t, second.Apply(x)); got != want[k+i] {
					t.Fatalf("round %d split %d input %d (%T): decisions differ\n got %s\nwant %s", round, k, k+i, x, got, want[k+i])
				}
			}
			end, err := second.MarshalSnapshot()
			if err != nil || !bytes.Equal(end, final) {
				t.Fatalf("round %d split %d: final snapshots differ (%v)", round, k, err)
			}
		}
	}
	for _, f := range []string{"flapping", "calmed", "held", "correlated", "folded", "silenced", "escalated", "inhibited"} {
		if !features[f] {
			t.Errorf("the generated histories never exercised %s", f)
		}
	}
}

func TestRestoreSnapshotRejects(t *testing.T) {
	tr := richTracker(t)
	for _, x := range genInputs(t, rand.New(rand.NewPCG(1, 1)), 200) {
		tr.Apply(x)
	}
	snap, err := tr.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	other := routedTracker(t, siteLabels, "receivers: [ops]\n")
	for name, tc := range map[string]struct {
		tr *Tracker
		b  []byte
	}{
		"empty":        {richTracker(t), nil},
		"magic":        {richTracker(t), []byte("XXXX\x01")},
		"version":      {richTracker(t), append([]byte(snapshotMagic), 9)},
		"truncated":    {richTracker(t), snap[:len(snap)/2]},
		"trailing":     {richTracker(t), append(bytes.Clone(snap), 0)},
		"other config": {other, snap},
		"not new":      {tr, snap},
	} {
		if err := tc.tr.RestoreSnapshot(tc.b); !errors.Is(err, ErrSnapshot) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if other.Len() != 0 || other.Groups() != 0 {
		t.Fatal("a failed restore left state behind")
	}
}

func FuzzRestoreSnapshot(f *testing.F) {
	for seed := range uint64(3) {
		tr := richTracker(f)
		for _, x := range genInputs(f, rand.New(rand.NewPCG(seed, 7)), 60) {
			tr.Apply(x)
		}
		snap, err := tr.MarshalSnapshot()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(snap)
	}
	f.Add([]byte(snapshotMagic + "\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr := richTracker(t)
		if err := tr.RestoreSnapshot(b); err != nil {
			if !errors.Is(err, ErrSnapshot) {
				t.Fatalf("error %v does not wrap ErrSnapshot", err)
			}
			return
		}
		// A snapshot that loads writes itself back (modulo label set
		// numbering, which is canonical) and the tracker keeps working.
		again, err := tr.MarshalSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		back := richTracker(t)
		if err := back.RestoreSnapshot(again); err != nil {
			t.Fatalf("a written snapshot does not load: %v", err)
		}
		tr.Apply(Tick{Now: time.UnixMilli(t0 + 1e9)})
	})
}
