package tracker

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
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
