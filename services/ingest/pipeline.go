package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
)

// The MQTT path is a pipeline, so that one connection is not limited by
// one JetStream round trip per message:
//
//	paho (one goroutine, receive order) → parse → publish (reply inbox) ─┐
//	JetStream ack/error (the inbox subscription's goroutine) ◀───────────┘
//	  → item done → acker (one goroutine) → PUBACKs in receive order,
//	    a batch per write to the connection (conn.go)
//
// Every message holds a slot of ingest.max_in_flight from receipt until its
// PUBACK (or until shutdown gives it up); when all are taken, paho's
// delivery goroutine waits, and with it the socket: TCP flow control pushes
// back to the broker, which keeps the messages in the session. A failed
// publish is retried with backoff; the message keeps its slot meanwhile.

// item is one MQTT message between receipt and its PUBACK: the message,
// what it became and its publish attempts.
type item struct {
	m        paho.Message
	conn     *bufferedConn // the connection m came on (nil: acknowledge through m)
	p        prepared
	attempt  int
	backoff  time.Duration
	deadline time.Time // of the publish attempt waiting for an answer (zero: being sent)

	// Set by the goroutine that completes the item, read by the acker
	// after it saw done under ackQueue.mu.
	stored bool
	done   bool

	mb msgBuf // the storage of p.msg, kept when the item is reused
}

// itemPool recycles the items of acknowledged messages, with their message
// storage (a header map and a data buffer): their allocation is a large
// part of ingest's own garbage per message.
var itemPool = sync.Pool{New: func() any { return new(item) }}

// newItem is an item for m, which came on conn.
func newItem(m paho.Message, conn *bufferedConn) *item {
	it := itemPool.Get().(*item)
	it.m, it.conn = m, conn
	it.p.buf = &it.mb
	return it
}

// recycle returns it to itemPool once its PUBACK was written. Only a stored
// item is recycled: it was published, if at all, and answered, so nothing
// (no publish attempt, sweep or retry) refers to it any longer and NATS
// holds its own copy of what it sent. An item given up at shutdown is left
// to the garbage collector.
func recycle(it *item) {
	if !it.stored {
		return
	}
	// Keep the storage, emptied; every other field starts from zero.
	mb := it.mb
	clear(mb.msg.Header)
	mb.msg.Subject, mb.msg.Reply, mb.msg.Data, mb.id[0] = "", "", nil, ""
	*it = item{mb: mb}
	itemPool.Put(it)
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
//
// It writes the PUBACKs itself, all of a batch in one write to the
// connection each message came on, instead of through paho's Ack: that
// hands each PUBACK to two goroutines in turn and writes it alone. A
// message whose connection is gone is not acknowledged (as paho drops such
// acknowledgements): the broker redelivers it on the next one.
func (s *Service) acker(stop <-chan struct{}) {
	var buf []*item
	var out []byte
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
		var conn *bufferedConn // of the PUBACKs in out
		for _, it := range buf {
			switch {
			case !it.stored:
			case it.conn == nil:
				it.m.Ack()
			default:
				if it.conn != conn && len(out) > 0 {
					_ = conn.writeNow(out)
					out = out[:0]
				}
				conn = it.conn
				id := it.m.MessageID()
				out = append(out, pubackHeader, 2, byte(id>>8), byte(id))
			}
		}
		if len(out) > 0 {
			_ = conn.writeNow(out)
			out = out[:0]
		}
		for i, it := range buf {
			buf[i] = nil
			recycle(it)
			s.release()
		}
	}
}

// pubackHeader is the fixed header's first byte of an MQTT PUBACK.
const pubackHeader = 0x40

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

