package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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

// prepared is one input parsed and ready to store: an event or a dead
// letter (msg), or nothing to store (msg nil, res final).
type prepared struct {
	in   input
	ctx  context.Context // carries span
	span trace.Span
	ev   events.PresenceEvent // when an event
	dead bool                 // msg is a dead letter
	// reason is why the input is dead-lettered.
	reason string
	msg    *nats.Msg
	// res is the result when msg is nil.
	res result
	// buf, when set, holds the event message (msg points into it): the
	// MQTT pipeline reuses it from message to message.
	buf *msgBuf
}

func (p *prepared) what() string {
	if p.dead {
		return "publish dead letter"
	}
	return "publish presence event"
}

// process turns one input into a stored event, an ignored input or a dead
// letter, and waits until it is stored (or ctx ends). trackNode records the
// event's node as heard (EMQX sources).
func (s *Service) process(ctx context.Context, in input, parse parseFunc, trackNode bool) result {
	p := &prepared{}
	s.prepare(ctx, in, parse, trackNode, p)
	if p.msg == nil {
		return p.res
	}
	var ack *jetstream.PubAck
	if !s.retry(p.ctx, p.what(), p.msg.Subject, func(ctx context.Context) error {
		a, err := s.js.PublishMsg(ctx, p.msg)
		ack = a
		return err
	}) {
		p.span.End()
		return result{}
	}
	return s.settle(p, ack != nil && ack.Duplicate)
}

// consumerSpan is built once: an option is an interface value, allocated
// at every conversion.
var consumerSpan = trace.WithSpanKind(trace.SpanKindConsumer)

// prepare parses in and builds, in p, the message that stores it. An
// ignored input is settled here (p.msg nil); otherwise the caller publishes
// p.msg and passes JetStream's ack to settle.
func (s *Service) prepare(ctx context.Context, in input, parse parseFunc, trackNode bool, p *prepared) {
	received := s.now()
	s.metrics.received.Add(ctx, 1)
	s.received.Add(1)
	ctx, span := s.tracer.Start(ctx, "ingest presence", consumerSpan)
	recording := span.IsRecording()
	if recording {
		span.SetAttributes(attribute.String("messaging.system", transport(in.source)),
			attribute.String("messaging.destination.name", in.topic),
			attribute.String("fleetwatch.source", in.source))
	}
	*p = prepared{in: in, ctx: ctx, span: span, buf: p.buf}

	ev, err := parse(in, received)
	if errors.Is(err, errIgnored) {
		s.metrics.events.Add(ctx, 1, s.metrics.outcome(outcomeIgnored, in.source))
		s.ignored.Add(1)
		if recording {
			span.SetAttributes(attribute.String("fleetwatch.outcome", outcomeIgnored))
		}
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.Debug("input ignored", "source", in.source, "topic", in.topic, "reason", err)
		}
		span.End()
		p.res = result{outcome: outcomeIgnored, reason: err.Error(), stored: true}
		return
	}
	if err != nil {
		p.deadLetter(err)
		return
	}
	if recording {
		span.SetAttributes(attribute.String("fleetwatch.event_id", ev.ID), attribute.String("fleetwatch.kind", string(ev.Kind)))
	}
	if trackNode {
		s.heard(ev.Node, "")
	}
	p.ev = ev
	if p.buf != nil {
		p.msg = s.eventMsgInto(ctx, &p.ev, p.buf)
		return
	}
	p.msg = s.eventMsg(ctx, &p.ev)
}

// eventMsg is the JetStream message of ev: its subject, its JSON, its id
// as Nats-Msg-Id and the trace context of ctx.
func (s *Service) eventMsg(ctx context.Context, ev *events.PresenceEvent) *nats.Msg {
	msg := &nats.Msg{Subject: ev.Subject(s.cfg.Partitions), Data: events.AppendPresence(make([]byte, 0, 512), ev),
		Header: nats.Header{events.HeaderMsgID: []string{ev.ID}}}
	telemetry.Inject(ctx, msg)
	return msg
}

