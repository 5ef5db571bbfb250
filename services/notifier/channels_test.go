package notifier

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/dingtalk"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/feishu"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/slack"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/webhook"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/wecom"
)

// TestEveryChannel runs the service against every channel's strict
// server, every message type included (DingTalk text and actionCard,
// Feishu post and text): a firing and a resolved alert reach each, with
// the keyword and the links to the fleetwatch views.
func TestEveryChannel(t *testing.T) {
	h := newHarness(t)
	kw := []string{"告警"}
	h.sim.AddRobot(chatsim.DingTalk, chatsim.Robot{Name: "dt-text", Token: "dt-text", Keywords: kw})
	h.sim.AddRobot(chatsim.DingTalk, chatsim.Robot{Name: "dt-card", Token: "dt-card", Keywords: kw})
	h.sim.AddRobot(chatsim.Feishu, chatsim.Robot{Name: "fs-post", Token: "fs-post", Keywords: kw})
	h.sim.AddRobot(chatsim.Feishu, chatsim.Robot{Name: "fs-text", Token: "fs-text", Keywords: kw})
	h.sim.AddRobot(chatsim.WeCom, chatsim.Robot{Name: "wc", Token: "wc-key", Keywords: kw})
	h.sim.AddRobot(chatsim.Slack, chatsim.Robot{Name: "sl", Token: "T0/B0/sl", Keywords: kw})
	h.sim.AddRobot(chatsim.Webhook, chatsim.Robot{Name: "wh", Token: "wh-token", Secret: "hook-secret", Keywords: kw})
	cfg := h.config()
	cfg.LinkBaseURL = "https://fleet.example.com"
	cfg.Receivers = append(cfg.Receivers,
		Receiver{Name: "ops-dt-text", Channel: ChannelDingTalk, DingTalk: &dingtalk.Config{URL: h.sim.DingTalkURL("dt-text"), Keyword: "告警",
			MsgType: dingtalk.MsgText, AtMobiles: []string{"13800001111"}}},
		Receiver{Name: "ops-dt-card", Channel: ChannelDingTalk, DingTalk: &dingtalk.Config{URL: h.sim.DingTalkURL("dt-card"), Keyword: "告警",
			MsgType: dingtalk.MsgActionCard}},
		Receiver{Name: "ops-fs-post", Channel: ChannelFeishu, Feishu: &feishu.Config{URL: h.sim.FeishuURL("fs-post"), Keyword: "告警",
			MsgType: feishu.MsgPost, MentionAll: true}},
		Receiver{Name: "ops-fs-text", Channel: ChannelFeishu, Feishu: &feishu.Config{URL: h.sim.FeishuURL("fs-text"), Keyword: "告警",
			MsgType: feishu.MsgText, Language: "en"}},
		Receiver{Name: "ops-wc", Channel: ChannelWeCom, WeCom: &wecom.Config{URL: h.sim.WeComURL("wc-key"), Keyword: "告警"}},
		Receiver{Name: "ops-sl", Channel: ChannelSlack, Slack: &slack.Config{URL: h.sim.SlackURL("T0/B0/sl"), Keyword: "告警"}},
		Receiver{Name: "ops-wh", Channel: ChannelWebhook, Webhook: &webhook.Config{URL: h.sim.WebhookURL("wh-token"),
			SecretFile: h.file("hook.secret", "hook-secret"), Keyword: "告警"}},
	)
	h.run(cfg)
	var seq uint64
	robots := map[string]string{"ops-dt": "dt", "ops-fs": "fs", "ops-wc": "wc", "ops-sl": "sl", "ops-wh": "wh",
		"ops-dt-text": "dt-text", "ops-dt-card": "dt-card", "ops-fs-post": "fs-post", "ops-fs-text": "fs-text"}
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
			// Every channel links the alert view (as a link, a button or a URL).
			if !strings.Contains(string(m.Body), "https://fleet.example.com/alerts/fp-") {
				t.Fatalf("%s: message without the alert link:\n%s", robot, m.Body)
			}
		}
	}
	wantTypes := map[string]string{"dt": "markdown", "dt-text": "text", "dt-card": "actionCard", "fs": "interactive", "fs-post": "post", "fs-text": "text"}
	for robot, mt := range wantTypes {
		if m := h.sim.MessagesTo(robot)[0]; m.MsgType != mt {
			t.Fatalf("%s: msg type %q, want %q", robot, m.MsgType, mt)
		}
	}
	if m := h.sim.MessagesTo("dt-text")[0]; len(m.Mentions) != 1 || m.Mentions[0] != "13800001111" {
		t.Fatalf("dt-text mentions %v silent %v", m.Mentions, m.SilentMentions)
	}
	if m := h.sim.MessagesTo("fs-post")[0]; len(m.Mentions) != 1 || m.Mentions[0] != "all" {
		t.Fatalf("fs-post mentions %v", m.Mentions)
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
