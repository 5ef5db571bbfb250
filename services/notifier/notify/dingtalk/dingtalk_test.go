package dingtalk

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/notifytest"
)

const secret = "SEC0123456789abcdef"

func TestSignVectors(t *testing.T) {
	tests := []struct {
		ms          int64
		sign, query string
	}{
		{1700000000000, "TSZbRFUuvaSQaRKUpF970OPCb2/LcQAP3wOvwZIzBZk=", "TSZbRFUuvaSQaRKUpF970OPCb2%2FLcQAP3wOvwZIzBZk%3D"},
		{1700000000001, "h9I8htdbvJCasKF0f8Gu+a2Cr5fjl9T+pzb6hx3n+pE=", "h9I8htdbvJCasKF0f8Gu%2Ba2Cr5fjl9T%2Bpzb6hx3n%2BpE%3D"},
	}
	ep, err := Endpoint("https://oapi.dingtalk.com/robot/send?access_token=abc", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		if got := Sign(secret, tt.ms); got != tt.sign {
			t.Errorf("Sign(%d) = %s, want %s", tt.ms, got, tt.sign)
		}
		got := SignedURL(ep, secret, time.UnixMilli(tt.ms))
		want := fmt.Sprintf("https://oapi.dingtalk.com/robot/send?access_token=abc&timestamp=%d&sign=%s", tt.ms, tt.query)
		if got != want {
			t.Errorf("SignedURL = %s\nwant        %s", got, want)
		}
		// Decoding once gives the sign back exactly: encoded exactly once.
		u, _ := url.Parse(got)
		if u.Query().Get("sign") != tt.sign {
			t.Errorf("decoded sign %q", u.Query().Get("sign"))
		}
	}
	if got := SignedURL(ep, "", time.UnixMilli(1)); got != "https://oapi.dingtalk.com/robot/send?access_token=abc" {
		t.Errorf("unsigned URL %s", got)
	}
}

func TestEndpoint(t *testing.T) {
	notifytest.CheckEndpoints(t, Endpoint, "abc123", []notifytest.EndpointCase{
		{Raw: "https://oapi.dingtalk.com/robot/send?access_token=abc123", Want: "https://oapi.dingtalk.com/robot/send?access_token=abc123"},
		{Raw: "  https://oapi.dingtalk.com/robot/send?access_token=abc123&timestamp=1&sign=x \n", Want: "https://oapi.dingtalk.com/robot/send?access_token=abc123"},
		{Raw: "abc123", Want: "https://oapi.dingtalk.com/robot/send?access_token=abc123"},
		{Raw: "abc123", Base: "http://127.0.0.1:9/robot/send", Want: "http://127.0.0.1:9/robot/send?access_token=abc123"},
		{Raw: "https://oapi.dingtalk.com/robot/send?token=abc123", Err: "has no access_token parameter"},
		{Raw: "ftp://oapi.dingtalk.com/robot/send?access_token=abc123", Err: "is not an http(s) URL"},
		{Raw: "abc 123", Err: "is neither a webhook URL nor a bare access token"},
		{Raw: "", Err: "is neither a webhook URL nor a bare access token"},
	})
}

