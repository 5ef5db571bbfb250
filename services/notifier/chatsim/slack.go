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

func (s *Server) serveSlack(w http.ResponseWriter, r *http.Request) {
	body, readErr := readBody(r)
	a, retryAfter := s.slack(r, body, readErr)
	if retryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(retryAfter))
	}
	a.write(w)
}

// slack answers like hooks.slack.com: real HTTP statuses with a short
// text body ("ok", "invalid_payload", …).
func (s *Server) slack(r *http.Request, body []byte, readErr error) (answer, int) {
	now := s.now()
	token := r.PathValue("token")

	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	st := s.robots[Slack][token]
	reject := func(status int, msg, detail string) answer {
		robot := "(unknown)"
		if st != nil {
			robot = st.robot.name()
		}
		s.rejectLocked(Rejection{Channel: Slack, Robot: robot, At: now, HTTPStatus: status, Code: status, Msg: msg, Detail: detail})
		return textAnswer(status, msg)
	}
	switch {
	case st == nil:
		return reject(http.StatusForbidden, "invalid_token", "no webhook has this path"), 0
	case st.robot.ChannelNotFound:
		return reject(http.StatusNotFound, "channel_not_found", "the webhook's channel was deleted"), 0
	case st.robot.Archived:
		return reject(http.StatusGone, "channel_is_archived", "the webhook's channel is archived"), 0
	}
	if len(st.faults) > 0 {
		status := st.faults[0]
		st.faults = st.faults[1:]
		s.rejectLocked(Rejection{Channel: Slack, Robot: st.robot.name(), At: now, HTTPStatus: status, Code: status, Detail: "injected HTTP failure"})
		return faultAnswer(status), 0
	}
	if !s.unlimited && !admit(st, now, [2]int64{SlackPerSecond, int64(time.Second)}) {
		return reject(http.StatusTooManyRequests, "rate_limited", "over 1 message per second"), SlackRetryAfter
	}
	if readErr != nil {
		return reject(http.StatusRequestEntityTooLarge, "request_too_large", "reading body: "+readErr.Error()), 0
	}
	if !isJSON(r) {
		return reject(http.StatusBadRequest, "invalid_payload", fmt.Sprintf("Content-Type %q is not application/json", r.Header.Get("Content-Type"))), 0
	}
	var p struct {
		Text   *string          `json:"text"`
		Blocks []map[string]any `json:"blocks"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return reject(http.StatusBadRequest, "invalid_payload", "body is not a JSON message: "+err.Error()), 0
	}
	if (p.Text == nil || *p.Text == "") && len(p.Blocks) == 0 {
		return reject(http.StatusBadRequest, "no_text", "neither text nor blocks"), 0
	}
	if len(p.Blocks) > SlackMaxBlocks {
		return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("%d blocks, limit %d", len(p.Blocks), SlackMaxBlocks)), 0
	}
	msg := Message{Channel: Slack, Robot: st.robot.name(), At: now, MsgType: "blocks", Bytes: len(body), Body: body}
	var lines []string
	for i, b := range p.Blocks {
		typ, _ := b["type"].(string)
		switch typ {
		case "header":
			t, _ := b["text"].(map[string]any)
			if tt, _ := t["type"].(string); tt != "plain_text" {
				return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("blocks[%d]: a header's text must be plain_text", i)), 0
			}
			c, _ := t["text"].(string)
			if c == "" || utf8.RuneCountInString(c) > SlackMaxHeaderText {
				return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("blocks[%d]: header text is empty or over %d characters", i, SlackMaxHeaderText)), 0
			}
			msg.Title = c
		case "section":
			t, _ := b["text"].(map[string]any)
			tt, _ := t["type"].(string)
			c, _ := t["text"].(string)
			if tt != "mrkdwn" && tt != "plain_text" || c == "" {
				return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("blocks[%d]: a section needs text of type mrkdwn or plain_text", i)), 0
			}
			if utf8.RuneCountInString(c) > SlackMaxSectionText {
				return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("blocks[%d]: section text over %d characters", i, SlackMaxSectionText)), 0
			}
			lines = append(lines, c)
		case "divider":
			lines = append(lines, "---")
		case "context":
			els, _ := b["elements"].([]any)
			if len(els) == 0 {
				return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("blocks[%d]: a context needs elements", i)), 0
			}
			lines = append(lines, strings.Join(collectTexts(els, nil), " "))
		default:
			return reject(http.StatusBadRequest, "invalid_blocks", fmt.Sprintf("blocks[%d]: type %q is not header, section, divider or context", i, typ)), 0
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
		return reject(http.StatusBadRequest, "invalid_payload", fmt.Sprintf("chatsim check: none of %q appears in the message", st.robot.Keywords)), 0
	}
	for _, who := range slackMentionRe.FindAllStringSubmatch(all, -1) {
		msg.Mentions = append(msg.Mentions, who[1])
	}
	s.acceptLocked(msg)
	return textAnswer(http.StatusOK, "ok"), 0
}