// msgBuf is the storage of an event message that is built again for each
// message: the message, its header, its data and the id's header value.
type msgBuf struct {
	msg  nats.Msg
	data []byte
	id   [1]string
}

// maxReusedData bounds the data buffer a msgBuf keeps for the next message.
const maxReusedData = 4 << 10

// eventMsgInto is eventMsg built in b, reusing its header map and data
// buffer. The message is valid until b is built again.
func (s *Service) eventMsgInto(ctx context.Context, ev *events.PresenceEvent, b *msgBuf) *nats.Msg {
	if b.msg.Header == nil {
		b.msg.Header = make(nats.Header, 2)
	} else {
		clear(b.msg.Header)
	}
	if cap(b.data) > maxReusedData {
		b.data = nil
	}
	if b.data == nil {
		b.data = make([]byte, 0, 512)
	}
	b.data = events.AppendPresence(b.data[:0], ev)
	b.id[0] = ev.ID
	b.msg.Header[events.HeaderMsgID] = b.id[:]
	b.msg.Subject, b.msg.Reply, b.msg.Data = ev.Subject(s.cfg.Partitions), "", b.data
	telemetry.Inject(ctx, &b.msg)
	return &b.msg
}

// publishEvent stores ev with its id as Nats-Msg-Id, retrying until
// JetStream acknowledges or ctx ends (ok false).
func (s *Service) publishEvent(ctx context.Context, ev events.PresenceEvent) (*jetstream.PubAck, bool) {
	msg := s.eventMsg(ctx, &ev)
	var ack *jetstream.PubAck
	ok := s.retry(ctx, "publish presence event", msg.Subject, func(ctx context.Context) error {
		a, err := s.js.PublishMsg(ctx, msg)
		ack = a
		return err
	})
	return ack, ok
}

// deadLetter makes p store its input in DEADLETTER with cause as the reason.
func (p *prepared) deadLetter(cause error) {
	in := p.in
	p.dead = true
	p.reason = cause.Error()
	payload := in.payload
	if len(payload) > maxDeadLetterPayload {
		p.reason += fmt.Sprintf(" (payload truncated to %d of %d bytes)", maxDeadLetterPayload, len(payload))
		payload = payload[:maxDeadLetterPayload]
	}
	p.msg = events.DeadLetter{Stage: Stage, Source: in.source, Topic: in.topic, Reason: p.reason, Payload: payload}.Msg()
}

// settle accounts for a stored input once JetStream acknowledged it;
// duplicate is whether the stream already had it.
func (s *Service) settle(p *prepared, duplicate bool) result {
	defer p.span.End()
	ctx, in := p.ctx, p.in
	// Metrics before the Stats counters: whoever sees a counter move
	// (tests do) finds the metric there too.
	if p.dead {
		s.metrics.events.Add(ctx, 1, s.metrics.outcome(outcomeDeadLettered, in.source))
		s.deadLettered.Add(1)
		if p.span.IsRecording() {
			p.span.SetStatus(codes.Error, "dead-lettered")
			p.span.SetAttributes(attribute.String("fleetwatch.outcome", outcomeDeadLettered))
		}
		s.log.Warn("input dead-lettered", "source", in.source, "topic", in.topic, "reason", p.reason)
		return result{outcome: outcomeDeadLettered, reason: p.reason, stored: true}
	}
	ev := p.ev
	if s.reconciler != nil {
		s.reconciler.stored(ev)
	}
	outcome := outcomePublished
	if duplicate {
		outcome = outcomeDuplicate
	}
	s.metrics.events.Add(ctx, 1, s.metrics.outcome(outcome, in.source))
	if outcome == outcomeDuplicate {
		s.duplicates.Add(1)
	} else {
		s.published.Add(1)
	}
	if p.span.IsRecording() {
		p.span.SetAttributes(attribute.String("fleetwatch.outcome", outcome))
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("presence event stored", "device", ev.DeviceID, "kind", ev.Kind, "id", ev.ID, "outcome", outcome)
	}
	return result{outcome: outcome, id: ev.ID, stored: true}
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

func transport(source string) string {
	if source == SourceEMQXWebhook {
		return "http"
	}
	return "mqtt"
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
