package ingest

import (
	"math/rand/v2"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The MQTT path is a pipeline, so that one connection is not limited by
// one JetStream round trip per message:
//
//	paho (one goroutine, receive order) → parse → PublishMsgAsync ─┐
//	JetStream ack/error (the async reply goroutine) ◀──────────────┘
//	  → item done → acker (one goroutine) → PUBACKs in receive order
//
// Every message holds a slot of ingest.max_in_flight from receipt until its
// PUBACK (or until shutdown gives it up); when all are taken, paho's
// delivery goroutine waits, and with it the socket: TCP flow control pushes
// back to the broker, which keeps the messages in the session. A failed
// publish is retried with backoff; the message keeps its slot meanwhile.

// item is one MQTT message between receipt and its PUBACK: the message,
// what it became and its publish attempts.
type item struct {
	m       paho.Message
	p       prepared
	attempt int
	backoff time.Duration

	// Set by the goroutine that completes the item, read by the acker
	// after it saw done under ackQueue.mu.
	stored bool
	done   bool
}

// ackQueue holds the MQTT messages in receive order and acknowledges each
// completed prefix, so that PUBACKs leave in the order the PUBLISHes came
// (MQTT 3.1.1 and 5.0 §4.6, MQTT-4.6.0-2), even though JetStream acks (and
// retries) may complete them out of order.
type ackQueue struct {
	mu    sync.Mutex
	items []*item // ring buffer
	head  int
	n     int

	wake chan struct{} // one pending wake-up of the acker
}

func newAckQueue(capacity int) *ackQueue {
	return &ackQueue{items: make([]*item, capacity), wake: make(chan struct{}, 1)}
}

// push appends it; the caller holds a slot, so there is room.
func (q *ackQueue) push(it *item) {
	q.mu.Lock()
	if q.n == len(q.items) { // cannot happen while slots bound pushes
		grown := make([]*item, 2*len(q.items))
		for i := range q.n {
			grown[i] = q.items[(q.head+i)%len(q.items)]
		}
		q.items, q.head = grown, 0
	}
	q.items[(q.head+q.n)%len(q.items)] = it
	q.n++
	q.mu.Unlock()
}

// complete marks it done and wakes the acker.
func (q *ackQueue) complete(it *item, stored bool) {
	q.mu.Lock()
	it.stored, it.done = stored, true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// popDone moves the completed prefix into buf.
func (q *ackQueue) popDone(buf []*item) []*item {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n > 0 {
		it := q.items[q.head]
		if !it.done {
			break
		}
		buf = append(buf, it)
		q.items[q.head] = nil
		q.head = (q.head + 1) % len(q.items)
		q.n--
	}
	return buf
}

// len is the number of messages not yet acknowledged.
func (q *ackQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// acker sends the PUBACKs of completed messages in receive order and frees
// their slots, until stop is closed and every message is settled.
func (s *Service) acker(stop <-chan struct{}) {
	var buf []*item
	for {
		select {
		case <-s.acks.wake:
		case <-stop:
			if s.acks.len() == 0 {
				return
			}
			select {
			case <-s.acks.wake:
			case <-time.After(10 * time.Millisecond):
			}
		}
		buf = s.acks.popDone(buf[:0])
		for i, it := range buf {
			if it.stored {
				it.m.Ack()
			}
			buf[i] = nil
			s.release()
		}
	}
}

// acquire takes a slot of max_in_flight; false when the service stops first.
func (s *Service) acquire() bool {
	select {
	case s.inflight <- struct{}{}:
	default:
		// The pipeline is full: what the broker sends, heartbeats too,
		// waits. Node silence counts from when it flows again.
		s.hold()
		select {
		case s.inflight <- struct{}{}:
		case <-s.workCtx.Done():
			return false
		}
		s.hold()
	}
	s.metrics.inFlight.Add(s.workCtx, 1)
	return true
}

func (s *Service) release() {
	<-s.inflight
	s.metrics.inFlight.Add(s.bgCtx, -1)
	s.wg.Done()
}

// publisher publishes items asynchronously and routes JetStream's answers
// back to them. Its JetStream context is its own, so that the ack and error
// handlers see only its publishes.
type publisher struct {
	s  *Service
	js jetstream.JetStream

	mu     sync.Mutex
	items  map[*nats.Msg]*item // published, waiting for JetStream's answer
	closed bool                // the service stops: no new publishes
}

func newPublisher(s *Service) (*publisher, error) {
	p := &publisher{s: s, items: make(map[*nats.Msg]*item)}
	js, err := jetstream.New(s.nc,
		// An item holds one slot and has at most one publish outstanding;
		// the margin covers answers that arrive after an item gave up.
		jetstream.WithPublishAsyncMaxPending(2*s.cfg.MaxInFlight),
		jetstream.WithPublishAsyncTimeout(s.cfg.PublishTimeout),
		jetstream.WithPublishAsyncAckHandler(p.onAck),
		jetstream.WithPublishAsyncErrHandler(p.onErr))
	if err != nil {
		return nil, err
	}
	p.js = js
	return p, nil
}

// publish sends it's message; the answer arrives in onAck or onErr.
func (p *publisher) publish(it *item) {
	msg := it.p.msg
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.giveUp(it)
		return
	}
	p.items[msg] = it
	p.mu.Unlock()
	if _, err := p.js.PublishMsgAsync(msg); err != nil {
		if p.take(msg) != nil {
			p.failed(it, err)
		}
	}
}

// take removes and returns the item of msg, nil when another path (an
// answer, a timeout, shutdown) already took it.
func (p *publisher) take(msg *nats.Msg) *item {
	p.mu.Lock()
	defer p.mu.Unlock()
	it := p.items[msg]
	delete(p.items, msg)
	return it
}

func (p *publisher) onAck(_ jetstream.JetStream, msg *nats.Msg, ack *jetstream.PubAck) {
	if it := p.take(msg); it != nil {
		p.s.acks.complete(it, p.s.settle(&it.p, ack).stored)
	}
}

func (p *publisher) onErr(_ jetstream.JetStream, msg *nats.Msg, err error) {
	if it := p.take(msg); it != nil {
		p.failed(it, err)
	}
}

// giveUp leaves it unacknowledged: the service stops.
func (p *publisher) giveUp(it *item) {
	it.p.span.End()
	p.s.acks.complete(it, false)
}

// failed counts a failed attempt and publishes again after a jittered,
// growing backoff, unless the service stops first.
func (p *publisher) failed(it *item, err error) {
	s := p.s
	s.publishErrors.Add(1)
	s.metrics.publishErrors.Add(s.bgCtx, 1)
	it.attempt++
	if it.backoff == 0 {
		it.backoff = retryMin
	}
	wait := it.backoff/2 + rand.N(it.backoff/2+1)
	s.log.Warn(it.p.what()+" failed; retrying, the input stays unacknowledged",
		"subject", it.p.msg.Subject, "attempt", it.attempt, "backoff", it.backoff, "err", err)
	it.backoff = min(2*it.backoff, retryMax)
	go func() {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
			p.publish(it)
		case <-s.workCtx.Done():
			p.giveUp(it)
		}
	}()
}

// close gives up every publish still waiting for an answer (their inputs
// stay unacknowledged) and refuses new ones.
func (p *publisher) close() {
	p.mu.Lock()
	p.closed = true
	items := p.items
	p.items = make(map[*nats.Msg]*item)
	p.mu.Unlock()
	for _, it := range items {
		p.giveUp(it)
	}
}
