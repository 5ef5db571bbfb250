package notifier

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/escalate"
	"github.com/nats-io/nats.go/jetstream"
)

// chainConfig is the harness config with the chain ops-dt → ops-fs after
// 30 minutes.
func (h *harness) chainConfig() Config {
	cfg := h.config()
	cfg.Receivers[0].Escalate = []EscalationStep{{After: 30 * time.Minute, Receiver: "ops-fs"}}
	cfg.Escalation.Check = time.Second
	return cfg
}

// episode builds a notification of one alert episode of ops-dt that
// started at start.
func episode(fp string, start time.Time, status events.AlertStatus, created time.Time, devices int) events.AlertEvent {
	a := events.AlertEvent{
		Fingerprint: fp, Receiver: "ops-dt", Status: status, Kind: events.AlertDeviceOffline, Severity: events.SeverityCritical,
		GroupKey: "site=sh-01", GroupLabels: map[string]string{"site": "sh-01"}, StartsAtMS: start.UnixMilli(), CreatedAtMS: created.UnixMilli(),
	}
	for i := range devices {
		d := events.AlertDevice{DeviceID: fmt.Sprintf("%s-dev-%d", fp, i), Status: status, Node: "emqx@n1", SinceMS: a.StartsAtMS}
		if status == events.StatusResolved {
			d.UntilMS = created.UnixMilli()
		}
		a.Devices = append(a.Devices, d)
	}
	if status == events.StatusResolved {
		a.EndsAtMS = created.UnixMilli()
	}
	a, err := events.NewAlertEvent(a)
	if err != nil {
		panic(err)
	}
	return a
}

func (h *harness) escalationRecord(a events.AlertEvent) (escalate.Record, bool) {
	h.t.Helper()
	kv, err := h.js.KeyValue(h.t.Context(), DefaultConfig().Escalation.Bucket)
	if err != nil {
		h.t.Fatal(err)
	}
	e, err := kv.Get(h.t.Context(), escalate.KeyOf(a))
	if err != nil {
		return escalate.Record{}, false
	}
	var r escalate.Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		h.t.Fatal(err)
	}
	return r, true
}

// copies are the escalation copies stored in ALERTS.
func (h *harness) copies() []*jetstream.RawStreamMsg {
	h.t.Helper()
	var out []*jetstream.RawStreamMsg
	for _, m := range h.streamMsgs(events.StreamAlerts) {
		if m.Header.Get(HeaderEscalatedFrom) != "" {
			out = append(out, m)
		}
	}
	return out
}

func (h *harness) waitMessages(robot string, n int) []chatsim.Message {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), 20*time.Second)
	defer cancel()
	if _, err := h.sim.WaitFor(ctx, func(ms []chatsim.Message) bool {
		k := 0
		for _, m := range ms {
			if m.Robot == robot {
				k++
			}
		}
		return k >= n
	}); err != nil {
		h.t.Fatalf("%d messages to %s: %v", n, robot, err)
	}
	return h.sim.MessagesTo(robot)
}

// TestEscalationChain: an alert of ops-dt still firing 30 minutes after it
// started is copied to ops-fs (marked as escalated); its resolved
// notification reaches both; every copy is an ordinary alert in ALERTS
// with its DeliveryEvents.
func TestEscalationChain(t *testing.T) {
	h := newHarness(t)
	h.run(h.chainConfig())
	start := h.clock.Now()
	a := episode("fp-a", start, events.StatusFiring, start.Add(time.Second), 2)
	h.publish(a, "")
	h.waitMessages("dt", 1)
	if r, ok := h.escalationRecord(a); !ok || r.Source != "ops-dt" || len(r.Sent) != 0 || r.Alert.ID != a.ID {
		t.Fatalf("record %+v, %t", r, ok)
	}
	if n := len(h.sim.MessagesTo("fs")); n != 0 {
		t.Fatalf("%d messages to fs before the step was due", n)
	}

	h.clock.Advance(30 * time.Minute)
	fs := h.waitMessages("fs", 1)
	if m := fs[0]; m.Title != "[告警] Escalated · 2 devices offline · site=sh-01" || !strings.Contains(m.Text, "**Escalated**: unresolved for 30m at receiver ops-dt") || m.Color != "red" {
		t.Fatalf("escalation message %q\n%s", m.Title, m.Text)
	}
	cs := h.copies()
	if len(cs) != 1 || cs[0].Subject != events.AlertSubject("ops-fs") || cs[0].Header.Get(HeaderEscalatedFrom) != "ops-dt" ||
		cs[0].Header.Get(HeaderEscalatedAfter) != "30m0s" || cs[0].Header.Get(events.HeaderMsgID) != escalate.CopyID("ops-fs", "ops-dt", "fp-a", events.StatusFiring, a.StartsAtMS) {
		t.Fatalf("copies %+v", cs)
	}
	h.poll("the step recorded", func() bool { r, _ := h.escalationRecord(a); return len(r.Sent) == 1 && r.Sent[0].Receiver == "ops-fs" })

	res := episode("fp-a", start, events.StatusResolved, h.clock.Now(), 2)
	seq := h.publish(res, "")
	h.waitMessages("dt", 2)
	fs = h.waitMessages("fs", 2)
	if m := fs[1]; !strings.HasPrefix(m.Title, "[告警] Escalated · Resolved: 2 devices back online after 30m") || m.Color != "green" {
		t.Fatalf("resolved copy %q", m.Title)
	}
	h.poll("the chain done", func() bool { r, _ := h.escalationRecord(a); return r.Done })
	h.poll("the copies acked", func() bool {
		c, err := h.js.Consumer(t.Context(), events.StreamAlerts, events.ConsumerNotifier)
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		return err == nil && info.AckFloor.Stream >= seq+1 && info.NumAckPending == 0 && info.NumPending == 0
	})
	byReceiver := map[string]int{}
	for _, d := range h.deliveries() {
		if d.Outcome != events.OutcomeDelivered {
			t.Fatalf("delivery %+v", d)
		}
		byReceiver[d.Receiver]++
	}
	if byReceiver["ops-dt"] != 2 || byReceiver["ops-fs"] != 2 || len(h.copies()) != 2 {
		t.Fatalf("deliveries %v, %d copies", byReceiver, len(h.copies()))
	}
	if rj := h.sim.Rejections(); len(rj) != 0 {
		t.Fatalf("rejections %+v", rj)
	}
}

