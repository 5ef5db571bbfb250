package chatsim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"time"
)

// Generic webhook signature headers (see notify/webhook).
const (
	WebhookSignatureHeader = "X-Fleetwatch-Signature"
	WebhookTimestampHeader = "X-Fleetwatch-Timestamp"
)

var slackMentionRe = regexp.MustCompile(`<[@!]([^>|\s]+)[^>]*>`)

// WebhookSign computes the generic webhook signature independently of the
// notifier: "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
func WebhookSign(secret, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp + "."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// webhook is a receiver as a careful integrator would write it: JSON only,
// signature and timestamp checked when it has a secret, real statuses.
func (s *Server) webhook(r *http.Request, body []byte, readErr error) answer {
	req := s.open(Webhook, r.PathValue("token"))
	defer req.close()
	now, st := req.now, req.st
	reject := func(status int, msg, detail string) answer {
		req.reject(status, status, msg, detail)
		b, _ := json.Marshal(map[string]string{"error": msg})
		return answer{status: status, ctype: "application/json", body: b}
	}
	if st == nil {
		return reject(http.StatusNotFound, "no such webhook", "no receiver has this token")
	}
	if a, ok := req.fault(); ok {
		return a
	}
	if readErr != nil {
		return reject(http.StatusRequestEntityTooLarge, "body too large", "reading body: "+readErr.Error())
	}
	if !isJSON(r) {
		return reject(http.StatusUnsupportedMediaType, "want application/json", fmt.Sprintf("Content-Type %q", r.Header.Get("Content-Type")))
	}
	signed := false
	if st.robot.Secret != "" {
		ts := r.Header.Get(WebhookTimestampHeader)
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return reject(http.StatusUnauthorized, "missing or bad timestamp", WebhookTimestampHeader+" is not epoch seconds")
		}
		if skew, off := skewed(now, time.Unix(sec, 0), 5*time.Minute); off {
			return reject(http.StatusUnauthorized, "stale timestamp", fmt.Sprintf("timestamp is %s away (limit 5m)", skew.Round(time.Second)))
		}
		if got := r.Header.Get(WebhookSignatureHeader); !hmac.Equal([]byte(got), []byte(WebhookSign(st.robot.Secret, ts, body))) {
			return reject(http.StatusUnauthorized, "bad signature", "signature does not match sha256=hex(HMAC-SHA256(secret, timestamp.body))")
		}
		signed = true
	}
	var p struct {
		Kind  string `json:"kind"`
		Title string `json:"title"`
		Text  string `json:"text"`
	}
	if err := json.Unmarshal(body, &p); err != nil || p.Kind == "" || p.Title == "" {
		return reject(http.StatusBadRequest, "bad payload", "body is not a fleetwatch webhook payload (kind, title, text)")
	}
	if len(st.robot.Keywords) > 0 && !containsAny(p.Title+"\n"+p.Text, st.robot.Keywords) {
		return reject(http.StatusBadRequest, "keyword missing", fmt.Sprintf("none of %q appears in the message", st.robot.Keywords))
	}
	req.accept(Message{MsgType: p.Kind, Title: p.Title, Text: p.Text}, signed, body)
	return answer{status: http.StatusOK, ctype: "application/json", body: []byte(`{"ok":true}`)}
}
