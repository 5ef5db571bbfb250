package chatsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// WeCom answers (errcode, errmsg) used by the simulator.
const (
	wcInvalidURL  = 93000 // invalid webhook url
	wcTooFast     = 45009 // api freq out of limit
	wcTooLong     = 40058 // content too long
	wcBadJSON     = 40008 // invalid message type / bad body
	wcMissingBody = 44004 // empty content
)

// WeCom limits (contracts/chat.md).
const (
	WeComPerMinute       = 20
	WeComMarkdownMaxByte = 4096
	WeComTextMaxBytes    = 2048
)

var weComAtRe = regexp.MustCompile(`<@([^>\s]+)>`)

func (s *Server) weCom(r *http.Request, body []byte, readErr error) answer {
	req := s.open(WeCom, r.URL.Query().Get("key"))
	defer req.close()
	now, st := req.now, req.st
	reject := req.errcode
	if st == nil {
		return reject(wcInvalidURL, "invalid webhook url, hint: [1700000000_1_abc], from ip: 127.0.0.1", "no robot has this key")
	}
	if a, ok := req.fault(); ok {
		return a
	}
	// WeCom refuses the 21st message of a rolling minute; unlike DingTalk
	// it does not block the robot beyond that minute.
	if !s.unlimited && !admit(st, now, [2]int64{WeComPerMinute, int64(time.Minute)}) {
		return reject(wcTooFast, "api freq out of limit", fmt.Sprintf("over %d messages per minute", WeComPerMinute))
	}
	if readErr != nil {
		return reject(wcTooLong, "content exceed max length", "reading body: "+readErr.Error())
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return reject(wcBadJSON, "Warning: wrong json format.", "body is not a JSON object: "+err.Error())
	}
	var mt string
	if err := field(top, "msgtype", &mt); err != nil || mt == "" {
		return reject(wcBadJSON, "invalid message type", "msgtype is missing or not a string")
	}
	msg := Message{MsgType: mt}
	switch mt {
	case "markdown":
		var md struct {
			Content *string `json:"content"`
		}
		if err := field(top, "markdown", &md); err != nil || md.Content == nil || *md.Content == "" {
			return reject(wcMissingBody, "markdown.content exceed max length or empty", "markdown.content is missing or empty")
		}
		if len(*md.Content) > WeComMarkdownMaxByte {
			return reject(wcTooLong, "markdown.content exceed max length 4096", fmt.Sprintf("markdown.content is %d bytes", len(*md.Content)))
		}
		msg.Title, msg.Text = firstLine(*md.Content), *md.Content
		for _, m := range weComAtRe.FindAllStringSubmatch(*md.Content, -1) {
			msg.Mentions = append(msg.Mentions, m[1])
		}
	case "text":
		var t struct {
			Content             *string  `json:"content"`
			MentionedList       []string `json:"mentioned_list"`
			MentionedMobileList []string `json:"mentioned_mobile_list"`
		}
		if err := field(top, "text", &t); err != nil || t.Content == nil || *t.Content == "" {
			return reject(wcMissingBody, "text.content empty", "text.content is missing or empty")
		}
		if len(*t.Content) > WeComTextMaxBytes {
			return reject(wcTooLong, "text.content exceed max length 2048", fmt.Sprintf("text.content is %d bytes", len(*t.Content)))
		}
		msg.Title, msg.Text = firstLine(*t.Content), *t.Content
		msg.Mentions = append(append(msg.Mentions, t.MentionedList...), t.MentionedMobileList...)
	default:
		return reject(wcBadJSON, "invalid message type", fmt.Sprintf("msgtype %q is not text or markdown", mt))
	}
	if len(st.robot.Keywords) > 0 && !containsAny(msg.Text, st.robot.Keywords) {
		// WeCom has no keyword security; a keyword set here is checked so
		// tests can prove every message kind carries the envelope.
		return reject(wcBadJSON, "keyword missing (chatsim check)", fmt.Sprintf("none of %q appears in the message", st.robot.Keywords))
	}
	msg.Title = strings.TrimLeft(strings.TrimSpace(msg.Title), "# ")
	req.accept(msg, false, body)
	return jsonAnswer(map[string]any{"errcode": 0, "errmsg": "ok"})
}
