package notifier

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/slack"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/webhook"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/wecom"
)

// TestEveryChannel runs the service against every channel's strict
// server: a firing and a resolved alert reach each, with the keyword.
func TestEveryChannel(t *testing.T) {
	h := newHarness(t)
	kw := []string{"告警"}
	h.sim.AddRobot(chatsim.WeCom, chatsim.Robot{Name: "wc", Token: "wc-key", Keywords: kw})
	h.sim.AddRobot(chatsim.Slack, chatsim.Robot{Name: "sl", Token: "T0/B0/sl", Keywords: kw})
	h.sim.AddRobot(chatsim.Webhook, chatsim.Robot{Name: "wh", Token: "wh-token", Secret: "hook-secret", Keywords: kw})
	cfg := h.config()
	cfg.Receivers = append(cfg.Receivers,
		Receiver{Name: "ops-wc", Channel: ChannelWeCom, WeCom: &wecom.Config{URL: h.sim.WeComURL("wc-key"), Keyword: "告警"}},
		Receiver{Name: "ops-sl", Channel: ChannelSlack, Slack: &slack.Config{URL: h.sim.SlackURL("T0/B0/sl"), Keyword: "告警"}},
		Receiver{Name: "ops-wh", Channel: ChannelWebhook, Webhook: &webhook.Config{URL: h.sim.WebhookURL("wh-token"),
			SecretFile: h.file("hook.secret", "hook-secret"), Keyword: "告警"}},
	)
	h.run(cfg)
	var seq uint64
	robots := map[string]string{"ops-dt": "dt", "ops-fs": "fs", "ops-wc": "wc", "ops-sl": "sl", "ops-wh": "wh"}
	for name := range robots {
		a := alert(name, 2)
		h.publish(a, "")
		r := a
		r.Status, r.EndsAtMS, r.ID = events.StatusResolved, a.StartsAtMS+60_000, ""
		r, _ = events.NewAlertEvent(r)
		seq = h.publish(r, "")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := h.sim.WaitForMessages(ctx, 2*len(robots)); err != nil {
		t.Fatal(err)
	}
	h.settled(seq)
	if rj := h.sim.Rejections(); len(rj) != 0 {
		t.Fatalf("rejections %+v", rj)
	}
	for _, robot := range robots {
		msgs := h.sim.MessagesTo(robot)
		if len(msgs) != 2 {
			t.Fatalf("%s: %d messages", robot, len(msgs))
		}
		for _, m := range msgs {
			if !strings.Contains(m.Title+m.Text, "告警") {
				t.Fatalf("%s: message without the keyword %+v", robot, m)
			}
		}
	}
	if !h.sim.MessagesTo("wh")[0].Signed {
		t.Fatal("webhook message not signed")
	}
	for _, d := range h.deliveries() {
		if d.Outcome != events.OutcomeDelivered {
			t.Fatalf("delivery %+v", d)
		}
	}
}
