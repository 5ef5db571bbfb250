package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// SourceEMQXSys names the $SYS input in dead letters.
const SourceEMQXSys = "emqx_sys"

// maxDeadLetterPayload bounds the raw payload kept in a dead letter, so that
// an oversized input cannot exceed NATS's message size and block forever.
const maxDeadLetterPayload = emqx.MaxPayloadSize

// Retry backoff of JetStream publishes.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

// process turns one MQTT message into a stored event or dead letter. It
// returns true when the message may be acknowledged, false when it must not
// be (the service is stopping before JetStream acknowledged).
func (s *Service) process(ctx context.Context, topic string, payload []byte) bool {
	received := s.now()
	s.received.Add(1)
	s.metrics.received.Add(ctx, 1)
	ctx, span := s.tracer.Start(ctx, "ingest presence", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "mqtt"),
			attribute.String("messaging.destination.name", topic)))
	defer span.End()

	ev, err := emqx.ParseSys(topic, payload, received)
	if errors.Is(err, emqx.ErrNotPresence) {
		s.metrics.events.Add(ctx, 1, outcomeAttr("ignored"))
		span.SetAttributes(attribute.String("fleetwatch.outcome", "ignored"))
		return true
	}
	if err != nil {
		span.SetStatus(codes.Error, "dead-lettered")
		span.SetAttributes(attribute.String("fleetwatch.outcome", "deadlettered"))
		return s.deadLetter(ctx, topic, payload, err)
	}
	span.SetAttributes(attribute.String("fleetwatch.event_id", ev.ID), attribute.String("fleetwatch.kind", string(ev.Kind)))

	data, err := json.Marshal(ev)
	if err != nil { // cannot happen for a PresenceEvent; never drop it silently
		return s.deadLetter(ctx, topic, payload, fmt.Errorf("encode event: %w", err))
	}
	msg := nats.NewMsg(ev.Subject(s.cfg.Partitions))
	msg.Data = data
	msg.Header.Set(events.HeaderMsgID, ev.ID)
	telemetry.Inject(ctx, msg)

	var ack *jetstream.PubAck
	if !s.retry(ctx, "publish presence event", msg.Subject, func(ctx context.Context) error {
		a, err := s.js.PublishMsg(ctx, msg)
		ack = a
		return err
	}) {
		return false
	}
	outcome := "published"
	if ack.Duplicate {
		outcome = "duplicate"
		s.duplicates.Add(1)
	} else {
		s.published.Add(1)
	}
	s.metrics.events.Add(ctx, 1, outcomeAttr(outcome))
	span.SetAttributes(attribute.String("fleetwatch.outcome", outcome))
	s.log.Debug("presence event stored", "device", ev.DeviceID, "kind", ev.Kind, "id", ev.ID, "outcome", outcome)
	return true
}

// deadLetter stores a rejected input with the reason in DEADLETTER.
func (s *Service) deadLetter(ctx context.Context, topic string, payload []byte, cause error) bool {
	reason := cause.Error()
	if len(payload) > maxDeadLetterPayload {
		reason += fmt.Sprintf(" (payload truncated to %d of %d bytes)", maxDeadLetterPayload, len(payload))
		payload = payload[:maxDeadLetterPayload]
	}
	dl := events.DeadLetter{Stage: Stage, Source: SourceEMQXSys, Topic: topic, Reason: reason, Payload: payload}
	if !s.retry(ctx, "publish dead letter", events.DeadLetterSubject(Stage, SourceEMQXSys), func(ctx context.Context) error {
		return events.PublishDeadLetter(ctx, s.js, dl)
	}) {
		return false
	}
	s.deadLettered.Add(1)
	s.metrics.events.Add(ctx, 1, outcomeAttr("deadlettered"))
	s.log.Warn("input dead-lettered", "topic", topic, "reason", reason)
	return true
}

// retry calls publish until it succeeds, with exponential backoff and
// jitter, each attempt bounded by PublishTimeout. It returns false when ctx
// ends first.
func (s *Service) retry(ctx context.Context, what, subject string, publish func(context.Context) error) bool {
	backoff := retryMin
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
		err := publish(actx)
		cancel()
		if err == nil {
			return true
		}
		s.publishErrors.Add(1)
		s.metrics.publishErrors.Add(ctx, 1)
		if ctx.Err() != nil {
			return false
		}
		s.log.Warn(what+" failed; retrying, the mqtt message stays unacknowledged",
			"subject", subject, "attempt", attempt, "backoff", backoff, "err", err)
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		backoff = min(2*backoff, retryMax)
	}
}