// TestEscalationAcrossRestartsAndReplicas: the timer is a KV record, so a
// chain whose step comes due while no notifier runs fires when two new
// replicas start; they send one copy between them, and one resolved copy.
func TestEscalationAcrossRestartsAndReplicas(t *testing.T) {
	h := newHarness(t)
	cfg := h.chainConfig()
	_, stop1 := h.run(cfg)
	_, stop2 := h.run(cfg)
	start := h.clock.Now()
	a := episode("fp-r", start, events.StatusFiring, start, 1)
	seq := h.publish(a, "")
	h.waitMessages("dt", 1)
	h.settled(seq)
	stop1()
	stop2()

	h.clock.Advance(45 * time.Minute)
	h.run(cfg)
	h.run(cfg)
	h.waitMessages("fs", 1)
	h.poll("the step recorded", func() bool { r, _ := h.escalationRecord(a); return len(r.Sent) == 1 })
	res := episode("fp-r", start, events.StatusResolved, h.clock.Now(), 1)
	seq = h.publish(res, "")
	h.waitMessages("fs", 2)
	h.poll("the chain done", func() bool { r, _ := h.escalationRecord(a); return r.Done })
	h.settled(seq + 1)
	if fs := h.sim.MessagesTo("fs"); len(fs) != 2 || !strings.Contains(fs[0].Title, "Escalated · Device offline: fp-r-dev-0") ||
		!strings.Contains(fs[1].Title, "Escalated · Resolved: fp-r-dev-0 back online") {
		t.Fatalf("fs messages %+v", fs)
	}
	if n := len(h.copies()); n != 2 {
		t.Fatalf("%d copies in ALERTS, want 2", n)
	}
	if n := len(h.sim.MessagesTo("dt")); n != 2 {
		t.Fatalf("%d messages to dt", n)
	}
}

// TestEscalationCancelledPausedAndSkipped: a resolved alert cancels its
// chain; a silenced update pauses it until an unsilenced one comes; the
// evaluator's tier-1 alerts start no chain. A sentinel alert due at the
// same moment shows the escalator looked.
func TestEscalationCancelledPausedAndSkipped(t *testing.T) {
	h := newHarness(t)
	h.run(h.chainConfig())
	start := h.clock.Now()
	early := episode("fp-early", start, events.StatusFiring, start, 1)
	paused := episode("fp-paused", start, events.StatusFiring, start, 1)
	tier := episode("fp-tier", start, events.StatusFiring, start, 1)
	tier.Tier, tier.ID = 1, ""
	tier, _ = events.NewAlertEvent(tier)
	sentinel := episode("fp-sentinel", start, events.StatusFiring, start, 1)
	for _, a := range []events.AlertEvent{early, paused, tier, sentinel} {
		h.publish(a, "")
	}
	h.waitMessages("dt", 4)
	silenced := episode("fp-paused", start, events.StatusFiring, start.Add(time.Minute), 1)
	// The evaluator numbers a group's notifications: each has its own id.
	silenced.Silenced, silenced.SilenceIDs, silenced.ID = true, []string{"maint-1"}, events.ContentID(silenced.ID, "2")
	h.publish(silenced, "")
	seq := h.publish(episode("fp-early", start, events.StatusResolved, start.Add(10*time.Minute), 1), "")
	h.waitMessages("dt", 5)
	h.settled(seq)
	if r, _ := h.escalationRecord(early); !r.Done || len(r.Sent) != 0 {
		t.Fatalf("early record %+v", r)
	}
	if r, _ := h.escalationRecord(paused); !r.Paused() {
		t.Fatalf("paused record %+v", r)
	}
	if _, ok := h.escalationRecord(tier); ok {
		t.Fatal("a tier-1 alert started a chain")
	}

	h.clock.Advance(31 * time.Minute)
	fs := h.waitMessages("fs", 1)
	h.poll("the sentinel's step recorded", func() bool { r, _ := h.escalationRecord(sentinel); return len(r.Sent) == 1 })
	if len(fs) != 1 || !strings.Contains(fs[0].Title, "fp-sentinel-dev-0") {
		t.Fatalf("fs messages %+v", fs)
	}
	if r, _ := h.escalationRecord(paused); len(r.Sent) != 0 {
		t.Fatalf("the silenced alert escalated: %+v", r)
	}

	// The silence ends: the evaluator's next notification resumes the chain.
	back := episode("fp-paused", start, events.StatusFiring, start.Add(40*time.Minute), 1)
	back.ID = events.ContentID(back.ID, "3")
	h.publish(back, "")
	fs = h.waitMessages("fs", 2)
	if !strings.Contains(fs[1].Title, "fp-paused-dev-0") {
		t.Fatalf("fs messages %+v", fs)
	}
	if n := len(h.copies()); n != 2 {
		t.Fatalf("%d copies", n)
	}
}
