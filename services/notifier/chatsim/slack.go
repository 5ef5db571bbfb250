package chatsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// Slack limits (api.slack.com: block kit and incoming webhooks).
const (
	// SlackPerSecond is the sustained rate an incoming webhook accepts.
	SlackPerSecond = 1
	// SlackMaxBlocks, SlackMaxSectionText and SlackMaxHeaderText bound a
	// message's blocks.
	SlackMaxBlocks      = 50
	SlackMaxSectionText = 3000
	SlackMaxHeaderText  = 150
	// SlackRetryAfter is the Retry-After answered with a 429.
	SlackRetryAfter = 1
)

func textAnswer(status int, body string) answer {
	return answer{status: status, ctype: "text/plain; charset=utf-8", body: []byte(body)}
}

// slack answers like hooks.slack.com: real HTTP statuses with a short
// text body ("ok", "invalid_payload", …).
func (s *Server) slack(r *http.Request, body []byte, readErr error) answer {
	req := s.open(Slack, r.PathValue("token"))
	defer req.close()
	now, st := req.now, req.st
	reject := func(status int, msg, detail string) answer {
		req.reject(status, status, msg, detail)
		return textAnswer(status, msg)
	}
	switch {
	case st == nil:
		return reject(http.StatusForbidden, "invalid_token", "no webhook has this path")
	case st.robot.ChannelNotFound:
		return reject(http.StatusNotFound, "channel_not_found", "the webhook's channel was deleted")
	case st.robot.Archived:
		return reject(http.StatusGone, "channel_is_archived", "the webhook's channel is archived")
	}
	if a, ok := req.fault(); ok {
		return a
	}
	if !s.unlimited && !admit(st, now, [2]int64{SlackPerSecond, int64(time.Second)}) {
		a := reject(http.StatusTooManyRequests, "rate_limited", "over 1 message per second")
		a.retryAfter = SlackRetryAfter
		return a
	}
	if readErr != nil {
		return reject(http.StatusRequestEntityTooLarge, "request_too_large", "reading body: "+readErr.Error())
	}
	if !isJSON(r) {
		return reject(http.StatusBadRequest, "invalid_payload", fmt.Sprintf("Content-Type %q is not application/json", r.Header.Get("Content-Type")))
	}
	var p struct {
		Text   *string          `json:"text"`
		Blocks []map[string]any `json:"blocks"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return reject(http.StatusBadRequest, "invalid_payload", "body is not a JSON message: "+err.Error())
	}
	if (p.Text == nil || *p.Text == "") && len(p.Blocks) == 0 {
		return reject(http.StatusBadRequest, "no_text", "neither text nor blocks")
	}
	if len(p.Blocks) > SlackMaxBlocks {
		return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("%d blocks, limit %d", len(p.Blocks), SlackMaxBlocks))
	}
	msg := Message{MsgType: "blocks"}
	var lines []string
	for i, b := range p.Blocks {
		typ, _ := b["type"].(string)
		switch typ {
		case "header":
			t, _ := b["text"].(map[string]any)
			if tt, _ := t["type"].(string); tt != "plain_text" {
				return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("blocks[%d]: a header's text must be plain_text", i))
			}
			c, _ := t["text"].(string)
			if c == "" || utf8.RuneCountInString(c) > SlackMaxHeaderText {
				return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("blocks[%d]: header text is empty or over %d characters", i, SlackMaxHeaderText))
			}
			msg.Title = c
		case "section":
			t, _ := b["text"].(map[string]any)
			tt, _ := t["type"].(string)
			c, _ := t["text"].(string)
			if tt != "mrkdwn" && tt != "plain_text" || c == "" {
				return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("blocks[%d]: a section needs text of type mrkdwn or plain_text", i))
			}
			if utf8.RuneCountInString(c) > SlackMaxSectionText {
				return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("blocks[%d]: section text over %d characters", i, SlackMaxSectionText))
			}
			lines = append(lines, c)
		case "divider":
			lines = append(lines, "---")
		case "context":
			els, _ := b["elements"].([]any)
			if len(els) == 0 {
				return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("blocks[%d]: a context needs elements", i))
			}
			lines = append(lines, strings.Join(collectTexts(els, nil), " "))
		default:
			return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("blocks[%d]: type %q is not header, section, divider or context", i, typ))
		}
	}
	msg.Text = strings.Join(lines, "\n")
	if p.Text != nil {
		if msg.Title == "" {
			msg.Title = firstLine(*p.Text)
		}
		if msg.Text == "" {
			msg.Text = *p.Text
		}
	}
	all := msg.Title + "\n" + msg.Text
	if p.Text != nil {
		all += "\n" + *p.Text
	}
	if len(st.robot.Keywords) > 0 && !containsAny(all, st.robot.Keywords) {
		return reject(http.StatusBadRequest, "invalid_payload", fmt.Sprintf("chatsim check: none of %q appears in the message", st.robot.Keywords))
	}
	for _, who := range slackMentionRe.FindAllStringSubmatch(all, -1) {
		msg.Mentions = append(msg.Mentions, who[1])
	}
	req.accept(msg, false, body)
	return textAnswer(http.StatusOK, "ok")
}
