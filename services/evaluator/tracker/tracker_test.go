package tracker

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// t0 is the fake clock's origin; test times are offsets from it in ms.
const t0 = int64(1_700_000_000_000)

const grace = 30 * time.Second

func newTracker(t testing.TB, receivers ...string) *Tracker {
	t.Helper()
	if len(receivers) == 0 {
		receivers = []string{"default"}
	}
	tr, err := New(Config{Grace: grace, Receivers: receivers, Severity: events.SeverityWarning})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func mustPresence(t testing.TB, e events.PresenceEvent) events.PresenceEvent {
	t.Helper()
	e.Source = "test"
	if e.ReceivedAtMS == 0 {
		e.ReceivedAtMS = e.BrokerTSMS + 7
	}
	out, err := events.NewPresenceEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// conn is a connected event of dev on node at offset at.
func conn(t testing.TB, dev, node string, at int64) *events.PresenceEvent {
	e := mustPresence(t, events.PresenceEvent{DeviceID: dev, Kind: events.KindConnected, Node: node,
		BrokerTSMS: t0 + at, ConnectedAtMS: t0 + at})
	return &e
}

// disc is a disconnected event at offset at of the connection that began at
// offset connAt (connAt < 0: the source did not say).
func disc(t testing.TB, dev, node string, connAt, at int64, reason events.Reason) *events.PresenceEvent {
	c := int64(0)
	if connAt >= 0 {
		c = t0 + connAt
	}
	e := mustPresence(t, events.PresenceEvent{DeviceID: dev, Kind: events.KindDisconnected, Node: node,
		Reason: reason, RawReason: string(reason), BrokerTSMS: t0 + at, ConnectedAtMS: c})
	return &e
}

// step is one input of a scenario: an event, or a tick at offset tick.
type step struct {
	ev   *events.PresenceEvent
	tick int64
	want []string // summaries of the decisions, see summary
}

func tick(at int64, want ...string) step { return step{tick: at, want: want} }

func ev(e *events.PresenceEvent, want ...string) step { return step{ev: e, want: want} }

func summary(d Decision) string {
	a := d.Alert
	s := fmt.Sprintf("%s %s %s since=%d", a.Receiver, a.Status, a.Devices[0].DeviceID, a.StartsAtMS-t0)
	if a.Status == events.StatusResolved {
		s += fmt.Sprintf(" until=%d", a.EndsAtMS-t0)
	}
	return s
}

func run(t *testing.T, tr *Tracker, steps []step) {
	t.Helper()
	for i, s := range steps {
		var got []Decision
		if s.ev != nil {
			got = tr.Apply(Event{s.ev})
		} else {
			got = tr.Apply(Tick{Now: time.UnixMilli(t0 + s.tick)})
		}
		var sums []string
		for _, d := range got {
			if err := d.Alert.Validate(); err != nil {
				t.Fatalf("step %d: invalid alert: %v", i, err)
			}
			sums = append(sums, summary(d))
		}
		if !reflect.DeepEqual(sums, s.want) {
			t.Fatalf("step %d: decisions\n got %q\nwant %q", i, sums, s.want)
		}
	}
}

func TestScenarios(t *testing.T) {
	const (
		keepalive = events.ReasonKeepaliveTimeout
		takenover = events.ReasonTakenOver
		discarded = events.ReasonDiscarded
	)
	tests := []scenario{
		{
			name: "grace respected",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(disc(t, "d", "n1", 0, 10_000, keepalive)),
					tick(20_000),
					tick(39_999),
					tick(40_000, "default firing d since=10000"),
					tick(100_000),
				}
			},
			want: DeviceState{DeviceID: "d", Node: "n1", ConnectedAtMS: t0, SinceMS: t0 + 10_000, Reason: keepalive, Alerting: true},
		},
		{
			name: "blip within grace",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(disc(t, "d", "n1", 0, 10_000, keepalive)),
					tick(20_000),
					ev(conn(t, "d", "n1", 25_000)),
					tick(100_000),
				}
			},
			want:  DeviceState{DeviceID: "d", Online: true, Node: "n1", ConnectedAtMS: t0 + 25_000, SinceMS: t0 + 25_000},
			stats: func(s Stats) bool { return s.Blips == 1 && s.Outages == 1 && s.Fired == 0 },
		},
		{
			name: "takeover across nodes, disconnect first",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(disc(t, "d", "n1", 0, 50_000, takenover)),
					tick(100_000), // the new connection's connected is late: still no alert
					ev(conn(t, "d", "n2", 50_001)),
					tick(200_000),
				}
			},
			want:  DeviceState{DeviceID: "d", Online: true, Node: "n2", ConnectedAtMS: t0 + 50_001, SinceMS: t0 + 50_001},
			stats: func(s Stats) bool { return s.Handovers == 1 && s.Outages == 0 },
		},
		{
			name: "takeover across nodes, connect first",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(conn(t, "d", "n2", 50_001)),
					ev(disc(t, "d", "n1", 0, 50_000, takenover)),
					tick(200_000),
				}
			},
			want:  DeviceState{DeviceID: "d", Online: true, Node: "n2", ConnectedAtMS: t0 + 50_001, SinceMS: t0 + 50_001},
			stats: func(s Stats) bool { return s.Supersedes == 1 && s.Stale == 1 },
		},
		{
			name: "discarded on the same node, connect first",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(conn(t, "d", "n1", 50_000)),
					ev(disc(t, "d", "n1", 0, 50_000, discarded)),
					tick(200_000),
				}
			},
			want: DeviceState{DeviceID: "d", Online: true, Node: "n1", ConnectedAtMS: t0 + 50_000, SinceMS: t0 + 50_000},
		},
		{
			name: "takeover with clock skew: new connected_at below the old disconnected_at",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(disc(t, "d", "n1", 0, 50_000, takenover)),
					ev(conn(t, "d", "n2", 49_900)),
					tick(200_000),
				}
			},
			want: DeviceState{DeviceID: "d", Online: true, Node: "n2", ConnectedAtMS: t0 + 49_900, SinceMS: t0 + 49_900},
		},
		{
			name: "v4 takeover without a disconnect, then a real disconnect",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(conn(t, "d", "n2", 50_000)),
					ev(disc(t, "d", "n2", 50_000, 60_000, keepalive)),
					tick(90_000, "default firing d since=60000"),
				}
			},
			want: DeviceState{DeviceID: "d", Node: "n2", ConnectedAtMS: t0 + 50_000, SinceMS: t0 + 60_000, Reason: keepalive, Alerting: true},
		},
		{
			name: "stale real disconnect of a superseded connection",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(conn(t, "d", "n2", 50_000)),
					ev(disc(t, "d", "n1", 0, 60_000, keepalive)),
					tick(200_000),
				}
			},
			want:  DeviceState{DeviceID: "d", Online: true, Node: "n2", ConnectedAtMS: t0 + 50_000, SinceMS: t0 + 50_000},
			stats: func(s Stats) bool { return s.Stale == 1 && s.Outages == 0 },
		},
		{
			name: "stale disconnect without connected_at: other node",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(conn(t, "d", "n2", 50_000)),
					ev(disc(t, "d", "n1", -1, 60_000, keepalive)),
					tick(200_000),
				}
			},
			want: DeviceState{DeviceID: "d", Online: true, Node: "n2", ConnectedAtMS: t0 + 50_000, SinceMS: t0 + 50_000},
		},
		{
			name: "stale disconnect without connected_at: before the current connection",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(conn(t, "d", "n1", 50_000)),
					ev(disc(t, "d", "n1", -1, 40_000, keepalive)),
					tick(200_000),
				}
			},
			want: DeviceState{DeviceID: "d", Online: true, Node: "n1", ConnectedAtMS: t0 + 50_000, SinceMS: t0 + 50_000},
		},
		{
			name: "disconnect without connected_at ends the current connection",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(disc(t, "d", "n1", -1, 40_000, keepalive)),
					ev(disc(t, "d", "n1", -1, 40_000, keepalive)),
					tick(70_000, "default firing d since=40000"),
				}
			},
			want: DeviceState{DeviceID: "d", Node: "n1", ConnectedAtMS: t0, SinceMS: t0 + 40_000, Reason: keepalive, Alerting: true},
		},
		{
			name: "duplicates are no-ops",
			steps: func(t *testing.T) []step {
				c, d1, c2 := conn(t, "d", "n1", 0), disc(t, "d", "n1", 0, 10_000, keepalive), conn(t, "d", "n1", 100_000)
				return []step{
					ev(c), ev(c),
					ev(d1), ev(d1),
					tick(40_000, "default firing d since=10000"),
					ev(d1), ev(c),
					tick(50_000),
					ev(c2, "default resolved d since=10000 until=100000"),
					ev(c2), ev(d1), ev(c),
					tick(500_000),
				}
			},
			want:  DeviceState{DeviceID: "d", Online: true, Node: "n1", ConnectedAtMS: t0 + 100_000, SinceMS: t0 + 100_000},
			stats: func(s Stats) bool { return s.Fired == 1 && s.Resolved == 1 && s.Duplicates == 5 && s.Stale == 2 },
		},
		{
			name: "resolved carries the outage",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(disc(t, "d", "n1", 0, 10_000, keepalive)),
					tick(45_000, "default firing d since=10000"),
					ev(conn(t, "d", "n2", 3_600_000), "default resolved d since=10000 until=3600000"),
				}
			},
			want: DeviceState{DeviceID: "d", Online: true, Node: "n2", ConnectedAtMS: t0 + 3_600_000, SinceMS: t0 + 3_600_000},
		},
		{
			name: "late event with a broker time long past fires on the next tick",
			steps: func(t *testing.T) []step {
				return []step{
					tick(1_000_000),
					ev(conn(t, "d", "n1", 0)),
					ev(disc(t, "d", "n1", 0, 10_000, keepalive)),
					tick(1_001_000, "default firing d since=10000"),
				}
			},
			want: DeviceState{DeviceID: "d", Node: "n1", ConnectedAtMS: t0, SinceMS: t0 + 10_000, Reason: keepalive, Alerting: true},
		},
		{
			name: "first news is a disconnect",
			steps: func(t *testing.T) []step {
				return []step{
					ev(disc(t, "d", "n1", 0, 10_000, keepalive)),
					tick(40_000, "default firing d since=10000"),
				}
			},
			want: DeviceState{DeviceID: "d", Node: "n1", ConnectedAtMS: t0, SinceMS: t0 + 10_000, Reason: keepalive, Alerting: true},
		},
		{
			name: "old connected arriving after a reconnect is stale",
			steps: func(t *testing.T) []step {
				c := conn(t, "d", "n1", 0)
				return []step{
					ev(c),
					ev(disc(t, "d", "n1", 0, 10_000, keepalive)),
					ev(conn(t, "d", "n2", 20_000)),
					ev(c),
					tick(100_000),
				}
			},
			want: DeviceState{DeviceID: "d", Online: true, Node: "n2", ConnectedAtMS: t0 + 20_000, SinceMS: t0 + 20_000},
		},
		{
			name: "disconnect of an unseen newer connection resolves and opens a new outage",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(disc(t, "d", "n1", 0, 10_000, keepalive)),
					tick(40_000, "default firing d since=10000"),
					ev(disc(t, "d", "n2", 100_000, 200_000, events.ReasonClosed), "default resolved d since=10000 until=100000"),
					tick(229_999),
					ev(conn(t, "d", "n2", 100_000)),
					tick(230_000, "default firing d since=200000"),
				}
			},
			want: DeviceState{DeviceID: "d", Node: "n2", ConnectedAtMS: t0 + 100_000, SinceMS: t0 + 200_000, Reason: events.ReasonClosed, Alerting: true},
		},
		{
			name: "handover without a successor stays online",
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(disc(t, "d", "n1", 0, 10_000, takenover)),
					tick(1_000_000),
				}
			},
			want: DeviceState{DeviceID: "d", Online: true, Node: "n1", ConnectedAtMS: t0, SinceMS: t0, HandedOver: true},
		},
		{
			name:      "one alert per receiver, in order",
			receivers: []string{"ops", "dev"},
			steps: func(t *testing.T) []step {
				return []step{
					ev(conn(t, "d", "n1", 0)),
					ev(disc(t, "d", "n1", 0, 10_000, keepalive)),
					tick(40_000, "ops firing d since=10000", "dev firing d since=10000"),
					ev(conn(t, "d", "n1", 50_000), "ops resolved d since=10000 until=50000", "dev resolved d since=10000 until=50000"),
				}
			},
			want: DeviceState{DeviceID: "d", Online: true, Node: "n1", ConnectedAtMS: t0 + 50_000, SinceMS: t0 + 50_000},
		},
		{
			name: "notifications due together go out in group key order",
			steps: func(t *testing.T) []step {
				return []step{
					ev(disc(t, "z", "n1", 0, 10_000, keepalive)),
					ev(disc(t, "d", "n2", 0, 10_000, keepalive)),
					ev(disc(t, "a", "n1", 0, 10_001, keepalive)),
					tick(40_001, "default firing a since=10001", "default firing d since=10000", "default firing z since=10000"),
				}
			},
			want: DeviceState{DeviceID: "d", Node: "n2", ConnectedAtMS: t0, SinceMS: t0 + 10_000, Reason: keepalive, Alerting: true},
		},
	}
	runScenarios(t, tests)
}

