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

// maxDeadLetterPayload bounds the raw payload kept in a dead letter, so that
// an oversized input cannot exceed NATS's message size and block forever.
const maxDeadLetterPayload = emqx.MaxPayloadSize

// Retry backoff of JetStream publishes.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

// Outcomes of an input (metric attribute and webhook answer).
const (
	outcomePublished    = "published"
	outcomeDuplicate    = "duplicate"
	outcomeDeadLettered = "deadlettered"
	outcomeIgnored      = "ignored"
)

// result is what became of one input.
type result struct {
	outcome string
	id      string // the event id, when published or duplicate
	reason  string // why it was dead-lettered or ignored
	// stored is false when ctx ended before JetStream acknowledged: the
	// input must not be acknowledged to its sender.
	stored bool
}

// process turns one input into a stored event, an ignored input or a dead
// letter. trackNode records the event's node as heard (EMQX sources).
func (s *Service) process(ctx context.Context, in input, parse parseFunc, trackNode bool) result {
	received := s.now()
	s.received.Add(1)
	s.metrics.received.Add(ctx, 1)
	ctx, span := s.tracer.Start(ctx, "ingest presence", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", transport(in.source)),
			attribute.String("messaging.destination.name", in.topic),
			attribute.String("fleetwatch.source", in.source)))
	defer span.End()

	ev, err := parse(in, received)
	if errors.Is(err, errIgnored) {
		s.ignored.Add(1)
		s.metrics.events.Add(ctx, 1, outcomeAttrs(outcomeIgnored, in.source))
		span.SetAttributes(attribute.String("fleetwatch.outcome", outcomeIgnored))
		s.log.Debug("input ignored", "source", in.source, "topic", in.topic, "reason", err)
		return result{outcome: outcomeIgnored, reason: err.Error(), stored: true}
	}
	if err != nil {
		span.SetStatus(codes.Error, "dead-lettered")
		span.SetAttributes(attribute.String("fleetwatch.outcome", outcomeDeadLettered))
		return s.deadLetter(ctx, in, err)
	}
	span.SetAttributes(attribute.String("fleetwatch.event_id", ev.ID), attribute.String("fleetwatch.kind", string(ev.Kind)))
	if trackNode {
		s.heard(ev.Node, "")
	}

	ack, ok := s.publishEvent(ctx, ev)
	if !ok {
		return result{}
	}
	if s.reconciler != nil {
		s.reconciler.stored(ev)
	}
	outcome := outcomePublished
	if ack.Duplicate {
		outcome = outcomeDuplicate
		s.duplicates.Add(1)
	} else {
		s.published.Add(1)
	}
	s.metrics.events.Add(ctx, 1, outcomeAttrs(outcome, in.source))
	span.SetAttributes(attribute.String("fleetwatch.outcome", outcome))
	s.log.Debug("presence event stored", "device", ev.DeviceID, "kind", ev.Kind, "id", ev.ID, "outcome", outcome)
	return result{outcome: outcome, id: ev.ID, stored: true}
}

// publishEvent stores ev with its id as Nats-Msg-Id, retrying until
// JetStream acknowledges or ctx ends (ok false).
func (s *Service) publishEvent(ctx context.Context, ev events.PresenceEvent) (*jetstream.PubAck, bool) {
	data, err := json.Marshal(ev)
	if err != nil { // cannot happen for a PresenceEvent
		s.log.Error("encode presence event", "err", err)
		return nil, false
	}
	msg := nats.NewMsg(ev.Subject(s.cfg.Partitions))
	msg.Data = data
	msg.Header.Set(events.HeaderMsgID, ev.ID)
	telemetry.Inject(ctx, msg)
	var ack *jetstream.PubAck
	ok := s.retry(ctx, "publish presence event", msg.Subject, func(ctx context.Context) error {
		a, err := s.js.PublishMsg(ctx, msg)
		ack = a
		return err
	})
	return ack, ok
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

func transport(source string) string {
	if source == SourceEMQXWebhook {
		return "http"
	}
	return "mqtt"
}

// deadLetter stores a rejected input with the reason in DEADLETTER.
func (s *Service) deadLetter(ctx context.Context, in input, cause error) result {
	reason := cause.Error()
	payload := in.payload
	if len(payload) > maxDeadLetterPayload {
		reason += fmt.Sprintf(" (payload truncated to %d of %d bytes)", maxDeadLetterPayload, len(payload))
		payload = payload[:maxDeadLetterPayload]
	}
	dl := events.DeadLetter{Stage: Stage, Source: in.source, Topic: in.topic, Reason: reason, Payload: payload}
	if !s.retry(ctx, "publish dead letter", events.DeadLetterSubject(Stage, in.source), func(ctx context.Context) error {
		return events.PublishDeadLetter(ctx, s.js, dl)
	}) {
		return result{}
	}
	s.deadLettered.Add(1)
	s.metrics.events.Add(ctx, 1, outcomeAttrs(outcomeDeadLettered, in.source))
	s.log.Warn("input dead-lettered", "source", in.source, "topic", in.topic, "reason", reason)
	return result{outcome: outcomeDeadLettered, reason: reason, stored: true}
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
		s.log.Warn(what+" failed; retrying, the input stays unacknowledged",
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
