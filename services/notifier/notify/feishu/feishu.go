// Package feishu delivers alerts to a Feishu/Lark custom bot (飞书自定义
// 机器人) as interactive cards (header colour by severity and status,
// buttons to the fleetwatch views), rich-text posts or plain text: signed
// per attempt with Feishu's own algorithm (timestamp and sign in the JSON
// body), with the keyword envelope, mentions, a 20000-byte budget, and a
// classification of Feishu's answers into delivered, retryable, rate
// limited and permanent.
package feishu

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// Name is the channel name used in DeliveryEvents.
const Name = "feishu"

// Notifier sends alerts to one bot.
type Notifier struct {
	cfg  Config
	base notify.Base
}

// New reads the URL and secret and prepares the templates. A nil client
// is http.DefaultClient, a nil now is time.Now.
func New(cfg Config, client *http.Client, now func() time.Time) (*Notifier, error) {
	base, err := notify.NewBase(cfg.Validate, cfg.source(), client, now)
	if err != nil {
		return nil, err
	}
	if cfg.MsgType == "" {
		cfg.MsgType = MsgInteractive
	}
	return &Notifier{cfg: cfg, base: base}, nil
}

// Channel returns "feishu".
func (n *Notifier) Channel() string { return Name }

// Sign returns the Feishu signature for a timestamp in seconds:
// base64(HMAC-SHA256(key=timestamp+"\n"+secret, empty message)). It is not
// URL-encoded: it goes into the JSON body.
func Sign(secret string, timestamp int64) string {
	mac := hmac.New(sha256.New, []byte(strconv.FormatInt(timestamp, 10)+"\n"+secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

type plainText struct {
	Tag     string `json:"tag"`
	Content string `json:"content"`
}

type header struct {
	Title    plainText `json:"title"`
	Template string    `json:"template"`
}

type div struct {
	Tag  string    `json:"tag"`
	Text plainText `json:"text"`
}

type card struct {
	Config   map[string]bool `json:"config"`
	Header   header          `json:"header"`
	Elements []any           `json:"elements"`
}

type body struct {
	Timestamp string `json:"timestamp,omitempty"`
	Sign      string `json:"sign,omitempty"`
	MsgType   string `json:"msg_type"`
	Card      *card  `json:"card,omitempty"`
	Content   any    `json:"content,omitempty"`
}

type buttonElement struct {
	Tag  string    `json:"tag"`
	Text plainText `json:"text"`
	Type string    `json:"type"`
	URL  string    `json:"url"`
}

type actionElement struct {
	Tag     string          `json:"tag"`
	Actions []buttonElement `json:"actions"`
}

// postElement is one element of a post paragraph.
type postElement struct {
	Tag    string `json:"tag"`
	Text   string `json:"text,omitempty"`
	Href   string `json:"href,omitempty"`
	UserID string `json:"user_id,omitempty"`
}

type post struct {
	Title   string          `json:"title"`
	Content [][]postElement `json:"content"`
}

type postContent struct {
	Post map[string]post `json:"post"`
}

type textContent struct {
	Text string `json:"text"`
}

// HeaderTemplate is the card header colour: red for critical, orange for
// warning, blue for info, green once resolved.
func HeaderTemplate(a events.AlertEvent) string {
	return headerTemplate(a.Status == events.StatusFiring, a.Severity)
}

// headerTemplates are the card header colours by status and severity.
var headerTemplates = notify.Palette{Resolved: "green", Critical: "red", Warning: "orange", Other: "blue"}

func headerTemplate(firing bool, sev events.Severity) string {
	return headerTemplates.Pick(firing, sev)
}

func (n *Notifier) card(m template.Message) *card {
	els := []any{div{Tag: "div", Text: plainText{Tag: "lark_md", Content: m.Body}}}
	if len(m.Links) > 0 {
		act := actionElement{Tag: "action"}
		for i, l := range m.Links {
			typ := "default"
			if i == 0 {
				typ = "primary"
			}
			act.Actions = append(act.Actions, buttonElement{Tag: "button", Text: plainText{Tag: "plain_text", Content: l.Title}, Type: typ, URL: l.URL})
		}
		els = append(els, act)
	}
	var at []string
	if n.cfg.MentionAll {
		at = append(at, "<at id=all></at>")
	}
	for _, id := range n.cfg.MentionUserIDs {
		at = append(at, "<at id="+id+"></at>")
	}
	if len(at) > 0 {
		els = append(els, map[string]string{"tag": "hr"}, div{Tag: "div", Text: plainText{Tag: "lark_md", Content: strings.Join(at, " ")}})
	}
	return &card{
		Config:   map[string]bool{"wide_screen_mode": true},
		Header:   header{Title: plainText{Tag: "plain_text", Content: m.Title}, Template: headerTemplate(m.Firing, m.Severity)},
		Elements: els,
	}
}

// post renders m as a rich-text post: a paragraph per non-empty line, the
// links as "a" elements, the mentions as "at" elements.
func (n *Notifier) post(m template.Message) postContent {
	var paras [][]postElement
	for _, line := range strings.Split(notify.Plain(m.Body), "\n") {
		if strings.TrimSpace(line) != "" {
			paras = append(paras, []postElement{{Tag: "text", Text: line}})
		}
	}
	if len(m.Links) > 0 {
		var links []postElement
		for i, l := range m.Links {
			if i > 0 {
				links = append(links, postElement{Tag: "text", Text: " · "})
			}
			links = append(links, postElement{Tag: "a", Text: l.Title, Href: l.URL})
		}
		paras = append(paras, links)
	}
	var at []postElement
	if n.cfg.MentionAll {
		at = append(at, postElement{Tag: "at", UserID: "all"})
	}
	for _, id := range n.cfg.MentionUserIDs {
		at = append(at, postElement{Tag: "at", UserID: id})
	}
	if len(at) > 0 {
		paras = append(paras, at)
	}
	if len(paras) == 0 {
		// Cut for size: a post needs content; the title carries the keyword.
		paras = [][]postElement{{{Tag: "text", Text: " "}}}
	}
	lang := "zh_cn"
	if n.base.Template.Language() == template.English {
		lang = "en_us"
	}
	return postContent{Post: map[string]post{lang: {Title: m.Title, Content: paras}}}
}

// text renders m as plain text: the title, the body, the links as URLs
// and the mentions as <at> tags.
func (n *Notifier) text(m template.Message) textContent {
	t := notify.PlainText(m)
	var at []string
	if n.cfg.MentionAll {
		at = append(at, `<at user_id="all">all</at>`)
	}
	for _, id := range n.cfg.MentionUserIDs {
		at = append(at, `<at user_id="`+id+`"></at>`)
	}
	if len(at) > 0 {
		t += "\n\n" + strings.Join(at, " ")
	}
	return textContent{Text: t}
}

// unsigned is the body of m without timestamp and sign.
func (n *Notifier) unsigned(m template.Message) body {
	b := body{MsgType: n.cfg.MsgType}
	switch n.cfg.MsgType {
	case MsgPost:
		b.Content = n.post(m)
	case MsgText:
		b.Content = n.text(m)
	default:
		b.Card = n.card(m)
	}
	return b
}

// Body renders a into a body of the configured message type signed for
// now, at most notify.MaxBodyBytes long.
func (n *Notifier) Body(a events.AlertEvent, now time.Time) ([]byte, template.Message, error) {
	return n.BodyOf(notify.AlertContent(a), now)
}

// BodyOf renders any content (an alert, a digest, a test message) like Body.
func (n *Notifier) BodyOf(c notify.Content, now time.Time) ([]byte, template.Message, error) {
	m, err := c.Render(n.base.Template, func(m template.Message) bool {
		b := n.unsigned(m)
		if n.base.Secret != "" {
			// Budget with a signature of the real size: 10 digits and 44 characters.
			b.Timestamp, b.Sign = "1700000000", strings.Repeat("x", 44)
		}
		return len(notify.EncodeJSON(b)) <= notify.MaxBodyBytes
	})
	if err != nil {
		return nil, template.Message{}, err
	}
	b := n.unsigned(m)
	if n.base.Secret != "" {
		ts := now.Unix()
		b.Timestamp, b.Sign = strconv.FormatInt(ts, 10), Sign(n.base.Secret, ts)
	}
	return notify.EncodeJSON(b), m, nil
}

// Notify sends a to the bot once and classifies the answer. The error is
// nil exactly when the result is delivered.
func (n *Notifier) Notify(ctx context.Context, a events.AlertEvent) (notify.Result, error) {
	return n.Send(ctx, notify.AlertContent(a))
}

// Send sends any content like Notify.
func (n *Notifier) Send(ctx context.Context, c notify.Content) (notify.Result, error) {
	start := time.Now()
	// Sign per attempt: a timestamp from start-up is rejected after an hour.
	payload, _, err := n.BodyOf(c, n.base.Now())
	return n.base.Deliver(payload, err, func(payload []byte) notify.Result {
		r := n.base.Post(ctx, n.base.Endpoint.String(), http.Header{"Content-Type": {notify.JSON + "; charset=utf-8"}}, payload,
			func(status int, h http.Header, body []byte) notify.Result {
				return Classify(status, h, body, n.cfg.Keyword)
			})
		// The latency includes rendering and signing.
		r.Latency = time.Since(start)
		return r
	})
}

// answer is Feishu's reply: {"code":N,"msg":"…"}, or the legacy
// {"StatusCode":N,"StatusMessage":"…"}.
type answer struct {
	Code          json.RawMessage `json:"code"`
	Msg           string          `json:"msg"`
	StatusCode    json.RawMessage `json:"StatusCode"`
	StatusMessage string          `json:"StatusMessage"`
}

// minRetry is the least wait after a frequency limit (contract: ≥ 1 s).
const minRetry = time.Second

// resetAfter reads x-ogw-ratelimit-reset (seconds until the limiter
// resets), falling back to Retry-After and then to minRetry.
func resetAfter(h http.Header) time.Duration {
	return notify.WaitHeader(h, minRetry, "x-ogw-ratelimit-reset", "Retry-After")
}

// Classify turns Feishu's answer into a Result, by the body code first.
// keyword is the configured keyword, for the hint.
func Classify(status int, h http.Header, respBody []byte, keyword string) notify.Result {
	if status == http.StatusTooManyRequests {
		return notify.Result{
			Outcome: events.OutcomeRateLimited, HTTPStatus: status, RetryAfter: resetAfter(h),
			RemoteMessage: notify.Truncate(strings.TrimSpace(string(respBody)), 200),
			Hint:          "Feishu's platform limiter answered 429: waiting for x-ogw-ratelimit-reset",
		}
	}
	if notify.Transient(status) {
		return notify.HTTPFailure(status, h, respBody)
	}
	var a answer
	jsonErr := json.Unmarshal(respBody, &a)
	code, hasCode := notify.Number(a.Code)
	msg := a.Msg
	if jsonErr == nil && !hasCode {
		// Legacy answer: no code, StatusCode 0 on success.
		code, hasCode = notify.Number(a.StatusCode)
		msg = a.StatusMessage
	}
	if jsonErr != nil || !hasCode {
		return notify.NoCode(status, h, respBody, "the answer has no code: is the URL a Feishu bot webhook, or is a proxy answering?")
	}
	return codes.Classify(notify.Answer{Status: status, Header: h, Code: code, Msg: msg, Keyword: keyword})
}

// codes are Feishu's codes (contracts/chat.md) and what they mean.
var codes = notify.Codes{Noun: "code", Known: map[int64]notify.Class{
	0: {Outcome: events.OutcomeDelivered},
	// frequency limited
	11232:    frequencyLimited,
	11247:    frequencyLimited,
	99991400: {Outcome: events.OutcomeRateLimited, Hint: "Feishu's platform limiter: waiting for x-ogw-ratelimit-reset", Refine: waitReset},
	// Bad Request: format or size, unless the msg says too many requests.
	9499:  {Outcome: events.OutcomePermanent, Hint: "Feishu rejected the request (format or size over 20 KB): a notifier bug, report it with the msg", Refine: badRequest},
	19001: {Outcome: events.OutcomePermanent, Hint: "the webhook token is invalid: copy the bot's whole webhook URL again"},
	19002: {Outcome: events.OutcomePermanent, Hint: "Feishu rejected the msg_type: a notifier bug, report it"},
	19021: {Outcome: events.OutcomePermanent, Hint: "secret does not match (or the clock is more than an hour off): copy the bot's signing secret verbatim and check the host's time sync"},
	19022: {Outcome: events.OutcomePermanent, Hint: "IP not allowlisted: add the notifier's egress IP to the bot's IP allowlist"},
	19024: {Outcome: events.OutcomePermanent, Refine: func(c notify.Class, a notify.Answer) notify.Class {
		c.Hint = notify.KeywordHint("bot", a.Keyword)
		return c
	}},
	19036: {Outcome: events.OutcomePermanent, Hint: "the card is over Feishu's 30 KB limit: the notifier's byte budget failed (a bug)"},
}}

var frequencyLimited = notify.Class{Outcome: events.OutcomeRateLimited,
	Hint: "Feishu limits a bot to 5 messages per second and 100 per minute: retrying after a pause", Refine: waitReset}

// waitReset waits for the limiter's reset header (at least minRetry).
func waitReset(c notify.Class, a notify.Answer) notify.Class {
	c.RetryAfter = resetAfter(a.Header)
	return c
}

// badRequest tells a 9499 that is a rate limit from a malformed request.
func badRequest(c notify.Class, a notify.Answer) notify.Class {
	if strings.Contains(strings.ToLower(a.Msg), "too many request") {
		return notify.Class{Outcome: events.OutcomeRateLimited, RetryAfter: resetAfter(a.Header), Hint: "Feishu says too many requests: retrying after a pause"}
	}
	return c
}
