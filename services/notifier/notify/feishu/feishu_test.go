package feishu

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

const secret = "test-secret"

func TestSignVector(t *testing.T) {
	if got := Sign(secret, 1700000000); got != "mbm4Y4oluIPQ00qlBIhX8vAZ0EKv3nw0LuTb91jPL84=" {
		t.Fatalf("Sign = %s", got)
	}
	// The DingTalk-style computation must not be what we send.
	if Sign(secret, 1700000000) == "ioThkp939qla5DvK7aF+h4LQRcKvYhihlJbNgHokY3s=" {
		t.Fatal("DingTalk algorithm")
	}
}

func TestEndpoint(t *testing.T) {
	notifytest.CheckEndpoints(t, Endpoint, "abc-123", []notifytest.EndpointCase{
		{Raw: "https://open.feishu.cn/open-apis/bot/v2/hook/abc-123", Want: "https://open.feishu.cn/open-apis/bot/v2/hook/abc-123"},
		{Raw: "https://open.larksuite.com/open-apis/bot/v2/hook/abc-123", Want: "https://open.larksuite.com/open-apis/bot/v2/hook/abc-123"},
		{Raw: "abc-123", Want: "https://open.feishu.cn/open-apis/bot/v2/hook/abc-123"},
		{Raw: "abc-123", Base: "http://127.0.0.1:9/open-apis/bot/v2/hook", Want: "http://127.0.0.1:9/open-apis/bot/v2/hook/abc-123"},
		{Raw: "https://open.feishu.cn/open-apis/bot/v2/hook/", Err: "is not a custom bot webhook"},
		{Raw: "https://open.feishu.cn/abc-123", Err: "is not a custom bot webhook"},
		{Raw: "abc-123?x", Err: "is neither a webhook URL nor a bare hook token"},
	})
}

func TestConfigValidate(t *testing.T) {
	notifytest.CheckValidate(t, "r", Config.Validate, []notifytest.ValidateCase[Config]{
		{Config{URL: "tok"}, ""},
		{Config{}, "r.url is empty: set url_env (or url_file, or url) to the bot's webhook URL"},
		{Config{URLFile: "a", URLEnv: "B"}, "r: url, url_file and url_env are exclusive: keep one"},
		{Config{URL: "https://open.feishu.cn/x"}, "r.url: is not a custom bot webhook (…/open-apis/bot/v2/hook/<token>): paste the bot's whole webhook URL"},
		{Config{URL: "tok", Language: "ja"}, `r.language: language "ja" is not supported: use zh or en`},
		{Config{URL: "tok", MentionUserIDs: []string{"<at>"}}, `r.mention_user_ids[0] "<at>" is not a user id: use the open_id (ou_…)`},
		{Config{URL: "tok", MsgType: MsgPost}, ""},
		{Config{URL: "tok", MsgType: "card"}, `r.msg_type is "card": use interactive, post or text`},
		{Config{URL: "tok", LinkBaseURL: "ftp://x"}, `r.link_base_url "ftp://x" is not an http(s) URL without query: use e.g. https://fleet.example.com`},
	})
}

