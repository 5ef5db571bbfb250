// Package dingtalk delivers alerts to a DingTalk custom robot (钉钉自定义
// 机器人) as markdown, text or actionCard messages: signed per attempt
// (加签), with the keyword envelope, mentions ("@mobile" written into the
// text, or DingTalk notifies nobody), links to the fleetwatch views,
// msgUuid idempotency, a 20000-byte budget, and a classification of
// DingTalk's answers (HTTP 200 with an errcode) into delivered, retryable,
// rate limited and permanent.
package dingtalk

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
const Name = "dingtalk"

// BlockDuration is how long DingTalk blocks a robot that went over its
// rate limit.
const BlockDuration = 10 * time.Minute

// Notifier sends alerts to one robot.
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
	if err := cfg.Validate("dingtalk"); err != nil {
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
		cfg.MsgType = MsgMarkdown
	}
	return &Notifier{cfg: cfg, endpoint: endpoint, secret: secret, tmpl: tmpl, client: client, now: now}, nil
}

// Channel returns "dingtalk".
func (n *Notifier) Channel() string { return Name }

// Sign returns the DingTalk signature for a millisecond timestamp:
// base64(HMAC-SHA256(key=secret, msg=timestamp+"\n"+secret)). The caller
// URL-encodes it exactly once.
func Sign(secret string, timestampMS int64) string {
	ts := strconv.FormatInt(timestampMS, 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "\n" + secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// SignedURL returns endpoint with timestamp and sign for now appended; the
// sign is URL-encoded exactly once. Without a secret it returns endpoint.
func SignedURL(endpoint *url.URL, secret string, now time.Time) string {
	if secret == "" {
		return endpoint.String()
	}
	u := *endpoint
	ms := now.UnixMilli()
	extra := "timestamp=" + strconv.FormatInt(ms, 10) + "&sign=" + url.QueryEscape(Sign(secret, ms))
	if u.RawQuery == "" {
		u.RawQuery = extra
	} else {
		u.RawQuery += "&" + extra
	}
	return u.String()
}

type markdown struct {
	Title string `json:"title"`
	Text  string `json:"text"`
}

type textContent struct {
	Content string `json:"content"`
}

type button struct {
	Title     string `json:"title"`
	ActionURL string `json:"actionURL"`
}

type actionCard struct {
	Title          string   `json:"title"`
	Text           string   `json:"text"`
	SingleTitle    string   `json:"singleTitle,omitempty"`
	SingleURL      string   `json:"singleURL,omitempty"`
	BtnOrientation string   `json:"btnOrientation,omitempty"`
	Btns           []button `json:"btns,omitempty"`
}

type at struct {
	AtMobiles []string `json:"atMobiles,omitempty"`
	AtUserIDs []string `json:"atUserIds,omitempty"`
	IsAtAll   bool     `json:"isAtAll"`
}

type body struct {
	MsgType    string       `json:"msgtype"`
	Markdown   *markdown    `json:"markdown,omitempty"`
	Text       *textContent `json:"text,omitempty"`
	ActionCard *actionCard  `json:"actionCard,omitempty"`
	At         *at          `json:"at,omitempty"`
	MsgUUID    string       `json:"msgUuid,omitempty"`
}

// Colours of the heading by status and severity.
const (
	colorRed    = "#d93026"
	colorOrange = "#ff8800"
	colorGreen  = "#2ea121"
	colorBlue   = "#1677ff"
)

func color(m template.Message) string {
	switch {
	case !m.Firing:
		return colorGreen
	case m.Severity == events.SeverityCritical:
		return colorRed
	case m.Severity == events.SeverityWarning:
		return colorOrange
	}
	return colorBlue
}

// Body renders a into the request body: a message of the configured type
// whose text starts with the (keyword-carrying) title and ends with the
// links and mentions, at most notify.MaxBodyBytes long. The signature is
// not part of the body.
func (n *Notifier) Body(a events.AlertEvent) ([]byte, template.Message, error) {
	return n.BodyOf(notify.AlertContent(a))
}

// mentions is the "@…" line that makes DingTalk notify at_mobiles and
// at_user_ids: a mention works only if "@mobile" is also in the text.
func (n *Notifier) mentions() string {
	var who []string
	for _, x := range n.cfg.AtMobiles {
		who = append(who, "@"+x)
	}
	for _, x := range n.cfg.AtUserIDs {
		who = append(who, "@"+x)
	}
	return strings.Join(who, " ")
}

// plain turns the templates' markdown into plain text for msgtype text.
func plain(s string) string {
	s = strings.ReplaceAll(s, "**", "")
	return strings.ReplaceAll(s, "  \n", "\n")
}

// build is the request body of m for the configured message type.
func (n *Notifier) build(m template.Message, id string) []byte {
	b := body{MsgType: n.cfg.MsgType, MsgUUID: id}
	who := n.mentions()
	if n.cfg.MsgType != MsgActionCard {
		b.At = &at{AtMobiles: n.cfg.AtMobiles, AtUserIDs: n.cfg.AtUserIDs, IsAtAll: n.cfg.AtAll}
	}
	heading := "### <font color=" + color(m) + ">" + m.Title + "</font>\n\n" + m.Body
	switch n.cfg.MsgType {
	case MsgText:
		text := m.Title
		if m.Body != "" {
			text += "\n\n" + plain(m.Body)
		}
		for _, l := range m.Links {
			text += "\n" + l.Title + ": " + l.URL
		}
		if who != "" {
			text += "\n\n" + who
		}
		b.Text = &textContent{Content: text}
	case MsgActionCard:
		links := m.Links
		if len(links) == 0 {
			// Cut for size: the card still needs its button.
			links = []template.Link{{Title: "fleetwatch", URL: n.cfg.LinkBaseURL}}
		}
		card := &actionCard{Title: m.Title, Text: heading}
		if len(links) == 1 {
			card.SingleTitle, card.SingleURL = links[0].Title, links[0].URL
		} else {
			card.BtnOrientation = "1"
			for _, l := range links {
				card.Btns = append(card.Btns, button{Title: l.Title, ActionURL: l.URL})
			}
		}
		b.ActionCard = card
	default:
		text := heading
		if len(m.Links) > 0 {
			var ls []string
			for _, l := range m.Links {
				ls = append(ls, "["+l.Title+"]("+l.URL+")")
			}
			text += "\n\n" + strings.Join(ls, " · ")
		}
		if who != "" {
			text += "\n\n" + who
		}
		b.Markdown = &markdown{Title: m.Title, Text: text}
	}
	return notify.EncodeJSON(b)
}

// BodyOf renders any content (an alert, a digest, a test message) like
// Body; the content's id is the msgUuid.
func (n *Notifier) BodyOf(c notify.Content) ([]byte, template.Message, error) {
	m, err := c.Render(n.tmpl, func(m template.Message) bool { return len(n.build(m, c.ID)) <= notify.MaxBodyBytes })
	if err != nil {
		return nil, template.Message{}, err
	}
	return n.build(m, c.ID), m, nil
}

// Notify sends a to the robot once (plus one immediate re-signed retry if
// DingTalk says the timestamp is invalid) and classifies the answer. The
// error is nil exactly when the result is delivered.
func (n *Notifier) Notify(ctx context.Context, a events.AlertEvent) (notify.Result, error) {
	return n.Send(ctx, notify.AlertContent(a))
}

// Send sends any content like Notify.
func (n *Notifier) Send(ctx context.Context, c notify.Content) (notify.Result, error) {
	payload, _, err := n.BodyOf(c)
	if err != nil {
		r := notify.RenderFailure(err)
		return r, r.Err(Name)
	}
	start := time.Now()
	var r notify.Result
	for try := 1; try <= 2; try++ {
		r = n.send(ctx, payload)
		if n.secret == "" && signatureRejected(r) {
			r.Outcome = events.OutcomePermanent
			r.Hint = "the robot requires a signature (加签) but no secret is configured: set secret_env or secret_file to the robot's SEC… secret"
			break
		}
		if !invalidTimestamp(r) {
			break
		}
		if try == 2 {
			r.Outcome = events.OutcomePermanent
			r.Hint = "DingTalk rejected a freshly computed timestamp twice: the notifier's clock is more than an hour off; fix its time sync (NTP)"
		}
	}
	r.Latency = time.Since(start)
	return r, r.Err(Name)
}

func (n *Notifier) send(ctx context.Context, payload []byte) notify.Result {
	// Sign per attempt: a timestamp from start-up is rejected after an hour.
	u := SignedURL(n.endpoint, n.secret, n.now())
	return notify.Attempt(ctx, n.client, u, http.Header{"Content-Type": {"application/json"}}, payload,
		func(resp notify.Response) notify.Result {
			return Classify(resp.Status, resp.Header, resp.Body, n.cfg.Keyword)
		})
}

func signatureRejected(r notify.Result) bool {
	return r.RemoteCode == "310000" && (strings.Contains(r.RemoteMessage, "invalid timestamp") || strings.Contains(r.RemoteMessage, "sign not match"))
}

func invalidTimestamp(r notify.Result) bool {
	return r.RemoteCode == "310000" && strings.Contains(r.RemoteMessage, "invalid timestamp")
}

// errorBody is DingTalk's answer: {"errcode":N,"errmsg":"…"}, or the
// per-IP throttle {"status":1111,"punish":"deny","wait":5,…}.
type errorBody struct {
	ErrCode json.RawMessage `json:"errcode"`
	ErrMsg  string          `json:"errmsg"`
	Status  json.RawMessage `json:"status"`
	Punish  string          `json:"punish"`
	Wait    json.RawMessage `json:"wait"`
}

// Classify turns DingTalk's answer into a Result. It looks at the body
// first: DingTalk reports every business error as HTTP 200 with an
// errcode. keyword is the configured keyword, for the hint.
func Classify(status int, header http.Header, respBody []byte, keyword string) notify.Result {
	if status == http.StatusTooManyRequests || status >= 500 || status == http.StatusRequestTimeout {
		return notify.HTTPFailure(status, header, respBody)
	}
	var b errorBody
	jsonErr := json.Unmarshal(respBody, &b)
	code, hasCode := notify.Number(b.ErrCode)
	if jsonErr != nil || !hasCode {
		if jsonErr == nil {
			if st, _ := notify.Number(b.Status); st == 1111 || b.Punish == "deny" {
				wait, _ := notify.Number(b.Wait)
				return notify.Result{
					Outcome: events.OutcomeRateLimited, HTTPStatus: status,
					RemoteCode: "status " + strconv.FormatInt(st, 10), RemoteMessage: notify.Truncate(string(respBody), 200),
					RetryAfter: min(max(5*time.Minute, time.Duration(wait)*time.Minute), time.Hour),
					Hint:       "DingTalk throttles this notifier's IP (punish: deny): waiting at least 5 minutes",
				}
			}
		}
		if status < 200 || status > 299 {
			return notify.HTTPFailure(status, header, respBody)
		}
		return notify.Result{
			Outcome: events.OutcomeRetryable, HTTPStatus: status,
			RemoteMessage: notify.Truncate(strings.TrimSpace(string(respBody)), 200),
			Hint:          "the answer has no errcode: is the URL a DingTalk robot, or is a proxy answering?",
		}
	}
	r := notify.Result{HTTPStatus: status, RemoteCode: strconv.FormatInt(code, 10), RemoteMessage: notify.Truncate(b.ErrMsg, 300)}
	msg := strings.ToLower(b.ErrMsg)
	switch code {
	case 0:
		r.Outcome = events.OutcomeDelivered
	case -1:
		r.Outcome = events.OutcomeRetryable
		r.Hint = "DingTalk is busy: retrying with backoff"
	case 410100, 130101:
		r.Outcome = events.OutcomeRateLimited
		r.RetryAfter = BlockDuration
		r.Hint = "DingTalk blocked the robot for 10 minutes (over 20 messages per minute): holding messages until the block ends"
	case 310000:
		r.Outcome = events.OutcomePermanent
		switch {
		case strings.Contains(msg, "keywords not in content"):
			if keyword != "" {
				r.Hint = fmt.Sprintf("the robot's keywords do not include %q: add keyword %s to the robot (or set keyword to one of the robot's keywords)", keyword, keyword)
			} else {
				r.Hint = "the robot requires a keyword: set keyword to one of the robot's keywords (e.g. 告警) so every message carries it"
			}
		case strings.Contains(msg, "sign not match"):
			r.Hint = "secret does not match: copy the robot's signing secret (SEC…) verbatim, or turn signing off on the robot"
		case strings.Contains(msg, "invalid timestamp"):
			r.Outcome = events.OutcomeRetryable
			r.Hint = "DingTalk says our timestamp is more than an hour off its clock: re-signing; check the host's time sync"
		case strings.Contains(msg, "whitelist") || strings.HasPrefix(msg, "ip "):
			ip := "of the notifier"
			if f := strings.Fields(b.ErrMsg); len(f) > 1 && strings.EqualFold(f[0], "ip") {
				ip = f[1]
			}
			r.Hint = fmt.Sprintf("IP %s not allowlisted: add the notifier's egress IP to the robot's IP allowlist", ip)
		default:
			r.Hint = "a security setting of the robot (keyword, signature, IP allowlist) rejected the message"
		}
	case 300001, 300005, 400101:
		r.Outcome = events.OutcomePermanent
		r.Hint = "the access token does not exist: copy the robot's whole webhook URL again"
	case 400102:
		r.Outcome = events.OutcomePermanent
		r.Hint = "the robot is disabled: enable it in the group's robot settings"
	case 400013:
		r.Outcome = events.OutcomePermanent
		r.Hint = "the robot's group no longer exists: add a robot to a live group and update the URL"
	case 400106:
		r.Outcome = events.OutcomePermanent
		r.Hint = "the robot was not found (deleted?): create a robot and update the URL"
	case 460101, 101002:
		r.Outcome = events.OutcomePermanent
		r.Hint = "the message is over DingTalk's 20000-byte limit: the notifier's byte budget failed (a bug)"
	case 40035, 43004:
		r.Outcome = events.OutcomePermanent
		r.Hint = "DingTalk rejected the request as malformed: a notifier bug, report it with the errmsg"
	default:
		r.Outcome = events.OutcomeRetryable
		r.Hint = fmt.Sprintf("unknown errcode %d: retrying a bounded number of times", code)
	}
	return r
}
