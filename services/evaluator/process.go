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

// fetched is what one fetch of a unit's consumer returned.
type fetched struct {
	u    *unit
	msgs []jetstream.Msg
	err  error
}

// fetch pulls batches from the consumer and hands them to the processing
// goroutine, until ctx ends. It takes what is already there without waiting
// (under load: full batches); when nothing is, it waits for the next
// message, up to a tick, and hands it over alone. A fetch that waits to fill
// a batch would hold a lone disconnect's decision until the wait ends.
func (s *Service) fetch(ctx context.Context, u *unit, out chan<- fetched, batch int, tick time.Duration) {
	for ctx.Err() == nil {
		msgs, err := drain(u.cons.FetchNoWait(batch))
		if err == nil && len(msgs) == 0 {
			s.stats.set(u.name, func(st *unitStat) { st.pending = 0 })
			msgs, err = drain(u.cons.Fetch(1, jetstream.FetchMaxWait(min(tick, maxIdleWait))))
		}
		if len(msgs) == 0 && err == nil {
			continue
		}
		if len(msgs) > 0 {
			if md, merr := msgs[len(msgs)-1].Metadata(); merr == nil {
				s.stats.set(u.name, func(st *unitStat) { st.pending = md.NumPending })
			}
		}
		select {
		case out <- fetched{u: u, msgs: msgs, err: err}:
		case <-ctx.Done():
			nakAll(msgs) // for whoever owns the unit next
			return
		}
		if err != nil {
			sleep(ctx, tick)
		}
	}
}

// nakAll asks for the redelivery of messages that will not be processed.
func nakAll(msgs []jetstream.Msg) {
	for _, m := range msgs {
		_ = m.Nak()
	}
}

// drain collects a fetch's messages; timeouts are not errors.
func drain(batch jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		return msgs, err
	}
	return msgs, nil
}

// loop applies fetched batches, a tick at least every Config.Tick, and
// whatever else must reach the trackers (API queries, reloads, silences,
// inventory changes, node health, units starting and stopping), until ctx
// ends. It is the only user of the trackers: everything that reads or
// changes one runs here, between batches. A unit whose ownership context
// ended processes nothing more: its batches are handed back.
func (s *Service) loop(ctx context.Context) {
	ticker := time.NewTicker(s.cfg.Tick)
	defer ticker.Stop()
	snapTicker := time.NewTicker(s.cfg.SnapshotInterval)
	defer snapTicker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-snapTicker.C:
			for _, u := range s.live() {
				s.snapshotLater(u)
			}
		case f := <-s.batches:
			u := f.u
			if u.gone || u.ctx.Err() != nil {
				nakAll(f.msgs)
				continue
			}
			if len(f.msgs) > 0 {
				s.handleBatch(u, f.msgs)
				s.deleteExpired(u)
			}
			if f.err != nil {
				s.log.Warn("fetch presence events", "unit", u.name, "err", f.err)
			}
		case <-ticker.C:
			for _, u := range s.live() {
				s.tick(u)
			}
		case req := <-s.ctl.requests:
			req.fn(ctx)
			close(req.done)
		case <-s.ctl.silencesChanged:
			for _, u := range s.live() {
				s.applySilences(u)
			}
		case up := <-s.ctl.invUpdates:
			s.applyInventory(up)
		case e := <-s.ctl.nodeEvents:
			for _, u := range s.live() {
				s.publishDecisions(u, u.tr.Apply(tracker.Node{NodeEvent: &e}))
				s.deleteExpired(u)
			}
			s.countDevices()
		}
	}
}