func TestClassify(t *testing.T) {
	const P, R, L, D = events.OutcomePermanent, events.OutcomeRetryable, events.OutcomeRateLimited, events.OutcomeDelivered
	tests := []struct {
		name       string
		status     int
		header     http.Header
		body       string
		outcome    events.Outcome
		code       string
		hint       string
		retryAfter time.Duration
	}{
		{"ok", 200, nil, `{"StatusCode":0,"StatusMessage":"success","code":0,"data":{},"msg":"success"}`, D, "0", "", 0},
		{"ok legacy", 200, nil, `{"StatusCode":0,"StatusMessage":"success"}`, D, "0", "", 0},
		{"legacy failure", 200, nil, `{"StatusCode":19021,"StatusMessage":"sign match fail"}`, P, "19021", "secret does not match", 0},
		{"11232", 200, nil, `{"code":11232,"msg":"frequency limited psm[lark.oapi.app_platform_runtime]appID[-1]"}`, L, "11232", "5 messages per second", time.Second},
		{"11247", 200, nil, `{"code":11247,"msg":"frequency limited"}`, L, "11247", "5 messages per second", time.Second},
		{"http 429 with reset", 429, http.Header{"X-Ogw-Ratelimit-Reset": {"7"}}, ``, L, "", "x-ogw-ratelimit-reset", 7 * time.Second},
		{"http 429 without reset", 429, nil, `{"code":99991400,"msg":"request trigger frequency limit"}`, L, "", "x-ogw-ratelimit-reset", time.Second},
		{"99991400", 200, http.Header{"X-Ogw-Ratelimit-Reset": {"3"}}, `{"code":99991400,"msg":"request trigger frequency limit"}`, L, "99991400", "platform limiter", 3 * time.Second},
		{"9499 bad request", 200, nil, `{"code":9499,"msg":"Bad Request"}`, P, "9499", "format or size", 0},
		{"9499 too many requests", 200, nil, `{"code":9499,"msg":"too many requests"}`, L, "9499", "too many requests", time.Second},
		{"19001", 200, nil, `{"code":19001,"msg":"param invalid: incoming webhook access token invalid"}`, P, "19001", "token is invalid", 0},
		{"19002", 200, nil, `{"code":19002,"msg":"params error, msg_type need"}`, P, "19002", "msg_type", 0},
		{"19021", 200, nil, `{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}`, P, "19021", "secret does not match", 0},
		{"19022", 200, nil, `{"code":19022,"msg":"Ip Not Allowed"}`, P, "19022", "IP not allowlisted", 0},
		{"19024", 200, nil, `{"code":19024,"msg":"Key Words Not Found"}`, P, "19024", "add keyword 告警 to the bot", 0},
		{"19036", 200, nil, `{"code":19036,"msg":"card size exceeds"}`, P, "19036", "30 KB", 0},
		{"unknown code", 200, nil, `{"code":12345,"msg":"?"}`, R, "12345", "unknown code", 0},
		{"400 with code", 400, nil, `{"code":9499,"msg":"Bad Request"}`, P, "9499", "format or size", 0},
		{"not json", 200, nil, `<html>`, R, "", "no code", 0},
		{"http 500", 500, nil, `{"code":0}`, R, "", "retrying", 0},
		{"http 502", 502, nil, ``, R, "", "retrying", 0},
		{"http 404", 404, nil, `404 page not found`, P, "", "does not exist", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Classify(tt.status, tt.header, []byte(tt.body), "告警")
			if r.Outcome != tt.outcome || r.RemoteCode != tt.code || r.HTTPStatus != tt.status || r.RetryAfter != tt.retryAfter {
				t.Fatalf("Classify = %+v, want outcome %s code %q retry-after %s", r, tt.outcome, tt.code, tt.retryAfter)
			}
			if !strings.Contains(r.Hint, tt.hint) {
				t.Fatalf("hint %q does not contain %q", r.Hint, tt.hint)
			}
		})
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		`{"code":0,"msg":"success"}`, `{"StatusCode":0}`, `{"code":11232,"msg":"frequency limited"}`,
		`{"code":19021,"msg":"sign match fail"}`, `{"code":"19024"}`, `{"code":null}`, `[]`, ``, `{"code":1e400}`,
	} {
		f.Add(200, "", []byte(s))
	}
	f.Add(429, "12", []byte(""))
	f.Add(503, "", []byte("<html>"))
	f.Fuzz(func(t *testing.T, status int, reset string, body []byte) {
		r := Classify(status, http.Header{"X-Ogw-Ratelimit-Reset": {reset}}, body, "k")
		switch r.Outcome {
		case events.OutcomeDelivered:
			if r.RemoteCode != "0" {
				t.Fatalf("delivered with code %q", r.RemoteCode)
			}
		case events.OutcomeRetryable, events.OutcomeRateLimited, events.OutcomePermanent:
			if r.Hint == "" {
				t.Fatalf("failure without hint: %+v", r)
			}
		default:
			t.Fatalf("outcome %q", r.Outcome)
		}
		if r.Outcome == events.OutcomeRateLimited && (r.RetryAfter < time.Second || r.RetryAfter > 24*time.Hour) {
			t.Fatalf("rate limited, retry after %s", r.RetryAfter)
		}
	})
}

