package chatsim

import (
	"encoding/json"
	"testing"
)

func FuzzParseDingTalk(f *testing.F) {
	for _, name := range []string{"dingtalk_markdown.json", "dingtalk_actioncard.json"} {
		f.Add(fixtureF(f, name))
	}
	f.Add([]byte(`{"msgtype":"text","text":{"content":"x"},"at":{"atMobiles":["1"]},"msgUuid":"u"}`))
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
