package tracker

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
)

// benchEvents builds a connect/disconnect pair for each of n devices on
// four nodes.
func benchEvents(b *testing.B, n int) []events.PresenceEvent {
	b.Helper()
	out := make([]events.PresenceEvent, 0, 2*n)
	for i := range n {
		dev := fmt.Sprintf("device-%08d", i)
		node := fmt.Sprintf("emqx@10.0.0.%d", i%4)
		at := int64(i)
		out = append(out, *conn(b, dev, node, at), *disc(b, dev, node, at, at+1000, events.ReasonKeepaliveTimeout))
	}
	return out
}

// BenchmarkApplyEvent measures one presence event on a tracker of 100k
// devices: connects and disconnects alternate, so half the events open a
// grace timer (never due: no alert is built).
func BenchmarkApplyEvent(b *testing.B) {
	const devices = 100_000
	evs := benchEvents(b, devices)
	tr := newTracker(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := &evs[i%len(evs)]
		if i >= len(evs) {
			// later rounds: shift the times so the events are new, not duplicates
			e.BrokerTSMS += 10_000_000
			e.ConnectedAtMS += 10_000_000
		}
		tr.Apply(Event{e})
	}
}

// BenchmarkApplyDuplicate measures the common no-op: an event already known.
func BenchmarkApplyDuplicate(b *testing.B) {
	evs := benchEvents(b, 10_000)
	tr := newTracker(b)
	for i := range evs {
		tr.Apply(Event{&evs[i]})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tr.Apply(Event{&evs[i%len(evs)]})
	}
}

// BenchmarkTickFiring measures a tick that fires one device: the cost of
// building and validating its alert.
func BenchmarkTickFiring(b *testing.B) {
	evs := benchEvents(b, b.N)
	tr := newTracker(b)
	for i := range evs {
		tr.Apply(Event{&evs[i]})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tr.Apply(Tick{Now: time.UnixMilli(t0 + int64(i) + 1000 + grace.Milliseconds())})
	}
}

// BenchmarkMemoryPerDevice reports the heap bytes per tracked device (with
// a 15-byte device id), half of them offline with a pending timer.
func BenchmarkMemoryPerDevice(b *testing.B) {
	const devices = 200_000
	for range b.N {
		evs := benchEvents(b, devices)
		for i := 2; i < len(evs); i += 4 {
			evs[i+1] = evs[i] // every other device stays online
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tr := newTracker(b)
		for i := range evs {
			tr.Apply(Event{&evs[i]})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/devices, "B/device")
		runtime.KeepAlive(tr)
		runtime.KeepAlive(evs)
	}
}

// benchLabels and benchRoutes are a realistic config: labels from a client
// id regex, the username and the /24, and a route tree grouping by site.
const (
	benchLabels = `
client_id:
  - regex: '^(?P<site>site[0-9]+)-(?P<gateway>gw[0-9]+)-'
username: tenant
ip_prefix: {label: subnet}
`
	benchRoutes = `
receivers: [ops]
group_by: [site]
group_wait: 0s
group_interval: 5m
repeat_interval: 4h
routes:
  - matchers: ['site=~"site1[0-9]"']
    receivers: [ops, site-team]
    escalations:
      - after: 1h
        receivers: [oncall]
`
)

// mixedEvent fills e with event i of a mixed stream over n devices: per
// device, a cycle of connect, duplicate connect, real disconnect (half of
// them outlast the grace), reconnect, takeover (disconnect + connect on
// another node). Times advance 1 ms per event, so the stream takes about
// one simulated hour per 3.6M events.
func mixedEvent(e *events.PresenceEvent, ids []string, i int) {
	n := len(ids)
	dev, round := i%n, i/n
	phase := round % 6
	cycle := int64(round/6) * 600_000
	base := t0 + cycle + int64(dev%1000)
	*e = events.PresenceEvent{DeviceID: ids[dev], Node: "emqx@n1", Username: "tenant-a", IP: "10.1.2.3", KeepaliveS: 60,
		ReceivedAtMS: base + int64(phase)*100_000}
	switch phase {
	case 0, 1: // connect, then its duplicate
		e.Kind, e.ConnectedAtMS, e.BrokerTSMS = events.KindConnected, base, base
	case 2: // real disconnect; every other device stays down past the grace
		e.Kind, e.ConnectedAtMS, e.BrokerTSMS, e.Reason = events.KindDisconnected, base, base+1_000, events.ReasonKeepaliveTimeout
	case 3: // back: 10 s later or 200 s later
		back := base + 11_000
		if dev%2 == 0 {
			back = base + 200_000
		}
		e.Kind, e.ConnectedAtMS, e.BrokerTSMS = events.KindConnected, back, back
	case 4: // takeover by a connection on another node
		e.Kind, e.Node, e.ConnectedAtMS, e.BrokerTSMS = events.KindConnected, "emqx@n2", base+300_000, base+300_000
	case 5: // the taken-over connection's disconnect, arriving late
		back := base + 11_000
		if dev%2 == 0 {
			back = base + 200_000
		}
		e.Kind, e.ConnectedAtMS, e.BrokerTSMS, e.Reason = events.KindDisconnected, back, base+300_000, events.ReasonTakenOver
	}
	e.ReceivedAtMS = e.BrokerTSMS + 5
}

// BenchmarkMixedTraffic measures the core on mixed traffic with labels,
// grouping routes and escalations: 100k devices, a clock tick every 1,000
// events at the latest broker time seen. It reports events/s on one
// goroutine and the notifications decided.
func BenchmarkMixedTraffic(b *testing.B) {
	const devices = 100_000
	ids := make([]string, devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("site%d-gw%d-%08d", i%40, i%7, i)
	}
	tr := routedTracker(b, benchLabels, benchRoutes)
	var e events.PresenceEvent
	decisions, clock := 0, int64(0)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := telemetry.ProcessCPU()
	for i := 0; i < b.N; i++ {
		mixedEvent(&e, ids, i)
		decisions += len(tr.Apply(Event{&e}))
		clock = max(clock, e.BrokerTSMS)
		if i%1000 == 999 {
			decisions += len(tr.Apply(Tick{Now: time.UnixMilli(clock)}))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if c := telemetry.ProcessCPU() - cpu; c > 0 {
		b.ReportMetric(float64(b.N)/c.Seconds(), "events/cpu-s")
	}
	b.ReportMetric(float64(decisions), "notifications")
}

// BenchmarkMemoryPerDevice1M reports heap bytes per device for 1M devices
// with labels (a client id regex, username, /24), half of them offline with
// a pending timer. Device ids are 20 bytes.
func BenchmarkMemoryPerDevice1M(b *testing.B) {
	const devices = 1_000_000
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tr := routedTracker(b, benchLabels, benchRoutes)
		var e events.PresenceEvent
		for i := range devices {
			id := fmt.Sprintf("site%d-gw%d-%08d", i%40, i%7, i)
			e = events.PresenceEvent{DeviceID: id, Kind: events.KindConnected, Node: "emqx@n1", Username: "tenant-a",
				IP: fmt.Sprintf("10.%d.%d.7", i%200, i%100), KeepaliveS: 60, BrokerTSMS: t0 + int64(i), ConnectedAtMS: t0 + int64(i)}
			tr.Apply(Event{&e})
			if i%2 == 1 {
				e.Kind, e.Reason, e.BrokerTSMS = events.KindDisconnected, events.ReasonKeepaliveTimeout, e.BrokerTSMS+1_000
				tr.Apply(Event{&e})
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/devices, "B/device")
		b.ReportMetric(float64(tr.table.Len()), "label_sets")
		runtime.KeepAlive(tr)
	}
}
