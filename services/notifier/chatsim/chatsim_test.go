package chatsim

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	dtSecret = "SEC0123456789abcdef"
	fsSecret = "test-secret"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	s := New(cfg)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := readFixture(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readFixture reads testdata/<name>, a copy of shared/fixtures/chat/<name>
// (TestFixturesMatchShared keeps the copies honest).
func readFixture(name string) ([]byte, error) {
	return os.ReadFile("testdata/" + name)
}

// sharedFixtures is where the contract's fixtures live when the shared/
// folder sits beside the repository (workspace and CI).
const sharedFixtures = "../../../../shared/fixtures/chat/"

func TestFixturesMatchShared(t *testing.T) {
	names, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sharedFixtures); err != nil {
		t.Skipf("shared/fixtures/chat not beside the repository (%v): cannot compare the copies", err)
	}
	for _, n := range names {
		if n.IsDir() {
			continue
		}
		ours, _ := os.ReadFile("testdata/" + n.Name())
		theirs, err := os.ReadFile(sharedFixtures + n.Name())
		if err != nil || !bytes.Equal(ours, theirs) {
			t.Errorf("testdata/%s differs from shared/fixtures/chat (%v): copy it again", n.Name(), err)
		}
	}
}

type reply struct {
	status int
	body   map[string]any
}

func (r reply) code(t *testing.T, key string) int {
	t.Helper()
	n, ok := r.body[key].(float64)
	if !ok {
		t.Fatalf("reply has no numeric %q: %v (HTTP %d)", key, r.body, r.status)
	}
	return int(n)
}

func post(t *testing.T, u, ctype string, body []byte) reply {
	t.Helper()
	resp, err := http.Post(u, ctype, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode}
	_ = json.Unmarshal(b, &r.body)
	return r
}

func TestSignVectors(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"dingtalk", DingTalkSign(dtSecret, "1700000000000"), "TSZbRFUuvaSQaRKUpF970OPCb2/LcQAP3wOvwZIzBZk="},
		{"dingtalk with +", DingTalkSign(dtSecret, "1700000000001"), "h9I8htdbvJCasKF0f8Gu+a2Cr5fjl9T+pzb6hx3n+pE="},
		{"feishu", FeishuSign(fsSecret, "1700000000"), "mbm4Y4oluIPQ00qlBIhX8vAZ0EKv3nw0LuTb91jPL84="},
		{"dingtalk-style feishu mistake", DingTalkSign(fsSecret, "1700000000"), "ioThkp939qla5DvK7aF+h4LQRcKvYhihlJbNgHokY3s="},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, tt.got, tt.want)
		}
	}
	if q := url.QueryEscape(DingTalkSign(dtSecret, "1700000000000")); q != "TSZbRFUuvaSQaRKUpF970OPCb2%2FLcQAP3wOvwZIzBZk%3D" {
		t.Errorf("query form %s", q)
	}
}

func dtURL(s *Server, token, ts, rawSign string) string {
	u := s.DingTalkURL(token)
	if ts != "" {
		u += "&timestamp=" + ts
	}
	if rawSign != "" {
		u += "&sign=" + rawSign
	}
	return u
}

func markdown(text string) []byte {
	b, _ := json.Marshal(map[string]any{"msgtype": "markdown", "markdown": map[string]any{"title": "t", "text": text}})
	return b
}