// scenario is a table case of the tracker's state machine: steps applied
// to a fresh tracker, the final state of device "d" and its stats.
type scenario struct {
	name string
	// receivers of the tracker (default: one)
	receivers []string
	steps     func(t *testing.T) []step
	want      DeviceState // final state of device "d"
	stats     func(s Stats) bool
}

func runScenarios(t *testing.T, tests []scenario) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker(t, tc.receivers...)
			run(t, tr, tc.steps(t))
			got, ok := tr.Device("d")
			if !ok {
				t.Fatal("device d not tracked")
			}
			if got != tc.want {
				t.Fatalf("final state\n got %+v\nwant %+v", got, tc.want)
			}
			if tc.stats != nil && !tc.stats(tr.Stats()) {
				t.Fatalf("stats %+v", tr.Stats())
			}
		})
	}
}

func TestAlertFields(t *testing.T) {
	tr, err := New(Config{Grace: grace, Receivers: []string{"ops"}, Severity: events.SeverityCritical})
	if err != nil {
		t.Fatal(err)
	}
	tr.Apply(Event{conn(t, "dev/1 ü", "emqx@10.0.0.1", 0)})
	tr.Apply(Event{disc(t, "dev/1 ü", "emqx@10.0.0.1", 0, 10_000, events.ReasonKeepaliveTimeout)})
	got := tr.Apply(Tick{Now: time.UnixMilli(t0 + 41_234)})
	const key = `root{device_id="dev/1 ü"}`
	fp := events.ContentID("device_offline", key)
	want, err := events.NewAlertEvent(events.AlertEvent{
		ID:          events.ContentID("alert.v1", "ops", fp, "firing", fmt.Sprint(t0+10_000), "0", "1"),
		Fingerprint: fp, Receiver: "ops", Status: events.StatusFiring, Kind: events.AlertDeviceOffline,
		Severity: events.SeverityCritical, GroupKey: key, GroupLabels: map[string]string{"device_id": "dev/1 ü"},
		Devices: []events.AlertDevice{{DeviceID: "dev/1 ü", Status: events.StatusFiring, Node: "emqx@10.0.0.1",
			Reason: events.ReasonKeepaliveTimeout, SinceMS: t0 + 10_000}},
		DevicesTotal: 1, StartsAtMS: t0 + 10_000, CreatedAtMS: t0 + 41_234, NewTotal: 1, FiringTotal: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !reflect.DeepEqual(got[0].Alert, want) || got[0].New != 1 || got[0].Firing != 1 || got[0].Resolved != 0 {
		t.Fatalf("firing\n got %+v\nwant %+v", got, want)
	}

	back := conn(t, "dev/1 ü", "emqx@10.0.0.2", 95_000)
	got = tr.Apply(Event{back})
	want, err = events.NewAlertEvent(events.AlertEvent{
		ID:          events.ContentID("alert.v1", "ops", fp, "resolved", fmt.Sprint(t0+10_000), fmt.Sprint(t0+95_000), "2"),
		Fingerprint: fp, Receiver: "ops", Status: events.StatusResolved, Kind: events.AlertDeviceOffline,
		Severity: events.SeverityCritical, GroupKey: key, GroupLabels: map[string]string{"device_id": "dev/1 ü"},
		Devices: []events.AlertDevice{{DeviceID: "dev/1 ü", Status: events.StatusResolved, Node: "emqx@10.0.0.1",
			Reason: events.ReasonKeepaliveTimeout, SinceMS: t0 + 10_000, UntilMS: t0 + 95_000}},
		DevicesTotal: 1, StartsAtMS: t0 + 10_000, EndsAtMS: t0 + 95_000, CreatedAtMS: back.ReceivedAtMS, ResolvedTotal: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !reflect.DeepEqual(got[0].Alert, want) || got[0].New != 0 || got[0].Firing != 0 || got[0].Resolved != 1 {
		t.Fatalf("resolved\n got %+v\nwant %+v", got, want)
	}
}

func TestMarkAlertedAndAlerting(t *testing.T) {
	// A first tracker fires; a second one, rebuilt from the same events,
	// learns from the published ids that the outage was already alerted.
	steps := func(tr *Tracker) []Decision {
		tr.Apply(Event{conn(t, "d", "n1", 0)})
		tr.Apply(Event{disc(t, "d", "n1", 0, 10_000, events.ReasonKeepaliveTimeout)})
		return tr.Apply(Tick{Now: time.UnixMilli(t0 + 50_000)})
	}
	first := newTracker(t, "ops", "dev")
	fired := steps(first)
	if len(fired) != 2 {
		t.Fatalf("fired %d alerts, want 2", len(fired))
	}
	sent := map[string]bool{fired[1].Alert.ID: true} // "ops" was lost in a crash

	second := newTracker(t, "ops", "dev")
	second.Apply(Event{conn(t, "d", "n1", 0)})
	if second.MarkAlerted("d", func(id string) bool { return sent[id] }) {
		t.Fatal("marked an online device")
	}
	second.Apply(Event{disc(t, "d", "n1", 0, 10_000, events.ReasonKeepaliveTimeout)})
	if !second.MarkAlerted("d", func(id string) bool { return sent[id] }) {
		t.Fatal("did not mark the alerted outage")
	}
	if got := second.Apply(Tick{Now: time.UnixMilli(t0 + 60_000)}); len(got) != 0 {
		t.Fatalf("re-fired %d alerts", len(got))
	}
	again := second.Alerting(time.UnixMilli(t0 + 60_000))
	if len(again) != 2 || again[0].Alert.ID != fired[0].Alert.ID || again[1].Alert.ID != fired[1].Alert.ID {
		t.Fatalf("Alerting = %+v, want the ids of %+v", again, fired)
	}
	res := second.Apply(Event{conn(t, "d", "n1", 70_000)})
	if len(res) != 2 || res[0].Alert.Status != events.StatusResolved {
		t.Fatalf("resolved = %+v", res)
	}
	if got := second.Alerting(time.UnixMilli(t0 + 80_000)); len(got) != 0 {
		t.Fatalf("Alerting after recovery = %+v", got)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"grace", Config{Receivers: []string{"a"}, Severity: events.SeverityInfo}, "invalid tracker config: grace 0s is not positive"},
		{"receivers", Config{Grace: time.Second, Severity: events.SeverityInfo}, "invalid tracker config: no receivers"},
		{"empty receiver", Config{Grace: time.Second, Receivers: []string{"a", ""}, Severity: events.SeverityInfo}, "invalid tracker config: receivers[1] is empty"},
		{"severity", Config{Grace: time.Second, Receivers: []string{"a"}, Severity: "high"}, `invalid tracker config: severity "high" is not info, warning or critical`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestInvalidEventsAreIgnored(t *testing.T) {
	tr := newTracker(t)
	for _, e := range []events.PresenceEvent{
		{},
		{DeviceID: "d", Kind: "bogus", Node: "n", BrokerTSMS: 1},
		{DeviceID: "d", Kind: events.KindConnected, BrokerTSMS: 1},
		{DeviceID: "d", Kind: events.KindConnected, Node: "n"},
		{DeviceID: "d", Kind: events.KindConnected, Node: "n", BrokerTSMS: 1, ConnectedAtMS: -1},
	} {
		if got := tr.Apply(Event{&e}); got != nil {
			t.Fatalf("decisions for %+v", e)
		}
	}
	if tr.Apply(Event{}) != nil || tr.Len() != 0 || tr.Stats().Invalid != 5 {
		t.Fatalf("len %d stats %+v", tr.Len(), tr.Stats())
	}
}

func TestDeterministic(t *testing.T) {
	runOnce := func() []byte {
		tr := newTracker(t, "a", "b")
		var all []Decision
		for i := range 50 {
			dev := fmt.Sprintf("dev-%d", i%7)
			node := fmt.Sprintf("n%d", i%3)
			all = append(all, tr.Apply(Event{conn(t, dev, node, int64(i)*1000)})...)
			all = append(all, tr.Apply(Event{disc(t, dev, node, int64(i)*1000, int64(i)*1000+500, events.ReasonClosed)})...)
			all = append(all, tr.Apply(Tick{Now: time.UnixMilli(t0 + int64(i)*5000)})...)
		}
		all = append(all, tr.Apply(Tick{Now: time.UnixMilli(t0 + 10_000_000)})...)
		b, err := json.Marshal(all)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := runOnce(), runOnce()
	if string(a) != string(b) {
		t.Fatal("two runs of the same inputs decided differently")
	}
	if len(a) < 1000 {
		t.Fatalf("too few decisions to mean anything: %s", a)
	}
}

func TestStaleTimersAreSkipped(t *testing.T) {
	tr := newTracker(t)
	tr.Apply(Event{conn(t, "d", "n1", 0)})
	for i := int64(1); i <= 100; i++ {
		tr.Apply(Event{disc(t, "d", "n1", (i-1)*100, i*100-50, events.ReasonClosed)})
		tr.Apply(Event{conn(t, "d", "n1", i*100)})
	}
	if tr.PendingTimers() != 100 {
		t.Fatalf("pending timers %d, want 100", tr.PendingTimers())
	}
	if got := tr.Apply(Tick{Now: time.UnixMilli(t0 + 1_000_000)}); len(got) != 0 {
		t.Fatalf("stale timers fired: %v", got)
	}
	if tr.PendingTimers() != 0 || tr.Stats().Blips != 100 {
		t.Fatalf("pending %d stats %+v", tr.PendingTimers(), tr.Stats())
	}
}

func TestTimerHeapOrder(t *testing.T) {
	var h timerHeap
	dues := []int64{5, 3, 9, 1, 1, 7, 3, 0, 8, 2}
	for i, d := range dues {
		h.push(timer{due: d, slot: uint32(9 - i)})
	}
	var prev timer
	for i := 0; len(h) > 0; i++ {
		tm := h.pop()
		if i > 0 && tm.before(prev) {
			t.Fatalf("popped %+v after %+v", tm, prev)
		}
		prev = tm
	}
}
