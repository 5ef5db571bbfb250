package tracker

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// The property tests generate true connection histories of a few devices on
// two broker nodes (with clock skew, takeovers in both EMQX orders, v4
// takeovers without a disconnect, and real outages shorter than the grace
// period except possibly the last one), then deliver them in the orders
// EMQX allows: each node's events in order, the nodes interleaved freely,
// and with random duplicates arriving at any later time. Every delivery
// must converge to the true final state and must never alert an outage that
// the history did not have. The same properties hold for the histories of
// sources that key connections by a version instead of connected_at
// (genVersionHistory: AWS IoT lifecycle events, Sparkplug B NBIRTH/NDEATH).

// hEvent is one event of a generated history.
type hEvent struct {
	e     events.PresenceEvent
	trueT int64 // true time (the history is sorted by it)
	idx   int   // position in the history
}

// history is a generated truth plus its events.
type history struct {
	events []hEvent
	nodes  []string
	final  map[string]DeviceState // true final state per device
	// outages lists the start (broker time) of every real outage per device.
	outages map[string][]int64
}

var realReasons = []events.Reason{events.ReasonKeepaliveTimeout, events.ReasonNormal, events.ReasonClosed, events.ReasonSocketError, events.ReasonKicked}

// genHistory generates a history. lossP is the probability that the
// connected event of a connection ended by a real disconnect is lost (a gap:
// v5 $SYS is QoS 0).
func genHistory(t testing.TB, rng *rand.Rand, devices, maxConns int, lossP float64) history {
	graceMS := grace.Milliseconds()
	nodes := []string{"emqx@n1", "emqx@n2"}
	skew := map[string]int64{nodes[0]: rng.Int64N(201) - 100, nodes[1]: rng.Int64N(201) - 100}
	h := history{nodes: nodes, final: map[string]DeviceState{}, outages: map[string][]int64{}}
	type raw struct {
		e     events.PresenceEvent
		trueT int64
		seq   int
	}
	var all []raw
	seq := 0
	add := func(e events.PresenceEvent, trueT int64) {
		e.Source = "prop"
		e.ReceivedAtMS = trueT + 3
		out, err := events.NewPresenceEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, raw{e: out, trueT: trueT, seq: seq})
		seq++
	}
	for d := range devices {
		dev := fmt.Sprintf("dev-%d.%c", d, 'a'+d)
		now := t0 + rng.Int64N(5000)
		n := 1 + rng.IntN(maxConns)
		for i := range n {
			node := nodes[rng.IntN(len(nodes))]
			connAt := now + skew[node]
			connected := events.PresenceEvent{DeviceID: dev, Kind: events.KindConnected, Node: node,
				BrokerTSMS: connAt, ConnectedAtMS: connAt}
			end := now + 1000 + rng.Int64N(60_000)
			last := i == n-1
			online := last && rng.IntN(2) == 0
			realEnd := !online && (last || rng.IntN(2) == 0)
			switch {
			case i == 0 && n > 1 && rng.IntN(4) == 0: // the history starts mid-connection
			case i > 0 && realEnd && rng.Float64() < lossP: // lost
			default:
				add(connected, now)
			}
			switch {
			case online:
				h.final[dev] = DeviceState{DeviceID: dev, Online: true, Node: node, ConnectedAtMS: connAt, SinceMS: connAt}
			case realEnd:
				reason := realReasons[rng.IntN(len(realReasons))]
				h.outages[dev] = append(h.outages[dev], end+skew[node])
				add(events.PresenceEvent{DeviceID: dev, Kind: events.KindDisconnected, Node: node, Reason: reason,
					RawReason: string(reason), BrokerTSMS: end + skew[node], ConnectedAtMS: connAt}, end)
				if last {
					h.final[dev] = DeviceState{DeviceID: dev, Node: node, ConnectedAtMS: connAt, SinceMS: end + skew[node],
						Reason: reason, Pending: true}
				}
				now = end + 1 + rng.Int64N(graceMS/2) // back well within the grace period
			default: // taken over by the next connection, at the same true time
				now = end
				if rng.IntN(5) == 0 {
					break // EMQX v4: no disconnect for a taken-over session
				}
				reason := events.ReasonTakenOver
				if rng.IntN(3) == 0 {
					reason = events.ReasonDiscarded
				}
				// The disconnect is stamped by the old node; whether it comes
				// before or after the new connected (also on the same node)
				// depends on the EMQX version: both orders are generated.
				dt := end
				if rng.IntN(2) == 0 {
					dt = end + 1
				}
				add(events.PresenceEvent{DeviceID: dev, Kind: events.KindDisconnected, Node: node, Reason: reason,
					RawReason: string(reason), BrokerTSMS: end + skew[node], ConnectedAtMS: connAt}, dt)
				now = end + (end + 1 - dt) // the next connected lands on the other side
			}
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].trueT != all[j].trueT {
			return all[i].trueT < all[j].trueT
		}
		return all[i].seq < all[j].seq
	})
	for i, r := range all {
		h.events = append(h.events, hEvent{e: r.e, trueT: r.trueT, idx: i})
	}
	return h
}

