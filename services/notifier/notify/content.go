package notify

import (
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/digest"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// Content is one message for a channel to send: a single alert, a digest
// of many, or a test message. The channel renders it with the receiver's
// template inside its own byte budget.
type Content struct {
	// ID is the idempotency key the remote may honour (DingTalk's
	// msgUuid): the alert id, or the digest id. Empty: none.
	ID string
	// Kind is "alert", "digest" or "test".
	Kind string
	// Alert or Digest is the structured content, for channels that send
	// data as well as text (the generic webhook); nil for a test message.
	Alert  *events.AlertEvent
	Digest *digest.Digest
	// Note is what the notifier knows about an alert beyond the event.
	Note template.Note
	// Render renders the message with t; fits reports whether a candidate
	// fits the channel's budget.
	Render func(t *template.Template, fits func(template.Message) bool) (template.Message, error)
}

// AlertContent is the message of one alert.
func AlertContent(a events.AlertEvent) Content {
	return NotedAlertContent(a, template.Note{})
}

// NotedAlertContent is the message of one alert with what the notifier
// knows beyond the event (an escalation by its chain).
func NotedAlertContent(a events.AlertEvent, note template.Note) Content {
	return Content{ID: a.ID, Kind: "alert", Alert: &a, Note: note, Render: func(t *template.Template, fits func(template.Message) bool) (template.Message, error) {
		return t.RenderNote(a, note, fits)
	}}
}

// DigestContent is the message of a digest.
func DigestContent(d digest.Digest) Content {
	return Content{ID: d.ID, Kind: "digest", Digest: &d, Render: func(t *template.Template, fits func(template.Message) bool) (template.Message, error) {
		return t.RenderDigest(d, fits)
	}}
}

// TestContent is the test message for receiver, rendered at at.
func TestContent(receiver string, at time.Time) Content {
	return Content{Kind: "test", Render: func(t *template.Template, fits func(template.Message) bool) (template.Message, error) {
		return t.RenderTest(receiver, at, fits)
	}}
}
