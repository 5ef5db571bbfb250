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
const Name = "wecom"

// Content budgets of the message types (bytes of the content field).
const (
	MaxMarkdownBytes = 4096
	MaxTextBytes     = 2048
)

// Notifier sends alerts to one robot.
type Notifier struct {
	cfg      Config
	endpoint *url.URL
	tmpl     *template.Template
	client   *http.Client
}

// New reads the URL and prepares the templates. A nil client is
// http.DefaultClient.
func New(cfg Config, client *http.Client) (*Notifier, error) {
	if err := cfg.Validate("wecom"); err != nil {
		return nil, err
	}
	endpoint, err := cfg.endpoint()
	if err != nil {
		return nil, err
	}
	if cfg.MsgType == "" {
		cfg.MsgType = MsgMarkdown
	}
	tmpl, err := notify.NewTemplate(cfg.Language, template.Chinese, cfg.Keyword, cfg.Timezone, cfg.LinkBaseURL)
	if err != nil {
		return nil, err
	}
	if client == nil {
		client = http.DefaultClient
	}
	return &Notifier{cfg: cfg, endpoint: endpoint, tmpl: tmpl, client: client}, nil
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

// plain turns the templates' markdown into plain text for msg_type text.
func plain(s string) string {
	s = strings.ReplaceAll(s, "**", "")
	return strings.ReplaceAll(s, "  \n", "\n")
}

// content is the message's content field.
func (n *Notifier) content(m template.Message) string {
	if n.cfg.MsgType == MsgText {
		c := m.Title + "\n\n" + plain(m.Body)
		for _, l := range m.Links {
			c += "\n" + l.Title + ": " + l.URL
		}
		return c
	}
	c := "## <font color=\"" + color(m) + "\">" + m.Title + "</font>\n" + m.Body
	if len(m.Links) > 0 {
		var ls []string
		for _, l := range m.Links {
			ls = append(ls, "["+l.Title+"]("+l.URL+")")
		}
		c += "\n" + strings.Join(ls, " · ")
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
	m, err := c.Render(n.tmpl, func(m template.Message) bool {
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
	if err != nil {
		r := notify.RenderFailure(err)
		return r, r.Err(Name)
	}
	r := notify.Attempt(ctx, n.client, n.endpoint.String(), http.Header{"Content-Type": {"application/json"}}, payload,
		func(resp notify.Response) notify.Result { return Classify(resp.Status, resp.Header, resp.Body) })
	return r, r.Err(Name)
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
		return notify.Result{Outcome: events.OutcomeRetryable, HTTPStatus: status,
			RemoteMessage: notify.Truncate(strings.TrimSpace(string(body)), 200),
			Hint:          "the answer has no errcode: is the URL a WeCom robot, or is a proxy answering?"}
	}
	r := notify.Result{HTTPStatus: status, RemoteCode: strconv.FormatInt(code, 10), RemoteMessage: notify.Truncate(b.ErrMsg, 300)}
	switch code {
	case 0:
		r.Outcome = events.OutcomeDelivered
	case -1:
		r.Outcome = events.OutcomeRetryable
		r.Hint = "WeCom is busy: retrying with backoff"
	case 45009:
		r.Outcome = events.OutcomeRateLimited
		r.RetryAfter = RateLimitWait
		r.Hint = "WeCom limits a robot to 20 messages per minute: holding messages for the rolling minute"
	case 93000:
		r.Outcome = events.OutcomePermanent
		r.Hint = "the webhook URL is invalid (the key does not exist or the robot was removed): copy the robot's whole webhook URL again"
	case 40058:
		r.Outcome = events.OutcomePermanent
		r.Hint = "the message is over WeCom's length limit: the notifier's byte budget failed (a bug)"
	case 40008, 44004:
		r.Outcome = events.OutcomePermanent
		r.Hint = "WeCom rejected the message format: a notifier bug, report it with the errmsg"
	default:
		r.Outcome = events.OutcomeRetryable
		r.Hint = fmt.Sprintf("unknown errcode %d: retrying a bounded number of times", code)
	}
	return r
}