// generator makes a history of 1..devices devices with 1..maxConns
// connections each (see genHistory for lossP).
type generator struct {
	name string
	gen  func(t testing.TB, rng *rand.Rand, devices, maxConns int, lossP float64) history
	// div divides the number of histories a property test tries.
	div int
}

// generators are every kind of history the property tests check.
var generators = []generator{
	{"emqx", genHistory, 1},
	{"aws", func(t testing.TB, rng *rand.Rand, devices, maxConns int, lossP float64) history {
		return genVersionHistory(t, rng, styleAWS, devices, maxConns, lossP)
	}, 3},
	{"sparkplug", func(t testing.TB, rng *rand.Rand, devices, maxConns int, lossP float64) history {
		return genVersionHistory(t, rng, styleSparkplug, devices, maxConns, lossP)
	}, 3},
}

// versionStyle is the source a version history imitates.
type versionStyle int

const (
	// styleAWS: AWS IoT lifecycle events, keyed by versionNumber (no
	// connected_at) and stamped by two brokers whose clocks are up to 5 s
	// apart, so that broker times often disagree with the versions' order;
	// a connection on either broker; takeovers (DUPLICATE_CLIENTID, i.e.
	// discarded) in both orders.
	styleAWS versionStyle = iota
	// styleSparkplug: Sparkplug B edge nodes, one broker per device: NBIRTH
	// carries bdSeq and the edge node's clock (up to 5 s off), NDEATH the
	// bdSeq and the receive time; bdSeq starts anywhere in 0..255 and wraps;
	// rebirths (NBIRTH again, same bdSeq) while online; a reconnect before
	// the broker noticed the old session's death delivers the old NDEATH
	// (its Will) after the new NBIRTH.
	styleSparkplug
)

