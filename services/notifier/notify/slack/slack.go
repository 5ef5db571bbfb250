// Package slack delivers alerts to a Slack incoming webhook as Block Kit
// messages (a header with the keyword envelope, a mrkdwn section, the
// mentions) within Slack's block limits, and classifies Slack's real HTTP
// statuses: 200 "ok", 400 invalid_payload, 403, 404 channel_not_found,
// 410 channel_is_archived, 429 with Retry-After, 5xx.
package slack

import (
	"context"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// Name is the channel name used in DeliveryEvents.
const Name = "slack"

// Block Kit limits (characters).
const (
	MaxHeaderChars  = 150
	MaxSectionChars = 3000
)

// Notifier sends alerts to one incoming webhook.
type Notifier struct {
	cfg  Config
	base notify.Base
}

// New reads the URL and prepares the templates (English unless language
// says zh). A nil client is http.DefaultClient.
func New(cfg Config, client *http.Client) (*Notifier, error) {
	base, err := notify.NewBase(cfg.Validate, cfg.source(), client, nil)
	if err != nil {
		return nil, err
	}
	return &Notifier{cfg: cfg, base: base}, nil
}

// Channel returns "slack".
func (n *Notifier) Channel() string { return Name }

type textObject struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type block struct {
	Type     string       `json:"type"`
	Text     *textObject  `json:"text,omitempty"`
	Elements []textObject `json:"elements,omitempty"`
}

type body struct {
	Text   string  `json:"text"`
	Blocks []block `json:"blocks"`
}

// mrkdwn turns the templates' markdown into Slack mrkdwn: *bold*, plain
// line breaks, & escaped (the templates already escape < and >).
func mrkdwn(s string) string {
	s = strings.ReplaceAll(s, "&", "&amp;")
	s = strings.ReplaceAll(s, "&amp;lt;", "&lt;")
	s = strings.ReplaceAll(s, "&amp;gt;", "&gt;")
	s = strings.ReplaceAll(s, "**", "*")
	return strings.ReplaceAll(s, "  \n", "\n")
}

// slackLinkText escapes a link title for <url|title>.
func slackLinkText(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "|", "¦").Replace(s)
}

func (n *Notifier) mentions() string {
	var who []string
	if n.cfg.MentionChannel {
		who = append(who, "<!channel>")
	}
	for _, id := range n.cfg.MentionUserIDs {
		who = append(who, "<@"+id+">")
	}
	return strings.Join(who, " ")
}

func (n *Notifier) build(m template.Message) []byte {
	icon := ":red_circle:"
	if !m.Firing {
		icon = ":large_green_circle:"
	}
	b := body{Text: icon + " " + m.Title}
	b.Blocks = append(b.Blocks, block{Type: "header", Text: &textObject{Type: "plain_text", Text: m.Title}})
	if m.Body != "" {
		b.Blocks = append(b.Blocks, block{Type: "section", Text: &textObject{Type: "mrkdwn", Text: mrkdwn(m.Body)}})
	}
	if len(m.Links) > 0 {
		links := block{Type: "context"}
		for _, l := range m.Links {
			links.Elements = append(links.Elements, textObject{Type: "mrkdwn", Text: "<" + l.URL + "|" + slackLinkText(l.Title) + ">"})
		}
		b.Blocks = append(b.Blocks, links)
	}
	if who := n.mentions(); who != "" {
		b.Blocks = append(b.Blocks, block{Type: "section", Text: &textObject{Type: "mrkdwn", Text: who}})
	}
	return notify.EncodeJSON(b)
}

// BodyOf renders c into the request body within the header, section and
// body limits.
func (n *Notifier) BodyOf(c notify.Content) ([]byte, template.Message, error) {
	m, err := c.Render(n.base.Template, func(m template.Message) bool {
		return utf8.RuneCountInString(m.Title) <= MaxHeaderChars && utf8.RuneCountInString(mrkdwn(m.Body)) <= MaxSectionChars &&
			len(n.build(m)) <= notify.MaxBodyBytes
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

// Classify turns Slack's answer (a real HTTP status and a short text
// body) into a Result: by statuses for the statuses Slack answers, by
// notify.HTTPFailure for the others.
func Classify(status int, h http.Header, respBody []byte) notify.Result {
	text := strings.TrimSpace(string(respBody))
	r := notify.Result{HTTPStatus: status, RemoteCode: text, RemoteMessage: notify.Truncate(text, 200)}
	if len(r.RemoteCode) > 64 || strings.ContainsAny(r.RemoteCode, " <\n") {
		r.RemoteCode = ""
	}
	c, ok := statuses.Class(notify.Answer{Status: status, Header: h, Code: int64(status), Msg: text})
	if !ok {
		return notify.HTTPFailure(status, h, respBody)
	}
	r.Outcome, r.RetryAfter, r.Hint = c.Outcome, c.RetryAfter, c.Hint
	return r
}

// statuses are the HTTP statuses Slack answers with (contracts/chat.md)
// and what they mean; Msg is the body text ("ok", "invalid_payload", …).
var statuses = notify.Codes{Noun: "HTTP status", Known: map[int64]notify.Class{
	http.StatusOK: {Outcome: events.OutcomeRetryable, Hint: "HTTP 200 without \"ok\": is a proxy answering instead of Slack?",
		Refine: func(c notify.Class, a notify.Answer) notify.Class {
			if a.Msg == "ok" {
				return notify.Class{Outcome: events.OutcomeDelivered}
			}
			return c
		}},
	http.StatusTooManyRequests: {Outcome: events.OutcomeRateLimited, Hint: "Slack allows about one message per second per webhook: waiting for Retry-After",
		Refine: func(c notify.Class, a notify.Answer) notify.Class {
			c.RetryAfter = notify.WaitHeader(a.Header, time.Second, "Retry-After")
			return c
		}},
	http.StatusBadRequest: {Outcome: events.OutcomePermanent, Hint: "Slack rejected the payload (%s): a notifier bug, report it", Refine: said},
	http.StatusForbidden: {Outcome: events.OutcomePermanent, Refine: said,
		Hint: "Slack refused the webhook (%s): it was revoked or the app lost access; create a new incoming webhook"},
	http.StatusNotFound: {Outcome: events.OutcomePermanent, Refine: said,
		Hint: "the webhook's channel or the webhook itself does not exist (%s): create a new incoming webhook"},
	http.StatusGone: {Outcome: events.OutcomePermanent, Hint: "the webhook's channel is archived: unarchive it or create a webhook for another channel"},
}}

// said puts what Slack said (the body text) into the hint's %s.
func said(c notify.Class, a notify.Answer) notify.Class {
	c.Hint = strings.Replace(c.Hint, "%s", a.Msg, 1)
	return c
}
