package evaluator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry/telemetrytest"
	"github.com/fleetwatch/fleetwatch/services/evaluator"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func TestMain(m *testing.M) {
	// What telemetry.Setup installs in a process: W3C trace context.
	otel.SetTextMapPropagator(propagation.TraceContext{})
	os.Exit(m.Run())
}

// t0 is the fake clock's start (ms); the tests move the clock explicitly.
const t0 = int64(1_700_000_000_000)

// fakeClock is the evaluator's clock in tests. Calls counts Now calls: the
// service reads the clock once per tick, so waiting for calls to grow waits
// for ticks.
type fakeClock struct {
	ms    atomic.Int64
	calls atomic.Int64
}

func (c *fakeClock) Now() time.Time {
	c.calls.Add(1)
	return time.UnixMilli(c.ms.Load())
}

func (c *fakeClock) set(ms int64) { c.ms.Store(ms) }

type harness struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	clock *fakeClock
	topo  events.Topology // of the KV buckets (zero: one replica)
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	if err := events.EnsureStreams(t.Context(), js, events.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	h := &harness{nc: nc, js: js, clock: &fakeClock{}}
	h.clock.set(t0)
	return h
}

func testConfig(receivers ...string) evaluator.Config {
	cfg := evaluator.DefaultConfig()
	cfg.Grace = 30 * time.Second
	cfg.Tick = 10 * time.Millisecond
	cfg.Receivers = receivers
	cfg.AckWait = 2 * time.Second // a stopped instance's last pull may swallow a message until then
	return cfg
}

// running is a started Service.
type running struct {
	svc     *evaluator.Service
	metrics *sdkmetric.ManualReader
	stop    func()
}