func TestConfigValidate(t *testing.T) {
	notifytest.CheckValidate(t, "r", Config.Validate, []notifytest.ValidateCase[Config]{
		{Config{URL: "tok"}, ""},
		{Config{}, "r.url is empty: set url_env (or url_file, or url) to the robot's webhook URL"},
		{Config{URL: "tok", URLEnv: "X"}, "r: url, url_file and url_env are exclusive: keep one"},
		{Config{URL: "https://x/robot/send"}, "r.url: has no access_token parameter: paste the robot's whole webhook URL (…/robot/send?access_token=…)"},
		{Config{URL: "tok", SecretFile: "a", SecretEnv: "B"}, "r: secret_file and secret_env are exclusive: keep one"},
		{Config{URL: "tok", Language: "fr"}, `r.language: language "fr" is not supported: use zh or en`},
		{Config{URL: "tok", Timezone: "Mars/Olympus"}, `r.timezone "Mars/Olympus" is unknown: use an IANA name such as Asia/Shanghai`},
		{Config{URL: "tok", AtMobiles: []string{"@138"}}, `r.at_mobiles[0] "@138" is not a phone number: write it without @ or spaces`},
		{Config{URL: "tok", BaseURL: "oapi.dingtalk.com"}, `r.base_url "oapi.dingtalk.com" is not an http(s) URL: use e.g. https://oapi.dingtalk.com/robot/send`},
	})
}

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	if err := os.WriteFile(good, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{URL: "tok", SecretFile: good}, nil, nil); err != nil {
		t.Fatalf("good secret: %v", err)
	}
	if _, err := New(Config{URL: "tok", SecretFile: bad}, nil, nil); err == nil || err.Error() != "dingtalk secret does not start with SEC: paste the robot's whole secret, prefix included" {
		t.Fatalf("secret without SEC: %v", err)
	}
	t.Setenv("FW_TEST_DT_URL", "https://oapi.dingtalk.com/robot/send?access_token=sekrit")
	if _, err := New(Config{URLEnv: "FW_TEST_DT_URL"}, nil, nil); err != nil {
		t.Fatalf("url from env: %v", err)
	}
	if _, err := New(Config{URLEnv: "FW_TEST_DT_UNSET"}, nil, nil); err == nil || !strings.Contains(err.Error(), "FW_TEST_DT_UNSET is not set") {
		t.Fatalf("unset env: %v", err)
	}
	t.Setenv("FW_TEST_DT_URL", "https://x/?sekrit")
	if _, err := New(Config{URLEnv: "FW_TEST_DT_URL"}, nil, nil); err == nil || strings.Contains(err.Error(), "sekrit") {
		t.Fatalf("bad url from env: %v (must not contain the token)", err)
	}
}

