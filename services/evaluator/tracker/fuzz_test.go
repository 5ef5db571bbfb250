package tracker

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
)

// fuzzOps turns arbitrary bytes into tracker inputs, 6 bytes per input:
// byte 0 picks the kind (connected, real disconnect, takeover disconnect,
// disconnect without connected_at, tick: byte 0 % 5) and the source (byte
// 0 / 5 % 3: EMQX; AWS IoT, with a version from byte 2 and no
// connected_at; Sparkplug, with bdSeq byte 2 and no connected_at on
// disconnects), byte 1 the device, node and reason, bytes 2-3 connected_at
// (or the tick's time), bytes 4-5 the broker time. Times and versions are
// small so that they collide often.
func fuzzOps(data []byte) []Input {
	nodes := []string{"n1", "n2", "emqx@10.0.0.3"}
	devs := []string{"a", "b", "dev/1", "x.y*>"}
	reasons := []events.Reason{events.ReasonKeepaliveTimeout, events.ReasonTakenOver, events.ReasonDiscarded, "", events.ReasonNormal}
	var in []Input
	for len(data) >= 6 {
		op, sel, src, vb := data[0]%5, data[1], data[0]/5%3, data[2]
		a := int64(binary.BigEndian.Uint16(data[2:4]))
		b := int64(binary.BigEndian.Uint16(data[4:6]))
		data = data[6:]
		e := &events.PresenceEvent{
			DeviceID:      devs[sel%4],
			Node:          nodes[(sel>>2)%3],
			ConnectedAtMS: t0 + a*100,
			BrokerTSMS:    t0 + b*100,
			ReceivedAtMS:  t0 + b*100 + 1,
		}
		switch op {
		case 0:
			e.Kind = events.KindConnected
			if sel>>7 == 1 {
				e.ConnectedAtMS = 0
			}
		case 1:
			e.Kind, e.Reason = events.KindDisconnected, reasons[int(sel>>4)%len(reasons)]
		case 2:
			e.Kind, e.Reason = events.KindDisconnected, events.ReasonTakenOver
		case 3:
			e.Kind, e.Reason, e.ConnectedAtMS = events.KindDisconnected, events.ReasonClosed, 0
		case 4:
			in = append(in, Tick{Now: time.UnixMilli(t0 + a*1000)})
			continue
		}
		switch src {
		case 1:
			e.Source, e.ConnVersion, e.ConnectedAtMS = "aws_iot", 1+int64(vb%16), 0
		case 2:
			e.Source, e.ConnVersion = events.SourceSparkplug, 1+int64(vb)
			if e.Kind == events.KindDisconnected {
				e.ConnectedAtMS = 0
			}
		}
		if sel == 0xff {
			e.BrokerTSMS = 0 // invalid
		}
		in = append(in, Event{e})
	}
	return in
}

