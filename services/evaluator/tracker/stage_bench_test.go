package tracker

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
)

// BenchmarkStageCore mirrors the "evaluator core" figure of devstack/bench
// (make bench): the default config, b.N events over b.N/20 devices
// alternating connect and disconnect, a tick every 1024 events at the
// event's broker time. With -benchtime 1000000x it is that run. The ticks
// run up to 50 s ahead of the events of lower-numbered devices, so that
// about 37 % of the events end in a notification.
func BenchmarkStageCore(b *testing.B) {
	n := b.N
	devices := max(n/20, 1)
	base := time.UnixMilli(t0)
	evs := make([]events.PresenceEvent, n)
	for i := range n {
		dev, round := i%devices, i/devices
		connectedAt := base.Add(time.Duration(round/2*2000+dev) * time.Millisecond).UnixMilli()
		e := events.PresenceEvent{DeviceID: "bench-dev-" + strconv.Itoa(dev), Node: "emqx@127.0.0.1", Source: "bench",
			ConnectedAtMS: connectedAt, ReceivedAtMS: connectedAt, IP: "127.0.0.1", Username: "bench", KeepaliveS: 60}
		if round%2 == 0 {
			e.Kind, e.BrokerTSMS = events.KindConnected, connectedAt
		} else {
			e.Kind, e.BrokerTSMS = events.KindDisconnected, connectedAt+1000
			e.Reason, e.RawReason = events.ReasonKeepaliveTimeout, "keepalive_timeout"
		}
		evs[i] = e
	}
	tr := newTracker(b, "ops")
	decisions := 0
	// As devstack/bench does: the garbage of building the events is
	// collected first, not while the tracker is timed.
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := telemetry.ProcessCPU()
	for i := range evs {
		decisions += len(tr.Apply(Event{&evs[i]}))
		if i%1024 == 0 {
			decisions += len(tr.Apply(Tick{Now: time.UnixMilli(evs[i].BrokerTSMS)}))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
	if c := telemetry.ProcessCPU() - cpu; c > 0 {
		b.ReportMetric(float64(n)/c.Seconds(), "events/cpu-s")
	}
	b.ReportMetric(float64(decisions), "decisions")
}

// BenchmarkStageMemory mirrors the "evaluator memory" figure of
// devstack/bench: heap bytes per device for b.N devices (ids like
// plant-07/gw-012/dev-00000001, every 4th offline with a pending timer,
// the default config). Run it with -benchtime 1000000x or 10000000x.
func BenchmarkStageMemory(b *testing.B) {
	n := b.N
	tr, err := New(Config{Grace: time.Hour, Receivers: []string{"ops"}, Severity: events.SeverityWarning})
	if err != nil {
		b.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var e events.PresenceEvent
	for i := range n {
		id := fmt.Sprintf("plant-%02d/gw-%03d/dev-%08d", i%50, i%997, i)
		e = events.PresenceEvent{DeviceID: id, Kind: events.KindConnected, Node: "emqx@10.0.0." + strconv.Itoa(i%3),
			BrokerTSMS: t0 + int64(i), ConnectedAtMS: t0 + int64(i), Source: "bench", ReceivedAtMS: t0 + int64(i)}
		tr.Apply(Event{&e})
		if i%4 == 0 {
			e.Kind, e.BrokerTSMS, e.Reason = events.KindDisconnected, e.BrokerTSMS+1000, events.ReasonKeepaliveTimeout
			tr.Apply(Event{&e})
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if tr.Len() != n {
		b.Fatalf("%d devices tracked, want %d", tr.Len(), n)
	}
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(n), "B/device")
	runtime.KeepAlive(tr)
}
