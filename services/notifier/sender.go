package notifier

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/digest"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/ratelimit"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// pending is one alert held for its receiver until its outcome is final.
type pending struct {
	msg   jetstream.Msg
	alert events.AlertEvent
	// attempt is JetStream's delivery count of msg.
	attempt int
	// tries counts the attempts this process made with the alert.
	tries int
	// extra are other messages with the same alert id (a redelivery, a
	// replay) settled together with msg.
	extra []jetstream.Msg
	link  trace.Link
	// note says what the message's headers add to the alert (an
	// escalation copy's source receiver).
	note template.Note
}

// attemptNo numbers the alert's current attempt for its DeliveryEvent.
func (p *pending) attemptNo() int { return p.attempt + max(p.tries-1, 0) }

func (p *pending) msgs() []jetstream.Msg { return append([]jetstream.Msg{p.msg}, p.extra...) }

func (p *pending) inProgress() {
	for _, m := range p.msgs() {
		_ = m.InProgress()
	}
}

func (p *pending) nak() {
	for _, m := range p.msgs() {
		_ = m.Nak()
	}
}

// recentDone bounds the ids a receiver remembers as just delivered, which
// catches a redelivery that raced the KV record.
const recentDone = 4096

// receiver is a configured receiver: its channel, its rate-limit windows
// and the alerts held for it.
type receiver struct {
	name     string
	key      string // the budget Store key
	notifier Notifier
	windows  []ratelimit.Window
	digest   Digest

	mu       sync.Mutex
	queue    []*pending          // waiting, in arrival order
	held     map[string]*pending // queued or in flight, by alert id
	done     map[string]bool     // recently finished ids
	doneRing []string
	wake     chan struct{}
}

func newReceiver(name string, n Notifier, windows []ratelimit.Window, d Digest) *receiver {
	return &receiver{name: name, key: kvKey(name), notifier: n, windows: windows, digest: d,
		held: map[string]*pending{}, done: map[string]bool{}, wake: make(chan struct{}, 1)}
}

type pushResult int

const (
	pushQueued pushResult = iota // new: queued
	pushJoined                   // same alert id already held: settled with it
	pushDone                     // same alert id finished just now: ack it
)

// push queues p unless its alert id is already held or just finished.
func (r *receiver) push(p *pending) pushResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := p.alert.ID
	if r.done[id] {
		return pushDone
	}
	if h := r.held[id]; h != nil {
		h.extra = append(h.extra, p.msg)
		return pushJoined
	}
	r.held[id] = p
	r.queue = append(r.queue, p)
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return pushQueued
}

// requeue puts ps (a batch that must be re-planned) back at the front.
func (r *receiver) requeue(ps []*pending) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queue = append(append([]*pending(nil), ps...), r.queue...)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// take removes up to n alerts from the front of the queue; they stay held.
func (r *receiver) take(n int) []*pending {
	r.mu.Lock()
	defer r.mu.Unlock()
	n = min(n, len(r.queue))
	out := append([]*pending(nil), r.queue[:n]...)
	clear(r.queue[:n])
	r.queue = r.queue[n:]
	return out
}

// finish forgets ps: their outcome is final and recorded.
func (r *receiver) finish(ps []*pending) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range ps {
		id := p.alert.ID
		delete(r.held, id)
		if !r.done[id] {
			r.done[id] = true
			r.doneRing = append(r.doneRing, id)
		}
	}
	if over := len(r.doneRing) - recentDone; over > 0 {
		for _, id := range r.doneRing[:over] {
			delete(r.done, id)
		}
		r.doneRing = append([]string(nil), r.doneRing[over:]...)
	}
}

// release forgets ps without a final outcome (they are nak'ed).
func (r *receiver) release(ps []*pending) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range ps {
		delete(r.held, p.alert.ID)
	}
}

// drain removes and returns every queued alert.
func (r *receiver) drain() []*pending {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.queue
	r.queue = nil
	for _, p := range out {
		delete(r.held, p.alert.ID)
	}
	return out
}

