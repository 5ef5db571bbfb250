package events

import "strconv"

// Outcome classifies one delivery attempt.
type Outcome string

// Delivery outcomes.
const (
	// OutcomeDelivered: the remote accepted the message.
	OutcomeDelivered Outcome = "delivered"
	// OutcomeRetryable: a transient failure; the attempt will be retried.
	OutcomeRetryable Outcome = "retryable"
	// OutcomeRateLimited: the remote throttled the receiver; it is paused.
	OutcomeRateLimited Outcome = "rate_limited"
	// OutcomePermanent: retrying cannot help (bad secret, keyword, token...).
	OutcomePermanent Outcome = "permanent"
)

// Final reports whether no further attempt follows this outcome.
func (o Outcome) Final() bool { return o == OutcomeDelivered || o == OutcomePermanent }

// DeliveryEvent records one attempt to deliver an alert to a receiver.
type DeliveryEvent struct {
	// V is the schema version (1).
	V int `json:"v"`
	// ID is derived from the alert id, receiver and attempt.
	ID string `json:"id"`
	// AlertID is the AlertEvent.ID delivered.
	AlertID string `json:"alert_id"`
	// Fingerprint is the alert's fingerprint.
	Fingerprint string `json:"fingerprint,omitempty"`
	// AlertStatus is the alert's status (firing or resolved).
	AlertStatus AlertStatus `json:"alert_status,omitempty"`
	// Receiver is the configured receiver name.
	Receiver string `json:"receiver"`
	// Channel is dingtalk, feishu, wecom, slack or webhook.
	Channel string `json:"channel"`
	// Attempt counts from 1.
	Attempt int `json:"attempt"`
	// Outcome classifies the attempt.
	Outcome Outcome `json:"outcome"`
	// HTTPStatus is the remote's HTTP status (0 on a network error).
	HTTPStatus int `json:"http_status,omitempty"`
	// RemoteCode is the remote's own code (errcode/code), as text.
	RemoteCode string `json:"remote_code,omitempty"`
	// RemoteMessage is the remote's own message (errmsg/msg), or the network error.
	RemoteMessage string `json:"remote_message,omitempty"`
	// Hint tells a human what to do about a failure.
	Hint string `json:"hint,omitempty"`
	// Bytes is the size of the request body sent.
	Bytes int `json:"bytes,omitempty"`
	// LatencyMS is the time the request took.
	LatencyMS int64 `json:"latency_ms"`
	// AtMS is when the attempt started.
	AtMS int64 `json:"at_ms"`
}

// NewDeliveryEvent validates d, sets V and derives the ID.
func NewDeliveryEvent(d DeliveryEvent) (DeliveryEvent, error) {
	d.V = Version
	d.ID = ContentID("delivery.v1", d.AlertID, d.Receiver, strconv.Itoa(d.Attempt))
	if err := d.Validate(); err != nil {
		return DeliveryEvent{}, err
	}
	return d, nil
}

// Validate checks a delivery event read from the wire.
func (d DeliveryEvent) Validate() error {
	switch {
	case d.V != Version:
		return invalid("v is %d, want %d", d.V, Version)
	case d.AlertID == "":
		return invalid("alert_id is empty")
	case d.Receiver == "":
		return invalid("receiver is empty")
	case d.Channel == "":
		return invalid("channel is empty")
	case d.Attempt < 1:
		return invalid("attempt %d is below 1", d.Attempt)
	case d.AtMS <= 0:
		return invalid("at_ms %d is not a positive epoch-ms time", d.AtMS)
	}
	switch d.Outcome {
	case OutcomeDelivered, OutcomeRetryable, OutcomeRateLimited, OutcomePermanent:
	default:
		return invalid("outcome %q is unknown", d.Outcome)
	}
	if d.ID != ContentID("delivery.v1", d.AlertID, d.Receiver, strconv.Itoa(d.Attempt)) {
		return invalid("id %q does not match the event content", d.ID)
	}
	return nil
}

// Subject returns the delivery event's subject.
func (d DeliveryEvent) Subject() string { return DeliverySubject(d.Receiver) }