// handleBatch applies a batch, publishes its decisions, and acks the inputs
// once every publish is acknowledged. It returns the number of messages the
// batch held.
func (s *Service) handleBatch(u *unit, batch []jetstream.Msg) int {
	ctx, tr := u.ctx, u.tr
	before := tr.Stats()
	var (
		out  []outMsg
		done []jetstream.Msg
	)
	n := 0
	var pending uint64
	for _, msg := range batch {
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
		u.watermark = max(u.watermark, e.BrokerTSMS)
		for _, d := range tr.Apply(tracker.Event{PresenceEvent: &e}) {
			out = append(out, outMsg{ctx: mctx, alert: d.Alert})
		}
		span.End()
		done = append(done, msg)
	}
	u.backlog = n > 0 && pending > 0
	s.metrics.countApplied(ctx, before, tr.Stats())
	s.countDevices()
	if !s.publish(u, out) {
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
func (s *Service) tick(u *unit) {
	ctx, tr := u.ctx, u.tr
	clock := s.now()
	now := clock
	if u.backlog && u.watermark > 0 && u.watermark < now.UnixMilli() {
		now = time.UnixMilli(u.watermark)
	}
	tctx, span := s.tracer.Start(ctx, "evaluator.tick", trace.WithAttributes(attribute.Int64("fleetwatch.now_ms", now.UnixMilli())))
	ds := tr.Apply(tracker.Tick{Now: now})
	span.SetAttributes(attribute.Int("fleetwatch.decisions", len(ds)))
	span.End()
	out := make([]outMsg, 0, len(ds))
	for _, d := range ds {
		out = append(out, outMsg{ctx: tctx, alert: d.Alert})
	}
	s.publish(u, out)
	if until := u.silencesUntil; !until.IsZero() && !clock.Before(until) {
		s.applySilencesAt(u, clock) // a maintenance window ended: its next occurrence
	}
	if len(u.relabelLater) > 0 {
		s.retryRelabel(u)
	}
	s.deleteExpired(u)
}

// publish stores every alert of a unit in ALERTS, retrying with backoff
// until all are acknowledged. It returns false when the unit's context
// ended first.
func (s *Service) publish(u *unit, out []outMsg) bool {
	if len(out) == 0 {
		return true
	}
	ctx := u.ctx
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		seq, err := s.publishOnce(ctx, out)
		if err == nil {
			u.alertsSeq = max(u.alertsSeq, seq)
			for _, o := range out {
				s.metrics.decisions.Add(ctx, 1, metric.WithAttributes(
					attribute.String("status", string(o.alert.Status)), attribute.String("receiver", o.alert.Receiver)))
			}
			return true
		}
		if ctx.Err() != nil {
			u.unpublished = true
			return false
		}
		s.log.Warn("publish alerts, will retry", "unit", u.name, "alerts", len(out), "attempt", attempt, "err", err)
		if !sleep(ctx, backoff) {
			u.unpublished = true
			return false
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// publishOnce publishes every alert once and returns the highest ALERTS
// sequence acknowledged.
func (s *Service) publishOnce(ctx context.Context, out []outMsg) (uint64, error) {
	var last uint64
	for start := 0; start < len(out); start += publishChunk {
		chunk := out[start:min(start+publishChunk, len(out))]
		futures := make([]jetstream.PubAckFuture, 0, len(chunk))
		for _, o := range chunk {
			m, err := alertMsg(o)
			if err != nil {
				return 0, err
			}
			f, err := s.js.PublishMsgAsync(m)
			if err != nil {
				return 0, fmt.Errorf("publish alert %s: %w", o.alert.ID, err)
			}
			futures = append(futures, f)
		}
		seq, err := waitAcks(ctx, futures)
		if err != nil {
			return 0, err
		}
		last = max(last, seq)
	}
	return last, nil
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

// waitAcks waits for the publish acks and returns the highest sequence.
func waitAcks(ctx context.Context, futures []jetstream.PubAckFuture) (uint64, error) {
	tctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	var last uint64
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			last = max(last, ack.Sequence)
		case err := <-f.Err():
			return 0, fmt.Errorf("publish alert to %s: %w", f.Msg().Subject, err)
		case <-tctx.Done():
			return 0, fmt.Errorf("wait for alert publish acks: %w", tctx.Err())
		}
	}
	return last, nil
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