func TestDingTalkStrictness(t *testing.T) {
	const ts = "1700000000000"
	good := url.QueryEscape(DingTalkSign(dtSecret, ts))
	plus := DingTalkSign(dtSecret, "1700000000001") // contains "+", "/" and "="
	big := markdown("告警 " + strings.Repeat("x", MaxBodyBytes))
	tests := []struct {
		name    string
		token   string
		ts      string
		sign    string
		ctype   string
		body    []byte
		code    int
		errmsg  string
		skewed  time.Duration
		allowIP []string
	}{
		{name: "fixture markdown", ts: ts, sign: good, body: fixture(t, "dingtalk_markdown.json"), errmsg: "ok"},
		{name: "fixture actionCard", ts: ts, sign: good, body: fixture(t, "dingtalk_actioncard.json"), errmsg: "ok"},
		{name: "sign with + escaped once", ts: "1700000000001", sign: url.QueryEscape(plus), body: markdown("告警 x"), errmsg: "ok"},
		{name: "unknown token", token: "nope", ts: ts, sign: good, body: markdown("告警 x"), code: 300001, errmsg: "token is not exist"},
		{name: "sign with + not escaped", ts: "1700000000001", sign: plus, body: markdown("告警 x"), code: 310000, errmsg: "sign not match"},
		{name: "sign escaped twice", ts: ts, sign: url.QueryEscape(good), body: markdown("告警 x"), code: 310000, errmsg: "sign not match"},
		{name: "sign missing", ts: ts, body: markdown("告警 x"), code: 310000, errmsg: "sign not match"},
		{name: "wrong secret", ts: ts, sign: url.QueryEscape(DingTalkSign("SECwrong", ts)), body: markdown("告警 x"), code: 310000, errmsg: "sign not match"},
		{name: "timestamp in seconds", ts: "1700000000", sign: url.QueryEscape(DingTalkSign(dtSecret, "1700000000")), body: markdown("告警 x"), code: 310000, errmsg: "invalid timestamp"},
		{name: "stale timestamp", ts: ts, sign: good, skewed: 61 * time.Minute, body: markdown("告警 x"), code: 310000, errmsg: "invalid timestamp"},
		{name: "future timestamp", ts: ts, sign: good, skewed: -61 * time.Minute, body: markdown("告警 x"), code: 310000, errmsg: "invalid timestamp"},
		{name: "59 minutes skew is fine", ts: ts, sign: good, skewed: 59 * time.Minute, body: markdown("告警 x"), errmsg: "ok"},
		{name: "keyword missing", ts: ts, sign: good, body: markdown("device offline"), code: 310000, errmsg: "keywords not in content"},
		{name: "keyword only in title", ts: ts, sign: good, body: []byte(`{"msgtype":"markdown","markdown":{"title":"告警","text":"x"}}`), code: 310000, errmsg: "keywords not in content"},
		{name: "too big", ts: ts, sign: good, body: big, code: 460101, errmsg: "message too long"},
		{name: "not json content type", ts: ts, sign: good, ctype: "text/plain", body: markdown("告警 x"), code: 43004},
		{name: "not json", ts: ts, sign: good, body: []byte(`告警`), code: 40035},
		{name: "markdown without text", ts: ts, sign: good, body: []byte(`{"msgtype":"markdown","markdown":{"title":"告警"}}`), code: 40035},
		{name: "unknown msgtype", ts: ts, sign: good, body: []byte(`{"msgtype":"card","text":{"content":"告警"}}`), code: 40035},
		{name: "text", ts: ts, sign: good, body: []byte(`{"msgtype":"text","text":{"content":"告警 x"}}`), errmsg: "ok"},
		{name: "btnOrientation as number", ts: ts, sign: good, body: []byte(`{"msgtype":"actionCard","actionCard":{"title":"t","text":"告警","btnOrientation":0,"singleTitle":"a","singleURL":"http://x"}}`), code: 40035},
		{name: "actionCard without buttons", ts: ts, sign: good, body: []byte(`{"msgtype":"actionCard","actionCard":{"title":"t","text":"告警"}}`), code: 40035},
		{name: "actionCard relative button URL", ts: ts, sign: good, body: []byte(`{"msgtype":"actionCard","actionCard":{"title":"t","text":"告警","btns":[{"title":"a","actionURL":"/alerts/1"}]}}`), code: 40035},
		{name: "actionCard single URL not a URL", ts: ts, sign: good, body: []byte(`{"msgtype":"actionCard","actionCard":{"title":"t","text":"告警","singleTitle":"a","singleURL":"alerts"}}`), code: 40035},
		{name: "actionCard with both single and btns", ts: ts, sign: good, body: []byte(`{"msgtype":"actionCard","actionCard":{"title":"t","text":"告警","singleTitle":"a","singleURL":"https://x","btns":[{"title":"a","actionURL":"https://x"}]}}`), code: 40035},
		{name: "actionCard dingtalk link", ts: ts, sign: good, body: []byte(`{"msgtype":"actionCard","actionCard":{"title":"t","text":"告警","singleTitle":"a","singleURL":"dingtalk://dingtalkclient/page/link?url=x"}}`), errmsg: "ok"},
		{name: "text without content", ts: ts, sign: good, body: []byte(`{"msgtype":"text","text":{}}`), code: 40035},
		{name: "text with markdown object only", ts: ts, sign: good, body: []byte(`{"msgtype":"text","markdown":{"title":"告警","text":"告警"}}`), code: 40035},
		{name: "atMobiles not an array", ts: ts, sign: good, body: []byte(`{"msgtype":"text","text":{"content":"告警 @138"},"at":{"atMobiles":"138"}}`), code: 40035},
		{name: "isAtAll as string", ts: ts, sign: good, body: []byte(`{"msgtype":"text","text":{"content":"告警"},"at":{"isAtAll":"true"}}`), code: 40035},
		{name: "ip not allowlisted", ts: ts, sign: good, allowIP: []string{"10.1.2.3"}, body: markdown("告警 x"), code: 310000, errmsg: "ip 127.0.0.1 not in whitelist"},
		{name: "ip allowlisted by cidr", ts: ts, sign: good, allowIP: []string{"127.0.0.0/8"}, body: markdown("告警 x"), errmsg: "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: time.UnixMilli(1700000000000).Add(tt.skewed)}
			s := start(t, Config{Now: clk.Now, DingTalk: []Robot{{Name: "ops", Token: "tok", Secret: dtSecret, Keywords: []string{"告警"}, AllowedIPs: tt.allowIP}}})
			token := tt.token
			if token == "" {
				token = "tok"
			}
			ctype := tt.ctype
			if ctype == "" {
				ctype = "application/json"
			}
			r := post(t, dtURL(s, token, tt.ts, tt.sign), ctype, tt.body)
			if r.status != http.StatusOK {
				t.Fatalf("HTTP %d, want 200", r.status)
			}
			if got := r.code(t, "errcode"); got != tt.code {
				t.Fatalf("errcode %d (%v), want %d", got, r.body["errmsg"], tt.code)
			}
			if msg, _ := r.body["errmsg"].(string); !strings.Contains(msg, tt.errmsg) {
				t.Fatalf("errmsg %q does not contain %q", msg, tt.errmsg)
			}
			wantMsgs := 0
			if tt.code == 0 {
				wantMsgs = 1
			} else if n := s.RejectionCount(DingTalk, tt.code); n != 1 {
				t.Fatalf("RejectionCount(%d) = %d, want 1", tt.code, n)
			}
			if n := len(s.Messages()); n != wantMsgs {
				t.Fatalf("%d messages recorded, want %d", n, wantMsgs)
			}
		})
	}
}