// publisher publishes items and routes JetStream's answers back to them.
//
// It does what jetstream.PublishMsgAsync does, with less per message: the
// answers come to one wildcard inbox subscription of its own (the reply
// subject names the attempt), a publish attempt holds no future, timer or
// closure, a periodic sweep fails attempts left unanswered past
// publish_timeout, and the usual answer ({"stream":…,"seq":…}) is read
// without encoding/json. Every attempt has its own reply token, so that a
// late answer to an attempt that timed out (and was retried) is ignored,
// never taken for the answer of another message.
type publisher struct {
	s      *Service
	nc     *nats.Conn
	prefix string // the reply subjects' prefix, "_INBOX.<unique>."

	mu      sync.Mutex
	next    uint64           // the last reply token handed out
	pending map[uint64]*item // attempts waiting for an answer, by token
	closed  bool             // the service stops: no new publishes

	sub    *nats.Subscription
	status chan nats.Status
	stop   chan struct{}
	done   sync.WaitGroup
}

// Errors of a publish attempt without a usable answer.
var (
	errAckTimeout   = errors.New("no answer from jetstream within ingest.publish_timeout")
	errNoResponders = errors.New("no responders: no stream takes the subject (status 503)")
	errInvalidAck   = errors.New("jetstream answered with an invalid publish acknowledgement")
)

func newPublisher(s *Service) *publisher {
	return &publisher{s: s, nc: s.nc, prefix: s.nc.NewInbox() + ".", pending: make(map[uint64]*item)}
}

// start subscribes to the answers and starts the timeout sweep and the
// reconnect watch; stop ends them.
func (p *publisher) start() error {
	sub, err := p.nc.Subscribe(p.prefix+"*", p.onReply)
	if err != nil {
		return fmt.Errorf("ingest: subscribe to jetstream publish acknowledgements: %w", err)
	}
	p.sub = sub
	p.stop = make(chan struct{})
	p.status = p.nc.StatusChanged(nats.RECONNECTING)
	p.done.Go(p.sweep)
	p.done.Go(p.watch)
	return nil
}

func (p *publisher) shutdown() {
	close(p.stop)
	p.nc.RemoveStatusListener(p.status)
	p.done.Wait()
	_ = p.sub.Unsubscribe()
}

// publish sends the item's message; the answer arrives in onReply, or the sweep
// or a reconnect fails the attempt.
//
// The attempt's deadline is set once PublishMsg returned: until then the
// sweep and a reconnect leave it alone, so that a retry never rewrites the
// message (its reply subject) while PublishMsg may still read it.
func (p *publisher) publish(it *item) {
	msg := it.p.msg
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.giveUp(it)
		return
	}
	p.next++
	tok := p.next
	it.deadline = time.Time{}
	p.pending[tok] = it
	p.mu.Unlock()
	var buf [96]byte
	msg.Reply = string(strconv.AppendUint(append(buf[:0], p.prefix...), tok, 36))
	err := p.nc.PublishMsg(msg)
	deadline := time.Now().Add(p.s.cfg.PublishTimeout)
	p.mu.Lock()
	pending := p.pending[tok] // nil when answered (or shut down) already
	if pending != nil && err == nil {
		pending.deadline = deadline
	}
	if err != nil {
		delete(p.pending, tok)
	}
	p.mu.Unlock()
	if pending != nil && err != nil {
		p.failed(it, err)
	}
}

// take removes and returns the item of an attempt, nil when another path
// (an answer, the sweep, a reconnect, shutdown) already took it.
func (p *publisher) take(tok uint64) *item {
	p.mu.Lock()
	defer p.mu.Unlock()
	it := p.pending[tok]
	delete(p.pending, tok)
	return it
}

// onReply routes JetStream's answer to its attempt.
func (p *publisher) onReply(m *nats.Msg) {
	tok, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, p.prefix), 36, 64)
	if err != nil {
		return
	}
	it := p.take(tok)
	if it == nil {
		return // the attempt timed out and was retried, or the service stops
	}
	duplicate, err := pubAck(m)
	if err != nil {
		p.failed(it, err)
		return
	}
	p.s.acks.complete(it, p.s.settle(&it.p, duplicate).stored)
}

