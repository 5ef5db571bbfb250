package events

import (
	"context"
	"fmt"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Header names used on fleetwatch messages.
const (
	// HeaderMsgID is JetStream's de-duplication header.
	HeaderMsgID = jetstream.MsgIDHeader
	// HeaderReason says why an input was dead-lettered.
	HeaderReason = "Fleetwatch-Reason"
	// HeaderStage names the stage that dead-lettered an input.
	HeaderStage = "Fleetwatch-Stage"
	// HeaderSource names the input source (e.g. emqx_sys_v5, webhook).
	HeaderSource = "Fleetwatch-Source"
	// HeaderTopic carries the MQTT topic or HTTP path an input came from.
	HeaderTopic = "Fleetwatch-Topic"
)

// MaxReasonLen bounds the reason header of a dead letter.
const MaxReasonLen = 1024

// DeadLetter is an input a stage could not turn into a valid event. The
// payload is kept raw; the reason says what was wrong.
type DeadLetter struct {
	// Stage is the stage that rejected the input (ingest, evaluator, ...).
	Stage string
	// Source is the input format or transport.
	Source string
	// Topic is the MQTT topic, HTTP path or subject the input came from.
	Topic string
	// Reason explains the rejection.
	Reason string
	// Payload is the raw input.
	Payload []byte
}

// Msg builds the JetStream message for a dead letter. Its Nats-Msg-Id derives
// from stage, source, topic and payload, so a redelivered poison message is
// stored once.
func (d DeadLetter) Msg() *nats.Msg {
	reason := d.Reason
	if len(reason) > MaxReasonLen {
		// Cut on a rune boundary so that the header stays valid UTF-8.
		cut := MaxReasonLen
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	m := nats.NewMsg(DeadLetterSubject(d.Stage, d.Source))
	m.Data = d.Payload
	m.Header.Set(HeaderMsgID, ContentID("deadletter.v1", d.Stage, d.Source, d.Topic, string(d.Payload)))
	m.Header.Set(HeaderReason, reason)
	m.Header.Set(HeaderStage, d.Stage)
	m.Header.Set(HeaderSource, d.Source)
	if d.Topic != "" {
		m.Header.Set(HeaderTopic, d.Topic)
	}
	return m
}

// PublishDeadLetter stores d in the DEADLETTER stream and waits for the ack.
func PublishDeadLetter(ctx context.Context, js jetstream.Publisher, d DeadLetter) error {
	if _, err := js.PublishMsg(ctx, d.Msg()); err != nil {
		return fmt.Errorf("publish dead letter (%s/%s): %w", d.Stage, d.Source, err)
	}
	return nil
}