func TestDingTalkFixtureRendering(t *testing.T) {
	clk := &clock{t: time.UnixMilli(1700000000000)}
	s := start(t, Config{Now: clk.Now, DingTalk: []Robot{{Name: "ops", Token: "tok", Secret: dtSecret}}})
	sign := url.QueryEscape(DingTalkSign(dtSecret, "1700000000000"))
	r := post(t, dtURL(s, "tok", "1700000000000", sign), "application/json", fixture(t, "dingtalk_markdown.json"))
	if r.code(t, "errcode") != 0 {
		t.Fatalf("rejected: %v", r.body)
	}
	body := []byte(`{"msgtype":"text","text":{"content":"告警 no at in text"},"at":{"atMobiles":["13800002222"]}}`)
	if r := post(t, dtURL(s, "tok", "1700000000000", sign), "application/json", body); r.code(t, "errcode") != 0 {
		t.Fatalf("rejected: %v", r.body)
	}
	msgs := s.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	if m.Seq != 1 || m.Channel != DingTalk || m.Robot != "ops" || m.MsgType != "markdown" || m.Title != "[FIRING:2] HighCPU prod" || !m.Signed || !m.At.Equal(clk.Now()) {
		t.Fatalf("message = %+v", m)
	}
	if len(m.Mentions) != 1 || m.Mentions[0] != "13800001111" || len(m.SilentMentions) != 0 {
		t.Fatalf("mentions %v silent %v", m.Mentions, m.SilentMentions)
	}
	if m := msgs[1]; len(m.Mentions) != 0 || len(m.SilentMentions) != 1 || m.SilentMentions[0] != "13800002222" {
		t.Fatalf("mentions %v silent %v", m.Mentions, m.SilentMentions)
	}
	// text with "@mobile" in the content notifies; an actionCard notifies
	// nobody, "@mobile" or not.
	for _, body := range []string{
		`{"msgtype":"text","text":{"content":"告警 @13800002222"},"at":{"atMobiles":["13800002222"],"atUserIds":["u1"],"isAtAll":true}}`,
		`{"msgtype":"actionCard","actionCard":{"title":"t","text":"告警 @13800002222","singleTitle":"a","singleURL":"https://x"},"at":{"atMobiles":["13800002222"],"isAtAll":true}}`,
	} {
		if r := post(t, dtURL(s, "tok", "1700000000000", sign), "application/json", []byte(body)); r.code(t, "errcode") != 0 {
			t.Fatalf("rejected: %v", r.body)
		}
	}
	msgs = s.Messages()
	if m := msgs[2]; m.MsgType != "text" || strings.Join(m.Mentions, ",") != "13800002222,all" || strings.Join(m.SilentMentions, ",") != "u1" {
		t.Fatalf("text mentions %v silent %v", m.Mentions, m.SilentMentions)
	}
	if m := msgs[3]; m.MsgType != "actionCard" || len(m.Mentions) != 0 || strings.Join(m.SilentMentions, ",") != "13800002222,all" {
		t.Fatalf("actionCard mentions %v silent %v", m.Mentions, m.SilentMentions)
	}
}

