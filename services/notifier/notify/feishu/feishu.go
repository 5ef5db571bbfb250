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
	"fmt"
	"net/http"
	"net/url"
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
	cfg      Config
	endpoint *url.URL
	secret   string
	tmpl     *template.Template
	client   *http.Client
	now      func() time.Time
}

// New reads the URL and secret and prepares the templates. A nil client
// is http.DefaultClient, a nil now is time.Now.
func New(cfg Config, client *http.Client, now func() time.Time) (*Notifier, error) {
	if err := cfg.Validate("feishu"); err != nil {
		return nil, err
	}
	endpoint, secret, err := cfg.secrets()
	if err != nil {
		return nil, err
	}
	tmpl, err := notify.NewTemplate(cfg.Language, template.Chinese, cfg.Keyword, cfg.Timezone, cfg.LinkBaseURL)
	if err != nil {
		return nil, err
	}
	if client == nil {
		client = http.DefaultClient
	}
	if now == nil {
		now = time.Now
	}
	if cfg.MsgType == "" {
		cfg.MsgType = MsgInteractive
	}
	return &Notifier{cfg: cfg, endpoint: endpoint, secret: secret, tmpl: tmpl, client: client, now: now}, nil
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

func headerTemplate(firing bool, sev events.Severity) string {
	switch {
	case !firing:
		return "green"
	case sev == events.SeverityCritical:
		return "red"
	case sev == events.SeverityWarning:
		return "orange"
	}
	return "blue"
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

// plain turns the templates' markdown into plain text.
func plain(s string) string {
	s = strings.ReplaceAll(s, "**", "")
	return strings.ReplaceAll(s, "  \n", "\n")
}

// post renders m as a rich-text post: a paragraph per non-empty line, the
// links as "a" elements, the mentions as "at" elements.
func (n *Notifier) post(m template.Message) postContent {
	var paras [][]postElement
	for _, line := range strings.Split(plain(m.Body), "\n") {
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
	if n.tmpl.Language() == template.English {
		lang = "en_us"
	}
	return postContent{Post: map[string]post{lang: {Title: m.Title, Content: paras}}}
}

// text renders m as plain text: the title, the body, the links as URLs
// and the mentions as <at> tags.
func (n *Notifier) text(m template.Message) textContent {
	t := m.Title
	if m.Body != "" {
		t += "\n\n" + plain(m.Body)
	}
	for _, l := range m.Links {
		t += "\n" + l.Title + ": " + l.URL
	}
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
	m, err := c.Render(n.tmpl, func(m template.Message) bool {
		b := n.unsigned(m)
		if n.secret != "" {
			// Budget with a signature of the real size: 10 digits and 44 characters.
			b.Timestamp, b.Sign = "1700000000", strings.Repeat("x", 44)
		}
		return len(notify.EncodeJSON(b)) <= notify.MaxBodyBytes
	})
	if err != nil {
		return nil, template.Message{}, err
	}
	b := n.unsigned(m)
	if n.secret != "" {
		ts := now.Unix()
		b.Timestamp, b.Sign = strconv.FormatInt(ts, 10), Sign(n.secret, ts)
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
	payload, _, err := n.BodyOf(c, n.now())
	if err != nil {
		r := notify.RenderFailure(err)
		return r, r.Err(Name)
	}
	r := notify.Attempt(ctx, n.client, n.endpoint.String(), http.Header{"Content-Type": {"application/json; charset=utf-8"}}, payload,
		func(resp notify.Response) notify.Result {
			return Classify(resp.Status, resp.Header, resp.Body, n.cfg.Keyword)
		})
	// The latency includes rendering and signing.
	r.Latency = time.Since(start)
	return r, r.Err(Name)
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
	if h != nil {
		if d := notify.RetryAfterHeader(h.Get("x-ogw-ratelimit-reset")); d > 0 {
			return max(d, minRetry)
		}
		if d := notify.RetryAfterHeader(h.Get("Retry-After")); d > 0 {
			return max(d, minRetry)
		}
	}
	return minRetry
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
	if status >= 500 || status == http.StatusRequestTimeout {
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
		if status < 200 || status > 299 {
			return notify.HTTPFailure(status, h, respBody)
		}
		return notify.Result{
			Outcome: events.OutcomeRetryable, HTTPStatus: status,
			RemoteMessage: notify.Truncate(strings.TrimSpace(string(respBody)), 200),
			Hint:          "the answer has no code: is the URL a Feishu bot webhook, or is a proxy answering?",
		}
	}
	r := notify.Result{HTTPStatus: status, RemoteCode: strconv.FormatInt(code, 10), RemoteMessage: notify.Truncate(msg, 300)}
	lower := strings.ToLower(msg)
	switch code {
	case 0:
		r.Outcome = events.OutcomeDelivered
	case 11232, 11247:
		r.Outcome = events.OutcomeRateLimited
		r.RetryAfter = resetAfter(h)
		r.Hint = "Feishu limits a bot to 5 messages per second and 100 per minute: retrying after a pause"
	case 99991400:
		r.Outcome = events.OutcomeRateLimited
		r.RetryAfter = resetAfter(h)
		r.Hint = "Feishu's platform limiter: waiting for x-ogw-ratelimit-reset"
	case 9499:
		if strings.Contains(lower, "too many request") {
			r.Outcome = events.OutcomeRateLimited
			r.RetryAfter = resetAfter(h)
			r.Hint = "Feishu says too many requests: retrying after a pause"
		} else {
			r.Outcome = events.OutcomePermanent
			r.Hint = "Feishu rejected the request (format or size over 20 KB): a notifier bug, report it with the msg"
		}
	case 19001:
		r.Outcome = events.OutcomePermanent
		r.Hint = "the webhook token is invalid: copy the bot's whole webhook URL again"
	case 19002:
		r.Outcome = events.OutcomePermanent
		r.Hint = "Feishu rejected the msg_type: a notifier bug, report it"
	case 19021:
		r.Outcome = events.OutcomePermanent
		r.Hint = "secret does not match (or the clock is more than an hour off): copy the bot's signing secret verbatim and check the host's time sync"
	case 19022:
		r.Outcome = events.OutcomePermanent
		r.Hint = "IP not allowlisted: add the notifier's egress IP to the bot's IP allowlist"
	case 19024:
		r.Outcome = events.OutcomePermanent
		if keyword != "" {
			r.Hint = fmt.Sprintf("the bot's keywords do not include %q: add keyword %s to the bot (or set keyword to one of the bot's keywords)", keyword, keyword)
		} else {
			r.Hint = "the bot requires a keyword: set keyword to one of the bot's keywords (e.g. 告警) so every message carries it"
		}
	case 19036:
		r.Outcome = events.OutcomePermanent
		r.Hint = "the card is over Feishu's 30 KB limit: the notifier's byte budget failed (a bug)"
	default:
		r.Outcome = events.OutcomeRetryable
		r.Hint = fmt.Sprintf("unknown code %d: retrying a bounded number of times", code)
	}
	return r
}
