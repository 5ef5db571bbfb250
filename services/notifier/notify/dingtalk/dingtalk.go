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
	"errors"
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
	if base.Secret != "" && !strings.HasPrefix(base.Secret, "SEC") {
		return nil, errors.New("dingtalk secret does not start with SEC: paste the robot's whole secret, prefix included")
	}
	if cfg.MsgType == "" {
		cfg.MsgType = MsgMarkdown
	}
	return &Notifier{cfg: cfg, base: base}, nil
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

// colors are the heading's colours by status and severity.
var colors = notify.Palette{Resolved: "#2ea121", Critical: "#d93026", Warning: "#ff8800", Other: "#1677ff"}

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

// build is the request body of m for the configured message type.
func (n *Notifier) build(m template.Message, id string) []byte {
	b := body{MsgType: n.cfg.MsgType, MsgUUID: id}
	who := n.mentions()
	if n.cfg.MsgType != MsgActionCard {
		b.At = &at{AtMobiles: n.cfg.AtMobiles, AtUserIDs: n.cfg.AtUserIDs, IsAtAll: n.cfg.AtAll}
	}
	heading := "### <font color=" + colors.Pick(m.Firing, m.Severity) + ">" + m.Title + "</font>\n\n" + m.Body
	switch n.cfg.MsgType {
	case MsgText:
		text := notify.PlainText(m)
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
			text += "\n\n" + notify.MarkdownLinks(m.Links)
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
	m, err := c.Render(n.base.Template, func(m template.Message) bool { return len(n.build(m, c.ID)) <= notify.MaxBodyBytes })
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
	return n.base.Deliver(payload, err, func(payload []byte) notify.Result {
		start := time.Now()
		var r notify.Result
		for try := 1; try <= 2; try++ {
			// Sign per attempt: a timestamp from start-up is rejected after an hour.
			r = n.base.Post(ctx, SignedURL(n.base.Endpoint, n.base.Secret, n.base.Now()), http.Header{"Content-Type": {notify.JSON}}, payload,
				func(status int, h http.Header, body []byte) notify.Result {
					return Classify(status, h, body, n.cfg.Keyword)
				})
			if n.base.Secret == "" && signatureRejected(r) {
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
		return r
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
	if status == http.StatusTooManyRequests || notify.Transient(status) {
		return notify.HTTPFailure(status, header, respBody)
	}
	var b errorBody
	jsonErr := json.Unmarshal(respBody, &b)
	code, hasCode := notify.Number(b.ErrCode)
	if jsonErr == nil && !hasCode {
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
	if jsonErr != nil || !hasCode {
		return notify.NoCode(status, header, respBody, "the answer has no errcode: is the URL a DingTalk robot, or is a proxy answering?")
	}
	return codes.Classify(notify.Answer{Status: status, Header: header, Code: code, Msg: b.ErrMsg, Keyword: keyword})
}

// codes are DingTalk's errcodes (contracts/chat.md) and what they mean.
var codes = notify.Codes{Noun: "errcode", Known: map[int64]notify.Class{
	0:  {Outcome: events.OutcomeDelivered},
	-1: {Outcome: events.OutcomeRetryable, Hint: "DingTalk is busy: retrying with backoff"},
	// send too fast, exceed 20 times per minute
	410100: blocked,
	130101: blocked,
	// keywords, signature, timestamp or IP allowlist: refined by the errmsg.
	310000: {Outcome: events.OutcomePermanent, Hint: "a security setting of the robot (keyword, signature, IP allowlist) rejected the message", Refine: security},
	300001: tokenMissing,
	300005: tokenMissing,
	400101: tokenMissing,
	400102: {Outcome: events.OutcomePermanent, Hint: "the robot is disabled: enable it in the group's robot settings"},
	400013: {Outcome: events.OutcomePermanent, Hint: "the robot's group no longer exists: add a robot to a live group and update the URL"},
	400106: {Outcome: events.OutcomePermanent, Hint: "the robot was not found (deleted?): create a robot and update the URL"},
	460101: tooLong,
	101002: tooLong,
	40035:  malformed,
	43004:  malformed,
}}

var (
	blocked = notify.Class{Outcome: events.OutcomeRateLimited, RetryAfter: BlockDuration,
		Hint: "DingTalk blocked the robot for 10 minutes (over 20 messages per minute): holding messages until the block ends"}
	tokenMissing = notify.Class{Outcome: events.OutcomePermanent, Hint: "the access token does not exist: copy the robot's whole webhook URL again"}
	tooLong      = notify.Class{Outcome: events.OutcomePermanent, Hint: "the message is over DingTalk's 20000-byte limit: the notifier's byte budget failed (a bug)"}
	malformed    = notify.Class{Outcome: events.OutcomePermanent, Hint: "DingTalk rejected the request as malformed: a notifier bug, report it with the errmsg"}
)

// security tells the causes of errcode 310000 apart by the errmsg.
func security(c notify.Class, a notify.Answer) notify.Class {
	msg := strings.ToLower(a.Msg)
	switch {
	case strings.Contains(msg, "keywords not in content"):
		c.Hint = notify.KeywordHint("robot", a.Keyword)
	case strings.Contains(msg, "sign not match"):
		c.Hint = "secret does not match: copy the robot's signing secret (SEC…) verbatim, or turn signing off on the robot"
	case strings.Contains(msg, "invalid timestamp"):
		c.Outcome = events.OutcomeRetryable
		c.Hint = "DingTalk says our timestamp is more than an hour off its clock: re-signing; check the host's time sync"
	case strings.Contains(msg, "whitelist") || strings.HasPrefix(msg, "ip "):
		ip := "of the notifier"
		if f := strings.Fields(a.Msg); len(f) > 1 && strings.EqualFold(f[0], "ip") {
			ip = f[1]
		}
		c.Hint = fmt.Sprintf("IP %s not allowlisted: add the notifier's egress IP to the robot's IP allowlist", ip)
	}
	return c
}