func TestDingTalkRateLimitBlocks(t *testing.T) {
	clk := &clock{t: time.UnixMilli(1700000000000)}
	s := start(t, Config{Now: clk.Now, DingTalk: []Robot{{Name: "ops", Token: "tok", Keywords: []string{"告警"}}}})
	send := func() int {
		return post(t, s.DingTalkURL("tok"), "application/json", markdown("告警 x")).code(t, "errcode")
	}
	for i := range 20 {
		if c := send(); c != 0 {
			t.Fatalf("message %d: errcode %d", i+1, c)
		}
		clk.Add(time.Second)
	}
	r := post(t, s.DingTalkURL("tok"), "application/json", markdown("告警 x"))
	if r.code(t, "errcode") != 410100 || r.body["errmsg"] != "send too fast, exceed 20 times per minute" {
		t.Fatalf("21st: %v", r.body)
	}
	// Blocked for 10 minutes, even though the minute window has emptied.
	for _, d := range []time.Duration{time.Minute, 5 * time.Minute, 3*time.Minute + 59*time.Second} {
		clk.Add(d)
		if c := send(); c != 410100 {
			t.Fatalf("during the block: errcode %d, want 410100", c)
		}
	}
	clk.Add(time.Second) // 10 minutes after the 21st
	if c := send(); c != 0 {
		t.Fatalf("after the block: errcode %d", c)
	}
	if n := s.RejectionCount(DingTalk, 410100); n != 4 {
		t.Fatalf("410100 count %d, want 4", n)
	}
	if n := len(s.Messages()); n != 21 {
		t.Fatalf("%d messages, want 21", n)
	}
}

func TestDingTalkMsgUUIDDeduplicates(t *testing.T) {
	s := start(t, Config{DingTalk: []Robot{{Token: "tok"}}})
	body := []byte(`{"msgtype":"text","text":{"content":"x"},"msgUuid":"alert-1"}`)
	for range 2 {
		if c := post(t, s.DingTalkURL("tok"), "application/json", body).code(t, "errcode"); c != 0 {
			t.Fatalf("errcode %d", c)
		}
	}
	if n := len(s.Messages()); n != 1 || s.Duplicates() != 1 {
		t.Fatalf("%d messages, %d duplicates", n, s.Duplicates())
	}
}