func (h *harness) start(t *testing.T, cfg evaluator.Config) *running {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	svc, err := evaluator.New(cfg, evaluator.Deps{
		NATS:           h.nc,
		Logger:         slog.New(slog.NewTextHandler(t.Output(), nil)),
		TracerProvider: sdktrace.NewTracerProvider(),
		MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		Now:            h.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Ready(); err == nil {
		t.Fatal("ready before Run")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	waitFor(t, "service ready", func() bool { return svc.Ready() == nil })
	var once atomic.Bool
	stop := func() {
		if once.Swap(true) {
			return
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if svc.Ready() == nil {
			t.Error("ready after Run returned")
		}
	}
	t.Cleanup(stop)
	return &running{svc: svc, metrics: reader, stop: stop}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitTicks waits until the service applied n more ticks.
func (h *harness) waitTicks(t *testing.T, n int64) {
	t.Helper()
	from := h.clock.calls.Load()
	waitFor(t, "ticks", func() bool { return h.clock.calls.Load() >= from+n })
}

func presence(t *testing.T, e events.PresenceEvent) events.PresenceEvent {
	t.Helper()
	e.Source = "test"
	if e.ReceivedAtMS == 0 {
		e.ReceivedAtMS = e.BrokerTSMS + 5
	}
	out, err := events.NewPresenceEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func connected(t *testing.T, dev, node string, at int64) events.PresenceEvent {
	return presence(t, events.PresenceEvent{DeviceID: dev, Kind: events.KindConnected, Node: node, BrokerTSMS: at, ConnectedAtMS: at})
}

func disconnected(t *testing.T, dev, node string, connAt, at int64, reason events.Reason) events.PresenceEvent {
	return presence(t, events.PresenceEvent{DeviceID: dev, Kind: events.KindDisconnected, Node: node, Reason: reason,
		RawReason: string(reason), BrokerTSMS: at, ConnectedAtMS: connAt})
}

// publish stores presence events the way the ingest does and returns the
// stream sequence of the last one.
func (h *harness) publish(t *testing.T, es ...events.PresenceEvent) uint64 {
	t.Helper()
	var seq uint64
	for _, e := range es {
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(events.PresenceSubject(e.DeviceID, events.DefaultPartitions))
		m.Data = data
		m.Header.Set(events.HeaderMsgID, e.ID)
		ack, err := h.js.PublishMsg(t.Context(), m)
		if err != nil {
			t.Fatal(err)
		}
		seq = ack.Sequence
	}
	return seq
}

// waitProcessed waits until the evaluator acked everything up to seq, then
// for two more ticks, so that whatever it decided is published.
func (h *harness) waitProcessed(t *testing.T, seq uint64) {
	t.Helper()
	waitFor(t, "presence acked", func() bool {
		c, err := h.js.Consumer(t.Context(), events.StreamPresence, events.ConsumerEvaluator)
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		return err == nil && info.AckFloor.Stream >= seq
	})
	h.waitTicks(t, 2)
}

type storedAlert struct {
	subject string
	header  nats.Header
	alert   events.AlertEvent
}

func (h *harness) streamMsgs(t *testing.T, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	st, err := retryJS(t, func() (jetstream.Stream, error) { return h.js.Stream(t.Context(), stream) })
	if err != nil {
		t.Fatal(err)
	}
	info, err := retryJS(t, func() (*jetstream.StreamInfo, error) { return st.Info(t.Context()) })
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := retryJS(t, func() (*jetstream.RawStreamMsg, error) { return st.GetMsg(t.Context(), seq) })
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// retryJS calls f until it succeeds or fails with an error that is not
// transient (events.TransientError: on a cluster, a request right after a
// node stopped may find no responder), for at most 10 s.
func retryJS[T any](t *testing.T, f func() (T, error)) (T, error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := f()
		if err == nil || !events.TransientError(err) || time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *harness) alerts(t *testing.T) []storedAlert {
	t.Helper()
	var out []storedAlert
	for _, m := range h.streamMsgs(t, events.StreamAlerts) {
		var a events.AlertEvent
		if err := json.Unmarshal(m.Data, &a); err != nil {
			t.Fatal(err)
		}
		if err := a.Validate(); err != nil {
			t.Fatal(err)
		}
		out = append(out, storedAlert{subject: m.Subject, header: m.Header, alert: a})
	}
	return out
}

func (h *harness) waitAlerts(t *testing.T, n int) []storedAlert {
	t.Helper()
	waitFor(t, "alerts", func() bool { return len(h.alerts(t)) >= n })
	got := h.alerts(t)
	if len(got) != n {
		t.Fatalf("%d alerts, want %d: %+v", len(got), n, got)
	}
	return got
}

func (h *harness) wantAlerts(t *testing.T, n int) []storedAlert {
	t.Helper()
	got := h.alerts(t)
	if len(got) != n {
		t.Fatalf("%d alerts, want %d: %+v", len(got), n, got)
	}
	return got
}

func wantAlert(t *testing.T, a events.AlertEvent) events.AlertEvent {
	t.Helper()
	out, err := events.NewAlertEvent(a)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// offlineAlert is the notification of a one-device group of the default
// routes: its first (firing) or second (resolved) notification.
func offlineAlert(t *testing.T, receiver, dev, node string, status events.AlertStatus, since, until, created int64) events.AlertEvent {
	key := "root{device_id=" + strconv.Quote(dev) + "}"
	fp := events.ContentID("device_offline", key)
	seq := "1"
	if status == events.StatusResolved {
		seq = "2"
	}
	a := events.AlertEvent{
		ID:          events.ContentID("alert.v1", receiver, fp, string(status), strconv.FormatInt(since, 10), strconv.FormatInt(until, 10), seq),
		Fingerprint: fp, Receiver: receiver, Status: status,
		Kind: events.AlertDeviceOffline, Severity: events.SeverityWarning, GroupKey: key,
		GroupLabels: map[string]string{"device_id": dev},
		Devices: []events.AlertDevice{{DeviceID: dev, Status: status, Node: node, Reason: events.ReasonKeepaliveTimeout,
			SinceMS: since, UntilMS: until}},
		DevicesTotal: 1, StartsAtMS: since, EndsAtMS: until, CreatedAtMS: created,
	}
	if status == events.StatusFiring {
		a.NewTotal, a.FiringTotal = 1, 1
	} else {
		a.ResolvedTotal = 1
	}
	return wantAlert(t, a)
}

func checkStored(t *testing.T, got storedAlert, want events.AlertEvent) {
	t.Helper()
	if !reflect.DeepEqual(got.alert, want) {
		t.Fatalf("alert\n got %+v\nwant %+v", got.alert, want)
	}
	if got.subject != events.AlertSubject(want.Receiver) {
		t.Fatalf("subject %q, want %q", got.subject, events.AlertSubject(want.Receiver))
	}
	if id := got.header.Get(events.HeaderMsgID); id != want.ID {
		t.Fatalf("Nats-Msg-Id %q, want %q", id, want.ID)
	}
	if tp := got.header.Get("traceparent"); !strings.HasPrefix(tp, "00-") {
		t.Fatalf("traceparent %q", tp)
	}
}

func TestOfflineAfterGraceThenResolved(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, testConfig("ops", "on call"))
	const dev, node = "plant-7/line.2 ü", "emqx@10.0.0.1"

	h.clock.set(t0 + 10_001)
	h.waitProcessed(t, h.publish(t,
		connected(t, dev, node, t0),
		disconnected(t, dev, node, t0, t0+10_000, events.ReasonKeepaliveTimeout)))
	h.wantAlerts(t, 0)

	h.clock.set(t0 + 39_999) // grace not over yet
	h.waitTicks(t, 2)
	h.wantAlerts(t, 0)

	h.clock.set(t0 + 40_000)
	got := h.waitAlerts(t, 2)
	checkStored(t, got[0], offlineAlert(t, "ops", dev, node, events.StatusFiring, t0+10_000, 0, t0+40_000))
	checkStored(t, got[1], offlineAlert(t, "on call", dev, node, events.StatusFiring, t0+10_000, 0, t0+40_000))

	h.clock.set(t0 + 1_000_000)
	h.waitTicks(t, 2)
	h.wantAlerts(t, 2) // fired once

	back := connected(t, dev, "emqx@10.0.0.2", t0+100_000)
	h.publish(t, back)
	got = h.waitAlerts(t, 4)
	checkStored(t, got[2], offlineAlert(t, "ops", dev, node, events.StatusResolved, t0+10_000, t0+100_000, back.ReceivedAtMS))
	checkStored(t, got[3], offlineAlert(t, "on call", dev, node, events.StatusResolved, t0+10_000, t0+100_000, back.ReceivedAtMS))

	if d := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_decisions", "status"); d["firing"] != 2 || d["resolved"] != 2 {
		t.Fatalf("decisions metric %v", d)
	}
	if e := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_events", "outcome"); e["applied"] != 3 {
		t.Fatalf("events metric %v", e)
	}
	if g := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_devices", ""); g[""] != 1 {
		t.Fatalf("devices metric %v", g)
	}
}

func TestBlipWithinGraceIsNotAlerted(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, testConfig("ops"))
	h.clock.set(t0 + 100_000)
	h.waitProcessed(t, h.publish(t,
		connected(t, "d1", "n1", t0),
		disconnected(t, "d1", "n1", t0, t0+10_000, events.ReasonClosed),
		connected(t, "d1", "n1", t0+20_000)))
	h.wantAlerts(t, 0)
	if b := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_blips", ""); b[""] != 1 {
		t.Fatalf("blips metric %v", b)
	}
}

func TestTakeoverIsNotAnOutage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		order func(cA, dA, cB events.PresenceEvent) []events.PresenceEvent
	}{
		{"disconnect first", func(cA, dA, cB events.PresenceEvent) []events.PresenceEvent {
			return []events.PresenceEvent{cA, dA, cB}
		}},
		{"connect first", func(cA, dA, cB events.PresenceEvent) []events.PresenceEvent {
			return []events.PresenceEvent{cA, cB, dA}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.start(t, testConfig("ops"))
			cA := connected(t, "d1", "n1", t0)
			dA := disconnected(t, "d1", "n1", t0, t0+50_000, events.ReasonTakenOver)
			cB := connected(t, "d1", "n2", t0+50_001)
			evs := tc.order(cA, dA, cB)
			// The first two arrive, and the clock passes the grace period
			// before the third: a takenover disconnect alone never alerts.
			h.clock.set(t0 + 500_000)
			h.waitProcessed(t, h.publish(t, evs[:2]...))
			h.wantAlerts(t, 0)
			h.waitProcessed(t, h.publish(t, evs[2]))
			h.clock.set(t0 + 1_000_000)
			h.waitTicks(t, 2)
			h.wantAlerts(t, 0)
		})
	}
}

