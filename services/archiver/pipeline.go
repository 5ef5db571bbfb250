package archiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
	"github.com/fleetwatch/fleetwatch/services/archiver/sink"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// runner archives one stream.
type runner interface {
	run(ctx context.Context)
}

// event is what the archiver can store: a wire event that validates itself.
type event interface {
	events.PresenceEvent | events.AlertEvent | events.DeliveryEvent
	Validate() error
}

// decode parses and validates one message payload. Unknown JSON fields are
// accepted: v1 may gain optional fields that this archiver does not store.
func decode[E event](data []byte) (E, error) {
	var e E
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("decode json: %w", err)
	}
	if err := e.Validate(); err != nil {
		return e, err
	}
	return e, nil
}

// maxSpanLinks bounds the links from a batch's insert span to its messages.
const maxSpanLinks = 128

// pipeline is the batcher of one stream: fetch, decode, insert, ack.
type pipeline[E event] struct {
	cfg     Config
	spec    streamSpec
	log     *slog.Logger
	cons    jetstream.Consumer
	js      jetstream.JetStream
	writer  *sink.Writer
	tracer  trace.Tracer
	metrics *metrics

	rows  *sink.Rows[E]
	msgs  []jetstream.Msg
	batch []inflight
}

// inflight is a decoded message waiting for its batch's insert.
type inflight struct {
	msg  jetstream.Msg
	span trace.Span
}

func (s *Service) newPipeline(name string, cons jetstream.Consumer) runner {
	switch name {
	case StreamPresence:
		return newPipeline(s, name, cons, sink.NewPresenceRows())
	case StreamAlerts:
		return newPipeline(s, name, cons, sink.NewAlertRows())
	default:
		return newPipeline(s, name, cons, sink.NewDeliveryRows())
	}
}

func newPipeline[E event](s *Service, name string, cons jetstream.Consumer, rows *sink.Rows[E]) *pipeline[E] {
	spec := streamSpecs[name]
	return &pipeline[E]{
		cfg:     s.cfg,
		spec:    spec,
		log:     s.log.With("stream", spec.stream, "table", spec.table),
		cons:    cons,
		js:      s.js,
		writer:  s.writer,
		tracer:  s.tracer,
		metrics: s.metrics,
		rows:    rows,
		msgs:    make([]jetstream.Msg, 0, s.cfg.BatchSize),
		batch:   make([]inflight, 0, s.cfg.BatchSize),
	}
}

func (p *pipeline[E]) run(ctx context.Context) {
	var b backoff
	b.cfg = p.cfg.Retry
	for ctx.Err() == nil {
		msgs, err := p.fetch(ctx)
		if ctx.Err() != nil {
			nakAll(msgs)
			return
		}
		if len(msgs) > 0 {
			p.handle(ctx, msgs)
		}
		if err != nil {
			d := b.next()
			p.log.Warn("jetstream fetch failed; retrying", "retry_in", d, "err", err)
			sleep(ctx, d)
			continue
		}
		b.reset()
	}
}

// fetch pulls up to BatchSize messages, waiting at most BatchWait. It
// returns the messages received even when the pull ended with an error.
func (p *pipeline[E]) fetch(ctx context.Context) ([]jetstream.Msg, error) {
	fctx, cancel := context.WithTimeout(ctx, p.cfg.BatchWait)
	defer cancel()
	msgs := p.msgs[:0]
	batch, err := p.cons.Fetch(p.cfg.BatchSize, jetstream.FetchContext(fctx))
	if err != nil {
		return msgs, err
	}
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	err = batch.Error()
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = nil // the batch window ended
	}
	return msgs, err
}

