package evaluator

import (
	"context"
	"fmt"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/snapshotstore"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
)

// replayIdle is how long a replay waits for the next message before it
// concludes that the rest of the stream is gone (deleted or expired).
const replayIdle = 5 * time.Second

// rebuild rebuilds a unit's tracker from the streams (see the package doc),
// from the snapshot restored into it when snap is not nil, and publishes
// what a previous owner decided but did not get to publish. It replays only
// the unit's presence subjects; it reads every alert id.
func (s *Service) rebuild(ctx context.Context, u *unit, snap *snapshotstore.Snapshot) error {
	tr := u.tr
	started := time.Now()
	ctx, span := s.tracer.Start(ctx, "evaluator.rebuild")
	defer span.End()
	presenceFrom, alertsFrom := uint64(1), uint64(1)
	sent := make(map[string]struct{})
	var out []outMsg
	queued := make(map[string]bool)
	isSent := func(id string) bool {
		_, ok := sent[id]
		return ok
	}
	add := func(ds []tracker.Decision) {
		for _, d := range ds {
			if id := d.Alert.ID; !isSent(id) && !queued[id] {
				queued[id] = true
				out = append(out, outMsg{ctx: ctx, alert: d.Alert})
			}
		}
	}
	if snap != nil {
		presenceFrom, alertsFrom = snap.PresenceSeq+1, snap.AlertsSeq+1
		// Every alert the snapshot's state decided was published: its
		// groups' first notifications are not re-sent below.
		for _, id := range tr.AlertingIDs() {
			sent[id] = struct{}{}
		}
		// Labels follow the current rules and inventory, which may have
		// changed since the snapshot was written.
		if !tr.LabelsCurrent() {
			tc, err := s.trackerConfig(s.cfg, s.routes, u.scope)
			if err != nil {
				return err
			}
			ds, err := tr.Reconfigure(tc, s.now(), true)
			if err != nil {
				return err
			}
			add(ds)
			s.log.Info("snapshot relabelled: the label rules or the inventory changed since it was written")
		}
	}
	s.applySilences(u) // the set in force, before the replay

	nAlerts, lastAlert, err := replay(ctx, s.js, events.StreamAlerts, nil, true, alertsFrom, func(m jetstream.Msg) {
		if id := m.Headers().Get(events.HeaderMsgID); id != "" {
			sent[id] = struct{}{}
		}
	})
	if err != nil {
		return err
	}
	skipped := 0
	nPresence, _, err := replay(ctx, s.js, events.StreamPresence, u.filters, false, presenceFrom, func(m jetstream.Msg) {
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
	s.metrics.replayed.Add(ctx, int64(nPresence))
	span.SetAttributes(attribute.Int("fleetwatch.presence_events", nPresence), attribute.Int("fleetwatch.alerts_published", len(out)),
		attribute.Bool("fleetwatch.snapshot", snap != nil))
	u.alertsSeq = lastAlert
	if snap != nil {
		u.alertsSeq = max(u.alertsSeq, snap.AlertsSeq)
	}
	if !s.publish(u, out) {
		return ctx.Err()
	}
	s.log.Info("state rebuilt", "unit", u.name, "epoch", u.epoch, "snapshot", snap != nil, "presence_from_seq", presenceFrom, "presence_events", nPresence,
		"skipped", skipped, "alerts_seen", nAlerts, "devices", tr.Len(), "alerts_published", len(out),
		"took", time.Since(started).Round(time.Millisecond))
	s.deleteExpired(u)
	return nil
}

// replay calls fn for every message of stream from sequence from, in
// order, up to the stream's last sequence when replay starts (returned),
// with an ordered (ephemeral) consumer; filters, when set, select the
// subjects.
func replay(ctx context.Context, js jetstream.JetStream, stream string, filters []string, headersOnly bool, from uint64, fn func(jetstream.Msg)) (int, uint64, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s info: %w", stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 || last < max(from, 1) {
		return 0, last, nil
	}
	cc := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, HeadersOnly: headersOnly, FilterSubjects: filters}
	if from > info.State.FirstSeq {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := st.OrderedConsumer(ctx, cc)
	if err != nil {
		return 0, last, fmt.Errorf("replay %s: %w", stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, last, fmt.Errorf("replay %s: %w", stream, err)
	}
	defer it.Stop()
	n := 0
	for {
		if n == 0 {
			// Nothing to replay for these subjects: do not wait replayIdle.
			if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
				return 0, last, nil
			}
		}
		nctx, cancel := context.WithTimeout(ctx, replayIdle)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return n, last, ctx.Err()
			}
			if nctx.Err() != nil {
				return n, last, nil // the tail was deleted or expired meanwhile
			}
			return n, last, fmt.Errorf("replay %s: %w", stream, err)
		}
		fn(m)
		n++
		md, err := m.Metadata()
		if err != nil {
			return n, last, fmt.Errorf("replay %s: %w", stream, err)
		}
		if md.Sequence.Stream >= last || md.NumPending == 0 {
			return n, last, nil
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