func TestFailNext(t *testing.T) {
	s := start(t, Config{DingTalk: []Robot{{Token: "tok"}}, Feishu: []Robot{{Token: "hook"}}})
	s.FailNext(DingTalk, "tok", 1, http.StatusBadGateway)
	s.FailNext(Feishu, "hook", 1, http.StatusServiceUnavailable)
	if r := post(t, s.DingTalkURL("tok"), "application/json", markdown("x")); r.status != http.StatusBadGateway {
		t.Fatalf("HTTP %d", r.status)
	}
	if r := post(t, s.DingTalkURL("tok"), "application/json", markdown("x")); r.status != http.StatusOK || r.code(t, "errcode") != 0 {
		t.Fatalf("second: HTTP %d %v", r.status, r.body)
	}
	if r := post(t, s.FeishuURL("hook"), "application/json", []byte(`{"msg_type":"text","content":{"text":"x"}}`)); r.status != http.StatusServiceUnavailable {
		t.Fatalf("HTTP %d", r.status)
	}
}

func feishuBody(t *testing.T, ts any, sign string, rest string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(rest), &m); err != nil {
		t.Fatal(err)
	}
	if ts != nil {
		m["timestamp"] = ts
	}
	if sign != "" {
		m["sign"] = sign
	}
	b, _ := json.Marshal(m)
	return b
}