func TestClassify(t *testing.T) {
	const P, R, L, D = events.OutcomePermanent, events.OutcomeRetryable, events.OutcomeRateLimited, events.OutcomeDelivered
	tests := []struct {
		name       string
		status     int
		body       string
		outcome    events.Outcome
		code       string
		hint       string
		retryAfter time.Duration
	}{
		{"ok", 200, `{"errcode":0,"errmsg":"ok"}`, D, "0", "", 0},
		{"busy", 200, `{"errcode":-1,"errmsg":"系统繁忙"}`, R, "-1", "busy", 0},
		{"send too fast 410100", 200, `{"errcode":410100,"errmsg":"send too fast, exceed 20 times per minute"}`, L, "410100", "10 minutes", 10 * time.Minute},
		{"send too fast 130101", 200, `{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}`, L, "130101", "10 minutes", 10 * time.Minute},
		{"per-IP throttle", 200, `{"status":1111,"punish":"deny","wait":5,"message":"访问频繁"}`, L, "status 1111", "punish: deny", 5 * time.Minute},
		{"keyword", 200, `{"errcode":310000,"errmsg":"keywords not in content, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"}`, P, "310000", "add keyword 告警 to the robot", 0},
		{"sign", 200, `{"errcode":310000,"errmsg":"sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"}`, P, "310000", "secret does not match", 0},
		{"timestamp", 200, `{"errcode":310000,"errmsg":"invalid timestamp"}`, R, "310000", "more than an hour off", 0},
		{"ip", 200, `{"errcode":310000,"errmsg":"ip 203.0.113.7 not in whitelist"}`, P, "310000", "IP 203.0.113.7 not allowlisted", 0},
		{"other security", 200, `{"errcode":310000,"errmsg":"security check failed"}`, P, "310000", "security setting", 0},
		{"token 300001", 200, `{"errcode":300001,"errmsg":"token is not exist"}`, P, "300001", "access token does not exist", 0},
		{"token 300005", 200, `{"errcode":300005,"errmsg":"token is not exist"}`, P, "300005", "access token does not exist", 0},
		{"token 400101", 200, `{"errcode":400101,"errmsg":"access_token不存在"}`, P, "400101", "access token does not exist", 0},
		{"disabled", 200, `{"errcode":400102,"errmsg":"机器人已停用"}`, P, "400102", "disabled", 0},
		{"group gone", 200, `{"errcode":400013,"errmsg":"群已被解散"}`, P, "400013", "group no longer exists", 0},
		{"robot not found", 200, `{"errcode":400106,"errmsg":"robot 不存在"}`, P, "400106", "not found", 0},
		{"too long", 200, `{"errcode":460101,"errmsg":"message too long, exceed 20000 bytes"}`, P, "460101", "20000-byte", 0},
		{"too long old", 200, `{"errcode":101002,"errmsg":"message too long"}`, P, "101002", "20000-byte", 0},
		{"malformed", 200, `{"errcode":40035,"errmsg":"缺少参数 json"}`, P, "40035", "malformed", 0},
		{"content type", 200, `{"errcode":43004,"errmsg":"无效的HTTP HEADER Content-Type"}`, P, "43004", "malformed", 0},
		{"errcode as string", 200, `{"errcode":"0","errmsg":"ok"}`, D, "0", "", 0},
		{"unknown errcode", 200, `{"errcode":777,"errmsg":"?"}`, R, "777", "unknown errcode", 0},
		{"http 200 not json", 200, `<html>ok</html>`, R, "", "no errcode", 0},
		{"http 200 empty", 200, ``, R, "", "no errcode", 0},
		{"http 500", 500, `{"errcode":0}`, R, "", "retrying", 0},
		{"http 502", 502, `<html>bad gateway</html>`, R, "", "retrying", 0},
		{"http 503", 503, ``, R, "", "retrying", 0},
		{"http 429", 429, ``, L, "", "throttling", 0},
		{"http 404", 404, `404 page not found`, P, "", "does not exist", 0},
		{"http 403 with errcode", 403, `{"errcode":310000,"errmsg":"sign not match"}`, P, "310000", "secret", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Classify(tt.status, http.Header{}, []byte(tt.body), "告警")
			if r.Outcome != tt.outcome || r.RemoteCode != tt.code || r.HTTPStatus != tt.status || r.RetryAfter != tt.retryAfter {
				t.Fatalf("Classify = %+v, want outcome %s code %q retry-after %s", r, tt.outcome, tt.code, tt.retryAfter)
			}
			if !strings.Contains(r.Hint, tt.hint) {
				t.Fatalf("hint %q does not contain %q", r.Hint, tt.hint)
			}
			if tt.outcome != D && r.Hint == "" {
				t.Fatal("a failure without a hint")
			}
		})
	}
	if r := Classify(200, nil, []byte(`{"errcode":310000,"errmsg":"keywords not in content"}`), ""); !strings.Contains(r.Hint, "set keyword to one of the robot's keywords") {
		t.Fatalf("hint without configured keyword: %q", r.Hint)
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		`{"errcode":0,"errmsg":"ok"}`, `{"errcode":310000,"errmsg":"keywords not in content"}`,
		`{"errcode":410100,"errmsg":"send too fast"}`, `{"status":1111,"punish":"deny","wait":5}`,
		`{"errcode":"x"}`, `null`, `[]`, ``, `{"errcode":1e99}`,
	} {
		f.Add(200, []byte(s))
	}
	f.Add(503, []byte("<html>"))
	f.Add(429, []byte(""))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		r := Classify(status, http.Header{}, body, "k")
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
		if r.RetryAfter < 0 || r.RetryAfter > time.Hour {
			t.Fatalf("retry after %s", r.RetryAfter)
		}
	})
}

// alert builds a firing critical device_offline alert with n devices.
func alert(n int, idOf func(int) string) events.AlertEvent {
	return notifytest.Offline(n, events.SeverityCritical, idOf)
}

var simple, secretFile = notifytest.Simple, notifytest.SecretFile

func startSim(t *testing.T, robots ...chatsim.Robot) *chatsim.Server {
	t.Helper()
	return notifytest.StartSim(t, chatsim.Config{DingTalk: robots})
}