// genVersionHistory generates a history of a version-keyed source. lossP
// is the probability that the connect of a connection ended by a real
// disconnect is lost (not after a Sparkplug reconnect whose late NDEATH
// would then, rightly, look like the death of the current session).
func genVersionHistory(t testing.TB, rng *rand.Rand, style versionStyle, devices, maxConns int, lossP float64) history {
	graceMS := grace.Milliseconds()
	aws := style == styleAWS
	nodes := []string{"aws-a", "aws-b"}
	source := "aws_iot"
	if !aws {
		nodes, source = []string{"hivemq-1", "hivemq-2"}, events.SourceSparkplug
	}
	skew := map[string]int64{}
	for _, n := range nodes {
		skew[n] = 0
		if aws {
			skew[n] = rng.Int64N(10_001) - 5000
		}
	}
	h := history{nodes: nodes, final: map[string]DeviceState{}, outages: map[string][]int64{}}
	type raw struct {
		e     events.PresenceEvent
		trueT int64
		seq   int
	}
	var all []raw
	add := func(e events.PresenceEvent, trueT int64) {
		e.Source = source
		e.ReceivedAtMS = trueT + 3
		out, err := events.NewPresenceEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, raw{e: out, trueT: trueT, seq: len(all)})
	}
	for d := range devices {
		dev := fmt.Sprintf("dev-%d.%c", d, 'a'+d)
		now := t0 + rng.Int64N(5000)
		n := 1 + rng.IntN(maxConns)
		version := 1 + rng.Int64N(1000) // AWS versionNumber
		bdSeq := rng.Int64N(256)        // Sparkplug
		edge := rng.Int64N(10_001) - 5000
		devNode := nodes[rng.IntN(len(nodes))]
		handover := false // the previous connection was taken over
		for i := range n {
			node, cv := devNode, int64(0)
			var connected events.PresenceEvent
			var connTS int64
			if aws {
				node, cv = nodes[rng.IntN(len(nodes))], version
				version += 1 + rng.Int64N(3)
				connTS = now + skew[node]
				connected = events.PresenceEvent{DeviceID: dev, Kind: events.KindConnected, Node: node, BrokerTSMS: connTS, ConnVersion: cv}
			} else {
				cv = bdSeq%256 + 1
				bdSeq++
				connTS = now + edge
				connected = events.PresenceEvent{DeviceID: dev, Kind: events.KindConnected, Node: node, BrokerTSMS: connTS,
					ConnectedAtMS: connTS, ConnVersion: cv}
			}
			end := now + 1000 + rng.Int64N(30_000)
			last := i == n-1
			online := last && rng.IntN(2) == 0
			realEnd := !online && (last || rng.IntN(2) == 0)
			lost := false
			switch {
			case i == 0 && n > 1 && rng.IntN(4) == 0: // the history starts mid-connection
				lost = true
			case i > 0 && realEnd && (aws || !handover) && rng.Float64() < lossP:
				lost = true
			default:
				add(connected, now)
				if !aws && rng.IntN(4) == 0 { // a rebirth
					rb := now + 1 + rng.Int64N(end-now-1)
					connTS = rb + edge
					connected.BrokerTSMS, connected.ConnectedAtMS = connTS, connTS
					add(connected, rb)
				}
			}
			handover = false
			switch {
			case online:
				st := DeviceState{DeviceID: dev, Online: true, Node: node, ConnVersion: cv, SinceMS: connTS}
				if !aws {
					st.ConnectedAtMS = connTS
				}
				h.final[dev] = st
			case realEnd:
				reason, raw := realReasons[rng.IntN(len(realReasons))], ""
				at := end + skew[node]
				if !aws {
					reason, raw, at = events.ReasonOther, "NDEATH", end+3
				}
				if raw == "" {
					raw = string(reason)
				}
				h.outages[dev] = append(h.outages[dev], at)
				add(events.PresenceEvent{DeviceID: dev, Kind: events.KindDisconnected, Node: node, Reason: reason,
					RawReason: raw, BrokerTSMS: at, ConnVersion: cv}, end)
				if last {
					st := DeviceState{DeviceID: dev, Node: node, ConnVersion: cv, SinceMS: at, Reason: reason, Pending: true}
					if !aws && !lost { // a death whose birth was not seen has no known start
						st.ConnectedAtMS = connTS
					}
					h.final[dev] = st
				}
				now = end + 1 + rng.Int64N(graceMS/2) // back well within the grace period
			case aws: // taken over (DUPLICATE_CLIENTID) by the next connection
				now = end
				if rng.IntN(5) == 0 {
					break // no disconnect seen
				}
				dt := end
				if rng.IntN(2) == 0 {
					dt = end + 1
				}
				add(events.PresenceEvent{DeviceID: dev, Kind: events.KindDisconnected, Node: node, Reason: events.ReasonDiscarded,
					RawReason: "DUPLICATE_CLIENTID", BrokerTSMS: end + skew[node], ConnVersion: cv}, dt)
				now = end + (end + 1 - dt)
			default: // Sparkplug: reconnected at once; the old session's NDEATH comes after the new NBIRTH
				now, handover = end, true
				add(events.PresenceEvent{DeviceID: dev, Kind: events.KindDisconnected, Node: node, Reason: events.ReasonOther,
					RawReason: "NDEATH", BrokerTSMS: end + 4, ConnVersion: cv}, end+1)
			}
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].trueT != all[j].trueT {
			return all[i].trueT < all[j].trueT
		}
		return all[i].seq < all[j].seq
	})
	for i, r := range all {
		h.events = append(h.events, hEvent{e: r.e, trueT: r.trueT, idx: i})
	}
	return h
}