func TestFeishuStrictness(t *testing.T) {
	good := FeishuSign(fsSecret, "1700000000")
	const text = `{"msg_type":"text","content":{"text":"告警 device offline"}}`
	card := func(c string) string { return `{"msg_type":"interactive",` + c + `}` }
	tests := []struct {
		name    string
		token   string
		body    []byte
		ctype   string
		skewed  time.Duration
		allowIP []string
		code    int
		msg     string
	}{
		{name: "fixture interactive", body: fixture(t, "feishu_interactive.json"), msg: "success"},
		{name: "fixture post", body: fixture(t, "feishu_post.json"), msg: "success"},
		{name: "timestamp as number", body: feishuBody(t, 1700000000, good, text), msg: "success"},
		{name: "unknown token", token: "nope", body: feishuBody(t, "1700000000", good, text), code: 19001},
		{name: "dingtalk-style sign", body: feishuBody(t, "1700000000", "ioThkp939qla5DvK7aF+h4LQRcKvYhihlJbNgHokY3s=", text), code: 19021},
		{name: "sign missing", body: feishuBody(t, "1700000000", "", text), code: 19021},
		{name: "timestamp missing", body: feishuBody(t, nil, good, text), code: 19021},
		{name: "timestamp in milliseconds", body: feishuBody(t, "1700000000000", FeishuSign(fsSecret, "1700000000000"), text), code: 19021},
		{name: "stale timestamp", skewed: 61 * time.Minute, body: feishuBody(t, "1700000000", good, text), code: 19021},
		{name: "keyword missing", body: feishuBody(t, "1700000000", good, `{"msg_type":"text","content":{"text":"device offline"}}`), code: 19024},
		{name: "keyword in card header", body: feishuBody(t, "1700000000", good, card(`"card":{"header":{"title":{"tag":"plain_text","content":"告警"},"template":"red"},"elements":[{"tag":"hr"}]}`)), msg: "success"},
		{name: "card as string", body: feishuBody(t, "1700000000", good, card(`"card":"{\"elements\":[{\"tag\":\"div\",\"text\":{\"tag\":\"lark_md\",\"content\":\"告警\"}}]}"`)), code: 9499},
		{name: "card under content", body: feishuBody(t, "1700000000", good, card(`"content":{"card":{"elements":[{"tag":"div","text":{"tag":"lark_md","content":"告警"}}]}}`)), code: 9499},
		{name: "card header colour unknown", body: feishuBody(t, "1700000000", good, card(`"card":{"header":{"title":{"tag":"plain_text","content":"告警"},"template":"pink"},"elements":[{"tag":"hr"}]}`)), code: 9499},
		{name: "msg_type missing", body: feishuBody(t, "1700000000", good, `{"content":{"text":"告警"}}`), code: 19002},
		{name: "msg_type unknown", body: feishuBody(t, "1700000000", good, `{"msg_type":"markdown","content":{"text":"告警"}}`), code: 19002},
		{name: "text without text", body: feishuBody(t, "1700000000", good, `{"msg_type":"text","content":{}}`), code: 9499},
		{name: "too big", body: feishuBody(t, "1700000000", good, `{"msg_type":"text","content":{"text":"告警 `+strings.Repeat("y", MaxBodyBytes)+`"}}`), code: 9499},
		{name: "not json", body: []byte("告警"), code: 9499},
		{name: "content type", ctype: "text/plain", body: feishuBody(t, "1700000000", good, text), code: 9499},
		{name: "charset is fine", ctype: "application/json; charset=utf-8", body: feishuBody(t, "1700000000", good, text), msg: "success"},
		{name: "ip not allowed", allowIP: []string{"192.0.2.1"}, body: feishuBody(t, "1700000000", good, text), code: 19022},
		{name: "card button", body: feishuBody(t, "1700000000", good, card(`"card":{"elements":[{"tag":"div","text":{"tag":"lark_md","content":"告警"}},{"tag":"action","actions":[{"tag":"button","text":{"tag":"plain_text","content":"a"},"type":"primary","url":"https://f/a"}]}]}`)), msg: "success"},
		{name: "card button relative url", body: feishuBody(t, "1700000000", good, card(`"card":{"elements":[{"tag":"div","text":{"tag":"lark_md","content":"告警"}},{"tag":"action","actions":[{"tag":"button","text":{"tag":"plain_text","content":"a"},"url":"/a"}]}]}`)), code: 9499},
		{name: "card button without text", body: feishuBody(t, "1700000000", good, card(`"card":{"elements":[{"tag":"div","text":{"tag":"lark_md","content":"告警"}},{"tag":"action","actions":[{"tag":"button","url":"https://f/a"}]}]}`)), code: 9499},
		{name: "card button type unknown", body: feishuBody(t, "1700000000", good, card(`"card":{"elements":[{"tag":"div","text":{"tag":"lark_md","content":"告警"}},{"tag":"action","actions":[{"tag":"button","text":{"tag":"plain_text","content":"a"},"type":"blue","url":"https://f/a"}]}]}`)), code: 9499},
		{name: "post", body: feishuBody(t, "1700000000", good, postBody(`"zh_cn":{"title":"告警","content":[[{"tag":"text","text":"x"},{"tag":"a","text":"查看","href":"https://f/a"}],[{"tag":"at","user_id":"all"}]]}`)), msg: "success"},
		{name: "post keyword only in title", body: feishuBody(t, "1700000000", good, postBody(`"en_us":{"title":"告警 x","content":[[{"tag":"text","text":"x"}]]}`)), msg: "success"},
		{name: "post unknown language", body: feishuBody(t, "1700000000", good, postBody(`"zh":{"title":"告警","content":[[{"tag":"text","text":"x"}]]}`)), code: 9499},
		{name: "post without title", body: feishuBody(t, "1700000000", good, postBody(`"zh_cn":{"content":[[{"tag":"text","text":"告警"}]]}`)), code: 9499},
		{name: "post content not nested", body: feishuBody(t, "1700000000", good, postBody(`"zh_cn":{"title":"告警","content":[{"tag":"text","text":"x"}]}`)), code: 9499},
		{name: "post element without tag", body: feishuBody(t, "1700000000", good, postBody(`"zh_cn":{"title":"告警","content":[[{"text":"x"}]]}`)), code: 9499},
		{name: "post unknown tag", body: feishuBody(t, "1700000000", good, postBody(`"zh_cn":{"title":"告警","content":[[{"tag":"button","text":"x"}]]}`)), code: 9499},
		{name: "post link without href", body: feishuBody(t, "1700000000", good, postBody(`"zh_cn":{"title":"告警","content":[[{"tag":"a","text":"x"}]]}`)), code: 9499},
		{name: "post link relative", body: feishuBody(t, "1700000000", good, postBody(`"zh_cn":{"title":"告警","content":[[{"tag":"a","text":"x","href":"/a"}]]}`)), code: 9499},
		{name: "post at without user_id", body: feishuBody(t, "1700000000", good, postBody(`"zh_cn":{"title":"告警","content":[[{"tag":"at","user_name":"x"}]]}`)), code: 9499},
		{name: "post text not a string", body: feishuBody(t, "1700000000", good, postBody(`"zh_cn":{"title":"告警","content":[[{"tag":"text","text":1}]]}`)), code: 9499},
		{name: "post un_escape not a bool", body: feishuBody(t, "1700000000", good, postBody(`"zh_cn":{"title":"告警","content":[[{"tag":"text","text":"x","un_escape":"yes"}]]}`)), code: 9499},
		{name: "post keyword missing", body: feishuBody(t, "1700000000", good, postBody(`"zh_cn":{"title":"x","content":[[{"tag":"text","text":"x"}]]}`)), code: 19024},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: time.Unix(1700000000, 0).Add(tt.skewed)}
			s := start(t, Config{Now: clk.Now, Feishu: []Robot{{Name: "ops", Token: "hook", Secret: fsSecret, Keywords: []string{"告警"}, AllowedIPs: tt.allowIP}}})
			token := tt.token
			if token == "" {
				token = "hook"
			}
			ctype := tt.ctype
			if ctype == "" {
				ctype = "application/json"
			}
			r := post(t, s.FeishuURL(token), ctype, tt.body)
			if r.status != http.StatusOK {
				t.Fatalf("HTTP %d", r.status)
			}
			if got := r.code(t, "code"); got != tt.code {
				t.Fatalf("code %d (%v), want %d; rejections %+v", got, r.body["msg"], tt.code, s.Rejections())
			}
			if tt.msg != "" && r.body["msg"] != tt.msg {
				t.Fatalf("msg %v, want %s", r.body["msg"], tt.msg)
			}
			if tt.code != 0 && s.RejectionCount(Feishu, tt.code) != 1 {
				t.Fatalf("RejectionCount(%d) = %d", tt.code, s.RejectionCount(Feishu, tt.code))
			}
		})
	}
}

