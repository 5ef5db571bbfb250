package chatsim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DingTalk answers (errcode, errmsg) used by the simulator.
const (
	dtTokenMissing   = 300001 // token is not exist
	dtSecurity       = 310000 // keyword / sign / timestamp / ip
	dtTooFast        = 410100 // send too fast
	dtTooLong        = 460101 // message too long
	dtMissingParam   = 40035  // malformed or incomplete body
	dtBadContentType = 43004  // Content-Type is not JSON
)

// DingTalkSign computes the DingTalk robot signature independently of the
// notifier: base64(HMAC-SHA256(key=secret, msg=timestamp+"\n"+secret)),
// before URL-encoding.
func DingTalkSign(secret, timestamp string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp + "\n" + secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

type answer struct {
	status int
	ctype  string
	body   []byte
	// retryAfter, when positive, is sent as Retry-After (seconds).
	retryAfter int
}

func (a answer) write(w http.ResponseWriter) {
	if a.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(a.retryAfter))
	}
	w.Header().Set("Content-Type", a.ctype)
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}

func jsonAnswer(v any) answer {
	b, _ := json.Marshal(v)
	return answer{status: http.StatusOK, ctype: "application/json;charset=utf-8", body: b}
}

func faultAnswer(status int) answer {
	return answer{status: status, ctype: "text/html", body: []byte(fmt.Sprintf("<html><body><h1>%d %s</h1></body></html>", status, http.StatusText(status)))}
}

// readBody reads at most MaxBodyBytes+1 bytes; more is errBodyTooLarge.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxBodyBytes {
		return b, errBodyTooLarge
	}
	return b, nil
}

func isJSON(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

func (s *Server) dingTalk(r *http.Request, body []byte, readErr error) answer {
	// Query() decodes the query exactly once: an unescaped "+" in sign
	// becomes a space and a double-encoded sign keeps its "%2F"s, both
	// of which then fail the comparison, as on DingTalk.
	q := r.URL.Query()
	req := s.open(DingTalk, q.Get("access_token"))
	defer req.close()
	now, st := req.now, req.st
	reject := req.errcode
	if st == nil {
		return reject(dtTokenMissing, "token is not exist", "no robot has this access_token")
	}
	if a, ok := req.fault(); ok {
		return a
	}
	const tooFast = "send too fast, exceed 20 times per minute"
	if now.Before(st.blockedUntil) {
		return reject(dtTooFast, tooFast, "robot blocked until "+st.blockedUntil.Format(time.RFC3339))
	}
	if !s.unlimited && !admit(st, now, [2]int64{DingTalkPerMinute, int64(time.Minute)}) {
		st.blockedUntil = now.Add(DingTalkBlock)
		return reject(dtTooFast, tooFast, "21st message within a minute: robot blocked for 10 minutes")
	}
	if ip := clientIP(r); !ipAllowed(st.robot.AllowedIPs, ip) {
		return reject(dtSecurity, "ip "+ip+" not in whitelist", "the robot's IP allowlist does not contain "+ip)
	}
	if !isJSON(r) {
		return reject(dtBadContentType, "无效的HTTP HEADER Content-Type", fmt.Sprintf("Content-Type %q is not application/json", r.Header.Get("Content-Type")))
	}
	if readErr == errBodyTooLarge {
		return reject(dtTooLong, "message too long, exceed 20000 bytes", fmt.Sprintf("body over %d bytes", MaxBodyBytes))
	}
	if readErr != nil {
		return reject(dtMissingParam, "缺少参数 json", "reading body: "+readErr.Error())
	}
	signed := false
	if st.robot.Secret != "" {
		ts := q.Get("timestamp")
		if ts == "" && q.Get("sign") == "" {
			return reject(dtSecurity, "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]", "the robot signs (加签) but the request has neither timestamp nor sign")
		}
		ms, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return reject(dtSecurity, "invalid timestamp", fmt.Sprintf("timestamp %q is not epoch milliseconds", ts))
		}
		if skew, off := skewed(now, time.UnixMilli(ms), MaxClockSkew); off {
			return reject(dtSecurity, "invalid timestamp", fmt.Sprintf("timestamp %d is %s away from the server clock (limit 1h; seconds instead of milliseconds?)", ms, skew.Round(time.Second)))
		}
		got, want := q.Get("sign"), DingTalkSign(st.robot.Secret, ts)
		if !hmac.Equal([]byte(got), []byte(want)) {
			detail := "sign does not match base64(HMAC-SHA256(secret, timestamp+\"\\n\"+secret))"
			switch {
			case got == "":
				detail = "sign is missing from the query string"
			case strings.ReplaceAll(got, " ", "+") == want:
				detail = "sign has spaces where \"+\" belongs: it was not URL-encoded"
			case strings.Contains(got, "%"):
				detail = "sign still contains %XX escapes after decoding: it was URL-encoded twice"
			}
			return reject(dtSecurity, "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]", detail)
		}
		signed = true
	}
	m, err := parseDingTalk(body)
	if err != nil {
		return reject(dtMissingParam, "缺少参数 json", err.Error())
	}
	if len(st.robot.Keywords) > 0 && !containsAny(m.keywordText, st.robot.Keywords) {
		return reject(dtSecurity, "keywords not in content, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]",
			fmt.Sprintf("none of %q appears in the message text", st.robot.Keywords))
	}
	if m.msg.MsgUUID != "" {
		if st.msgUUIDs[m.msg.MsgUUID] {
			s.duplicates++
			s.notifyLocked()
			return jsonAnswer(map[string]any{"errcode": 0, "errmsg": "ok"})
		}
		st.msgUUIDs[m.msg.MsgUUID] = true
	}
	req.accept(m.msg, signed, body)
	return jsonAnswer(map[string]any{"errcode": 0, "errmsg": "ok"})
}

