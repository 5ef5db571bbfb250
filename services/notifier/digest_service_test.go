package notifier

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/digest"
	"github.com/fleetwatch/fleetwatch/services/notifier/ratelimit"
)

func TestOneByOne(t *testing.T) {
	d := DefaultConfig().Digest
	dingtalk := []ratelimit.Window{{Count: 18, Per: time.Minute}}
	feishu := []ratelimit.Window{{Count: 4, Per: time.Second}, {Count: 95, Per: time.Minute}}
	slack := []ratelimit.Window{{Count: 1, Per: time.Second}}
	now := time.Unix(1700000000, 0)
	tests := []struct {
		name   string
		ws     []ratelimit.Window
		sent   int
		queued int
		want   bool
	}{
		{"a lone alert always goes alone", dingtalk, 18, 1, true},
		{"dingtalk: 13 fit and leave the reserve of 5", dingtalk, 0, 13, true},
		{"dingtalk: 14 would eat into the reserve", dingtalk, 0, 14, false},
		{"dingtalk: 3 after 10 sends", dingtalk, 10, 3, true},
		{"dingtalk: 4 after 10 sends", dingtalk, 10, 4, false},
		{"feishu: 12 go within 2s", feishu, 0, 12, true},
		{"feishu: 13 need more than 2s", feishu, 0, 13, false},
		{"slack: 3 go within 2s", slack, 0, 3, true},
		{"slack: 4 need 3s", slack, 0, 4, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l ratelimit.Log
			for range tt.sent {
				l.Add(tt.ws, now.Add(-10*time.Second))
			}
			if got := d.oneByOne(l, tt.ws, now, tt.queued); got != tt.want {
				t.Fatalf("oneByOne(%d queued after %d sent) = %v", tt.queued, tt.sent, got)
			}
		})
	}
}

// TestDigestIsAckedOnlyWhenDelivered holds nine alerts behind an empty
// budget, fails the digest's first attempt, and checks that nothing is
// acked until the retried digest (same msgUuid) is delivered, and that
// every folded alert is then recorded with the digest id.
func TestDigestIsAckedOnlyWhenDelivered(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	cfg.Receivers[0].RateLimit = []ratelimit.Window{{Count: 1, Per: time.Minute}}
	svc, _ := h.run(cfg)

	h.publish(numbered("ops-dt", 0), "")
	h.waitDeliveries(1)
	var alerts []events.AlertEvent
	var seq uint64
	for i := 1; i <= 9; i++ {
		a := numbered("ops-dt", i)
		alerts = append(alerts, a)
		seq = h.publish(a, "")
	}
	h.poll("nine alerts held", func() bool {
		info := h.consumerInfo()
		return info.Delivered.Stream >= seq && info.NumAckPending == 9
	})
	// All nine must be queued, not only handed to the client, or the jump
	// below lets the sender fold (or send alone) just the first few.
	h.waitQueued(svc, "ops-dt", 9)
	h.sim.FailNext(chatsim.DingTalk, "dt-token", 1, 502)
	h.clock.Advance(time.Minute)
	ds := h.waitDeliveries(1 + 9)
	for _, d := range ds[1:] {
		if d.Outcome != events.OutcomeRetryable || d.HTTPStatus != 502 || !strings.HasPrefix(d.Hint, "digest ") {
			t.Fatalf("first digest attempt %+v", d)
		}
	}
	if info := h.consumerInfo(); info.NumAckPending != 9 {
		t.Fatalf("%d pending after a failed digest, want 9", info.NumAckPending)
	}
	// The failed attempt used the budget's one slot: the retry waits for
	// the next minute.
	h.clock.Advance(time.Minute)
	h.settled(seq)
	ds = h.deliveries()
	if len(ds) != 1+9+9 {
		t.Fatalf("%d delivery events", len(ds))
	}
	ids := make([]string, len(alerts))
	for i, a := range alerts {
		ids[i] = a.ID
	}
	slices.Sort(ids)
	digestID := digest.ID("ops-dt", ids)
	for _, d := range ds[10:] {
		if d.Outcome != events.OutcomeDelivered || d.Attempt != 2 || d.Hint != "digest "+digestID[:12]+" of 9 alerts" {
			t.Fatalf("digest delivery %+v", d)
		}
	}
	msgs := h.sim.MessagesTo("dt")
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	if m := msgs[1]; m.Title != "【告警】告警汇总：9 台设备告警" || m.MsgUUID != digestID || !strings.Contains(m.Text, "- 另有 9 台") && !strings.Contains(m.Text, "dev-9") {
		t.Fatalf("digest message %q uuid %s\n%s", m.Title, m.MsgUUID, m.Text)
	}
	kv, err := h.js.KeyValue(t.Context(), cfg.Idempotency.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts {
		e, err := kv.Get(t.Context(), kvKey(a.ID))
		if err != nil {
			t.Fatal(err)
		}
		var rec record
		if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.Digest != digestID || rec.Outcome != events.OutcomeDelivered || rec.Attempt != 2 {
			t.Fatalf("record %s %v", e.Value(), err)
		}
	}
	// A replay of a folded alert is acked without sending.
	seq = h.publish(alerts[3], "replay")
	h.settled(seq)
	if n := h.sim.Requests(); n != 3 {
		t.Fatalf("%d requests", n)
	}
}