func FuzzApply(f *testing.F) {
	op := func(kind, sel byte, a, b uint16) []byte {
		return []byte{kind, sel, byte(a >> 8), byte(a), byte(b >> 8), byte(b)}
	}
	seq := func(ops ...[]byte) []byte {
		var out []byte
		for _, o := range ops {
			out = append(out, o...)
		}
		return out
	}
	f.Add([]byte{})
	// connect, disconnect, tick past grace, reconnect
	f.Add(seq(op(0, 0, 1, 1), op(1, 0, 1, 100), op(4, 0, 1000, 0), op(0, 0, 2000, 2000)))
	// takeover: disconnect first, then the new connection on node 2
	f.Add(seq(op(0, 0, 1, 1), op(2, 0, 1, 500), op(0, 4, 501, 501), op(4, 0, 1000, 0)))
	// takeover: connect first
	f.Add(seq(op(0, 0, 1, 1), op(0, 4, 501, 501), op(2, 0, 1, 500), op(4, 0, 1000, 0)))
	// disconnect without connected_at, duplicates, unseen newer connection
	f.Add(seq(op(0, 1, 1, 1), op(3, 1, 0, 50), op(3, 1, 0, 50), op(4, 0, 100, 0), op(1, 5, 900, 950), op(4, 0, 3000, 0)))
	// AWS: version 3, older version 2's disconnect, newer 5's disconnect (gap), tick
	f.Add(seq(op(5, 0, 3<<8, 1), op(6, 0, 2<<8, 50), op(6, 0, 5<<8, 60), op(4, 0, 1000, 0)))
	// Sparkplug: bdSeq 255 then 0, the old NDEATH, the current one, tick
	f.Add(seq(op(10, 0, 255<<8|1, 1), op(10, 0, 0<<8|9, 9), op(11, 0, 255<<8, 20), op(11, 0, 0, 30), op(4, 0, 1000, 0)))

	f.Fuzz(func(t *testing.T, data []byte) {
		in := fuzzOps(data)
		tr := newTracker(t, "r1", "r2")
		twin := newTracker(t, "r1", "r2")
		firing := map[string]int64{}
		for i, x := range in {
			got := tr.Apply(x)
			if a, b := mustJSON(t, got), mustJSON(t, twin.Apply(x)); a != b {
				t.Fatalf("input %d: not deterministic:\n%s\n%s", i, a, b)
			}
			for j, d := range got {
				a := d.Alert
				if err := a.Validate(); err != nil {
					t.Fatalf("input %d: %v", i, err)
				}
				want := []string{"r1", "r2"}[j%2]
				if a.Receiver != want {
					t.Fatalf("input %d: receiver %q, want %q", i, a.Receiver, want)
				}
				if a.Receiver != "r1" {
					continue
				}
				dev := a.Devices[0].DeviceID
				since, on := firing[dev]
				switch {
				case a.Status == events.StatusFiring && on:
					t.Fatalf("input %d: second firing for %s", i, dev)
				case a.Status == events.StatusFiring:
					firing[dev] = a.StartsAtMS
				case !on || since != a.StartsAtMS:
					t.Fatalf("input %d: resolved without firing for %s", i, dev)
				default:
					delete(firing, dev)
				}
			}
			if ev, ok := x.(Event); ok && ev.DeviceID != "" {
				before, _ := tr.Device(ev.DeviceID)
				if again := tr.Apply(x); len(again) != 0 {
					t.Fatalf("input %d: applying it twice decided %v", i, again)
				}
				twin.Apply(x)
				if after, _ := tr.Device(ev.DeviceID); after != before {
					t.Fatalf("input %d: applying it twice changed %+v to %+v", i, before, after)
				}
			}
			alerting := 0
			for _, s := range tr.Devices() {
				if err := invariant(s); err != nil {
					t.Fatalf("input %d: %v", i, err)
				}
				if s.Alerting {
					alerting++
					if firing[s.DeviceID] != s.SinceMS {
						t.Fatalf("input %d: %s alerting since %d, fired for %d", i, s.DeviceID, s.SinceMS, firing[s.DeviceID])
					}
				}
			}
			if alerting != len(firing) {
				t.Fatalf("input %d: %d devices alerting, %d firing", i, alerting, len(firing))
			}
		}
	})
}

func invariant(s DeviceState) error {
	switch {
	case s.Online && (s.Pending || s.Alerting || s.Reason != ""):
		return fmt.Errorf("online device with outage state: %+v", s)
	case !s.Online && s.Pending == s.Alerting:
		return fmt.Errorf("offline device must be pending xor alerting: %+v", s)
	case !s.Online && s.HandedOver:
		return fmt.Errorf("offline and handed over: %+v", s)
	case s.Flapping && s.Alerting:
		return fmt.Errorf("alerting while flapping: %+v", s)
	case s.Inhibited && !s.Alerting:
		return fmt.Errorf("inhibited without alerting: %+v", s)
	}
	return nil
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzApplyGrouped runs the fuzzed inputs through a config with labels,
// grouping by node, waits, repeats and escalation tiers: decisions are
// deterministic and valid, every listed device is offline-or-recovering as
// announced, and no group outlives its devices.
func FuzzApplyGrouped(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 100, 4, 0, 3, 232, 0, 0, 0, 0, 7, 208, 7, 208, 4, 0, 39, 16, 0, 0})
	const routes = "receivers: [r1]\ngroup_by: [node]\ngroup_wait: 2s\ngroup_interval: 5s\nrepeat_interval: 1m\n" +
		"escalations:\n  - after: 1m\n    receivers: [r2]\nroutes:\n  - matchers: ['device_id=~\"dev/.*\"']\n    group_by: [...]\n    continue: true\n"
	f.Fuzz(func(t *testing.T, data []byte) {
		in := fuzzOps(data)
		tr := routedTracker(t, "{}", routes)
		twin := routedTracker(t, "{}", routes)
		for i, x := range in {
			got := tr.Apply(x)
			if a, b := mustJSON(t, got), mustJSON(t, twin.Apply(x)); a != b {
				t.Fatalf("input %d: not deterministic:\n%s\n%s", i, a, b)
			}
			for _, d := range got {
				a := d.Alert
				if err := a.Validate(); err != nil {
					t.Fatalf("input %d: %v", i, err)
				}
				if d.Firing+d.Resolved != a.DevicesTotal || d.New > d.Firing {
					t.Fatalf("input %d: counts %d/%d/%d, total %d", i, d.New, d.Resolved, d.Firing, a.DevicesTotal)
				}
				for _, dev := range a.Devices {
					if dev.Status == events.StatusResolved {
						continue
					}
					s, ok := tr.Device(dev.DeviceID)
					if !ok || s.Online || !s.Alerting || s.SinceMS != dev.SinceMS {
						t.Fatalf("input %d: %+v listed firing, state %+v", i, dev, s)
					}
				}
			}
			for _, s := range tr.Devices() {
				if err := invariant(s); err != nil {
					t.Fatalf("input %d: %v", i, err)
				}
			}
		}
		// Everything recovers: after the last flush no group is left.
		for _, s := range tr.Devices() {
			if !s.Online {
				tr.Apply(Event{&events.PresenceEvent{DeviceID: s.DeviceID, Kind: events.KindConnected, Node: "n9",
					BrokerTSMS: 1 << 50, ConnectedAtMS: 1 << 50, ReceivedAtMS: 1 << 50}})
			}
		}
		tr.Apply(Tick{Now: time.UnixMilli(1<<50 + 3_600_000)})
		if tr.Groups() != 0 {
			t.Fatalf("%d groups left after every device recovered", tr.Groups())
		}
	})
}