func containsAny(text string, words []string) bool {
	for _, w := range words {
		if w != "" && strings.Contains(text, w) {
			return true
		}
	}
	return false
}

type parsed struct {
	msg         Message
	keywordText string
}

type dtAt struct {
	AtMobiles []string `json:"atMobiles"`
	AtUserIDs []string `json:"atUserIds"`
	IsAtAll   bool     `json:"isAtAll"`
}

// parseDingTalk checks a DingTalk body against the schema of its msgtype
// and renders it for humans.
func parseDingTalk(body []byte) (parsed, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return parsed{}, fmt.Errorf("body is not a JSON object: %v", err)
	}
	var msgtype string
	if err := field(top, "msgtype", &msgtype); err != nil || msgtype == "" {
		return parsed{}, fmt.Errorf("msgtype is missing or not a string")
	}
	var p parsed
	p.msg.MsgType = msgtype
	switch msgtype {
	case "text":
		var t struct {
			Content *string `json:"content"`
		}
		if err := field(top, "text", &t); err != nil || t.Content == nil || *t.Content == "" {
			return parsed{}, fmt.Errorf("text.content is missing or empty")
		}
		p.msg.Title = firstLine(*t.Content)
		p.msg.Text = *t.Content
		p.keywordText = *t.Content
	case "markdown":
		var md struct {
			Title *string `json:"title"`
			Text  *string `json:"text"`
		}
		if err := field(top, "markdown", &md); err != nil || md.Title == nil || *md.Title == "" || md.Text == nil || *md.Text == "" {
			return parsed{}, fmt.Errorf("markdown.title and markdown.text are required non-empty strings")
		}
		p.msg.Title, p.msg.Text = *md.Title, *md.Text
		p.keywordText = *md.Text
	case "actionCard":
		var ac struct {
			Title          *string `json:"title"`
			Text           *string `json:"text"`
			SingleTitle    string  `json:"singleTitle"`
			SingleURL      string  `json:"singleURL"`
			BtnOrientation *string `json:"btnOrientation"`
			HideAvatar     *string `json:"hideAvatar"`
			Btns           []struct {
				Title     string `json:"title"`
				ActionURL string `json:"actionURL"`
			} `json:"btns"`
		}
		if err := field(top, "actionCard", &ac); err != nil {
			return parsed{}, fmt.Errorf("actionCard: %v (btnOrientation and hideAvatar are strings \"0\"/\"1\")", err)
		}
		if ac.Title == nil || *ac.Title == "" || ac.Text == nil || *ac.Text == "" {
			return parsed{}, fmt.Errorf("actionCard.title and actionCard.text are required non-empty strings")
		}
		single := ac.SingleTitle != "" || ac.SingleURL != ""
		switch {
		case single && (ac.SingleTitle == "" || ac.SingleURL == ""):
			return parsed{}, fmt.Errorf("actionCard.singleTitle and singleURL go together")
		case single && len(ac.Btns) > 0:
			return parsed{}, fmt.Errorf("actionCard has both singleTitle and btns")
		case !single && len(ac.Btns) == 0:
			return parsed{}, fmt.Errorf("actionCard needs singleTitle+singleURL or btns")
		}
		for i, b := range ac.Btns {
			if b.Title == "" || b.ActionURL == "" {
				return parsed{}, fmt.Errorf("actionCard.btns[%d] needs title and actionURL", i)
			}
			if !linkURL(b.ActionURL) {
				return parsed{}, fmt.Errorf("actionCard.btns[%d].actionURL %q is not an absolute http(s) or dingtalk:// URL", i, b.ActionURL)
			}
		}
		if single && !linkURL(ac.SingleURL) {
			return parsed{}, fmt.Errorf("actionCard.singleURL %q is not an absolute http(s) or dingtalk:// URL", ac.SingleURL)
		}
		if o := ac.BtnOrientation; o != nil && *o != "0" && *o != "1" {
			return parsed{}, fmt.Errorf("actionCard.btnOrientation is %q, want \"0\" or \"1\"", *o)
		}
		p.msg.Title, p.msg.Text = *ac.Title, *ac.Text
		for _, b := range ac.Btns {
			p.msg.Text += "\n[" + b.Title + "](" + b.ActionURL + ")"
		}
		if single {
			p.msg.Text += "\n[" + ac.SingleTitle + "](" + ac.SingleURL + ")"
		}
		p.keywordText = *ac.Text
	default:
		return parsed{}, fmt.Errorf("msgtype %q is not text, markdown or actionCard", msgtype)
	}
	if _, ok := top["at"]; ok {
		var at dtAt
		if err := field(top, "at", &at); err != nil {
			return parsed{}, fmt.Errorf("at: %v (atMobiles and atUserIds are string arrays, isAtAll a boolean)", err)
		}
		// DingTalk mentions in text and markdown only, and only those
		// whose "@…" is in the text; an actionCard notifies nobody.
		mentions := msgtype != "actionCard"
		for _, who := range append(append([]string(nil), at.AtMobiles...), at.AtUserIDs...) {
			if mentions && strings.Contains(p.msg.Text, "@"+who) {
				p.msg.Mentions = append(p.msg.Mentions, who)
			} else {
				p.msg.SilentMentions = append(p.msg.SilentMentions, who)
			}
		}
		if at.IsAtAll {
			if mentions {
				p.msg.Mentions = append(p.msg.Mentions, "all")
			} else {
				p.msg.SilentMentions = append(p.msg.SilentMentions, "all")
			}
		}
	}
	if _, ok := top["msgUuid"]; ok {
		if err := field(top, "msgUuid", &p.msg.MsgUUID); err != nil {
			return parsed{}, fmt.Errorf("msgUuid is not a string")
		}
	}
	return p, nil
}

// linkURL reports whether u is what a DingTalk button opens: an absolute
// http(s) URL or a dingtalk:// link.
func linkURL(u string) bool {
	p, err := url.Parse(u)
	return err == nil && ((p.Scheme == "http" || p.Scheme == "https") && p.Host != "" || p.Scheme == "dingtalk")
}

// field decodes top[name] into v; a missing field is an error.
func field(top map[string]json.RawMessage, name string, v any) error {
	raw, ok := top[name]
	if !ok {
		return fmt.Errorf("%s is missing", name)
	}
	return json.Unmarshal(raw, v)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if r := []rune(s); len(r) > 80 {
		s = string(r[:80]) + "…"
	}
	return s
}
