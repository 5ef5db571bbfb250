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
	sim := chatsim.New(chatsim.Config{WeCom: robots})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

func TestEndpoint(t *testing.T) {
	tests := []struct{ raw, base, want, err string }{
		{raw: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k-123", want: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k-123"},
		{raw: "k-123", want: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k-123"},
		{raw: "k-123", base: "http://127.0.0.1:9/cgi-bin/webhook/send", want: "http://127.0.0.1:9/cgi-bin/webhook/send?key=k-123"},
		{raw: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?k=k-123", err: "has no key parameter"},
		{raw: "k 123", err: "is neither a webhook URL nor a bare key"},
	}
	for _, tt := range tests {
		u, err := Endpoint(tt.raw, tt.base)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "k-123") {
				t.Errorf("Endpoint(%q) err = %v", tt.raw, err)
			}
			continue
		}
		if err != nil || u.String() != tt.want {
			t.Errorf("Endpoint(%q) = %v, %v", tt.raw, u, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{URLEnv: "X"}, ""},
		{Config{}, "wecom.url is empty: set url_env (or url_file, or url) to the robot's webhook URL"},
		{Config{URLEnv: "X", MsgType: "news"}, `wecom.msg_type is "news": use markdown or text`},
		{Config{URLEnv: "X", MentionAll: true}, "wecom: mention_mobiles and mention_all need msg_type text (WeCom markdown mentions user ids only)"},
		{Config{URLEnv: "X", MsgType: "text", MentionMobiles: []string{"@138"}}, `wecom.mention_mobiles[0] "@138" is not a phone number: write it without @ or spaces`},
		{Config{URLEnv: "X", MentionUserIDs: []string{"<@u>"}}, `wecom.mention_user_ids[0] "<@u>" is not a user id: write it without @, < or spaces`},
	}
	for _, tt := range tests {
		got := ""
		if err := tt.cfg.Validate("wecom"); err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("Validate(%+v) = %q, want %q", tt.cfg, got, tt.want)
		}
	}
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
