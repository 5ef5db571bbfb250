package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/dingtalk"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/feishu"
	"github.com/fleetwatch/fleetwatch/services/notifier/ratelimit"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	dtSecret = "SEC0123456789abcdef"
	fsSecret = "test-secret"
)

type harness struct {
	t     *testing.T
	nc    *nats.Conn
	js    jetstream.JetStream
	sim   *chatsim.Server
	dir   string
	clock *testClock
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessScaled(t, 1)
}

// newHarnessScaled runs the notifier and chatsim on a test clock scale
// times faster than the wall clock.
func newHarnessScaled(t *testing.T, scale float64) *harness {
	t.Helper()
	clock := newTestClock(scale)
	ns := natstest.Start(t)
	nc, js := ns.Connect(t)
	topo := events.DefaultTopology()
	topo.MemoryStorage = true
	if err := events.EnsureStreams(t.Context(), js, topo); err != nil {
		t.Fatal(err)
	}
	sim := chatsim.New(chatsim.Config{
		DingTalk: []chatsim.Robot{{Name: "dt", Token: "dt-token", Secret: dtSecret, Keywords: []string{"告警"}}},
		Feishu:   []chatsim.Robot{{Name: "fs", Token: "fs-token", Secret: fsSecret, Keywords: []string{"告警"}}},
		Now:      clock.Now,
		Keep:     100000,
	})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return &harness{t: t, nc: nc, js: js, sim: sim, dir: t.TempDir(), clock: clock}
}

func (h *harness) file(name, content string) string {
	h.t.Helper()
	p := filepath.Join(h.dir, name)
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// config has a DingTalk receiver "ops-dt" and a Feishu receiver "ops-fs",
// both signing and keyword-protected, and fast retries.
func (h *harness) config() Config {
	cfg := DefaultConfig()
	cfg.Backoff = Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond}
	cfg.AckWait = 30 * time.Second
	cfg.RequestTimeout = 5 * time.Second
	cfg.Receivers = []Receiver{
		{Name: "ops-dt", Channel: ChannelDingTalk, DingTalk: &dingtalk.Config{
			URL: h.sim.DingTalkURL("dt-token"), SecretFile: h.file("dt.secret", dtSecret), Keyword: "告警", AtMobiles: []string{"13800001111"},
		}},
		{Name: "ops-fs", Channel: ChannelFeishu, Feishu: &feishu.Config{
			URL: "fs-token", BaseURL: h.sim.URL() + "/open-apis/bot/v2/hook/", SecretFile: h.file("fs.secret", fsSecret), Keyword: "告警", Language: "en",
		}},
	}
	return cfg
}

// run starts a service and returns a function that stops it.
func (h *harness) run(cfg Config) (*Service, func()) {
	h.t.Helper()
	return h.runLevel(cfg, slog.LevelDebug)
}

// runLevel is run with a log level.
func (h *harness) runLevel(cfg Config, level slog.Level) (*Service, func()) {
	h.t.Helper()
	return h.runDeps(cfg, Deps{Logger: slog.New(slog.NewTextHandler(h.t.Output(), &slog.HandlerOptions{Level: level}))})
}

// runDeps is run with deps (NATS and the clock are filled in).
func (h *harness) runDeps(cfg Config, deps Deps) (*Service, func()) {
	h.t.Helper()
	deps.NATS, deps.Now, deps.SleepUntil = h.nc, h.clock.Now, h.clock.SleepUntil
	svc, err := New(cfg, deps)
	if err != nil {
		h.t.Fatal(err)
	}
	if svc.Ready() == nil {
		h.t.Fatal("ready before Run")
	}
	ctx, cancel := context.WithCancel(h.t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("Run: %v", err)
		}
	}
	h.t.Cleanup(stop)
	h.poll("the service to be ready", func() bool { return svc.Ready() == nil })
	return svc, stop
}