var alert, simple, secretFile = notifytest.Offline, notifytest.Simple, notifytest.SecretFile

func startSim(t *testing.T, robots ...chatsim.Robot) *chatsim.Server {
	t.Helper()
	return notifytest.StartSim(t, chatsim.Config{Feishu: robots})
}

func TestNotifyDelivers(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Name: "ops", Token: "hook", Secret: secret, Keywords: []string{"告警"}})
	tests := []struct {
		sev    events.Severity
		status events.AlertStatus
		color  string
	}{
		{events.SeverityCritical, events.StatusFiring, "red"},
		{events.SeverityWarning, events.StatusFiring, "orange"},
		{events.SeverityInfo, events.StatusFiring, "blue"},
		{events.SeverityCritical, events.StatusResolved, "green"},
	}
	n, err := New(Config{URL: sim.FeishuURL("hook"), SecretFile: secretFile(t, secret), Keyword: "告警", MentionAll: true, MentionUserIDs: []string{"ou_123"}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range tests {
		a := alert(2, tt.sev, simple)
		if tt.status == events.StatusResolved {
			a.Status, a.EndsAtMS, a.ID = events.StatusResolved, a.StartsAtMS+1000, ""
			a, _ = events.NewAlertEvent(a)
		}
		r, err := n.Notify(t.Context(), a)
		if err != nil || r.Outcome != events.OutcomeDelivered || r.RemoteCode != "0" || r.Bytes == 0 {
			t.Fatalf("Notify = %+v, %v", r, err)
		}
		m := sim.Messages()[i]
		if !m.Signed || m.MsgType != "interactive" || m.Color != tt.color {
			t.Fatalf("%s/%s: message %+v", tt.sev, tt.status, m)
		}
		if len(m.Mentions) != 2 || m.Mentions[0] != "all" || m.Mentions[1] != "ou_123" {
			t.Fatalf("mentions %v", m.Mentions)
		}
	}
	m := sim.Messages()[0]
	if m.Title != "【告警】2 台设备离线 · site=sh-01" || !strings.Contains(m.Text, "- dev-1 · 节点 emqx@n1 · 心跳超时") {
		t.Fatalf("message %q\n%s", m.Title, m.Text)
	}
	var body map[string]any
	if err := json.Unmarshal(m.Body, &body); err != nil {
		t.Fatal(err)
	}
	if _, ok := body["card"].(map[string]any); !ok || body["content"] != nil {
		t.Fatalf("card is not an object under card: %s", m.Body)
	}
	if ts, ok := body["timestamp"].(string); !ok || len(ts) != 10 {
		t.Fatalf("timestamp %v is not seconds as a string", body["timestamp"])
	}
}

func TestNotifyFailures(t *testing.T) {
	sim := startSim(t,
		chatsim.Robot{Name: "signed", Token: "signed", Secret: secret},
		chatsim.Robot{Name: "keyword", Token: "keyword", Keywords: []string{"报警"}},
		chatsim.Robot{Name: "ip", Token: "ip", AllowedIPs: []string{"198.51.100.7"}},
		chatsim.Robot{Name: "flaky", Token: "flaky"},
	)
	sim.FailNext(chatsim.Feishu, "flaky", 1, http.StatusBadGateway)
	skewed := func() time.Time { return time.Now().Add(2 * time.Hour) }
	tests := []struct {
		name    string
		cfg     Config
		now     func() time.Time
		outcome events.Outcome
		code    string
		hint    string
	}{
		{"wrong secret", Config{URL: sim.FeishuURL("signed"), SecretFile: secretFile(t, "other")}, nil, events.OutcomePermanent, "19021", "secret does not match"},
		{"clock off", Config{URL: sim.FeishuURL("signed"), SecretFile: secretFile(t, secret)}, skewed, events.OutcomePermanent, "19021", "time sync"},
		{"keyword", Config{URL: sim.FeishuURL("keyword"), Keyword: "告警"}, nil, events.OutcomePermanent, "19024", "add keyword 告警 to the bot"},
		{"token", Config{URL: sim.FeishuURL("nope")}, nil, events.OutcomePermanent, "19001", "token is invalid"},
		{"ip", Config{URL: sim.FeishuURL("ip")}, nil, events.OutcomePermanent, "19022", "IP not allowlisted"},
		{"502", Config{URL: sim.FeishuURL("flaky")}, nil, events.OutcomeRetryable, "", "retrying"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := New(tt.cfg, nil, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			r, err := n.Notify(t.Context(), alert(1, events.SeverityWarning, simple))
			if err == nil || r.Outcome != tt.outcome || r.RemoteCode != tt.code || !strings.Contains(r.Hint, tt.hint) {
				t.Fatalf("Notify = %+v, %v", r, err)
			}
			if strings.Contains(err.Error(), "/hook/") {
				t.Fatalf("error leaks the URL: %v", err)
			}
		})
	}
	if n := len(sim.Messages()); n != 0 {
		t.Fatalf("%d messages accepted", n)
	}
}

func TestNotifyRateLimited(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Name: "ops", Token: "hook"})
	n, err := New(Config{URL: "hook", BaseURL: sim.URL() + "/open-apis/bot/v2/hook/"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// chatsim's clock is real time: send until the per-second limit bites.
	var r notify.Result
	for i := 0; i < 200 && r.Outcome != events.OutcomeRateLimited; i++ {
		r, _ = n.Notify(t.Context(), alert(1, events.SeverityInfo, simple))
	}
	if r.Outcome != events.OutcomeRateLimited || r.RemoteCode != "11232" || r.RetryAfter < time.Second {
		t.Fatalf("Notify = %+v", r)
	}
}

func TestBudgetHundredLongUnicodeDevices(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Name: "ops", Token: "hook", Secret: secret, Keywords: []string{"alert"}})
	n, err := New(Config{URL: sim.FeishuURL("hook"), SecretFile: secretFile(t, secret), Keyword: "alert", Language: "en", MentionAll: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	long := func(i int) string {
		return fmt.Sprintf("设备-%03d-%s", i, strings.Repeat("传感器<at id=all></at>😀\n", 20))
	}
	a := alert(100, events.SeverityCritical, long)
	body, m, err := n.Body(a, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > notify.MaxBodyBytes || m.Shown == 0 || m.Shown >= 100 || m.Omitted != 100-m.Shown {
		t.Fatalf("body %d bytes, shown %d, omitted %d", len(body), m.Shown, m.Omitted)
	}
	if !strings.Contains(m.Body, fmt.Sprintf("- +%d more", m.Omitted)) || strings.Contains(m.Body, "<at") {
		t.Fatalf("body:\n%s", m.Body)
	}
	if r, err := n.Notify(t.Context(), a); err != nil {
		t.Fatalf("Notify = %+v, %v", r, err)
	}
	msgs := sim.Messages()
	if len(msgs) != 1 || len(msgs[0].Mentions) != 1 || msgs[0].Mentions[0] != "all" {
		t.Fatalf("messages %+v", msgs)
	}
}

// TestMessageTypes sends one alert as each msg_type to a strict,
// keyword-protected bot and checks the exact body and what the bot made of
// it: the keyword, the mentions, the links, the card header colour.
func TestMessageTypes(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Name: "ops", Token: "hook", Keywords: []string{"告警"}})
	a := alert(1, events.SeverityWarning, simple)
	id := a.ID[:12]
	tests := []struct {
		msgType, lang string
		body          string
		text          string
	}{
		{MsgPost, "zh", `{"msg_type":"post","content":{"post":{"zh_cn":{"title":"【告警】设备离线：dev-0 · site=sh-01","content":[` +
			`[{"tag":"text","text":"状态：告警中 · 级别：警告 · 类型：设备离线"}],[{"tag":"text","text":"分组：site=sh-01"}],` +
			`[{"tag":"text","text":"开始：2023-11-15 06:13:20 +08:00"}],[{"tag":"text","text":"设备：共 1 台"}],` +
			`[{"tag":"text","text":"- dev-0 · 节点 emqx@n1 · 心跳超时 · 离线自 11-15 06:13:20"}],[{"tag":"text","text":"fleetwatch · 告警 ID ` + id + `"}],` +
			`[{"tag":"a","text":"查看告警","href":"https://fleet.example.com/alerts/fp-1"},{"tag":"text","text":" · "},{"tag":"a","text":"查看设备","href":"https://fleet.example.com/devices/dev-0"}],` +
			`[{"tag":"at","user_id":"all"},{"tag":"at","user_id":"ou_123"}]]}}}}`,
			"[查看告警](https://fleet.example.com/alerts/fp-1) · [查看设备](https://fleet.example.com/devices/dev-0)\n@all@ou_123"},
		{MsgText, "en", `{"msg_type":"text","content":{"text":"[告警] Device offline: dev-0 · site=sh-01\n\nStatus: firing · Severity: warning · Kind: Device offline\n` +
			`Group: site=sh-01\nStarted: 2023-11-15 06:13:20 +08:00\nDevices: 1\n\n- dev-0 · node emqx@n1 · keepalive timeout · offline since 11-15 06:13:20\n\n` +
			`fleetwatch · alert id ` + id + `\nView alert: https://fleet.example.com/alerts/fp-1\nView device: https://fleet.example.com/devices/dev-0\n\n` +
			`<at user_id=\"all\">all</at> <at user_id=\"ou_123\"></at>"}}`,
			"View device: https://fleet.example.com/devices/dev-0"},
		{MsgInteractive, "zh", "", "[查看告警] [查看设备]"},
	}
	for i, tt := range tests {
		n, err := New(Config{URL: sim.FeishuURL("hook"), Keyword: "告警", Language: tt.lang, Timezone: "Asia/Shanghai", MentionAll: true,
			MentionUserIDs: []string{"ou_123"}, MsgType: tt.msgType, LinkBaseURL: "https://fleet.example.com"}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _, err := n.Body(a, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if tt.body != "" && string(body) != tt.body {
			t.Fatalf("%s: body\n%s\nwant\n%s", tt.msgType, body, tt.body)
		}
		if r, err := n.Notify(t.Context(), a); err != nil {
			t.Fatalf("%s: Notify = %+v, %v", tt.msgType, r, err)
		}
		m := sim.Messages()[i]
		if m.MsgType != tt.msgType || !strings.Contains(m.Title, "dev-0") || len(m.Mentions) != 2 || m.Mentions[0] != "all" || m.Mentions[1] != "ou_123" {
			t.Fatalf("%s: message %+v", tt.msgType, m)
		}
		if !strings.Contains(m.Text, tt.text) {
			t.Fatalf("%s: text lacks %q:\n%s", tt.msgType, tt.text, m.Text)
		}
		if tt.msgType == MsgInteractive && m.Color != "orange" {
			t.Fatalf("card colour %q", m.Color)
		}
	}
	if rj := sim.Rejections(); len(rj) != 0 {
		t.Fatalf("rejections %+v", rj)
	}
}