// fuzzRichOps extends fuzzOps: after every 6-byte input, a seventh byte
// may add a node health change (silent or back, of n1 or n2) or replace the
// silences.
func fuzzRichOps(data []byte) []Input {
	var in []Input
	for len(data) >= 7 {
		in = append(in, fuzzOps(data[:6])...)
		x := data[6]
		data = data[7:]
		at := t0 + int64(x)*1000
		switch x % 8 {
		case 0, 1:
			st := events.NodeSilent
			if x%8 == 1 {
				st = events.NodeBack
			}
			in = append(in, Node{&events.NodeEvent{Node: []string{"n1", "n2"}[x>>7], Status: st, LastSeenMS: at, AtMS: at + 5}})
		case 2:
			in = append(in, Silences{Active: []silence.Silence{
				{ID: "s", Matchers: []string{`device_id=~"a|b"`}, StartsAt: time.UnixMilli(t0), EndsAt: time.UnixMilli(at + 1), ExpireWhenResolved: x&16 != 0},
				{ID: "t", Matchers: []string{`alertname!="device_offline"`}, StartsAt: time.UnixMilli(t0), EndsAt: time.UnixMilli(at + 1)},
			}})
		}
	}
	return in
}

// FuzzApplyRich runs fuzzed inputs, node health changes and silences
// through the rich config (flap suppression, correlation, grouping,
// escalations): decisions are deterministic and valid, the device
// invariants hold, and a snapshot taken at the end restores a tracker that
// decides like the original.
func FuzzApplyRich(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 100, 2, 4, 0, 3, 232, 0, 0, 1, 0, 0x80, 0, 5, 0, 5, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := fuzzRichOps(data)
		tr, twin := richTracker(t), richTracker(t)
		for i, x := range in {
			got := tr.Apply(x)
			if a, b := mustJSON(t, got), mustJSON(t, twin.Apply(x)); a != b {
				t.Fatalf("input %d: not deterministic:\n%s\n%s", i, a, b)
			}
			for _, d := range got {
				if err := d.Alert.Validate(); err != nil {
					t.Fatalf("input %d: %v", i, err)
				}
			}
			for _, s := range tr.Devices() {
				if err := invariant(s); err != nil {
					t.Fatalf("input %d: %v", i, err)
				}
			}
		}
		snap, err := tr.MarshalSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		back := richTracker(t)
		if err := back.RestoreSnapshot(snap); err != nil {
			t.Fatal(err)
		}
		end := Tick{Now: time.UnixMilli(t0 + 1e8)}
		if a, b := mustJSON(t, tr.Apply(end)), mustJSON(t, back.Apply(end)); a != b {
			t.Fatalf("the restored tracker decides otherwise:\n%s\n%s", a, b)
		}
	})
}