func (r *receiver) queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

func (r *receiver) heldSnapshot() []*pending {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*pending, 0, len(r.held))
	for _, p := range r.held {
		out = append(out, p)
	}
	return out
}

// waitWork blocks until the queue is not empty; false when ctx ended.
func (r *receiver) waitWork(ctx context.Context) bool {
	for r.queued() == 0 {
		select {
		case <-r.wake:
		case <-ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil
}

// oneByOne reports whether n queued alerts may go out as n messages: the
// windows must let all of them go within MaxDelay and leave the Reserve
// share of every budget window (one longer than MaxDelay) free. Otherwise
// they are merged into a digest. A lone alert always goes alone.
func (d Digest) oneByOne(l ratelimit.Log, ws []ratelimit.Window, now time.Time, n int) bool {
	if n <= 1 {
		return true
	}
	if !l.DrainsWithin(ws, now, n, d.MaxDelay) {
		return false
	}
	for _, w := range ws {
		if w.Per <= d.MaxDelay {
			continue
		}
		reserve := int(math.Ceil(float64(w.Count) * d.Reserve))
		if l.Headroom([]ratelimit.Window{w}, now, n, d.MaxDelay) < reserve {
			return false
		}
	}
	return true
}

// batch is what one message carries: one alert, or a digest of many.
type batch struct {
	items   []*pending
	digest  *digest.Digest
	content notify.Content
	// notBefore delays the next attempt of a failed batch.
	notBefore time.Time
	tries     int
}

func (s *Service) newBatch(r *receiver, items []*pending) *batch {
	b := &batch{items: items}
	if len(items) == 1 {
		b.content = notify.NotedAlertContent(items[0].alert, items[0].note)
		return b
	}
	alerts := make([]events.AlertEvent, len(items))
	for i, p := range items {
		alerts[i] = p.alert
	}
	d := digest.Fold(r.name, alerts, digest.Options{GroupBy: r.digest.GroupBy, TopGroups: r.digest.TopGroups, Samples: r.digest.Samples})
	b.digest = &d
	b.content = notify.DigestContent(d)
	return b
}

// sendLoop sends r's queued alerts, one by one while its budget allows
// and as digests when it is short, until ctx ends. Sends run on procCtx.
func (s *Service) sendLoop(ctx, procCtx context.Context, r *receiver) {
	log := s.log.With("receiver", r.name)
	var retry *batch
	defer func() {
		if retry != nil {
			r.release(retry.items)
			for _, p := range retry.items {
				p.nak()
			}
		}
	}()
	for {
		if retry == nil && !r.waitWork(ctx) {
			return
		}
		if ctx.Err() != nil {
			return
		}
		// Every wait below ends at a time derived from this reading, not
		// after a duration measured later: the budget round trips take a
		// while, and a clock that moves meanwhile (a jump, a slow machine)
		// must not push the wake-up past the moment the decision was for.
		now := s.now()
		if retry != nil && now.Before(retry.notBefore) {
			s.sleepUntil(ctx, retry.notBefore)
			continue
		}
		l, err := s.budget.Load(ctx, r.key, r.windows, now)
		if err != nil {
			log.Warn("reading the receiver's budget", "err", err)
			s.sleepUntil(ctx, s.now().Add(time.Second)) // a pause after the failure
			continue
		}
		if w := l.Wait(r.windows, now); w > 0 {
			s.sleepUntil(ctx, now.Add(w))
			continue
		}
		single := retry != nil || r.digest.oneByOne(l, r.windows, now, r.queued())
		if !single {
			if next := l.Last().Add(r.digest.Interval); now.Before(next) {
				// Digesting: let the next digest gather what arrives.
				s.sleepUntil(ctx, next)
				continue
			}
		}
		reserved, w, err := s.budget.Reserve(ctx, r.key, r.windows, now)
		if err != nil {
			log.Warn("reserving a send", "err", err)
			s.sleepUntil(ctx, s.now().Add(time.Second)) // a pause after the failure
			continue
		}
		if w > 0 {
			s.sleepUntil(ctx, now.Add(w))
			continue
		}
		b := retry
		if b == nil {
			n := 1
			if !single {
				n = r.digest.MaxAlerts
			}
			items := r.take(n)
			if len(items) == 0 {
				continue
			}
			b = s.newBatch(r, items)
		}
		retry = s.attempt(procCtx, r, b, reserved, log)
	}
}

// attempt sends b once, with the send recorded in the budget at reserved
// (as Reserve returned it, so Settle finds it), and settles the outcome. It returns b when b must be retried (after
// b.notBefore), nil otherwise.
func (s *Service) attempt(ctx context.Context, r *receiver, b *batch, reserved time.Time, log *slog.Logger) *batch {
	b.tries++
	attempt := 0
	links := make([]trace.Link, 0, min(len(b.items), 128))
	for _, p := range b.items {
		p.tries++
		attempt = max(attempt, p.attemptNo())
		if len(links) < cap(links) {
			links = append(links, p.link)
		}
	}
	ctx, span := s.tracer.Start(ctx, "notifier.send", trace.WithSpanKind(trace.SpanKindClient), trace.WithLinks(links...),
		trace.WithAttributes(attribute.String("fleetwatch.receiver", r.name), attribute.Int("fleetwatch.alerts", len(b.items)),
			attribute.Bool("fleetwatch.digest", b.digest != nil), attribute.Int("fleetwatch.attempt", attempt)))
	defer span.End()
	if b.digest != nil {
		log = log.With("digest", b.digest.ID, "alerts", len(b.items), "devices", b.digest.Devices())
	} else {
		log = log.With("alert_id", b.items[0].alert.ID, "status", b.items[0].alert.Status)
	}
	log = log.With("attempt", attempt)

	channel := r.notifier.Channel()
	sendCtx, cancel := context.WithTimeout(ctx, 2*s.cfg.RequestTimeout+time.Second)
	res, err := r.notifier.Send(sendCtx, b.content)
	cancel()
	// Count the send from when the request ended: the remote counted it
	// somewhere in between, so our window never opens before the remote's.
	if serr := s.budget.Settle(ctx, r.key, reserved, s.now()); serr != nil {
		log.Warn("settling the send in the budget", "err", serr)
	}
	if res.Outcome == events.OutcomeRetryable && s.cfg.MaxAttempts > 0 && attempt >= s.cfg.MaxAttempts {
		res.Outcome = events.OutcomePermanent
		res.Hint = fmt.Sprintf("gave up after %d attempts; last failure: %s", attempt, res.Hint)
	}
	s.metrics.delivery(ctx, r.name, channel, res)
	span.SetAttributes(attribute.String("fleetwatch.outcome", string(res.Outcome)), attribute.String("fleetwatch.channel", channel))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	if b.digest != nil {
		res.Hint = joinHint(fmt.Sprintf("digest %s of %d alerts", b.digest.ID[:12], len(b.items)), res.Hint)
	}

	switch res.Outcome {
	case events.OutcomeDelivered, events.OutcomePermanent:
		if res.Outcome == events.OutcomeDelivered {
			log.Info("delivered", "channel", channel, "latency", res.Latency.Round(time.Millisecond), "bytes", res.Bytes)
			if b.digest != nil {
				s.metrics.digest(ctx, r.name, len(b.items))
			}
		} else {
			log.Error("delivery failed permanently", "channel", channel, "code", res.RemoteCode, "msg", res.RemoteMessage, "hint", res.Hint)
		}
		s.settle(ctx, r, b, channel, res, log)
		return nil
	case events.OutcomeRateLimited:
		// The remote's limit was hit anyway (another sender, a smaller
		// limit than configured): pause the receiver everywhere and fold
		// the batch into what comes after the pause.
		pause := res.RetryAfter
		if pause <= 0 {
			pause = time.Minute
		}
		if err := s.budget.Pause(ctx, r.key, s.now().Add(pause), res.Hint); err != nil {
			log.Warn("recording the pause", "err", err)
		}
		log.Warn("rate limited by the remote: pausing the receiver", "channel", channel, "pause", pause,
			"code", res.RemoteCode, "msg", res.RemoteMessage, "hint", res.Hint)
		s.recordAttempts(ctx, b, channel, res, log)
		r.requeue(b.items)
		return nil
	default:
		log.Warn("delivery failed; will retry", "channel", channel, "outcome", res.Outcome, "http", res.HTTPStatus,
			"code", res.RemoteCode, "msg", res.RemoteMessage, "hint", res.Hint)
		s.recordAttempts(ctx, b, channel, res, log)
		b.notBefore = s.now().Add(s.retryDelay(b.tries, res.RetryAfter))
		return b
	}
}

func joinHint(a, b string) string {
	if b == "" {
		return a
	}
	return a + ": " + b
}

// recordAttempts publishes a DeliveryEvent per alert of b.
func (s *Service) recordAttempts(ctx context.Context, b *batch, channel string, res notify.Result, log *slog.Logger) bool {
	msgs := make([]*nats.Msg, 0, len(b.items))
	for _, p := range b.items {
		m, err := s.deliveryMsg(ctx, p.alert, channel, p.attemptNo(), res)
		if err != nil {
			log.Warn("recording the delivery", "err", err)
			continue
		}
		msgs = append(msgs, m)
	}
	if err := s.publishAll(ctx, msgs); err != nil {
		log.Warn("recording the delivery", "err", err)
		return false
	}
	return true
}

// settle makes b's final outcome durable and acks its messages: the
// outcome of every alert goes into the idempotency KV first (so a
// redelivery or replay is acked without sending), then the DeliveryEvents,
// then the acks.
func (s *Service) settle(ctx context.Context, r *receiver, b *batch, channel string, res notify.Result, log *slog.Logger) {
	kv := *s.kv.Load()
	digestID := ""
	if b.digest != nil {
		digestID = b.digest.ID
	}
	at := s.now().UnixMilli()
	recs := make([]*nats.Msg, 0, len(b.items))
	for _, p := range b.items {
		rec, _ := json.Marshal(record{AlertID: p.alert.ID, Receiver: p.alert.Receiver, Channel: channel, Outcome: res.Outcome,
			Attempt: p.attemptNo(), RemoteCode: res.RemoteCode, AtMS: at, Digest: digestID})
		m := nats.NewMsg("$KV." + kv.Bucket() + "." + kvKey(p.alert.ID))
		m.Data = rec
		recs = append(recs, m)
	}
	var err error
	for try := 0; try < 3; try++ {
		if err = s.publishAll(ctx, recs); err == nil {
			break
		}
	}
	if err != nil {
		// Without the record a redelivery would send again: retry later
		// rather than ack.
		log.Error("recording the final outcome; the alerts will be redelivered", "err", err)
		r.release(b.items)
		for _, p := range b.items {
			p.nak()
		}
		s.metrics.held(ctx, r.name, -len(b.items))
		return
	}
	if !s.recordAttempts(ctx, b, channel, res, log) {
		_ = s.recordAttempts(ctx, b, channel, res, log)
	}
	r.finish(b.items)
	for _, p := range b.items {
		if len(b.items) == 1 {
			for _, m := range p.msgs() {
				s.ack(ctx, m, log)
			}
		} else {
			for _, m := range p.msgs() {
				// Fire-and-forget: a lost ack only means a redelivery,
				// which the KV record turns into an ack.
				_ = m.Ack()
			}
		}
	}
	s.metrics.alerts.Add(ctx, int64(len(b.items)), alertResult(res.Outcome))
	s.metrics.held(ctx, r.name, -len(b.items))
}
