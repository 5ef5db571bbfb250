// Package wecom delivers alerts to a WeCom (企业微信) group robot as
// markdown (up to 4096 bytes, <@userid> mentions) or text (up to 2048
// bytes, mentions by id or mobile): with the keyword envelope, within the
// byte budget of the message type, and with a classification of WeCom's
// answers (HTTP 200 with an errcode) into delivered, retryable, rate
// limited and permanent.
package wecom

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// Name is the channel name used in DeliveryEvents.
const Name = "wecom"

// Content budgets of the message types (bytes of the content field).
const (
	MaxMarkdownBytes = 4096
	MaxTextBytes     = 2048
)

// Notifier sends alerts to one robot.
type Notifier struct {
	cfg  Config
	base notify.Base
}

// New reads the URL and prepares the templates. A nil client is
// http.DefaultClient.
func New(cfg Config, client *http.Client) (*Notifier, error) {
	base, err := notify.NewBase(cfg.Validate, cfg.source(), client, nil)
	if err != nil {
		return nil, err
	}
	if cfg.MsgType == "" {
		cfg.MsgType = MsgMarkdown
	}
	return &Notifier{cfg: cfg, base: base}, nil
}

// Channel returns "wecom".
func (n *Notifier) Channel() string { return Name }

type markdownBody struct {
	MsgType  string `json:"msgtype"`
	Markdown struct {
		Content string `json:"content"`
	} `json:"markdown"`
}

type textBody struct {
	MsgType string `json:"msgtype"`
	Text    struct {
		Content             string   `json:"content"`
		MentionedList       []string `json:"mentioned_list,omitempty"`
		MentionedMobileList []string `json:"mentioned_mobile_list,omitempty"`
	} `json:"text"`
}

// color is a WeCom markdown font colour: warning (orange) while firing,
// info (green) once resolved.
func color(m template.Message) string {
	if m.Firing {
		return "warning"
	}
	return "info"
}

// content is the message's content field.
func (n *Notifier) content(m template.Message) string {
	if n.cfg.MsgType == MsgText {
		return m.Title + "\n\n" + notify.Plain(m.Body) + notify.LinkLines(m.Links)
	}
	c := "## <font color=\"" + color(m) + "\">" + m.Title + "</font>\n" + m.Body
	if len(m.Links) > 0 {
		c += "\n" + notify.MarkdownLinks(m.Links)
	}
	if len(n.cfg.MentionUserIDs) > 0 {
		var who []string
		for _, id := range n.cfg.MentionUserIDs {
			who = append(who, "<@"+id+">")
		}
		c += "\n" + strings.Join(who, " ")
	}
	return c
}

func (n *Notifier) build(m template.Message) []byte {
	c := n.content(m)
	if n.cfg.MsgType == MsgText {
		b := textBody{MsgType: MsgText}
		b.Text.Content = c
		b.Text.MentionedList = append(b.Text.MentionedList, n.cfg.MentionUserIDs...)
		if n.cfg.MentionAll {
			b.Text.MentionedList = append(b.Text.MentionedList, "@all")
		}
		b.Text.MentionedMobileList = n.cfg.MentionMobiles
		return notify.EncodeJSON(b)
	}
	b := markdownBody{MsgType: MsgMarkdown}
	b.Markdown.Content = c
	return notify.EncodeJSON(b)
}

// BodyOf renders c into the request body, its content within the message
// type's byte limit.
func (n *Notifier) BodyOf(c notify.Content) ([]byte, template.Message, error) {
	limit := MaxMarkdownBytes
	if n.cfg.MsgType == MsgText {
		limit = MaxTextBytes
	}
	m, err := c.Render(n.base.Template, func(m template.Message) bool {
		return len(n.content(m)) <= limit && len(n.build(m)) <= notify.MaxBodyBytes
	})
	if err != nil {
		return nil, template.Message{}, err
	}
	return n.build(m), m, nil
}

// Notify sends a once and classifies the answer.
func (n *Notifier) Notify(ctx context.Context, a events.AlertEvent) (notify.Result, error) {
	return n.Send(ctx, notify.AlertContent(a))
}

// Send sends c once and classifies the answer. The error is nil exactly
// when the result is delivered.
func (n *Notifier) Send(ctx context.Context, c notify.Content) (notify.Result, error) {
	payload, _, err := n.BodyOf(c)
	return n.base.Deliver(payload, err, func(payload []byte) notify.Result { return n.base.PostJSON(ctx, payload, Classify) })
}

// RateLimitWait is how long a robot that answered 45009 is paused: WeCom
// counts a rolling minute.
const RateLimitWait = time.Minute

// Classify turns WeCom's answer (HTTP 200 with errcode/errmsg) into a
// Result.
func Classify(status int, h http.Header, body []byte) notify.Result {
	if status < 200 || status > 299 {
		// WeCom answers every business error with HTTP 200: anything else
		// comes from a proxy or the platform.
		return notify.HTTPFailure(status, h, body)
	}
	var b struct {
		ErrCode json.RawMessage `json:"errcode"`
		ErrMsg  string          `json:"errmsg"`
	}
	jsonErr := json.Unmarshal(body, &b)
	code, hasCode := notify.Number(b.ErrCode)
	if jsonErr != nil || !hasCode {
		return notify.NoCode(status, h, body, "the answer has no errcode: is the URL a WeCom robot, or is a proxy answering?")
	}
	return codes.Classify(notify.Answer{Status: status, Header: h, Code: code, Msg: b.ErrMsg})
}

// codes are WeCom's errcodes (contracts/chat.md) and what they mean.
var codes = notify.Codes{Noun: "errcode", Known: map[int64]notify.Class{
	0:     {Outcome: events.OutcomeDelivered},
	-1:    {Outcome: events.OutcomeRetryable, Hint: "WeCom is busy: retrying with backoff"},
	45009: {Outcome: events.OutcomeRateLimited, RetryAfter: RateLimitWait, Hint: "WeCom limits a robot to 20 messages per minute: holding messages for the rolling minute"},
	93000: {Outcome: events.OutcomePermanent, Hint: "the webhook URL is invalid (the key does not exist or the robot was removed): copy the robot's whole webhook URL again"},
	40058: {Outcome: events.OutcomePermanent, Hint: "the message is over WeCom's length limit: the notifier's byte budget failed (a bug)"},
	40008: badFormat,
	44004: badFormat,
}}

var badFormat = notify.Class{Outcome: events.OutcomePermanent, Hint: "WeCom rejected the message format: a notifier bug, report it with the errmsg"}