func TestRestartMidOutage(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig("ops")
	first := h.start(t, cfg)
	h.clock.set(t0 + 10_001)
	h.waitProcessed(t, h.publish(t,
		connected(t, "d1", "n1", t0),
		disconnected(t, "d1", "n1", t0, t0+10_000, events.ReasonKeepaliveTimeout),
		connected(t, "d2", "n1", t0),
		disconnected(t, "d2", "n1", t0, t0+20_000, events.ReasonKeepaliveTimeout)))
	h.clock.set(t0 + 40_000) // d1's grace is over, d2's is not
	fired := h.waitAlerts(t, 1)
	checkStored(t, fired[0], offlineAlert(t, "ops", "d1", "n1", events.StatusFiring, t0+10_000, 0, t0+40_000))
	first.stop()

	// A new instance on the same streams: d1 stays alerted without a second
	// firing, d2's pending alert is not lost.
	h.clock.set(t0 + 45_000)
	second := h.start(t, cfg)
	h.waitTicks(t, 3)
	h.wantAlerts(t, 1)
	h.clock.set(t0 + 50_000)
	got := h.waitAlerts(t, 2)
	checkStored(t, got[1], offlineAlert(t, "ops", "d2", "n1", events.StatusFiring, t0+20_000, 0, t0+50_000))

	back := connected(t, "d1", "n2", t0+60_000)
	h.publish(t, back)
	got = h.waitAlerts(t, 3)
	checkStored(t, got[2], offlineAlert(t, "ops", "d1", "n1", events.StatusResolved, t0+10_000, t0+60_000, back.ReceivedAtMS))

	// The second instance published exactly d2's firing and d1's resolved:
	// nothing was re-sent (and hidden by JetStream's duplicate window).
	if d := telemetrytest.Int64s(t, second.metrics, "fleetwatch_evaluator_decisions", "status"); d["firing"] != 1 || d["resolved"] != 1 {
		t.Fatalf("second instance decisions %v", d)
	}
	ids := map[string]bool{}
	for _, a := range got {
		ids[a.alert.ID] = true
	}
	if len(ids) != 3 {
		t.Fatalf("alert ids not distinct: %v", ids)
	}
}