func postBody(langs string) string {
	return `{"msg_type":"post","content":{"post":{` + langs + `}}}`
}

func TestFeishuFixtureRendering(t *testing.T) {
	clk := &clock{t: time.Unix(1700000000, 0)}
	s := start(t, Config{Now: clk.Now, Feishu: []Robot{{Name: "ops", Token: "hook", Secret: fsSecret}}})
	if c := post(t, s.FeishuURL("hook"), "application/json", fixture(t, "feishu_interactive.json")).code(t, "code"); c != 0 {
		t.Fatalf("code %d", c)
	}
	m := s.Messages()[0]
	if m.Title != "告警 [FIRING:2] HighCPU prod" || m.Color != "red" || !m.Signed || m.MsgType != "interactive" {
		t.Fatalf("message %+v", m)
	}
	if len(m.Mentions) != 1 || m.Mentions[0] != "all" {
		t.Fatalf("mentions %v", m.Mentions)
	}
	if !strings.Contains(m.Text, "**instance**: 10.0.0.7:9100") {
		t.Fatalf("text %q", m.Text)
	}
}

func TestFeishuRateLimit(t *testing.T) {
	clk := &clock{t: time.Unix(1700000000, 0)}
	s := start(t, Config{Now: clk.Now, Feishu: []Robot{{Token: "hook"}}})
	body := []byte(`{"msg_type":"text","content":{"text":"x"}}`)
	send := func() int { return post(t, s.FeishuURL("hook"), "application/json", body).code(t, "code") }
	for i := range 5 {
		if c := send(); c != 0 {
			t.Fatalf("message %d: code %d", i+1, c)
		}
	}
	if c := send(); c != 11232 {
		t.Fatalf("6th in a second: code %d, want 11232", c)
	}
	// 100 per minute: 5 per second for 19 more seconds reaches 100.
	for sec := 1; sec < 20; sec++ {
		clk.Add(time.Second)
		for range 5 {
			if c := send(); c != 0 {
				t.Fatalf("second %d: code %d", sec, c)
			}
		}
	}
	clk.Add(time.Second)
	if c := send(); c != 11232 {
		t.Fatalf("101st in a minute: code %d, want 11232", c)
	}
	clk.Add(40 * time.Second) // the first second's 5 leave the window
	if c := send(); c != 0 {
		t.Fatalf("after the window: code %d", c)
	}
	if n := s.RejectionCount(Feishu, 11232); n != 2 {
		t.Fatalf("11232 count %d", n)
	}
}