// poll waits for cond, checking every 10 ms for up to 20 s.
func (h *harness) poll(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alert(receiver string, devices int) events.AlertEvent {
	a := events.AlertEvent{
		Fingerprint: "fp-" + receiver, Receiver: receiver, Status: events.StatusFiring, Kind: events.AlertDeviceOffline,
		Severity: events.SeverityCritical, GroupKey: "site=sh-01", GroupLabels: map[string]string{"site": "sh-01"},
		StartsAtMS: time.Now().Add(-time.Minute).UnixMilli(), CreatedAtMS: time.Now().UnixMilli(),
	}
	for i := range devices {
		a.Devices = append(a.Devices, events.AlertDevice{DeviceID: fmt.Sprintf("dev-%d", i), Status: events.StatusFiring,
			Node: "emqx@n1", Reason: events.ReasonKeepaliveTimeout, SinceMS: a.StartsAtMS})
	}
	a, err := events.NewAlertEvent(a)
	if err != nil {
		panic(err)
	}
	return a
}

// publish stores a in ALERTS with the given Nats-Msg-Id (the alert id when
// empty) and returns its stream sequence.
func (h *harness) publish(a events.AlertEvent, msgID string) uint64 {
	h.t.Helper()
	data, err := json.Marshal(a)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.publishRaw(a.Subject(), data, msgID, a.ID)
}

func (h *harness) publishRaw(subject string, data []byte, msgID, fallback string) uint64 {
	h.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = data
	if msgID == "" {
		msgID = fallback
	}
	m.Header.Set(events.HeaderMsgID, msgID)
	ack, err := h.js.PublishMsg(h.t.Context(), m)
	if err != nil {
		h.t.Fatal(err)
	}
	return ack.Sequence
}

// settled waits until the notifier consumer has acked every ALERTS message
// up to seq and has nothing pending.
func (h *harness) settled(seq uint64) {
	h.t.Helper()
	h.poll(fmt.Sprintf("alerts up to seq %d to be acked", seq), func() bool {
		c, err := h.js.Consumer(h.t.Context(), events.StreamAlerts, events.ConsumerNotifier)
		if err != nil {
			return false
		}
		info, err := c.Info(h.t.Context())
		return err == nil && info.AckFloor.Stream >= seq && info.NumAckPending == 0 && info.NumPending == 0
	})
}

func (h *harness) streamMsgs(stream string) []*jetstream.RawStreamMsg {
	h.t.Helper()
	s, err := h.js.Stream(h.t.Context(), stream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(h.t.Context())
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(h.t.Context(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			h.t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func (h *harness) deliveries() []events.DeliveryEvent {
	h.t.Helper()
	var out []events.DeliveryEvent
	for _, m := range h.streamMsgs(events.StreamDeliveries) {
		var d events.DeliveryEvent
		if err := json.Unmarshal(m.Data, &d); err != nil {
			h.t.Fatal(err)
		}
		if err := d.Validate(); err != nil {
			h.t.Fatalf("invalid delivery event: %v", err)
		}
		if m.Header.Get(events.HeaderMsgID) != d.ID || m.Subject != events.DeliverySubject(d.Receiver) {
			h.t.Fatalf("delivery event msg id %q subject %q for %+v", m.Header.Get(events.HeaderMsgID), m.Subject, d)
		}
		out = append(out, d)
	}
	return out
}

// waitQueued waits until svc's receiver holds exactly n alerts in its
// queue, waiting for the sender. The consumer's NumAckPending is not
// enough before a clock jump: it counts the messages JetStream handed to
// the client, which may still sit in the intake (an InProgress and a KV
// read each, one by one) when the jump lets the sender take the queue.
func (h *harness) waitQueued(svc *Service, receiver string, n int) {
	h.t.Helper()
	r := svc.receivers[receiver]
	if r == nil {
		h.t.Fatalf("no receiver %q", receiver)
	}
	h.poll(fmt.Sprintf("%d alerts queued for %s", n, receiver), func() bool { return r.queued() == n })
}

func (h *harness) waitDeliveries(n int) []events.DeliveryEvent {
	h.t.Helper()
	var ds []events.DeliveryEvent
	h.poll(fmt.Sprintf("%d delivery events", n), func() bool { ds = h.deliveries(); return len(ds) >= n })
	return ds
}

func TestDeliversOnceToDingTalkAndFeishu(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	_, stop := h.run(cfg)

	dt, fs := alert("ops-dt", 3), alert("ops-fs", 2)
	h.publish(dt, "")
	seq := h.publish(fs, "")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := h.sim.WaitForMessages(ctx, 2); err != nil {
		t.Fatal(err)
	}
	h.settled(seq)

	dtMsgs, fsMsgs := h.sim.MessagesTo("dt"), h.sim.MessagesTo("fs")
	if len(dtMsgs) != 1 || len(fsMsgs) != 1 {
		t.Fatalf("dingtalk %d, feishu %d messages", len(dtMsgs), len(fsMsgs))
	}
	if m := dtMsgs[0]; !m.Signed || m.MsgUUID != dt.ID || m.Title != "【告警】3 台设备离线 · site=sh-01" || len(m.Mentions) != 1 {
		t.Fatalf("dingtalk message %+v", m)
	}
	if m := fsMsgs[0]; !m.Signed || m.Color != "red" || m.Title != "[告警] 2 devices offline · site=sh-01" {
		t.Fatalf("feishu message %+v", m)
	}

	ds := h.deliveries()
	if len(ds) != 2 {
		t.Fatalf("%d delivery events: %+v", len(ds), ds)
	}
	byReceiver := map[string]events.DeliveryEvent{}
	for _, d := range ds {
		byReceiver[d.Receiver] = d
	}
	for name, want := range map[string]struct {
		alert   events.AlertEvent
		channel string
	}{"ops-dt": {dt, "dingtalk"}, "ops-fs": {fs, "feishu"}} {
		d := byReceiver[name]
		if d.AlertID != want.alert.ID || d.Channel != want.channel || d.Attempt != 1 || d.Outcome != events.OutcomeDelivered ||
			d.HTTPStatus != 200 || d.RemoteCode != "0" || d.Bytes == 0 || d.Fingerprint != want.alert.Fingerprint || d.AlertStatus != events.StatusFiring {
			t.Fatalf("%s delivery event %+v", name, d)
		}
	}

	// The same alert id again (a replay with another msg id): acked, not sent.
	seq = h.publish(dt, "replay-1")
	h.settled(seq)
	// A restarted notifier remembers too.
	stop()
	h.run(cfg)
	seq = h.publish(fs, "replay-2")
	h.settled(seq)
	if n := len(h.sim.Messages()); n != 2 {
		t.Fatalf("%d messages after replays, want 2", n)
	}
	if n := len(h.deliveries()); n != 2 {
		t.Fatalf("%d delivery events after replays, want 2", n)
	}
	if n := h.sim.Requests(); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
}

func TestPermanentFailureIsRecordedNotRetried(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	cfg.Receivers[1].Feishu.SecretFile = h.file("wrong.secret", "not-the-secret")
	h.run(cfg)

	a := alert("ops-fs", 1)
	seq := h.publish(a, "")
	ds := h.waitDeliveries(1)
	h.settled(seq)
	d := ds[0]
	if d.Outcome != events.OutcomePermanent || d.RemoteCode != "19021" || d.HTTPStatus != 200 || d.Attempt != 1 ||
		!strings.Contains(d.Hint, "secret does not match") || d.AlertID != a.ID {
		t.Fatalf("delivery event %+v", d)
	}
	if n := h.sim.RejectionCount(chatsim.Feishu, 19021); n != 1 {
		t.Fatalf("19021 answered %d times, want 1", n)
	}
	if n := len(h.deliveries()); n != 1 || len(h.sim.Messages()) != 0 {
		t.Fatalf("%d delivery events, %d messages", n, len(h.sim.Messages()))
	}
	// The permanent outcome is final: a replay is not retried either.
	seq = h.publish(a, "replay")
	h.settled(seq)
	if n := h.sim.Requests(); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

func TestServerErrorIsRetriedThenDelivered(t *testing.T) {
	h := newHarness(t)
	h.sim.FailNext(chatsim.DingTalk, "dt-token", 2, 503)
	h.run(h.config())

	a := alert("ops-dt", 1)
	seq := h.publish(a, "")
	ds := h.waitDeliveries(3)
	h.settled(seq)
	want := []struct {
		outcome events.Outcome
		status  int
	}{{events.OutcomeRetryable, 503}, {events.OutcomeRetryable, 503}, {events.OutcomeDelivered, 200}}
	for i, w := range want {
		if d := ds[i]; d.Attempt != i+1 || d.Outcome != w.outcome || d.HTTPStatus != w.status || d.AlertID != a.ID {
			t.Fatalf("delivery %d = %+v, want attempt %d %s HTTP %d", i, d, i+1, w.outcome, w.status)
		}
	}
	if ds[0].Hint == "" {
		t.Fatal("retryable attempt without hint")
	}
	if n := len(h.sim.Messages()); n != 1 {
		t.Fatalf("%d messages", n)
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	h := newHarness(t)
	h.sim.FailNext(chatsim.Feishu, "fs-token", 10, 502)
	cfg := h.config()
	cfg.MaxAttempts = 2
	h.run(cfg)
	seq := h.publish(alert("ops-fs", 1), "")
	ds := h.waitDeliveries(2)
	h.settled(seq)
	if ds[0].Outcome != events.OutcomeRetryable || ds[1].Outcome != events.OutcomePermanent || !strings.HasPrefix(ds[1].Hint, "gave up after 2 attempts") {
		t.Fatalf("deliveries %+v", ds)
	}
	if n := len(h.deliveries()); n != 2 {
		t.Fatalf("%d delivery events", n)
	}
}

// numbered is a one-device alert for receiver with its own fingerprint.
func numbered(receiver string, i int) events.AlertEvent {
	a := alert(receiver, 1)
	a.Fingerprint, a.ID = fmt.Sprint("fp-", i), ""
	a.Devices[0].DeviceID = fmt.Sprint("dev-", i)
	a, err := events.NewAlertEvent(a)
	if err != nil {
		panic(err)
	}
	return a
}

// consumerInfo is the notifier consumer's state.
func (h *harness) consumerInfo() *jetstream.ConsumerInfo {
	h.t.Helper()
	c, err := h.js.Consumer(h.t.Context(), events.StreamAlerts, events.ConsumerNotifier)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := c.Info(h.t.Context())
	if err != nil {
		h.t.Fatal(err)
	}
	return info
}

func TestDingTalkBlockPausesReceiver(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	// No local limit worth the name: let the remote block happen.
	cfg.Receivers[0].RateLimit = []ratelimit.Window{{Count: 1000, Per: time.Minute}}
	svc, _ := h.run(cfg)
	var seq uint64
	for i := range 22 {
		seq = h.publish(numbered("ops-dt", i), "")
		if i < 20 {
			// One at a time, so they go out one by one.
			h.waitDeliveries(i + 1)
		}
	}
	// The 21st answer blocks the robot; the notifier then holds the rest.
	ds := h.waitDeliveries(21)
	counts := map[events.Outcome]int{}
	for _, d := range ds {
		counts[d.Outcome]++
	}
	if counts[events.OutcomeDelivered] != 20 || counts[events.OutcomeRateLimited] != 1 || ds[20].RemoteCode != "410100" ||
		!strings.Contains(ds[20].Hint, "10 minutes") {
		t.Fatalf("outcomes %v, last %+v", counts, ds[20])
	}
	h.poll("the last alert to be held", func() bool { return h.consumerInfo().Delivered.Stream >= seq })
	h.waitQueued(svc, "ops-dt", 2)
	if n := h.sim.Requests(); n != 21 {
		t.Fatalf("%d requests to the robot, want 21 (the blocked receiver must be paused)", n)
	}
	if info := h.consumerInfo(); info.NumAckPending != 2 {
		t.Fatalf("%d alerts pending, want the 2 held ones", info.NumAckPending)
	}
	// After the block the two held alerts go out (as two messages: the
	// budget is large), and the robot is not blocked again.
	h.clock.Advance(dingtalk.BlockDuration)
	h.settled(seq)
	if n := len(h.sim.MessagesTo("dt")); n != 22 {
		t.Fatalf("%d messages, want 22", n)
	}
	if n := h.sim.RejectionCount(chatsim.DingTalk, 410100); n != 1 {
		t.Fatalf("410100 answered %d times", n)
	}
}

func TestLocalRateLimitHoldsAlerts(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	cfg.Receivers[0].RateLimit = []ratelimit.Window{{Count: 1, Per: time.Hour}}
	svc, _ := h.run(cfg)
	h.publish(numbered("ops-dt", 1), "")
	h.waitDeliveries(1)
	second := numbered("ops-dt", 2)
	seq := h.publish(second, "")
	h.poll("the second alert to be held", func() bool {
		info := h.consumerInfo()
		return info.Delivered.Stream >= seq && info.NumAckPending == 1
	})
	h.waitQueued(svc, "ops-dt", 1)
	if n := h.sim.Requests(); n != 1 || len(h.deliveries()) != 1 {
		t.Fatalf("%d requests, %d delivery events while held", n, len(h.deliveries()))
	}
	h.clock.Advance(time.Hour)
	ds := h.waitDeliveries(2)
	h.settled(seq)
	if ds[1].AlertID != second.ID || ds[1].Outcome != events.OutcomeDelivered || ds[1].Attempt != 1 {
		t.Fatalf("deliveries %+v", ds)
	}
	if n := h.sim.Requests(); n != 2 {
		t.Fatalf("%d requests", n)
	}
}

func TestBadAlertsAreDeadLettered(t *testing.T) {
	h := newHarness(t)
	h.run(h.config())
	h.publishRaw(events.AlertSubject("ops-dt"), []byte("{not json"), "bad-1", "")
	invalid := alert("ops-dt", 1)
	invalid.Severity = "fatal"
	data, _ := json.Marshal(invalid)
	seq := h.publishRaw(events.AlertSubject("ops-dt"), data, "bad-2", "")
	h.settled(seq)
	dls := h.streamMsgs(events.StreamDeadLetter)
	if len(dls) != 2 {
		t.Fatalf("%d dead letters", len(dls))
	}
	if r := dls[0].Header.Get(events.HeaderReason); !strings.HasPrefix(r, "alert is not valid JSON") || dls[0].Header.Get(events.HeaderStage) != "notifier" || string(dls[0].Data) != "{not json" {
		t.Fatalf("dead letter %q %v", r, dls[0].Header)
	}
	if r := dls[1].Header.Get(events.HeaderReason); !strings.Contains(r, `severity "fatal"`) {
		t.Fatalf("dead letter reason %q", r)
	}
	if h.sim.Requests() != 0 || len(h.deliveries()) != 0 {
		t.Fatal("a bad alert was sent")
	}
}

func TestSilencedAndUnknownReceiver(t *testing.T) {
	h := newHarness(t)
	h.run(h.config())
	silenced := alert("ops-dt", 1)
	silenced.Silenced, silenced.SilenceIDs = true, []string{"maint-1"}
	h.publish(silenced, "")
	inhibited := alert("ops-fs", 1)
	inhibited.Inhibited, inhibited.InhibitedBy = true, "fp-group-outage"
	h.publish(inhibited, "")
	unknown := alert("nobody", 1)
	seq := h.publish(unknown, "")
	h.settled(seq)
	if h.sim.Requests() != 0 {
		t.Fatal("sent something")
	}
	ds := h.deliveries()
	if len(ds) != 1 || ds[0].AlertID != unknown.ID || ds[0].Outcome != events.OutcomePermanent || ds[0].Channel != "unknown" ||
		!strings.Contains(ds[0].Hint, `receiver "nobody" is not configured`) {
		t.Fatalf("deliveries %+v", ds)
	}
}

func TestRetryDelay(t *testing.T) {
	s := &Service{cfg: Config{Backoff: Backoff{Initial: time.Second, Max: 30 * time.Second}}}
	tests := []struct {
		attempt    int
		retryAfter time.Duration
		lo, hi     time.Duration
	}{
		{1, 0, 500 * time.Millisecond, time.Second},
		{2, 0, time.Second, 2 * time.Second},
		{4, 0, 4 * time.Second, 8 * time.Second},
		{10, 0, 15 * time.Second, 30 * time.Second},
		{1000, 0, 15 * time.Second, 30 * time.Second},
		{1, 10 * time.Minute, 10 * time.Minute, 11*time.Minute + time.Second},
		{1, time.Second, time.Second, 2*time.Second + 100*time.Millisecond},
	}
	for _, tt := range tests {
		for range 50 {
			if d := s.retryDelay(tt.attempt, tt.retryAfter); d < tt.lo || d > tt.hi {
				t.Fatalf("retryDelay(%d, %s) = %s, want in [%s, %s]", tt.attempt, tt.retryAfter, d, tt.lo, tt.hi)
			}
		}
	}
}

func TestKVKey(t *testing.T) {
	if got := kvKey("0123abcd"); got != "0123abcd" {
		t.Fatalf("kvKey = %q", got)
	}
	for _, id := range []string{"a b", "设备", ".x", "x.", "a*b"} {
		if got := kvKey(id); !strings.HasPrefix(got, "h_") || len(got) != 34 {
			t.Fatalf("kvKey(%q) = %q", id, got)
		}
	}
}
