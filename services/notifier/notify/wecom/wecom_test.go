package wecom

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/notifytest"
)

func alert(n int, idLen int) events.AlertEvent {
	a := events.AlertEvent{Fingerprint: "fp", Receiver: "ops", Status: events.StatusFiring, Kind: events.AlertDeviceOffline,
		Severity: events.SeverityCritical, GroupLabels: map[string]string{"site": "sh-01"}, StartsAtMS: 1714528800000, DevicesTotal: n}
	for i := range min(n, events.MaxAlertDevices) {
		id := fmt.Sprintf("dev-%d-", i) + strings.Repeat("设", idLen)
		a.Devices = append(a.Devices, events.AlertDevice{DeviceID: id, Node: "emqx@n1", SinceMS: a.StartsAtMS})
	}
	a, err := events.NewAlertEvent(a)
	if err != nil {
		panic(err)
	}
	return a
}

func startSim(t *testing.T, robots ...chatsim.Robot) *chatsim.Server {
	t.Helper()
	return notifytest.StartSim(t, chatsim.Config{WeCom: robots})
}

func TestEndpoint(t *testing.T) {
	notifytest.CheckEndpoints(t, Endpoint, "k-123", []notifytest.EndpointCase{
		{Raw: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k-123", Want: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k-123"},
		{Raw: "k-123", Want: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k-123"},
		{Raw: "k-123", Base: "http://127.0.0.1:9/cgi-bin/webhook/send", Want: "http://127.0.0.1:9/cgi-bin/webhook/send?key=k-123"},
		{Raw: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?k=k-123", Err: "has no key parameter"},
		{Raw: "k 123", Err: "is neither a webhook URL nor a bare key"},
	})
}

func TestConfigValidate(t *testing.T) {
	notifytest.CheckValidate(t, "wecom", Config.Validate, []notifytest.ValidateCase[Config]{
		{Config{URLEnv: "X"}, ""},
		{Config{}, "wecom.url is empty: set url_env (or url_file, or url) to the robot's webhook URL"},
		{Config{URLEnv: "X", MsgType: "news"}, `wecom.msg_type is "news": use markdown or text`},
		{Config{URLEnv: "X", MentionAll: true}, "wecom: mention_mobiles and mention_all need msg_type text (WeCom markdown mentions user ids only)"},
		{Config{URLEnv: "X", MsgType: "text", MentionMobiles: []string{"@138"}}, `wecom.mention_mobiles[0] "@138" is not a phone number: write it without @ or spaces`},
		{Config{URLEnv: "X", MentionUserIDs: []string{"<@u>"}}, `wecom.mention_user_ids[0] "<@u>" is not a user id: write it without @, < or spaces`},
	})
}

func TestClassify(t *testing.T) {
	tests := []struct {
		status     int
		body       string
		outcome    events.Outcome
		code       string
		retryAfter time.Duration
	}{
		{200, `{"errcode":0,"errmsg":"ok"}`, events.OutcomeDelivered, "0", 0},
		{200, `{"errcode":-1,"errmsg":"system busy"}`, events.OutcomeRetryable, "-1", 0},
		{200, `{"errcode":45009,"errmsg":"api freq out of limit"}`, events.OutcomeRateLimited, "45009", time.Minute},
		{200, `{"errcode":93000,"errmsg":"invalid webhook url"}`, events.OutcomePermanent, "93000", 0},
		{200, `{"errcode":40058,"errmsg":"content exceed max length"}`, events.OutcomePermanent, "40058", 0},
		{200, `{"errcode":12345,"errmsg":"new"}`, events.OutcomeRetryable, "12345", 0},
		{200, `<html>proxy</html>`, events.OutcomeRetryable, "", 0},
		{502, `bad gateway`, events.OutcomeRetryable, "", 0},
		{404, `not found`, events.OutcomePermanent, "", 0},
	}
	for _, tt := range tests {
		r := Classify(tt.status, http.Header{}, []byte(tt.body))
		if r.Outcome != tt.outcome || r.RemoteCode != tt.code || r.RetryAfter != tt.retryAfter || (r.Outcome != events.OutcomeDelivered && r.Hint == "") {
			t.Errorf("Classify(%d, %s) = %+v", tt.status, tt.body, r)
		}
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{`{"errcode":0,"errmsg":"ok"}`, `{"errcode":"45009"}`, `{"errcode":93000}`, `{}`, `[]`, ``} {
		f.Add(200, s)
	}
	f.Fuzz(func(t *testing.T, status int, body string) {
		r := Classify(status, http.Header{}, []byte(body))
		switch r.Outcome {
		case events.OutcomeDelivered, events.OutcomeRetryable, events.OutcomeRateLimited, events.OutcomePermanent:
		default:
			t.Fatalf("outcome %q", r.Outcome)
		}
		if r.Outcome == events.OutcomeDelivered && (status < 200 || status > 299 || r.RemoteCode != "0") {
			t.Fatalf("delivered on %d %q", status, body)
		}
	})
}

func TestSendMarkdownAndText(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Name: "md", Token: "md", Keywords: []string{"告警"}}, chatsim.Robot{Name: "txt", Token: "txt", Keywords: []string{"告警"}})
	md, err := New(Config{URL: sim.WeComURL("md"), Keyword: "告警", MentionUserIDs: []string{"zhangsan"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	txt, err := New(Config{URL: "txt", BaseURL: sim.URL() + "/cgi-bin/webhook/send", MsgType: "text", Keyword: "告警",
		MentionMobiles: []string{"13800001111"}, MentionAll: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 100 long unicode device ids: far over both budgets untruncated.
	a := alert(500, 40)
	for _, n := range []*Notifier{md, txt} {
		r, err := n.Notify(t.Context(), a)
		if err != nil || r.Outcome != events.OutcomeDelivered || r.RemoteCode != "0" {
			t.Fatalf("Notify = %+v, %v", r, err)
		}
	}
	msgs := sim.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	if m := msgs[0]; m.MsgType != "markdown" || !strings.HasPrefix(m.Text, `## <font color="warning">【告警】500 台设备离线`) ||
		!strings.Contains(m.Text, "<@zhangsan>") || !strings.Contains(m.Text, "另有") || len(m.Text) > MaxMarkdownBytes {
		t.Fatalf("markdown message (%d bytes):\n%s", len(m.Text), m.Text)
	}
	var body struct {
		Text struct {
			MentionedList       []string `json:"mentioned_list"`
			MentionedMobileList []string `json:"mentioned_mobile_list"`
		} `json:"text"`
	}
	m := msgs[1]
	if err := json.Unmarshal(m.Body, &body); err != nil {
		t.Fatal(err)
	}
	if m.MsgType != "text" || strings.Contains(m.Text, "**") || len(m.Text) > MaxTextBytes || !strings.Contains(m.Text, "另有") ||
		body.Text.MentionedList[0] != "@all" || body.Text.MentionedMobileList[0] != "13800001111" {
		t.Fatalf("text message %+v\n%s", body, m.Text)
	}
	// The test message carries the keyword too.
	if r, err := md.Send(t.Context(), notify.TestContent("ops", time.Now())); err != nil {
		t.Fatalf("test message: %+v", r)
	}
}

func TestSendFailures(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Name: "ok", Token: "ok"})
	bad, _ := New(Config{URL: sim.WeComURL("nope")}, nil)
	r, err := bad.Notify(t.Context(), alert(1, 1))
	if err == nil || r.Outcome != events.OutcomePermanent || r.RemoteCode != "93000" || strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown key: %+v %v", r, err)
	}
	n, _ := New(Config{URL: sim.WeComURL("ok")}, nil)
	for i := range chatsim.WeComPerMinute {
		if r, err := n.Notify(t.Context(), alert(1, 1)); err != nil {
			t.Fatalf("message %d: %+v", i, r)
		}
	}
	r, _ = n.Notify(t.Context(), alert(1, 1))
	if r.Outcome != events.OutcomeRateLimited || r.RemoteCode != "45009" || r.RetryAfter != time.Minute {
		t.Fatalf("21st message: %+v", r)
	}
}
