package chatsim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func FuzzParseDingTalk(f *testing.F) {
	for _, name := range []string{"dingtalk_markdown.json", "dingtalk_actioncard.json"} {
		f.Add(fixtureF(f, name))
	}
	f.Add([]byte(`{"msgtype":"text","text":{"content":"x"},"at":{"atMobiles":["1"]},"msgUuid":"u"}`))
	f.Add([]byte(`{"msgtype":"actionCard","actionCard":{"title":"t","text":"x @1","btnOrientation":"1","btns":[{"title":"a","actionURL":"https://f/a"},{"title":"b","actionURL":"dingtalk://x"}]},"at":{"atMobiles":["1"],"isAtAll":true}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := parseDingTalk(body)
		if err != nil {
			return
		}
		if p.msg.MsgType == "" || p.msg.Text == "" || !json.Valid(body) {
			t.Fatalf("accepted %q as %+v", body, p.msg)
		}
	})
}

func FuzzParseFeishu(f *testing.F) {
	for _, name := range []string{"feishu_interactive.json", "feishu_post.json"} {
		f.Add(fixtureF(f, name))
	}
	f.Add([]byte(`{"msg_type":"text","content":{"text":"x"}}`))
	f.Add([]byte(`{"msg_type":"post","content":{"post":{"en_us":{"title":"t","content":[[{"tag":"text","text":"x","un_escape":true},{"tag":"a","text":"v","href":"https://f/a"}],[{"tag":"at","user_id":"all"},{"tag":"img","image_key":"k"}]]}}}}`))
	f.Add([]byte(`{"msg_type":"interactive","card":{"header":{"title":{"tag":"plain_text","content":"t"},"template":"red"},"elements":[{"tag":"action","actions":[{"tag":"button","text":{"tag":"plain_text","content":"a"},"type":"primary","url":"https://f/a"}]}]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var top map[string]json.RawMessage
		if json.Unmarshal(body, &top) != nil {
			return
		}
		p, code, err := parseFeishu(top)
		if err != nil {
			if code != fsBadRequest && code != fsBadMsgType {
				t.Fatalf("code %d for %q", code, body)
			}
			return
		}
		if p.msg.MsgType == "" {
			t.Fatalf("accepted %q without msg_type", body)
		}
	})
}

func fixtureF(f *testing.F, name string) []byte {
	f.Helper()
	b, err := readFixture(name)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzWeComSlackWebhook posts arbitrary bodies to the WeCom, Slack and
// webhook endpoints: every answer is well-formed and an accepted message
// is never empty.
func FuzzWeComSlackWebhook(f *testing.F) {
	f.Add([]byte(`{"msgtype":"markdown","markdown":{"content":"## x <@u>"}}`))
	f.Add([]byte(`{"msgtype":"text","text":{"content":"x","mentioned_mobile_list":["1"]}}`))
	f.Add([]byte(`{"text":"x","blocks":[{"type":"header","text":{"type":"plain_text","text":"t"}},{"type":"section","text":{"type":"mrkdwn","text":"*b*"}}]}`))
	f.Add([]byte(`{"kind":"alert","title":"t","text":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		s := New(Config{WeCom: []Robot{{Token: "k"}}, Slack: []Robot{{Token: "T/B/x"}}, Webhook: []Robot{{Token: "w"}}})
		for _, path := range []string{"/cgi-bin/webhook/send?key=k", "/services/T/B/x", "/webhook/w"} {
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if path[1] == 'c' {
				var a struct {
					ErrCode *int `json:"errcode"`
				}
				if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &a) != nil || a.ErrCode == nil {
					t.Fatalf("wecom answered %d %q", rec.Code, rec.Body.String())
				}
			}
		}
		for _, m := range s.Messages() {
			if m.Title == "" && m.Text == "" {
				t.Fatalf("accepted an empty message from %q", body)
			}
		}
	})
}