func TestRestartWhileDeviceCameBack(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig("ops")
	first := h.start(t, cfg)
	h.clock.set(t0 + 40_000)
	h.publish(t,
		connected(t, "d1", "n1", t0),
		disconnected(t, "d1", "n1", t0, t0+10_000, events.ReasonKeepaliveTimeout))
	h.waitAlerts(t, 1)
	first.stop()

	// The device comes back while no evaluator runs; the next one resolves
	// the alert during recovery.
	back := connected(t, "d1", "n1", t0+70_000)
	h.publish(t, back)
	h.clock.set(t0 + 80_000)
	second := h.start(t, cfg)
	got := h.waitAlerts(t, 2)
	checkStored(t, got[1], offlineAlert(t, "ops", "d1", "n1", events.StatusResolved, t0+10_000, t0+70_000, back.ReceivedAtMS))
	h.waitProcessed(t, 3)
	h.wantAlerts(t, 2)
	if d := telemetrytest.Int64s(t, second.metrics, "fleetwatch_evaluator_decisions", "status"); d["firing"] != 0 || d["resolved"] != 1 {
		t.Fatalf("second instance decisions %v", d)
	}
}

func TestBadInputIsDeadLettered(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, testConfig("ops"))

	garbage := nats.NewMsg(events.PresenceSubject("dev-x", events.DefaultPartitions))
	garbage.Data = []byte(`{"v":1,"device_id":`)
	garbage.Header.Set(events.HeaderMsgID, "garbage-1")
	if _, err := h.js.PublishMsg(t.Context(), garbage); err != nil {
		t.Fatal(err)
	}
	// A valid event on another device's subject.
	e := disconnected(t, "dev-y", "n1", t0, t0+1_000, events.ReasonClosed)
	misrouted := nats.NewMsg(events.PresenceSubject("dev-z", events.DefaultPartitions))
	misrouted.Data, _ = json.Marshal(e)
	misrouted.Header.Set(events.HeaderMsgID, e.ID)
	ack, err := h.js.PublishMsg(t.Context(), misrouted)
	if err != nil {
		t.Fatal(err)
	}
	h.waitProcessed(t, ack.Sequence)

	dl := h.streamMsgs(t, events.StreamDeadLetter)
	if len(dl) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dl))
	}
	for i, want := range []struct {
		payload []byte
		reason  string
	}{
		{garbage.Data, "decode presence event: unexpected end of JSON input"},
		{misrouted.Data, `subject "` + misrouted.Subject + `" does not match device_id "dev-y"`},
	} {
		m := dl[i]
		if m.Subject != events.DeadLetterSubject("evaluator", "presence") || string(m.Data) != string(want.payload) ||
			m.Header.Get(events.HeaderStage) != "evaluator" || m.Header.Get(events.HeaderTopic) == "" ||
			!strings.HasPrefix(m.Header.Get(events.HeaderReason), want.reason) {
			t.Fatalf("dead letter %d: subject %q headers %v data %q", i, m.Subject, m.Header, m.Data)
		}
	}
	if e := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_events", "outcome"); e["dead_lettered"] != 2 {
		t.Fatalf("events metric %v", e)
	}

	// The evaluator goes on.
	h.clock.set(t0 + 100_000)
	h.publish(t, disconnected(t, "d1", "n1", t0, t0+1_000, events.ReasonClosed))
	h.waitAlerts(t, 1)
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *evaluator.Config)
		want string
	}{
		{"default", func(*evaluator.Config) {}, ""},
		{"grace", func(c *evaluator.Config) { c.Grace = -time.Second }, "evaluator.grace is -1s: set a positive duration, e.g. 30s"},
		{"tick", func(c *evaluator.Config) { c.Tick = 0 }, "evaluator.tick is 0s: set a positive duration, e.g. 1s"},
		{"tick above grace", func(c *evaluator.Config) { c.Grace = time.Second; c.Tick = 2 * time.Second },
			"evaluator.tick 2s is longer than evaluator.grace 1s: use a tick of at most the grace, e.g. 1s"},
		{"no receivers", func(c *evaluator.Config) { c.Receivers = nil }, "evaluator.receivers is empty: list at least one receiver name, e.g. [default]"},
		{"empty receiver", func(c *evaluator.Config) { c.Receivers = []string{"a", ""} }, "evaluator.receivers[1] is empty: name the receiver, e.g. default"},
		{"duplicate receiver", func(c *evaluator.Config) { c.Receivers = []string{"a", "a"} }, `evaluator.receivers[1] "a" is listed twice: remove the duplicate`},
		{"severity", func(c *evaluator.Config) { c.Severity = "page" }, `evaluator.severity is "page": use info, warning or critical`},
		{"partitions", func(c *evaluator.Config) { c.Partitions = -1 }, "evaluator.partitions is -1: use the ingest's partition count (default 64)"},
		{"fetch batch", func(c *evaluator.Config) { c.FetchBatch = 0 }, "evaluator.fetch_batch is 0: use 1 to 10000, e.g. 256"},
		{"ack wait", func(c *evaluator.Config) { c.AckWait = time.Millisecond }, "evaluator.ack_wait is 1ms: use at least 1s, e.g. 30s"},
		{"labels", func(c *evaluator.Config) { c.Labels.Username = "node" },
			`evaluator.labels.username "node" is implicit (device_id, node and reason are set by the evaluator): pick another name`},
		{"route matcher", func(c *evaluator.Config) {
			c.Route = &route.Config{Routes: []route.Config{{}, {Matchers: []string{"site~a"}}}}
		}, `evaluator.route.routes[1].matchers[0] "site~a": invalid matcher: no operator: write name=value, name!=value, name=~regexp or name!~regexp`},
		{"route root matchers", func(c *evaluator.Config) { c.Route = &route.Config{Matchers: []string{"a=b"}} },
			"evaluator.route.matchers is set: the root route matches every alert, move the matchers to a child route"},
		{"node severity", func(c *evaluator.Config) { c.NodeSeverity = "loud" }, `evaluator.node_severity is "loud": use info, warning or critical`},
		{"snapshot interval", func(c *evaluator.Config) { c.SnapshotInterval = 10 * time.Millisecond },
			"evaluator.snapshot_interval is 10ms: use at least 1s, e.g. 1m"},
		{"snapshot bucket", func(c *evaluator.Config) { c.SnapshotBucket = "a b" },
			`evaluator.snapshot_bucket is "a b": use letters, digits, _ and -, e.g. fleetwatch_evaluator_snapshots`},
		{"correlation on", func(c *evaluator.Config) {
			c.Correlation = tracker.Correlation{Keys: []string{"site", "node"}, Window: time.Minute, MinDevices: 20, MinRatio: 0.3}
		}, ""},
		{"correlation without keys", func(c *evaluator.Config) { c.Correlation = tracker.Correlation{MinDevices: 20} },
			"evaluator.correlation.keys is empty but other settings are set: name the topology labels, e.g. [site, gateway]"},
		{"correlation key", func(c *evaluator.Config) {
			c.Correlation = tracker.Correlation{Keys: []string{"device_id"}, Window: time.Minute, MinDevices: 2}
		},
			`evaluator.correlation.keys[0] "device_id" is not a topology label: use a label shared by devices, e.g. site, gateway or node`},
		{"correlation window", func(c *evaluator.Config) { c.Correlation = tracker.Correlation{Keys: []string{"site"}, MinDevices: 2} },
			"evaluator.correlation.window is 0s: use a positive duration, e.g. 2m"},
		{"correlation threshold", func(c *evaluator.Config) {
			c.Correlation = tracker.Correlation{Keys: []string{"site"}, Window: time.Minute}
		},
			"evaluator.correlation: set min_devices, min_ratio or both, e.g. min_devices: 20"},
		{"correlation ratio", func(c *evaluator.Config) {
			c.Correlation = tracker.Correlation{Keys: []string{"site"}, Window: time.Minute, MinRatio: 30}
		}, "evaluator.correlation.min_ratio is 30: use a fraction from 0 to 1, e.g. 0.3 for 30 %"},
		{"correlation severity", func(c *evaluator.Config) {
			c.Correlation = tracker.Correlation{Keys: []string{"site"}, Window: time.Minute, MinDevices: 5, Severity: "page"}
		}, `evaluator.correlation.severity is "page": use info, warning or critical`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := evaluator.DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			if (err == nil && tc.want != "") || (err != nil && err.Error() != tc.want) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestNewFillsDefaults(t *testing.T) {
	h := newHarness(t)
	// The dev stack constructs the service with only a short grace.
	svc, err := evaluator.New(evaluator.Config{Grace: 500 * time.Millisecond}, evaluator.Deps{NATS: h.nc})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Ready() == nil {
		t.Fatal("ready before Run")
	}
	if _, err := evaluator.New(evaluator.Config{Grace: -1}, evaluator.Deps{NATS: h.nc}); err == nil {
		t.Fatal("negative grace accepted")
	}
	if _, err := evaluator.New(evaluator.Config{}, evaluator.Deps{}); err == nil || err.Error() != "evaluator: Deps.NATS is nil: pass a connected *nats.Conn" {
		t.Fatalf("nil NATS: %v", err)
	}
}

// TestGroupedNotifications routes by a label from the inventory: two devices
// of one site that go down together make one notification per receiver, and
// their recovery one more.
func TestGroupedNotifications(t *testing.T) {
	h := newHarness(t)
	inv := t.TempDir() + "/inventory.csv"
	if err := os.WriteFile(inv, []byte("device_id,site\nd1,plant-7\nd2,plant-7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("ops")
	cfg.Labels = labels.Config{Inventory: labels.InventoryConfig{File: inv}}
	wait := 10 * time.Second
	cfg.Route = &route.Config{GroupBy: []string{"site"}, GroupWait: &wait, Routes: []route.Config{
		{Matchers: []string{"site=plant-7"}, Receivers: []string{"plant7", "ops"}},
	}}
	h.start(t, cfg)
	h.clock.set(t0 + 20_000)
	h.waitProcessed(t, h.publish(t,
		disconnected(t, "d1", "n1", t0, t0+10_000, events.ReasonKeepaliveTimeout),
		disconnected(t, "d2", "n1", t0, t0+11_000, events.ReasonKeepaliveTimeout)))
	h.clock.set(t0 + 41_000) // both fired; the group waits 10s
	h.waitTicks(t, 2)
	h.wantAlerts(t, 0)
	h.clock.set(t0 + 51_000)
	got := h.waitAlerts(t, 2)
	for i, rc := range []string{"plant7", "ops"} {
		a := got[i].alert
		if a.Receiver != rc || a.Status != events.StatusFiring || a.GroupKey != `root.0{site="plant-7"}` || a.DevicesTotal != 2 ||
			a.Devices[0].DeviceID != "d1" || a.Devices[1].DeviceID != "d2" || a.Devices[0].Labels["site"] != "plant-7" ||
			a.StartsAtMS != t0+10_000 || got[i].header.Get(events.HeaderMsgID) != a.ID {
			t.Fatalf("notification %d: %+v", i, a)
		}
	}
	h.publish(t, connected(t, "d1", "n1", t0+60_000), connected(t, "d2", "n1", t0+61_000))
	got = h.waitAlerts(t, 6) // no group_interval: each recovery is reported at once
	if a := got[5].alert; a.Status != events.StatusResolved || a.EndsAtMS != t0+61_000 || a.Devices[0].DeviceID != "d2" {
		t.Fatalf("last notification %+v", a)
	}
}

func TestNewRejectsBadInventory(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig("ops")
	cfg.Labels.Inventory.File = t.TempDir() + "/missing.yaml"
	_, err := evaluator.New(cfg, evaluator.Deps{NATS: h.nc})
	if err == nil || !strings.HasPrefix(err.Error(), "evaluator.labels.inventory: read inventory: open ") {
		t.Fatalf("New = %v", err)
	}
}

// TestLoneEventIsNotHeldForATick checks that a single presence event is
// decided when it arrives, not when a fetch waiting for a full batch gives
// up. With a one-minute tick, the resolved alert of a reconnect must be
// published well before the next tick.
func TestLoneEventIsNotHeldForATick(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig("ops")
	cfg.Grace, cfg.Tick = time.Minute, time.Minute
	const dev, node = "dev-lone", "emqx@10.0.0.1"
	// An outage whose grace ended while no evaluator ran: the start-up tick
	// fires it.
	h.publish(t, connected(t, dev, node, t0), disconnected(t, dev, node, t0, t0+1_000, events.ReasonKeepaliveTimeout))
	h.clock.set(t0 + 10*60_000)
	h.start(t, cfg)
	h.waitAlerts(t, 1)

	back := connected(t, dev, node, t0+9*60_000)
	h.publish(t, back)
	got := h.waitAlerts(t, 2) // fails after 15 s if the event waits for the 1-minute tick
	checkStored(t, got[1], offlineAlert(t, "ops", dev, node, events.StatusResolved, t0+1_000, t0+9*60_000, back.ReceivedAtMS))
}

// TestBacklogDoesNotFireFalseAlerts checks the event-time watermark: with
// the clock far past a disconnect's grace and the device's reconnect still
// queued behind other events, ticks while the consumer has a backlog must
// not fire the outage. One message per fetch makes the backlog long; the
// clock jumps only once every event is in the stream, so that "caught up"
// always means the reconnect was applied.
func TestBacklogDoesNotFireFalseAlerts(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig("ops")
	cfg.FetchBatch = 1
	h.start(t, cfg)

	const dev, node = "dev-behind", "emqx@10.0.0.1"
	es := []events.PresenceEvent{connected(t, dev, node, t0), disconnected(t, dev, node, t0, t0+1_000, events.ReasonKeepaliveTimeout)}
	for i := range 500 {
		es = append(es, connected(t, fmt.Sprintf("filler-%03d", i), node, t0+2_000+int64(i)))
	}
	es = append(es, connected(t, dev, node, t0+20_000)) // back within the 30 s grace
	for _, e := range es {
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(events.PresenceSubject(e.DeviceID, events.DefaultPartitions))
		m.Data = data
		m.Header.Set(events.HeaderMsgID, e.ID)
		if _, err := h.js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-h.js.PublishAsyncComplete():
	case <-time.After(15 * time.Second):
		t.Fatal("publishes not acknowledged")
	}
	h.clock.set(t0 + 60*60_000) // an hour later: every grace has passed by the clock
	s, err := h.js.Stream(t.Context(), events.StreamPresence)
	if err != nil {
		t.Fatal(err)
	}
	h.waitProcessed(t, s.CachedInfo().State.LastSeq)
	h.waitTicks(t, 3)
	h.wantAlerts(t, 0)
}
