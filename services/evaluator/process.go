package evaluator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// publishChunk bounds the asynchronous publishes in flight.
const publishChunk = 256

// publishTimeout bounds the wait for the acks of one chunk.
const publishTimeout = 10 * time.Second

// outMsg is a decided alert with the trace context of the input that caused it.
type outMsg struct {
	ctx   context.Context
	alert events.AlertEvent
}

// maxIdleWait bounds a fetch that waits for traffic: a pending fetch does not
// see ctx, so it bounds how long stopping takes.
const maxIdleWait = time.Second

// loop fetches and applies batches, and applies a tick at least every
// Config.Tick, until ctx ends. It is the only user of tr.
func (s *Service) loop(ctx context.Context, cons jetstream.Consumer, tr *tracker.Tracker) {
	ticker := time.NewTicker(s.cfg.Tick)
	defer ticker.Stop()
	for ctx.Err() == nil {
		// Take what is already there without waiting (under load: full
		// batches); when nothing is, wait for the next message, up to a
		// tick, and handle it alone. A fetch that waits to fill a batch
		// would hold a lone disconnect's decision until the wait ends.
		batch, err := cons.FetchNoWait(s.cfg.FetchBatch)
		if err == nil && s.handleBatch(ctx, tr, batch) == 0 && ctx.Err() == nil {
			batch, err = cons.Fetch(1, jetstream.FetchMaxWait(min(s.cfg.Tick, maxIdleWait)))
			if err == nil {
				s.handleBatch(ctx, tr, batch)
			}
		}
		if err != nil {
			s.log.Warn("fetch presence events", "err", err)
			sleep(ctx, s.cfg.Tick)
		}
		select {
		case <-ticker.C:
			s.tick(ctx, tr)
		default:
		}
	}
}

// handleBatch applies a batch, publishes its decisions, and acks the inputs
// once every publish is acknowledged. It returns the number of messages the
// batch held.
func (s *Service) handleBatch(ctx context.Context, tr *tracker.Tracker, batch jetstream.MessageBatch) int {
	before := tr.Stats()
	var (
		out  []outMsg
		done []jetstream.Msg
	)
	n := 0
	var pending uint64
	for msg := range batch.Messages() {
		n++
		if md, err := msg.Metadata(); err == nil {
			pending = md.NumPending
		}
		mctx, span := s.tracer.Start(telemetry.Extract(ctx, msg.Headers()), "evaluator.apply",
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.String("messaging.destination.name", msg.Subject())))
		e, err := decodePresence(msg.Subject(), msg.Data(), s.cfg.Partitions)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "dead-lettered")
			if s.deadLetter(mctx, msg, err) {
				done = append(done, msg)
			}
			span.End()
			continue
		}
		span.SetAttributes(attribute.String("fleetwatch.device_id", e.DeviceID), attribute.String("fleetwatch.kind", string(e.Kind)))
		s.watermark = max(s.watermark, e.BrokerTSMS)
		for _, d := range tr.Apply(tracker.Event{PresenceEvent: &e}) {
			out = append(out, outMsg{ctx: mctx, alert: d.Alert})
		}
		span.End()
		done = append(done, msg)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("fetch presence events", "err", err)
	}
	s.backlog = n > 0 && pending > 0
	s.metrics.countApplied(ctx, before, tr.Stats())
	s.devices.Store(int64(tr.Len()))
	if !s.publish(ctx, out) {
		return n // stopping: the inputs stay unacked and are redelivered
	}
	for _, m := range done {
		if err := m.Ack(); err != nil {
			s.log.Warn("ack presence event", "subject", m.Subject(), "err", err)
		}
	}
	return n
}

// deadLetter stores a bad input in DEADLETTER and reports whether it may be
// acked.
func (s *Service) deadLetter(ctx context.Context, msg jetstream.Msg, cause error) bool {
	source := msg.Headers().Get(events.HeaderSource)
	if source == "" {
		source = "presence"
	}
	err := events.PublishDeadLetter(ctx, s.js, events.DeadLetter{
		Stage: StageName, Source: source, Topic: msg.Subject(), Reason: cause.Error(), Payload: msg.Data(),
	})
	if err != nil {
		s.log.Error("dead-letter a bad presence event", "subject", msg.Subject(), "reason", cause, "err", err)
		_ = msg.NakWithDelay(s.cfg.Tick)
		return false
	}
	s.log.Warn("dead-lettered a bad presence event", "subject", msg.Subject(), "reason", cause)
	s.metrics.events.Add(ctx, 1, outcomeDeadLettered)
	return true
}

// tick applies the clock and publishes what fired.
//
// While the consumer has a backlog, the tick runs at the newest broker time
// applied (an event-time watermark) rather than the clock: a grace timer
// fires only once every event up to its due time has been applied, so a
// reconnect still waiting in the queue is never reported as an outage.
func (s *Service) tick(ctx context.Context, tr *tracker.Tracker) {
	now := s.now()
	if s.backlog && s.watermark > 0 && s.watermark < now.UnixMilli() {
		now = time.UnixMilli(s.watermark)
	}
	tctx, span := s.tracer.Start(ctx, "evaluator.tick", trace.WithAttributes(attribute.Int64("fleetwatch.now_ms", now.UnixMilli())))
	ds := tr.Apply(tracker.Tick{Now: now})
	span.SetAttributes(attribute.Int("fleetwatch.decisions", len(ds)))
	span.End()
	out := make([]outMsg, 0, len(ds))
	for _, d := range ds {
		out = append(out, outMsg{ctx: tctx, alert: d.Alert})
	}
	s.publish(ctx, out)
}

// publish stores every alert in ALERTS, retrying with backoff until all are
// acknowledged. It returns false when ctx ended first.
func (s *Service) publish(ctx context.Context, out []outMsg) bool {
	if len(out) == 0 {
		return true
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := s.publishOnce(ctx, out)
		if err == nil {
			for _, o := range out {
				s.metrics.decisions.Add(ctx, 1, metric.WithAttributes(
					attribute.String("status", string(o.alert.Status)), attribute.String("receiver", o.alert.Receiver)))
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		s.log.Warn("publish alerts, will retry", "alerts", len(out), "attempt", attempt, "err", err)
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Service) publishOnce(ctx context.Context, out []outMsg) error {
	for start := 0; start < len(out); start += publishChunk {
		chunk := out[start:min(start+publishChunk, len(out))]
		futures := make([]jetstream.PubAckFuture, 0, len(chunk))
		for _, o := range chunk {
			m, err := alertMsg(o)
			if err != nil {
				return err
			}
			f, err := s.js.PublishMsgAsync(m)
			if err != nil {
				return fmt.Errorf("publish alert %s: %w", o.alert.ID, err)
			}
			futures = append(futures, f)
		}
		if err := waitAcks(ctx, futures); err != nil {
			return err
		}
	}
	return nil
}

func alertMsg(o outMsg) (*nats.Msg, error) {
	data, err := json.Marshal(o.alert)
	if err != nil {
		return nil, fmt.Errorf("encode alert %s: %w", o.alert.ID, err)
	}
	m := nats.NewMsg(events.AlertSubject(o.alert.Receiver))
	m.Data = data
	m.Header.Set(events.HeaderMsgID, o.alert.ID)
	telemetry.Inject(o.ctx, m)
	return m, nil
}

func waitAcks(ctx context.Context, futures []jetstream.PubAckFuture) error {
	tctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish alert to %s: %w", f.Msg().Subject, err)
		case <-tctx.Done():
			return fmt.Errorf("wait for alert publish acks: %w", tctx.Err())
		}
	}
	return nil
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