func TestNotifyDelivers(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Name: "ops", Token: "tok", Secret: secret, Keywords: []string{"告警"}})
	n, err := New(Config{URL: sim.DingTalkURL("tok"), SecretFile: secretFile(t, secret), Keyword: "告警", AtMobiles: []string{"13800001111"}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := alert(3, simple)
	r, err := n.Notify(t.Context(), a)
	if err != nil || r.Outcome != events.OutcomeDelivered || r.RemoteCode != "0" || r.HTTPStatus != 200 || r.Bytes == 0 {
		t.Fatalf("Notify = %+v, %v", r, err)
	}
	msgs := sim.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	if !m.Signed || m.MsgType != "markdown" || m.MsgUUID != a.ID || m.Bytes != r.Bytes {
		t.Fatalf("message %+v", m)
	}
	if m.Title != "【告警】3 台设备离线 · site=sh-01" {
		t.Fatalf("title %q", m.Title)
	}
	if len(m.Mentions) != 1 || m.Mentions[0] != "13800001111" || len(m.SilentMentions) != 0 {
		t.Fatalf("mentions %v silent %v", m.Mentions, m.SilentMentions)
	}
	for _, want := range []string{"### <font color=#d93026>【告警】3 台设备离线", "- dev-0 · 节点 emqx@n1 · 心跳超时", "- dev-2", "@13800001111"} {
		if !strings.Contains(m.Text, want) {
			t.Fatalf("text lacks %q:\n%s", want, m.Text)
		}
	}
	// A retry of the same alert carries the same msgUuid: DingTalk keeps one.
	if r, err := n.Notify(t.Context(), a); err != nil || r.Outcome != events.OutcomeDelivered {
		t.Fatalf("second Notify = %+v, %v", r, err)
	}
	if len(sim.Messages()) != 1 || sim.Duplicates() != 1 {
		t.Fatalf("%d messages, %d duplicates", len(sim.Messages()), sim.Duplicates())
	}
}

func TestNotifyResolvedEnglishCarriesKeyword(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Name: "ops", Token: "tok", Keywords: []string{"fleetwatch-alert"}})
	n, err := New(Config{URL: "tok", BaseURL: sim.URL() + "/robot/send", Keyword: "fleetwatch-alert", Language: "en", Timezone: "UTC"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := alert(1, simple)
	a.Status, a.EndsAtMS, a.ID = events.StatusResolved, a.StartsAtMS+90_000, ""
	a.Devices[0].UntilMS = a.EndsAtMS
	a, _ = events.NewAlertEvent(a)
	if r, err := n.Notify(t.Context(), a); err != nil {
		t.Fatalf("Notify = %+v, %v", r, err)
	}
	m := sim.Messages()[0]
	if m.Title != "[fleetwatch-alert] Resolved: dev-0 back online after 1m 30s · site=sh-01" || !strings.Contains(m.Text, "<font color=#2ea121>") || !strings.Contains(m.Text, "offline for 1m 30s (11-14 22:13:20 – 11-14 22:14:50)") {
		t.Fatalf("message %q\n%s", m.Title, m.Text)
	}
}

func TestNotifyFailures(t *testing.T) {
	sim := startSim(t,
		chatsim.Robot{Name: "signed", Token: "signed", Secret: secret},
		chatsim.Robot{Name: "keyword", Token: "keyword", Keywords: []string{"报警"}},
		chatsim.Robot{Name: "ip", Token: "ip", AllowedIPs: []string{"198.51.100.7"}},
		chatsim.Robot{Name: "flaky", Token: "flaky"},
	)
	sim.FailNext(chatsim.DingTalk, "flaky", 1, http.StatusServiceUnavailable)
	tests := []struct {
		name    string
		cfg     Config
		outcome events.Outcome
		code    string
		hint    string
	}{
		{"wrong secret", Config{URL: sim.DingTalkURL("signed"), SecretFile: secretFile(t, "SECwrong"), Keyword: "告警"}, events.OutcomePermanent, "310000", "secret does not match"},
		{"no secret", Config{URL: sim.DingTalkURL("signed")}, events.OutcomePermanent, "310000", "no secret is configured"},
		{"keyword not on the robot", Config{URL: sim.DingTalkURL("keyword"), Keyword: "告警"}, events.OutcomePermanent, "310000", "add keyword 告警 to the robot"},
		{"unknown token", Config{URL: sim.DingTalkURL("nope")}, events.OutcomePermanent, "300001", "access token does not exist"},
		{"ip allowlist", Config{URL: sim.DingTalkURL("ip")}, events.OutcomePermanent, "310000", "IP 127.0.0.1 not allowlisted"},
		{"503", Config{URL: sim.DingTalkURL("flaky")}, events.OutcomeRetryable, "", "retrying"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := New(tt.cfg, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			r, err := n.Notify(t.Context(), alert(1, simple))
			if r.Outcome != tt.outcome || r.RemoteCode != tt.code || !strings.Contains(r.Hint, tt.hint) {
				t.Fatalf("Notify = %+v", r)
			}
			var ne *notify.Error
			if err == nil || !errorsAs(err, &ne) || strings.Contains(err.Error(), "access_token") || strings.Contains(err.Error(), "sign=") {
				t.Fatalf("err = %v", err)
			}
		})
	}
	if n := len(sim.Messages()); n != 0 {
		t.Fatalf("%d messages accepted", n)
	}
}

func errorsAs(err error, target **notify.Error) bool {
	e, ok := err.(*notify.Error)
	*target = e
	return ok
}

func TestNotifyRateLimited(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Name: "ops", Token: "tok"})
	n, err := New(Config{URL: sim.DingTalkURL("tok")}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if r, err := n.Notify(t.Context(), alert(1, func(int) string { return fmt.Sprint("d", i) })); err != nil {
			t.Fatalf("message %d: %+v", i, r)
		}
	}
	r, _ := n.Notify(t.Context(), alert(1, func(int) string { return "d21" }))
	if r.Outcome != events.OutcomeRateLimited || r.RemoteCode != "410100" || r.RetryAfter != 10*time.Minute {
		t.Fatalf("21st = %+v", r)
	}
}