// queues splits the history into per-node delivery queues.
func (h history) queues() [][]hEvent {
	q := make([][]hEvent, len(h.nodes))
	for _, e := range h.events {
		i := slices.Index(h.nodes, e.e.Node)
		q[i] = append(q[i], e)
	}
	return q
}

// randomDelivery interleaves the node queues at random and adds duplicates,
// each at a random later position.
func randomDelivery(rng *rand.Rand, h history, dupP float64) []hEvent {
	q := h.queues()
	var out []hEvent
	for {
		var live []int
		for i := range q {
			if len(q[i]) > 0 {
				live = append(live, i)
			}
		}
		if len(live) == 0 {
			break
		}
		i := live[rng.IntN(len(live))]
		out = append(out, q[i][0])
		q[i] = q[i][1:]
	}
	for i := 0; i < len(out); i++ {
		if rng.Float64() < dupP {
			j := i + 1 + rng.IntN(len(out)-i)
			out = slices.Insert(out, j, out[i])
		}
	}
	return out
}

// allDeliveries enumerates every interleaving of the node queues.
func allDeliveries(h history) [][]hEvent {
	var out [][]hEvent
	var rec func(q [][]hEvent, prefix []hEvent)
	rec = func(q [][]hEvent, prefix []hEvent) {
		done := true
		for i := range q {
			if len(q[i]) == 0 {
				continue
			}
			done = false
			next := slices.Clone(q)
			next[i] = q[i][1:]
			rec(next, append(slices.Clone(prefix), q[i][0]))
		}
		if done {
			out = append(out, prefix)
		}
	}
	rec(h.queues(), nil)
	return out
}

// deliver applies a delivery with a tick after every event. The tick's clock
// only reaches the true time up to which every event of the history has
// arrived: the clock of a world where events arrive late but not lost.
func deliver(t testing.TB, h history, order []hEvent) (*Tracker, []Decision) {
	t.Helper()
	return deliverTo(t, newTracker(t), h, order)
}

// deliverTo is deliver into a given tracker.
func deliverTo(t testing.TB, tr *Tracker, h history, order []hEvent) (*Tracker, []Decision) {
	t.Helper()
	seen := make([]bool, len(h.events))
	complete := -1
	var all []Decision
	for _, he := range order {
		all = append(all, tr.Apply(Event{&he.e})...)
		seen[he.idx] = true
		for complete+1 < len(seen) && seen[complete+1] {
			complete++
		}
		if complete >= 0 {
			all = append(all, tr.Apply(Tick{Now: time.UnixMilli(h.events[complete].trueT)})...)
		}
	}
	last := h.events[len(h.events)-1].trueT
	all = append(all, tr.Apply(Tick{Now: time.UnixMilli(last + 10*grace.Milliseconds())})...)
	return tr, all
}

