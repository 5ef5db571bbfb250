// Package slack delivers alerts to a Slack incoming webhook as Block Kit
// messages (a header with the keyword envelope, a mrkdwn section, the
// mentions) within Slack's block limits, and classifies Slack's real HTTP
// statuses: 200 "ok", 400 invalid_payload, 403, 404 channel_not_found,
// 410 channel_is_archived, 429 with Retry-After, 5xx.
package slack

import (
	"context"
	"net/http"
	"net/url"
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
	cfg      Config
	endpoint *url.URL
	tmpl     *template.Template
	client   *http.Client
}

// New reads the URL and prepares the templates (English unless language
// says zh). A nil client is http.DefaultClient.
func New(cfg Config, client *http.Client) (*Notifier, error) {
	if err := cfg.Validate("slack"); err != nil {
		return nil, err
	}
	endpoint, err := cfg.endpoint()
	if err != nil {
		return nil, err
	}
	tmpl, err := notify.NewTemplate(cfg.Language, template.English, cfg.Keyword, cfg.Timezone, cfg.LinkBaseURL)
	if err != nil {
		return nil, err
	}
	if client == nil {
		client = http.DefaultClient
	}
	return &Notifier{cfg: cfg, endpoint: endpoint, tmpl: tmpl, client: client}, nil
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
	m, err := c.Render(n.tmpl, func(m template.Message) bool {
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
	if err != nil {
		r := notify.RenderFailure(err)
		return r, r.Err(Name)
	}
	r := notify.Attempt(ctx, n.client, n.endpoint.String(), http.Header{"Content-Type": {"application/json"}}, payload,
		func(resp notify.Response) notify.Result { return Classify(resp.Status, resp.Header, resp.Body) })
	return r, r.Err(Name)
}

// Classify turns Slack's answer (a real HTTP status and a short text
// body) into a Result.
func Classify(status int, h http.Header, respBody []byte) notify.Result {
	text := strings.TrimSpace(string(respBody))
	r := notify.Result{HTTPStatus: status, RemoteCode: text, RemoteMessage: notify.Truncate(text, 200)}
	if len(r.RemoteCode) > 64 || strings.ContainsAny(r.RemoteCode, " <\n") {
		r.RemoteCode = ""
	}
	switch {
	case status == http.StatusOK:
		if text == "ok" {
			r.Outcome = events.OutcomeDelivered
			return r
		}
		r.Outcome = events.OutcomeRetryable
		r.Hint = "HTTP 200 without \"ok\": is a proxy answering instead of Slack?"
	case status == http.StatusTooManyRequests:
		r.Outcome = events.OutcomeRateLimited
		r.RetryAfter = max(notify.RetryAfterHeader(h.Get("Retry-After")), time.Second)
		r.Hint = "Slack allows about one message per second per webhook: waiting for Retry-After"
	case status == http.StatusBadRequest:
		r.Outcome = events.OutcomePermanent
		r.Hint = "Slack rejected the payload (" + text + "): a notifier bug, report it"
	case status == http.StatusForbidden:
		r.Outcome = events.OutcomePermanent
		r.Hint = "Slack refused the webhook (" + text + "): it was revoked or the app lost access; create a new incoming webhook"
	case status == http.StatusNotFound:
		r.Outcome = events.OutcomePermanent
		r.Hint = "the webhook's channel or the webhook itself does not exist (" + text + "): create a new incoming webhook"
	case status == http.StatusGone:
		r.Outcome = events.OutcomePermanent
		r.Hint = "the webhook's channel is archived: unarchive it or create a webhook for another channel"
	default:
		return notify.HTTPFailure(status, h, respBody)
	}
	return r
}