// seqClock returns the given times in turn, then the last one.
type seqClock struct {
	mu    sync.Mutex
	times []time.Time
}

func (c *seqClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.times[0]
	if len(c.times) > 1 {
		c.times = c.times[1:]
	}
	return t
}

func TestNotifyReSignsOnInvalidTimestamp(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Name: "ops", Token: "tok", Secret: secret})
	skewed := time.Now().Add(-2 * time.Hour)

	// The first signature uses a clock two hours behind; the re-signed
	// retry uses the right time and is accepted.
	clk := &seqClock{times: []time.Time{skewed, time.Now()}}
	n, err := New(Config{URL: sim.DingTalkURL("tok"), SecretFile: secretFile(t, secret)}, nil, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := n.Notify(t.Context(), alert(1, simple)); err != nil || r.Outcome != events.OutcomeDelivered {
		t.Fatalf("Notify = %+v, %v", r, err)
	}
	if sim.RejectionCount(chatsim.DingTalk, 310000) != 1 || len(sim.Messages()) != 1 {
		t.Fatalf("rejections %v, messages %d", sim.RejectionCounts(), len(sim.Messages()))
	}

	// A clock that stays wrong: permanent after one re-signed retry.
	n, err = New(Config{URL: sim.DingTalkURL("tok"), SecretFile: secretFile(t, secret)}, nil, func() time.Time { return skewed })
	if err != nil {
		t.Fatal(err)
	}
	r, err := n.Notify(t.Context(), alert(1, simple))
	if err == nil || r.Outcome != events.OutcomePermanent || !strings.Contains(r.Hint, "NTP") {
		t.Fatalf("Notify = %+v, %v", r, err)
	}
	if sim.RejectionCount(chatsim.DingTalk, 310000) != 3 {
		t.Fatalf("rejections %v", sim.RejectionCounts())
	}
}