func TestInboxAndWaitFor(t *testing.T) {
	s := start(t, Config{DingTalk: []Robot{{Name: "ops-dt", Token: "tok"}}})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	done := make(chan []Message, 1)
	go func() {
		msgs, err := s.WaitForMessages(ctx, 2)
		if err != nil {
			t.Error(err)
		}
		done <- msgs
	}()
	for i := range 2 {
		body := []byte(`{"msgtype":"markdown","markdown":{"title":"title ` + strconv.Itoa(i) + `","text":"<b>text</b>"}}`)
		if c := post(t, s.DingTalkURL("tok"), "application/json", body).code(t, "errcode"); c != 0 {
			t.Fatalf("errcode %d", c)
		}
	}
	post(t, s.DingTalkURL("bad"), "application/json", markdown("x"))
	if msgs := <-done; len(msgs) < 2 {
		t.Fatalf("WaitFor returned %d", len(msgs))
	}

	resp, err := http.Get(s.URL() + "/api/messages")
	if err != nil {
		t.Fatal(err)
	}
	var inbox Inbox
	if err := json.NewDecoder(resp.Body).Decode(&inbox); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(inbox.Messages) != 2 || inbox.Messages[0].Title != "title 1" || inbox.Messages[1].Title != "title 0" {
		t.Fatalf("api messages not newest first: %+v", inbox.Messages)
	}
	if len(inbox.Rejections) != 1 || inbox.Rejections[0].Code != 300001 || inbox.Counts[DingTalk][300001] != 1 || inbox.Requests != 3 {
		t.Fatalf("api rejections %+v counts %v requests %d", inbox.Rejections, inbox.Counts, inbox.Requests)
	}
	if !json.Valid(inbox.Messages[0].Body) {
		t.Fatalf("body is not JSON: %s", inbox.Messages[0].Body)
	}

	resp, err = http.Get(s.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	html := string(page)
	i0, i1 := strings.Index(html, "title 0"), strings.Index(html, "title 1")
	if resp.StatusCode != 200 || i0 < 0 || i1 < 0 || i1 > i0 || !strings.Contains(html, `http-equiv="refresh"`) || !strings.Contains(html, "&lt;b&gt;text&lt;/b&gt;") || !strings.Contains(html, "token is not exist") {
		t.Fatalf("inbox page:\n%s", html)
	}

	if r := post(t, s.URL()+"/", "application/json", nil); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("POST / = %d", r.status)
	}
	if resp, _ := http.Get(s.DingTalkURL("tok")); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /robot/send = %d", resp.StatusCode)
	}
}

func TestWaitForHonoursContext(t *testing.T) {
	s := New(Config{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.WaitForMessages(ctx, 1); err == nil {
		t.Fatal("no error")
	}
}

func TestEmptyInboxIsEmptyLists(t *testing.T) {
	s := start(t, Config{})
	resp, err := http.Get(s.URL() + "/api/messages")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if string(got["messages"]) != "[]" || string(got["rejections"]) != "[]" {
		t.Fatalf("empty inbox messages=%s rejections=%s, want empty lists rather than null", got["messages"], got["rejections"])
	}
}