// sweep fails the attempts unanswered past their deadline, every quarter
// of publish_timeout: an attempt waits publish_timeout to 1.25 times it.
func (p *publisher) sweep() {
	t := time.NewTicker(min(max(p.s.cfg.PublishTimeout/4, 5*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.failWhere(errAckTimeout, func(it *item) bool { return !it.deadline.IsZero() && !now.Before(it.deadline) })
		}
	}
}

// watch fails every attempt sent when the NATS connection is lost: their
// answers are lost with it. Each is retried (a stored one answers as a
// duplicate).
func (p *publisher) watch() {
	for {
		select {
		case <-p.stop:
			return
		case <-p.status:
			p.failWhere(nats.ErrDisconnected, func(it *item) bool { return !it.deadline.IsZero() })
		}
	}
}

// failWhere takes the attempts that match and fails them with err.
func (p *publisher) failWhere(err error, match func(*item) bool) {
	var failed []*item
	p.mu.Lock()
	for tok, it := range p.pending {
		if match(it) {
			delete(p.pending, tok)
			failed = append(failed, it)
		}
	}
	p.mu.Unlock()
	for _, it := range failed {
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
	items := p.pending
	p.pending = make(map[uint64]*item)
	p.mu.Unlock()
	for _, it := range items {
		p.giveUp(it)
	}
}

// pubAck reads JetStream's answer to a publish: whether the stream already
// had the message (same Nats-Msg-Id), or why it was not stored.
func pubAck(m *nats.Msg) (duplicate bool, err error) {
	if len(m.Data) == 0 {
		switch status := m.Header.Get("Status"); status {
		case "503":
			return false, errNoResponders
		case "":
			return false, errInvalidAck
		default:
			return false, fmt.Errorf("jetstream answered status %s %s", status, m.Header.Get("Description"))
		}
	}
	if duplicate, ok := plainPubAck(m.Data); ok {
		return duplicate, nil
	}
	var a struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Stream    string `json:"stream"`
		Duplicate bool   `json:"duplicate"`
	}
	switch err := json.Unmarshal(m.Data, &a); {
	case err != nil:
		return false, fmt.Errorf("%w: %v", errInvalidAck, err)
	case a.Error != nil:
		return false, fmt.Errorf("jetstream: %s (status %d, error code %d)", a.Error.Description, a.Error.Code, a.Error.ErrCode)
	case a.Stream == "":
		return false, errInvalidAck
	}
	return a.Duplicate, nil
}

// plainPubAck reads the acknowledgements nats-server writes for a stored
// message, {"stream":"S","seq":N}, with ,"domain":"D" after the stream and
// ,"duplicate": true after the sequence when there are; anything else
// reports false for encoding/json to read.
func plainPubAck(data []byte) (duplicate, ok bool) {
	rest, found := bytes.CutPrefix(data, []byte(`{"stream":"`))
	if !found {
		return false, false
	}
	if rest, ok = plainName(rest); !ok {
		return false, false
	}
	if r, found := bytes.CutPrefix(rest, []byte(`,"domain":"`)); found {
		if rest, ok = plainName(r); !ok {
			return false, false
		}
	}
	if rest, found = bytes.CutPrefix(rest, []byte(`,"seq":`)); !found {
		return false, false
	}
	digits := 0
	for digits < len(rest) && rest[digits] >= '0' && rest[digits] <= '9' {
		digits++
	}
	if digits == 0 {
		return false, false
	}
	switch string(rest[digits:]) {
	case "}":
		return false, true
	case `,"duplicate": true}`, `,"duplicate":true}`:
		return true, true
	}
	return false, false
}

// plainName skips a non-empty name of letters, digits, '-' and '_' and
// its closing quote.
func plainName(b []byte) ([]byte, bool) {
	n := 0
	for n < len(b) {
		c := b[n]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			break
		}
		n++
	}
	if n == 0 || n == len(b) || b[n] != '"' {
		return nil, false
	}
	return b[n+1:], true
}
