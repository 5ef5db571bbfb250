package tracker

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// genSiteHistory generates four sites of six devices on two nodes. A site
// either fails en masse (every device drops within 5 s; all stay down, or
// all come back within 10 s, a broker restart), or has scattered single
// failures two windows apart (a device stays down, or comes back within
// 10 s, or never fails). It returns the history and the sites where every
// device dropped and stayed down.
func genSiteHistory(t testing.TB, rng *rand.Rand) (history, map[string]bool) {
	nodes := []string{"emqx@n1", "emqx@n2"}
	h := history{nodes: nodes, final: map[string]DeviceState{}, outages: map[string][]int64{}}
	mass := map[string]bool{}
	type raw struct {
		e   events.PresenceEvent
		seq int
	}
	var all []raw
	add := func(e events.PresenceEvent) {
		e.Source, e.ReceivedAtMS = "prop", e.BrokerTSMS+3
		v, err := events.NewPresenceEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, raw{v, len(all)})
	}
	for si, site := range []string{"a", "b", "c", "d"} {
		isMass, stay := rng.IntN(2) == 0, rng.IntN(2) == 0
		mass[site] = isMass && stay
		start := t0 + 10_000 + int64(si)*50_000
		for i := range 6 {
			dev := fmt.Sprintf("%s-%d", site, i)
			node := nodes[rng.IntN(2)]
			connAt := t0 + rng.Int64N(1000)
			add(events.PresenceEvent{DeviceID: dev, Kind: events.KindConnected, Node: node, BrokerTSMS: connAt, ConnectedAtMS: connAt})
			down := start + rng.Int64N(5000)
			if !isMass {
				down, stay = start+int64(i)*130_000, rng.IntN(2) == 0
				if rng.IntN(3) == 0 {
					h.final[dev] = DeviceState{DeviceID: dev, Online: true, Node: node, ConnectedAtMS: connAt, SinceMS: connAt}
					continue // never fails
				}
			}
			add(events.PresenceEvent{DeviceID: dev, Kind: events.KindDisconnected, Node: node, Reason: events.ReasonKeepaliveTimeout,
				RawReason: "keepalive_timeout", BrokerTSMS: down, ConnectedAtMS: connAt})
			h.outages[dev] = []int64{down}
			if stay {
				h.final[dev] = DeviceState{DeviceID: dev, Node: node, ConnectedAtMS: connAt, SinceMS: down, Reason: events.ReasonKeepaliveTimeout}
				continue
			}
			up := down + 10_000
			add(events.PresenceEvent{DeviceID: dev, Kind: events.KindConnected, Node: node, BrokerTSMS: up, ConnectedAtMS: up})
			h.final[dev] = DeviceState{DeviceID: dev, Online: true, Node: node, ConnectedAtMS: up, SinceMS: up}
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].e.BrokerTSMS < all[j].e.BrokerTSMS })
	for i, r := range all {
		h.events = append(h.events, hEvent{e: r.e, trueT: r.e.BrokerTSMS, idx: i})
	}
	return h, mass
}

// deliverFine is deliverTo with a tick every 5 s of a clock that runs up to
// just before the true time of the earliest event not delivered yet (events
// arrive late, never lost), so that every outage longer than the grace is
// noticed before the event that ends it arrives.
func deliverFine(t testing.TB, tr *Tracker, h history, order []hEvent) []Decision {
	t.Helper()
	seen := make([]bool, len(h.events))
	complete, clock := -1, int64(0)
	var all []Decision
	advance := func(to int64) {
		if clock == 0 {
			clock = to
		}
		for clock+5000 <= to {
			clock += 5000
			all = append(all, tr.Apply(Tick{Now: time.UnixMilli(clock)})...)
		}
		clock = max(clock, to)
		all = append(all, tr.Apply(Tick{Now: time.UnixMilli(clock)})...)
	}
	for _, he := range order {
		if complete+1 < len(seen) {
			advance(h.events[complete+1].trueT - 1)
		}
		all = append(all, tr.Apply(Event{&he.e})...)
		seen[he.idx] = true
		for complete+1 < len(seen) && seen[complete+1] {
			complete++
		}
	}
	advance(h.events[len(h.events)-1].trueT + 10*grace.Milliseconds())
	return all
}

// TestPropertyMassOutage delivers site histories in random orders EMQX
// allows, with duplicates: the final state is the truth, exactly the sites
// that failed en masse and stayed down get a group_outage (a mass blip is
// quiet), no device of such a site pages on its own, and every device of
// the other sites that stays down does.
func TestPropertyMassOutage(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for range 150 {
		h, mass := genSiteHistory(t, rng)
		for round := range 8 {
			order := h.events
			if round > 0 {
				order = randomDelivery(rng, h, 0.3)
			}
			tr := correlatedTracker(t, "receivers: [ops]\n", Correlation{Keys: []string{"site"}, Window: time.Minute, MinDevices: 4})
			ds := deliverFine(t, tr, h, order)
			for dev, s := range h.final {
				got, _ := tr.Device(dev)
				if got.Online != s.Online || got.Node != s.Node || got.ConnectedAtMS != s.ConnectedAtMS || got.SinceMS != s.SinceMS || got.Reason != s.Reason {
					t.Fatalf("%s: final state %+v, want %+v", dev, got, s)
				}
			}
			outaged := map[string]bool{}
			own := map[string]bool{}
			var inhibited []string
			for _, d := range ds {
				a := d.Alert
				if err := a.Validate(); err != nil {
					t.Fatal(err)
				}
				switch {
				case a.Kind == events.AlertGroupOutage:
					outaged[a.GroupLabels["site"]] = true
				case a.Inhibited:
					for _, dev := range a.Devices {
						inhibited = append(inhibited, dev.DeviceID)
					}
				case a.Status == events.StatusFiring:
					own[a.Devices[0].DeviceID] = true
				}
				for _, dev := range a.Devices {
					if !slices.Contains(h.outages[dev.DeviceID], dev.SinceMS) {
						t.Fatalf("%+v is not a real outage", dev)
					}
				}
			}
			for _, site := range []string{"a", "b", "c", "d"} {
				if outaged[site] != mass[site] {
					t.Fatalf("site %s: group_outage %v, mass failure %v", site, outaged[site], mass[site])
				}
			}
			for dev, s := range h.final {
				site := dev[:1]
				wantOwn := !mass[site] && !s.Online
				if own[dev] != wantOwn {
					t.Fatalf("%s (site %s mass %v, final %+v): own alert %v", dev, site, mass[site], s, own[dev])
				}
			}
			for _, a := range inhibited {
				if !mass[a[:1]] {
					t.Fatalf("%s folded into an outage of a site that did not fail en masse", a)
				}
			}
		}
	}
}