// check verifies the final state against the truth and every decision
// against the outages of the history.
func check(t testing.TB, h history, tr *Tracker, decisions []Decision) {
	t.Helper()
	want := make([]DeviceState, 0, len(h.final))
	for _, s := range h.final {
		if !s.Online {
			s.Pending, s.Alerting = false, true // the final tick fired it
		}
		want = append(want, s)
	}
	slices.SortFunc(want, func(a, b DeviceState) int { return cmpString(a.DeviceID, b.DeviceID) })
	if got := tr.Devices(); !reflect.DeepEqual(got, want) {
		t.Fatalf("final state\n got %+v\nwant %+v", got, want)
	}
	fired := map[string]int{}
	for _, d := range decisions {
		a := d.Alert
		s := h.final[a.Devices[0].DeviceID]
		if a.Status != events.StatusFiring || s.Online || a.StartsAtMS != s.SinceMS {
			t.Fatalf("false alert %+v (true final state %+v)", a, s)
		}
		fired[s.DeviceID]++
	}
	for dev, s := range h.final {
		if n := fired[dev]; (!s.Online && n != 1) || (s.Online && n != 0) {
			t.Fatalf("device %s (%+v) fired %d alerts", dev, s, n)
		}
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// canonical strips what legitimately depends on the tick that noticed an
// outage (CreatedAtMS) and orders decisions by id.
func canonical(t testing.TB, ds []Decision) string {
	t.Helper()
	alerts := make([]events.AlertEvent, 0, len(ds))
	for _, d := range ds {
		a := d.Alert
		a.CreatedAtMS = 0
		alerts = append(alerts, a)
	}
	slices.SortFunc(alerts, func(a, b events.AlertEvent) int { return cmpString(a.ID, b.ID) })
	b, err := json.Marshal(alerts)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPropertyEveryInterleaving(t *testing.T) {
	for _, g := range generators {
		t.Run(g.name, func(t *testing.T) { propEveryInterleaving(t, g) })
	}
}

func propEveryInterleaving(t *testing.T, g generator) {
	rng := rand.New(rand.NewPCG(1, 2))
	histories, deliveries := 0, 0
	for histories < 150/g.div {
		h := g.gen(t, rng, 1+rng.IntN(2), 4, 0)
		if len(h.events) > 11 {
			continue // keep the enumeration small
		}
		histories++
		inOrder, inOrderDecisions := deliver(t, h, h.events)
		check(t, h, inOrder, inOrderDecisions)
		want := canonical(t, inOrderDecisions)
		for _, order := range allDeliveries(h) {
			deliveries++
			tr, ds := deliver(t, h, order)
			check(t, h, tr, ds)
			if got := canonical(t, ds); got != want {
				t.Fatalf("decisions differ from the in-order delivery\n got %s\nwant %s", got, want)
			}
		}
	}
	t.Logf("%d histories, %d deliveries", histories, deliveries)
}

func TestPropertyRandomDeliveryWithDuplicates(t *testing.T) {
	for _, g := range generators {
		t.Run(g.name, func(t *testing.T) { propRandomDeliveryWithDuplicates(t, g) })
	}
}

func propRandomDeliveryWithDuplicates(t *testing.T, g generator) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 400 / g.div {
		h := g.gen(t, rng, 1+rng.IntN(3), 8, 0)
		inOrder, inOrderDecisions := deliver(t, h, h.events)
		check(t, h, inOrder, inOrderDecisions)
		want := canonical(t, inOrderDecisions)
		for range 25 {
			order := randomDelivery(rng, h, 0.3)
			tr, ds := deliver(t, h, order)
			check(t, h, tr, ds)
			if got := canonical(t, ds); got != want {
				t.Fatalf("decisions differ from the in-order delivery\n got %s\nwant %s", got, want)
			}
		}
	}
}

// TestPropertyLateClockAndGaps uses a clock that runs ahead of delivery (the
// latest true time delivered so far) and loses connected events. Outages may
// then be alerted before the reconnect arrives, which is right given what the
// tracker knew; but every alert must belong to a real outage (never to a
// takeover), alerts of a device must alternate firing/resolved, and the final
// state must still be the truth.
func TestPropertyLateClockAndGaps(t *testing.T) {
	for _, g := range generators {
		t.Run(g.name, func(t *testing.T) { propLateClockAndGaps(t, g) })
	}
}

func propLateClockAndGaps(t *testing.T, g generator) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 400 / g.div {
		h := g.gen(t, rng, 1+rng.IntN(3), 8, 0.2)
		for range 25 {
			order := randomDelivery(rng, h, 0.3)
			tr := newTracker(t)
			var all []Decision
			clock := int64(0)
			for _, he := range order {
				all = append(all, tr.Apply(Event{&he.e})...)
				clock = max(clock, he.trueT)
				all = append(all, tr.Apply(Tick{Now: time.UnixMilli(clock)})...)
			}
			last := h.events[len(h.events)-1].trueT
			all = append(all, tr.Apply(Tick{Now: time.UnixMilli(last + 10*grace.Milliseconds())})...)

			want := make([]DeviceState, 0, len(h.final))
			for _, s := range h.final {
				if !s.Online {
					s.Pending, s.Alerting = false, true
				}
				want = append(want, s)
			}
			slices.SortFunc(want, func(a, b DeviceState) int { return cmpString(a.DeviceID, b.DeviceID) })
			if got := tr.Devices(); !reflect.DeepEqual(got, want) {
				t.Fatalf("final state\n got %+v\nwant %+v", got, want)
			}
			firing := map[string]int64{}
			for _, d := range all {
				a := d.Alert
				if err := a.Validate(); err != nil {
					t.Fatal(err)
				}
				dev := a.Devices[0].DeviceID
				if !slices.Contains(h.outages[dev], a.StartsAtMS) {
					t.Fatalf("alert %+v is not about a real outage of %s (outages %v)", a, dev, h.outages[dev])
				}
				since, on := firing[dev]
				switch {
				case a.Status == events.StatusFiring && on:
					t.Fatalf("second firing for %s: %+v", dev, a)
				case a.Status == events.StatusFiring:
					firing[dev] = a.StartsAtMS
				case !on || since != a.StartsAtMS || a.EndsAtMS < a.StartsAtMS:
					t.Fatalf("resolved without its firing for %s: %+v", dev, a)
				default:
					delete(firing, dev)
				}
			}
			for dev, s := range h.final {
				if _, on := firing[dev]; on == s.Online {
					t.Fatalf("device %s ends with firing=%v, final state %+v", dev, on, s)
				}
			}
		}
	}
}

// TestPropertyGroupedRandomDelivery runs the histories through a config that
// puts every device in one group with waits. Batching may differ with the
// delivery order (devices fire at different ticks), but the final state is
// the truth, every device listed as firing is in a real outage that began at
// its since, a device is announced at most once per outage and resolved only
// after being announced, and in the end exactly the devices that stay
// offline are announced and not resolved.
func TestPropertyGroupedRandomDelivery(t *testing.T) {
	for _, g := range generators {
		t.Run(g.name, func(t *testing.T) { propGroupedRandomDelivery(t, g) })
	}
}

func propGroupedRandomDelivery(t *testing.T, g generator) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 200 / g.div {
		h := g.gen(t, rng, 1+rng.IntN(4), 8, 0)
		for range 10 {
			order := randomDelivery(rng, h, 0.3)
			tr := routedTracker(t, "{}", "receivers: [ops]\ngroup_by: []\ngroup_wait: 5s\ngroup_interval: 10s\n")
			tr, ds := deliverTo(t, tr, h, order)
			last := h.events[len(h.events)-1].trueT
			ds = append(ds, tr.Apply(Tick{Now: time.UnixMilli(last + 3_600_000)})...)
			if tr.Groups() != 0 && tr.Stats().Notifications == 0 {
				t.Fatal("an open group never notified")
			}
			want := make([]DeviceState, 0, len(h.final))
			for _, s := range h.final {
				if !s.Online {
					s.Pending, s.Alerting = false, true
				}
				want = append(want, s)
			}
			slices.SortFunc(want, func(a, b DeviceState) int { return cmpString(a.DeviceID, b.DeviceID) })
			if got := tr.Devices(); !reflect.DeepEqual(got, want) {
				t.Fatalf("final state\n got %+v\nwant %+v", got, want)
			}
			announced := map[string]int64{} // device → since of the announced outage
			for _, d := range ds {
				a := d.Alert
				if err := a.Validate(); err != nil {
					t.Fatal(err)
				}
				for _, dev := range a.Devices {
					if !slices.Contains(h.outages[dev.DeviceID], dev.SinceMS) {
						t.Fatalf("%+v is not a real outage of %s (outages %v)", dev, dev.DeviceID, h.outages[dev.DeviceID])
					}
					since, on := announced[dev.DeviceID]
					switch {
					case dev.Status == events.StatusResolved && (!on || since != dev.SinceMS):
						t.Fatalf("resolved without being announced: %+v", dev)
					case dev.Status == events.StatusResolved:
						delete(announced, dev.DeviceID)
					case on && since != dev.SinceMS:
						t.Fatalf("a second outage announced before the first resolved: %+v", dev)
					default:
						announced[dev.DeviceID] = dev.SinceMS
					}
				}
			}
			for dev, s := range h.final {
				if _, on := announced[dev]; on == s.Online {
					t.Fatalf("device %s ends announced=%v, final state %+v", dev, on, s)
				}
			}
		}
	}
}
