package archiver

import (
	"context"
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

// maxSpanLinks bounds the links from a batch's insert span to its messages.
const maxSpanLinks = 128

// pipeline archives one stream with cfg.InflightBatches workers. Each
// worker owns one batch from fetch to ack: it takes the fetch turn, pulls
// up to BatchSize messages (waiting at most BatchWait), gives the turn to
// the next worker, decodes the batch, inserts it (retrying until it is
// stored) and acks its own messages. So one pull request is open at a time,
// which keeps batches full, while decodes and INSERTs of earlier batches
// run beside it; a worker that cannot insert does not fetch, so a failing
// ClickHouse stops the stream after InflightBatches batches (back-pressure).
type pipeline[E event] struct {
	cfg     Config
	spec    streamSpec
	log     *slog.Logger
	cons    jetstream.Consumer
	js      jetstream.JetStream
	writer  *sink.Writer
	tracer  trace.Tracer
	metrics *metrics
	newRows func() *sink.Rows[E]

	// turn is held by the worker whose pull request is open.
	turn chan struct{}
	// fetchBackoff and retryAt, guarded by turn, space out fetches after
	// a failed one, for every worker.
	fetchBackoff backoff
	retryAt      time.Time
}

// worker is one batch in flight: its messages and rows, reused between
// batches.
type worker[E event] struct {
	p     *pipeline[E]
	rows  *sink.Rows[E]
	msgs  []jetstream.Msg
	batch []inflight
	// dec decodes presence payloads with strings borrowed from the
	// messages' data: a batch's messages are held until its rows are
	// inserted, and rows.Reset drops the strings before the next batch.
	dec *events.PresenceDecoder
}

// inflight is a decoded message waiting for its batch's insert.
type inflight struct {
	msg  jetstream.Msg
	span trace.Span
}

func (s *Service) newPipeline(name string, cons jetstream.Consumer) runner {
	switch name {
	case StreamPresence:
		return newPipeline(s, name, cons, sink.NewPresenceRows)
	case StreamAlerts:
		return newPipeline(s, name, cons, sink.NewAlertRows)
	default:
		return newPipeline(s, name, cons, sink.NewDeliveryRows)
	}
}

func newPipeline[E event](s *Service, name string, cons jetstream.Consumer, newRows func() *sink.Rows[E]) *pipeline[E] {
	spec := streamSpecs[name]
	return &pipeline[E]{
		cfg:          s.cfg,
		spec:         spec,
		log:          s.log.With("stream", spec.stream, "table", spec.table),
		cons:         cons,
		js:           s.js,
		writer:       s.writer,
		tracer:       s.tracer,
		metrics:      s.metrics,
		newRows:      newRows,
		turn:         make(chan struct{}, 1),
		fetchBackoff: backoff{cfg: s.cfg.Retry},
	}
}

// run runs the workers until ctx ends.
func (p *pipeline[E]) run(ctx context.Context) {
	var wg sync.WaitGroup
	for range p.cfg.InflightBatches {
		w := &worker[E]{
			p:     p,
			rows:  p.newRows(),
			msgs:  make([]jetstream.Msg, 0, p.cfg.BatchSize),
			batch: make([]inflight, 0, p.cfg.BatchSize),
			dec:   &events.PresenceDecoder{Borrow: true},
		}
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
}

func (w *worker[E]) run(ctx context.Context) {
	for ctx.Err() == nil {
		msgs := w.fetch(ctx)
		if ctx.Err() != nil {
			nakAll(msgs)
			return
		}
		if len(msgs) > 0 {
			w.handle(ctx, msgs)
		}
		clear(msgs) // drop the messages until the next batch
	}
}

// fetch waits for the fetch turn and pulls up to BatchSize messages,
// waiting at most BatchWait. It returns the messages received even when the
// pull ended with an error; after an error the next fetch of any worker
// waits for the backoff.
func (w *worker[E]) fetch(ctx context.Context) []jetstream.Msg {
	p := w.p
	select {
	case p.turn <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	defer func() { <-p.turn }()
	if d := time.Until(p.retryAt); d > 0 && !sleep(ctx, d) {
		return nil
	}
	msgs, err := w.pull()
	switch {
	case ctx.Err() != nil:
	case err != nil:
		d := p.fetchBackoff.next()
		p.retryAt = time.Now().Add(d)
		p.log.Warn("jetstream fetch failed; retrying", "retry_in", d, "err", err)
	default:
		p.fetchBackoff.reset()
		p.retryAt = time.Time{}
	}
	return msgs
}

// pull fetches one batch. The pull request expires on the server after
// BatchWait, and the client reads until the server says so: every message
// the server sent is received. (A client-side deadline, FetchContext, would
// drop the messages still in flight when it fires; the server counts them
// as delivered and redelivers them only after AckWait.) So a pull is not
// cut short when ctx ends: the caller naks what it got.
func (w *worker[E]) pull() ([]jetstream.Msg, error) {
	msgs := w.msgs[:0]
	batch, err := w.p.cons.Fetch(w.p.cfg.BatchSize, jetstream.FetchMaxWait(w.p.cfg.BatchWait))
	if err != nil {
		return msgs, err
	}
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	w.msgs = msgs[:0]
	return msgs, batch.Error()
}

// handle archives one fetched batch. It returns once every message is acked
// (stored, or dead-lettered) or, when ctx ends first, nak'ed.
func (w *worker[E]) handle(ctx context.Context, msgs []jetstream.Msg) {
	p := w.p
	w.rows.Reset()
	w.batch = w.batch[:0]
	for _, m := range msgs {
		mctx, span := p.messageSpan(ctx, m)
		e, err := decode[E](w.dec, m.Data())
		if err == nil {
			err = w.rows.Add(e)
		}
		if err != nil {
			p.deadLetter(mctx, m, err)
			span.SetStatus(codes.Error, err.Error())
			span.End()
			continue
		}
		w.batch = append(w.batch, inflight{msg: m, span: span})
	}
	if len(w.batch) == 0 {
		return
	}
	stop := w.keepAlive()
	err := w.insert(ctx)
	stop()
	if err != nil {
		for _, f := range w.batch {
			_ = f.msg.Nak()
			f.span.SetStatus(codes.Error, "not archived: "+err.Error())
			f.span.End()
		}
		clear(w.batch)
		return
	}
	// Each message is acked on its own (an explicit ack, fire and forget:
	// no round trip): AckAll would also ack the messages of batches still
	// being inserted by other workers.
	for _, f := range w.batch {
		if err := f.msg.Ack(); err != nil {
			// The row is stored; a redelivery only inserts a duplicate
			// that the table collapses.
			p.log.Debug("ack failed", "subject", f.msg.Subject(), "err", err)
		}
		f.span.End()
	}
	clear(w.batch)
}

// messageSpan starts the span of one archived message, continuing the
// trace in its headers. For a trace that is not sampled it starts none
// (the span would not be recorded) and returns a no-op span.
func (p *pipeline[E]) messageSpan(ctx context.Context, m jetstream.Msg) (context.Context, trace.Span) {
	if telemetry.UnsampledParent(m.Headers()) {
		return ctx, noopSpan
	}
	return p.tracer.Start(telemetry.Extract(ctx, m.Headers()), "archive "+p.spec.table,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", m.Subject()),
			attribute.String("db.collection.name", p.spec.table)))
}

// noopSpan stands for a message span that is not recorded.
var noopSpan = trace.SpanFromContext(context.Background())

// insert stores the batch's rows, retrying the same rows with backoff until
// it succeeds. It fails only when ctx ends.
func (w *worker[E]) insert(ctx context.Context) error {
	p := w.p
	var links []trace.Link
	for _, f := range w.batch {
		if len(links) == maxSpanLinks {
			break
		}
		if sc := f.span.SpanContext(); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	ctx, span := p.tracer.Start(ctx, "insert "+p.spec.table,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.String("db.system", "clickhouse"),
			attribute.String("db.collection.name", p.spec.table),
			attribute.Int("db.operation.batch.size", w.rows.Len())))
	defer span.End()
	b := backoff{cfg: p.cfg.Retry}
	for attempt := 1; ; attempt++ {
		ictx, cancel := context.WithTimeout(ctx, p.cfg.InsertTimeout)
		start := time.Now()
		err := p.writer.Insert(ictx, w.rows)
		cancel()
		p.metrics.insert(ctx, p.spec.table, time.Since(start), w.rows.Len(), err)
		if err == nil {
			span.SetAttributes(attribute.Int("attempts", attempt))
			if attempt > 1 {
				p.log.Info("clickhouse insert succeeded after retries", "rows", w.rows.Len(), "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			span.SetStatus(codes.Error, "stopped before the insert succeeded")
			return ctx.Err()
		}
		span.RecordError(err)
		d := b.next()
		p.log.Warn("clickhouse insert failed; retrying the same batch", "rows", w.rows.Len(),
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
func (w *worker[E]) keepAlive() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(w.p.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, f := range w.batch {
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
