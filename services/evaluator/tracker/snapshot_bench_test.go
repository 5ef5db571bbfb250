package tracker

import (
	"fmt"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// BenchmarkSnapshot1M reports the size of a snapshot of 1M labelled devices
// (client id regex, username, /24; half of them offline, a quarter alerting
// in per-site groups) and the time to write and to restore it.
func BenchmarkSnapshot1M(b *testing.B) {
	const devices = 1_000_000
	tr := routedTracker(b, benchLabels, benchRoutes)
	var e events.PresenceEvent
	for i := range devices {
		id := fmt.Sprintf("site%d-gw%d-%08d", i%40, i%7, i)
		e = events.PresenceEvent{DeviceID: id, Kind: events.KindConnected, Node: "emqx@n1", Username: "tenant-a",
			IP: fmt.Sprintf("10.%d.%d.7", i%200, i%100), KeepaliveS: 60, BrokerTSMS: t0 + int64(i), ConnectedAtMS: t0 + int64(i)}
		tr.Apply(Event{&e})
		if i%2 == 1 {
			e.Kind, e.Reason, e.BrokerTSMS = events.KindDisconnected, events.ReasonKeepaliveTimeout, e.BrokerTSMS+1_000
			if i%4 == 1 {
				e.BrokerTSMS += 3_600_000 // still in its grace at the tick
			}
			tr.Apply(Event{&e})
		}
	}
	tr.Apply(Tick{Now: time.UnixMilli(t0 + devices + 60_000)})
	var snap []byte
	b.Run("marshal", func(b *testing.B) {
		for range b.N {
			var err error
			if snap, err = tr.MarshalSnapshot(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(snap)), "bytes")
		b.ReportMetric(float64(len(snap))/devices, "B/device")
	})
	b.Run("restore", func(b *testing.B) {
		for range b.N {
			back := routedTracker(b, benchLabels, benchRoutes)
			if err := back.RestoreSnapshot(snap); err != nil {
				b.Fatal(err)
			}
			if back.Len() != devices || back.Groups() != tr.Groups() {
				b.Fatalf("restored %d devices, %d groups", back.Len(), back.Groups())
			}
		}
	})
}
