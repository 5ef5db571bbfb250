package evaluator

import (
	"context"
	"fmt"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
)

// replayIdle is how long a replay waits for the next message before it
// concludes that the rest of the stream is gone (deleted or expired).
const replayIdle = 5 * time.Second

// rebuild rebuilds tr from the streams (see the package doc) and publishes
// what a previous run decided but did not get to publish.
func (s *Service) rebuild(ctx context.Context, tr *tracker.Tracker) error {
	started := time.Now()
	ctx, span := s.tracer.Start(ctx, "evaluator.rebuild")
	defer span.End()
	sent := make(map[string]struct{})
	nAlerts, err := replay(ctx, s.js, events.StreamAlerts, true, func(m jetstream.Msg) {
		if id := m.Headers().Get(events.HeaderMsgID); id != "" {
			sent[id] = struct{}{}
		}
	})
	if err != nil {
		return err
	}
	isSent := func(id string) bool {
		_, ok := sent[id]
		return ok
	}

	var out []outMsg
	queued := make(map[string]bool)
	add := func(ds []tracker.Decision) {
		for _, d := range ds {
			if id := d.Alert.ID; !isSent(id) && !queued[id] {
				queued[id] = true
				out = append(out, outMsg{ctx: ctx, alert: d.Alert})
			}
		}
	}
	skipped := 0
	nPresence, err := replay(ctx, s.js, events.StreamPresence, false, func(m jetstream.Msg) {
		e, err := decodePresence(m.Subject(), m.Data(), s.cfg.Partitions)
		if err != nil {
			skipped++ // the live consumer dead-letters it
			return
		}
		add(tr.Apply(tracker.Event{PresenceEvent: &e}))
		tr.MarkAlerted(e.DeviceID, isSent)
	})
	if err != nil {
		return err
	}
	now := s.now()
	add(tr.Apply(tracker.Tick{Now: now}))
	add(tr.Alerting(now))
	s.devices.Store(int64(tr.Len()))
	span.SetAttributes(attribute.Int("fleetwatch.presence_events", nPresence), attribute.Int("fleetwatch.alerts_published", len(out)))
	if !s.publish(ctx, out) {
		return ctx.Err()
	}
	s.log.Info("state rebuilt", "presence_events", nPresence, "skipped", skipped, "alerts_seen", nAlerts,
		"devices", tr.Len(), "alerts_published", len(out), "took", time.Since(started).Round(time.Millisecond))
	return nil
}

// replay calls fn for every message of stream, in order, up to the stream's
// last sequence when replay starts, with an ordered (ephemeral) consumer.
func replay(ctx context.Context, js jetstream.JetStream, stream string, headersOnly bool, fn func(jetstream.Msg)) (int, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", stream, err)
	}
	if info.State.Msgs == 0 {
		return 0, nil
	}
	last := info.State.LastSeq
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverAllPolicy,
		HeadersOnly:   headersOnly,
	})
	if err != nil {
		return 0, fmt.Errorf("replay %s: %w", stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, fmt.Errorf("replay %s: %w", stream, err)
	}
	defer it.Stop()
	n := 0
	for {
		nctx, cancel := context.WithTimeout(ctx, replayIdle)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return n, ctx.Err()
			}
			if nctx.Err() != nil {
				return n, nil // the tail was deleted or expired meanwhile
			}
			return n, fmt.Errorf("replay %s: %w", stream, err)
		}
		fn(m)
		n++
		md, err := m.Metadata()
		if err != nil {
			return n, fmt.Errorf("replay %s: %w", stream, err)
		}
		if md.Sequence.Stream >= last || md.NumPending == 0 {
			return n, nil
		}
	}
}

// ReadPresence reads the PRESENCE events stored between from and to
// (stream time, inclusive) in stream order, decoded and validated like the
// live consumer does, and calls fn with batches of them. It stops at to, or
// at the stream's last message when it started. Events that do not decode
// are counted as skipped.
func ReadPresence(ctx context.Context, js jetstream.JetStream, from, to time.Time, partitions int,
	fn func([]events.PresenceEvent)) (read, skipped int, err error) {
	st, err := js.Stream(ctx, events.StreamPresence)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", events.StreamPresence, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s info: %w", events.StreamPresence, err)
	}
	if info.State.Msgs == 0 {
		return 0, 0, nil
	}
	last := info.State.LastSeq
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &from,
	})
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", events.StreamPresence, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", events.StreamPresence, err)
	}
	defer it.Stop()
	batch := make([]events.PresenceEvent, 0, 1024)
	flush := func() {
		if len(batch) > 0 {
			fn(batch)
			batch = batch[:0]
		}
	}
	defer flush()
	for {
		nctx, cancel := context.WithTimeout(ctx, replayIdle)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return read, skipped, ctx.Err()
			}
			if nctx.Err() != nil {
				return read, skipped, nil // nothing after from, or the tail expired
			}
			return read, skipped, fmt.Errorf("read %s: %w", events.StreamPresence, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return read, skipped, fmt.Errorf("read %s: %w", events.StreamPresence, err)
		}
		if md.Timestamp.After(to) {
			return read, skipped, nil
		}
		e, err := decodePresence(m.Subject(), m.Data(), partitions)
		if err != nil {
			skipped++
		} else {
			read++
			batch = append(batch, e)
			if len(batch) == cap(batch) {
				flush()
			}
		}
		if md.Sequence.Stream >= last || md.NumPending == 0 {
			return read, skipped, nil
		}
	}
}
