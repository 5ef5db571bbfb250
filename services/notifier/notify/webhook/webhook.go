// Package webhook POSTs alerts as JSON to any HTTP endpoint: the rendered
// title and markdown text (with the keyword envelope) plus the structured
// alert or digest, optionally signed with HMAC-SHA256 over the timestamp
// and the body. Answers are classified by HTTP status: 2xx delivered, 429
// rate limited (Retry-After), 408 and 5xx retryable, other 4xx permanent.
package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/digest"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// Name is the channel name used in DeliveryEvents.
const Name = "webhook"

// Signature headers; IdempotencyHeader carries the alert or digest id.
const (
	SignatureHeader   = "X-Fleetwatch-Signature"
	TimestampHeader   = "X-Fleetwatch-Timestamp"
	IdempotencyHeader = "Idempotency-Key"
)

// Notifier posts to one endpoint.
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
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	return &Notifier{cfg: cfg, base: base}, nil
}

// Channel returns "webhook".
func (n *Notifier) Channel() string { return Name }

// Payload is the JSON body.
type Payload struct {
	// Version of the payload schema (1).
	Version int `json:"version"`
	// Kind is alert, digest or test.
	Kind string `json:"kind"`
	// ID is the alert or digest id (also the Idempotency-Key header).
	ID string `json:"id,omitempty"`
	// Title (with the keyword envelope) and Text (markdown) are the
	// rendered message.
	Title string `json:"title"`
	Text  string `json:"text"`
	// Firing and Severity summarise the message.
	Firing   bool            `json:"firing"`
	Severity events.Severity `json:"severity,omitempty"`
	// Alert is the AlertEvent (kind alert); its device list may be
	// shortened to fit the budget, devices_total is not.
	Alert *events.AlertEvent `json:"alert,omitempty"`
	// Digest summarises the folded alerts (kind digest).
	Digest *Digest `json:"digest,omitempty"`
	// Links are the fleetwatch views (with link_base_url): the alert or
	// the alert list, then a single device.
	Links []Link `json:"links,omitempty"`
	// EscalatedFrom names the receiver whose alert stayed unresolved and
	// was escalated here by its escalation chain.
	EscalatedFrom string `json:"escalated_from,omitempty"`
}

// Link is one link of a payload.
type Link struct {
	Title string `json:"title"`
	URL   string `json:"url"`
}

// Digest is the JSON form of digest.Digest.
type Digest struct {
	AlertIDs        []string        `json:"alert_ids"`
	FiringAlerts    int             `json:"firing_alerts"`
	ResolvedAlerts  int             `json:"resolved_alerts"`
	FiringDevices   int             `json:"firing_devices"`
	ResolvedDevices int             `json:"resolved_devices"`
	FromMS          int64           `json:"from_ms"`
	ToMS            int64           `json:"to_ms"`
	Groups          []digest.Group  `json:"groups"`
	MoreGroups      int             `json:"more_groups"`
	Samples         []digest.Sample `json:"samples"`
}

func (n *Notifier) payload(c notify.Content, m template.Message, keep int) Payload {
	p := Payload{Version: 1, Kind: c.Kind, ID: c.ID, Title: m.Title, Text: m.Body, Firing: m.Firing, Severity: m.Severity,
		EscalatedFrom: c.Note.EscalatedFrom}
	for _, l := range m.Links {
		p.Links = append(p.Links, Link{Title: l.Title, URL: l.URL})
	}
	if c.Alert != nil {
		a := *c.Alert
		a.Devices = a.Devices[:min(len(a.Devices), keep)]
		p.Alert = &a
	}
	if d := c.Digest; d != nil {
		p.Digest = &Digest{AlertIDs: d.AlertIDs, FiringAlerts: d.FiringAlerts, ResolvedAlerts: d.ResolvedAlerts,
			FiringDevices: d.FiringDevices, ResolvedDevices: d.ResolvedDevices, FromMS: d.FromMS, ToMS: d.ToMS,
			Groups: d.Groups, MoreGroups: d.MoreGroups, Samples: d.Samples[:min(len(d.Samples), keep)]}
	}
	return p
}

// BodyOf renders c into the JSON body within max_bytes: the structured
// device list is shortened first, then the rendered text.
func (n *Notifier) BodyOf(c notify.Content) ([]byte, error) {
	keep := events.MaxAlertDevices
	if c.Digest != nil {
		keep = len(c.Digest.Samples)
	}
	for {
		m, err := c.Render(n.base.Template, func(m template.Message) bool { return len(notify.EncodeJSON(n.payload(c, m, keep))) <= n.cfg.MaxBytes })
		if err != nil {
			return nil, err
		}
		b := notify.EncodeJSON(n.payload(c, m, keep))
		if len(b) <= n.cfg.MaxBytes || keep == 0 {
			return b, nil
		}
		keep /= 2
	}
}

// Sign returns "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
func Sign(secret string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(timestamp, 10) + "."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Notify sends a once and classifies the answer.
func (n *Notifier) Notify(ctx context.Context, a events.AlertEvent) (notify.Result, error) {
	return n.Send(ctx, notify.AlertContent(a))
}

// Send posts c once, signed for now when a secret is set, and classifies
// the answer. The error is nil exactly when the result is delivered.
func (n *Notifier) Send(ctx context.Context, c notify.Content) (notify.Result, error) {
	payload, err := n.BodyOf(c)
	return n.base.Deliver(payload, err, func(payload []byte) notify.Result {
		h := http.Header{"Content-Type": {notify.JSON}}
		if c.ID != "" {
			h.Set(IdempotencyHeader, c.ID)
		}
		if n.base.Secret != "" {
			ts := n.base.Now().Unix()
			h.Set(TimestampHeader, strconv.FormatInt(ts, 10))
			h.Set(SignatureHeader, Sign(n.base.Secret, ts, payload))
		}
		return n.base.Post(ctx, n.base.Endpoint.String(), h, payload, Classify)
	})
}

// Classify turns the endpoint's HTTP status into a Result.
func Classify(status int, h http.Header, body []byte) notify.Result {
	if status >= 200 && status <= 299 {
		return notify.Result{Outcome: events.OutcomeDelivered, HTTPStatus: status, RemoteCode: strconv.Itoa(status)}
	}
	r := notify.HTTPFailure(status, h, body)
	r.RemoteCode = strconv.Itoa(status)
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		r.Hint = "the endpoint refused us: check the secret (signature), the clock (timestamp) and the URL's token"
	case http.StatusRequestEntityTooLarge:
		r.Hint = "the endpoint says the body is too large: lower webhook.max_bytes to what it accepts"
	case http.StatusTooManyRequests:
		r.RetryAfter = max(r.RetryAfter, time.Second)
	}
	return r
}