// handle archives one fetched batch. It returns once every message is acked
// (stored, or dead-lettered) or, when ctx ends first, nak'ed.
func (p *pipeline[E]) handle(ctx context.Context, msgs []jetstream.Msg) {
	p.rows.Reset()
	p.batch = p.batch[:0]
	for _, m := range msgs {
		mctx, span := p.tracer.Start(telemetry.Extract(ctx, m.Headers()), "archive "+p.spec.table,
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(
				attribute.String("messaging.system", "nats"),
				attribute.String("messaging.destination.name", m.Subject()),
				attribute.String("db.collection.name", p.spec.table)))
		e, err := decode[E](m.Data())
		if err == nil {
			err = p.rows.Add(e)
		}
		if err != nil {
			p.deadLetter(mctx, m, err)
			span.SetStatus(codes.Error, err.Error())
			span.End()
			continue
		}
		p.batch = append(p.batch, inflight{msg: m, span: span})
	}
	if len(p.batch) == 0 {
		return
	}
	stop := p.keepAlive()
	err := p.insert(ctx)
	stop()
	if err != nil {
		for _, f := range p.batch {
			_ = f.msg.Nak()
			f.span.SetStatus(codes.Error, "not archived: "+err.Error())
			f.span.End()
		}
		clear(p.batch)
		return
	}
	for _, f := range p.batch {
		if err := f.msg.Ack(); err != nil {
			// The row is stored; a redelivery only inserts a duplicate
			// that the table collapses.
			p.log.Debug("ack failed", "subject", f.msg.Subject(), "err", err)
		}
		f.span.End()
	}
	clear(p.batch)
}

// insert stores the batch's rows, retrying the same rows with backoff until
// it succeeds. It fails only when ctx ends.
func (p *pipeline[E]) insert(ctx context.Context) error {
	links := make([]trace.Link, 0, min(len(p.batch), maxSpanLinks))
	for _, f := range p.batch[:cap(links)] {
		links = append(links, trace.Link{SpanContext: f.span.SpanContext()})
	}
	ctx, span := p.tracer.Start(ctx, "insert "+p.spec.table,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.String("db.system", "clickhouse"),
			attribute.String("db.collection.name", p.spec.table),
			attribute.Int("db.operation.batch.size", p.rows.Len())))
	defer span.End()
	b := backoff{cfg: p.cfg.Retry}
	for attempt := 1; ; attempt++ {
		ictx, cancel := context.WithTimeout(ctx, p.cfg.InsertTimeout)
		start := time.Now()
		err := p.writer.Insert(ictx, p.rows)
		cancel()
		p.metrics.insert(ctx, p.spec.table, time.Since(start), p.rows.Len(), err)
		if err == nil {
			span.SetAttributes(attribute.Int("attempts", attempt))
			if attempt > 1 {
				p.log.Info("clickhouse insert succeeded after retries", "rows", p.rows.Len(), "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			span.SetStatus(codes.Error, "stopped before the insert succeeded")
			return ctx.Err()
		}
		span.RecordError(err)
		d := b.next()
		p.log.Warn("clickhouse insert failed; retrying the same batch", "rows", p.rows.Len(),
			"attempt", attempt, "retry_in", d, "err", err)
		if !sleep(ctx, d) {
			span.SetStatus(codes.Error, "stopped before the insert succeeded")
			return ctx.Err()
		}
	}
}

// keepAlive sends in-progress acks for the batch every third of AckWait
// until stop is called, so that JetStream does not redeliver messages whose
// insert is still being retried.
func (p *pipeline[E]) keepAlive() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(p.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, f := range p.batch {
					_ = f.msg.InProgress()
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// deadLetter stores a message that cannot be archived in DEADLETTER, with
// the reason, and acks it. If the dead letter cannot be stored, the message
// is nak'ed for a later retry instead.
func (p *pipeline[E]) deadLetter(ctx context.Context, m jetstream.Msg, reason error) {
	err := events.PublishDeadLetter(ctx, p.js, events.DeadLetter{
		Stage:   Stage,
		Source:  p.spec.stream,
		Topic:   m.Subject(),
		Reason:  reason.Error(),
		Payload: m.Data(),
	})
	if err != nil {
		p.log.Error("dead letter not stored; the message will be redelivered", "subject", m.Subject(), "err", err)
		_ = m.NakWithDelay(p.cfg.Retry.Max)
		return
	}
	p.metrics.deadLetter(ctx, p.spec.table)
	p.log.Warn("message dead-lettered", "subject", m.Subject(), "reason", reason.Error())
	if err := m.Ack(); err != nil {
		p.log.Debug("ack of a dead-lettered message failed", "subject", m.Subject(), "err", err)
	}
}

func nakAll(msgs []jetstream.Msg) {
	for _, m := range msgs {
		_ = m.Nak()
	}
}