func TestNotifyNetworkError(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Token: "tok"})
	u := sim.DingTalkURL("tok")
	_ = sim.Close()
	n, err := New(Config{URL: u, SecretFile: secretFile(t, secret)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := n.Notify(t.Context(), alert(1, simple))
	if r.Outcome != events.OutcomeRetryable || r.HTTPStatus != 0 || r.RemoteMessage == "" {
		t.Fatalf("Notify = %+v", r)
	}
	for _, leak := range []string{"tok", "sign=", "timestamp="} {
		if strings.Contains(err.Error(), leak) || strings.Contains(r.RemoteMessage, leak) {
			t.Fatalf("error leaks %q: %v / %s", leak, err, r.RemoteMessage)
		}
	}
}

func TestBudgetHundredLongUnicodeDevices(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Name: "ops", Token: "tok", Secret: secret, Keywords: []string{"告警"}})
	n, err := New(Config{URL: sim.DingTalkURL("tok"), SecretFile: secretFile(t, secret), Keyword: "告警", AtMobiles: []string{"13800001111"}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	long := func(i int) string {
		return fmt.Sprintf("设备-%03d-%s", i, strings.Repeat("传感器αβγ😀\"\\", 30))
	}
	a := alert(100, long)
	a.DevicesTotal = 250
	body, m, err := n.Body(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > notify.MaxBodyBytes || m.Shown == 0 || m.Shown >= 100 || m.Omitted != 250-m.Shown || m.Truncated {
		t.Fatalf("body %d bytes, shown %d, omitted %d, truncated %v", len(body), m.Shown, m.Omitted, m.Truncated)
	}
	if !strings.Contains(m.Body, fmt.Sprintf("- 另有 %d 台", m.Omitted)) {
		t.Fatalf("no omitted line:\n%s", m.Body)
	}
	var parsed map[string]any
	if err := json.Unmarshal(body, &parsed); err != nil {
		t.Fatal(err)
	}
	if r, err := n.Notify(t.Context(), a); err != nil {
		t.Fatalf("Notify = %+v, %v", r, err)
	}
	if msgs := sim.Messages(); len(msgs) != 1 || msgs[0].Bytes > chatsim.MaxBodyBytes || len(msgs[0].Mentions) != 1 {
		t.Fatalf("messages %+v", msgs)
	}
}

func TestMsgTypeConfig(t *testing.T) {
	notifytest.CheckValidate(t, "r", Config.Validate, []notifytest.ValidateCase[Config]{
		{Config{URL: "tok", MsgType: MsgText, AtMobiles: []string{"138"}}, ""},
		{Config{URL: "tok", MsgType: MsgActionCard, LinkBaseURL: "https://fleet.example.com"}, ""},
		{Config{URL: "tok", MsgType: "link"}, `r.msg_type is "link": use markdown, text or actionCard`},
		{Config{URL: "tok", MsgType: MsgActionCard}, "r: msg_type actionCard needs link_base_url (its buttons open the alert in fleetwatch): set notifier.link_base_url or r.link_base_url, or use msg_type markdown"},
		{Config{URL: "tok", MsgType: MsgActionCard, LinkBaseURL: "https://f", AtAll: true}, "r: DingTalk's actionCard notifies nobody it mentions: remove at_mobiles, at_user_ids and at_all, or use msg_type markdown or text"},
		{Config{URL: "tok", LinkBaseURL: "f/x"}, `r.link_base_url "f/x" is not an http(s) URL without query: use e.g. https://fleet.example.com`},
	})
}

// TestMessageTypes sends one alert as each msgtype to a strict, signing,
// keyword-protected robot and checks the exact body and what the robot
// made of it: the keyword, the mentions that notify (text and markdown
// carry "@mobile" in the text), and the links.
func TestMessageTypes(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Name: "ops", Token: "tok", Secret: secret, Keywords: []string{"告警"}})
	a := alert(1, simple)
	tests := []struct {
		cfg      Config
		body     string
		mentions []string
		text     string
	}{
		{Config{MsgType: MsgText, AtMobiles: []string{"13800001111"}, AtUserIDs: []string{"manager01"}, AtAll: true},
			`{"msgtype":"text","text":{"content":"【告警】设备离线：dev-0 · site=sh-01\n\n状态：告警中 · 级别：严重 · 类型：设备离线\n分组：site=sh-01\n开始：2023-11-15 06:13:20 +08:00\n设备：共 1 台\n\n- dev-0 · 节点 emqx@n1 · 心跳超时 · 离线自 11-15 06:13:20\n\nfleetwatch · 告警 ID ` + a.ID[:12] + `\n查看告警: https://fleet.example.com/alerts/fp-1\n查看设备: https://fleet.example.com/devices/dev-0\n\n@13800001111 @manager01"},"at":{"atMobiles":["13800001111"],"atUserIds":["manager01"],"isAtAll":true},"msgUuid":"` + a.ID + `"}`,
			[]string{"13800001111", "manager01", "all"}, ""},
		{Config{MsgType: MsgActionCard},
			`{"msgtype":"actionCard","actionCard":{"title":"【告警】设备离线：dev-0 · site=sh-01","text":"### <font color=#d93026>【告警】设备离线：dev-0 · site=sh-01</font>\n\n**状态**：告警中 · **级别**：严重 · **类型**：设备离线  \n**分组**：site=sh-01  \n**开始**：2023-11-15 06:13:20 +08:00  \n**设备**：共 1 台\n\n- dev-0 · 节点 emqx@n1 · 心跳超时 · 离线自 11-15 06:13:20\n\nfleetwatch · 告警 ID ` + a.ID[:12] + `","btnOrientation":"1","btns":[{"title":"查看告警","actionURL":"https://fleet.example.com/alerts/fp-1"},{"title":"查看设备","actionURL":"https://fleet.example.com/devices/dev-0"}]},"msgUuid":"` + a.ID + `"}`,
			nil, "[查看告警](https://fleet.example.com/alerts/fp-1)"},
		{Config{AtMobiles: []string{"13800001111"}},
			"", []string{"13800001111"}, "[查看告警](https://fleet.example.com/alerts/fp-1) · [查看设备](https://fleet.example.com/devices/dev-0)\n\n@13800001111"},
	}
	for i, tt := range tests {
		cfg := tt.cfg
		cfg.URL, cfg.SecretFile, cfg.Keyword, cfg.Timezone, cfg.LinkBaseURL = sim.DingTalkURL("tok"), secretFile(t, secret), "告警", "Asia/Shanghai", "https://fleet.example.com"
		n, err := New(cfg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _, err := n.Body(a)
		if err != nil {
			t.Fatal(err)
		}
		if tt.body != "" && string(body) != tt.body {
			t.Fatalf("%d: body\n%s\nwant\n%s", i, body, tt.body)
		}
		// Each type is a new message for the robot: a new msgUuid.
		sent := a
		sent.ID = fmt.Sprintf("%s-%d", a.ID[:12], i)
		if r, err := n.Notify(t.Context(), sent); err != nil {
			t.Fatalf("%d: Notify = %+v, %v", i, r, err)
		}
		msgs := sim.Messages()
		m := msgs[len(msgs)-1]
		want := cfg.MsgType
		if want == "" {
			want = MsgMarkdown
		}
		if m.MsgType != want || !m.Signed || m.Title != "【告警】设备离线：dev-0 · site=sh-01" || len(m.SilentMentions) != 0 {
			t.Fatalf("%d: message %+v", i, m)
		}
		if strings.Join(m.Mentions, ",") != strings.Join(tt.mentions, ",") {
			t.Fatalf("%d: mentions %v, want %v", i, m.Mentions, tt.mentions)
		}
		if !strings.Contains(m.Text, tt.text) {
			t.Fatalf("%d: text lacks %q:\n%s", i, tt.text, m.Text)
		}
	}
	if rj := sim.Rejections(); len(rj) != 0 {
		t.Fatalf("rejections %+v", rj)
	}
}
