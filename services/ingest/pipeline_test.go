package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// fakeMessage records its PUBACK.
type fakeMessage struct {
	id    uint16
	acked *[]uint16
	mu    *sync.Mutex
}

func (m fakeMessage) Duplicate() bool   { return false }
func (m fakeMessage) Qos() byte         { return 1 }
func (m fakeMessage) Retained() bool    { return false }
func (m fakeMessage) Topic() string     { return "t" }
func (m fakeMessage) MessageID() uint16 { return m.id }
func (m fakeMessage) Payload() []byte   { return nil }
func (m fakeMessage) Ack() {
	m.mu.Lock()
	defer m.mu.Unlock()
	*m.acked = append(*m.acked, m.id)
}

// TestAckerAcknowledgesInReceiveOrder: messages completed out of order
// (JetStream answers, retries) are acknowledged in the order they came, a
// message that was not stored is skipped, and every slot is given back.
func TestAckerAcknowledgesInReceiveOrder(t *testing.T) {
	m, err := newMetrics(noop.NewMeterProvider().Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s := &Service{acks: newAckQueue(2), inflight: make(chan struct{}, 8), metrics: m, bgCtx: ctx, workCtx: ctx}
	var mu sync.Mutex
	var acked []uint16
	items := make([]*item, 8)
	for i := range items {
		s.wg.Add(1)
		if !s.acquire() {
			t.Fatal("acquire failed")
		}
		items[i] = &item{m: fakeMessage{id: uint16(i + 1), acked: &acked, mu: &mu}}
		s.acks.push(items[i]) // grows past its initial capacity of 2
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { s.acker(stop); close(done) }()

	ackedNow := func() []uint16 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(acked)
	}
	waitFor := func(want []uint16) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !slices.Equal(ackedNow(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("acked %v, want %v", ackedNow(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for _, i := range []int{2, 3, 1} { // 1 waits for 0
		s.acks.complete(items[i], true)
	}
	time.Sleep(20 * time.Millisecond)
	if got := ackedNow(); len(got) != 0 {
		t.Fatalf("acked %v before the first message completed", got)
	}
	s.acks.complete(items[0], true)
	waitFor([]uint16{1, 2, 3, 4})
	s.acks.complete(items[5], true)
	s.acks.complete(items[4], false) // given up: not acknowledged, the broker keeps it
	s.acks.complete(items[7], true)
	waitFor([]uint16{1, 2, 3, 4, 6})
	s.acks.complete(items[6], true)
	waitFor([]uint16{1, 2, 3, 4, 6, 7, 8})
	close(stop)
	<-done
	if n := len(s.inflight); n != 0 {
		t.Errorf("%d slots still taken", n)
	}
	s.wg.Wait() // every item released its wait group count
}

func TestPubAck(t *testing.T) {
	status := func(code, descr string) nats.Header {
		return nats.Header{"Status": []string{code}, "Description": []string{descr}}
	}
	for _, tc := range []struct {
		data      string
		header    nats.Header
		duplicate bool
		err       string
	}{
		{data: `{"stream":"PRESENCE","seq":1}`},
		{data: `{"stream":"PRESENCE","seq":18446744073709551615}`},
		{data: `{"stream":"PRESENCE","seq":7,"duplicate": true}`, duplicate: true},
		{data: `{"stream":"PRESENCE","seq":7,"duplicate":true}`, duplicate: true},
		{data: `{"stream":"PRESENCE","domain":"hub-1","seq":3,"duplicate": true}`, duplicate: true},
		{data: `{"stream":"PRESENCE","domain":"hub-1","seq":3}`},
		// Not in the form nats-server writes: read by encoding/json.
		{data: `{"seq":3,"stream":"PRESENCE","duplicate":true}`, duplicate: true},
		{data: `{ "stream": "PRESENCE", "seq": 3 }`},
		{data: `{"stream":"PRESENCE","seq":3,"duplicate":false}`},
		{data: `{"stream":"PRE\u0053ENCE","seq":3}`},
		{data: `{"error":{"code":503,"err_code":10077,"description":"jetstream system temporarily unavailable"}}`,
			err: "jetstream: jetstream system temporarily unavailable (status 503, error code 10077)"},
		{data: `{"stream":"PRESENCE","seq":3,"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 2"}}`,
			err: "jetstream: wrong last sequence: 2 (status 400, error code 10071)"},
		{data: `{"stream":"","seq":1}`, err: errInvalidAck.Error()},
		{data: `{"seq":1}`, err: errInvalidAck.Error()},
		{data: `{"stream":"PRESENCE","seq":`, err: errInvalidAck.Error() + ": unexpected end of JSON input"},
		{data: `{"stream":"PRESENCE","seq":1}x`, err: errInvalidAck.Error() + ": invalid character 'x' after top-level value"},
		{header: status("503", ""), err: errNoResponders.Error()},
		{header: status("408", "Request Timeout"), err: "jetstream answered status 408 Request Timeout"},
		{err: errInvalidAck.Error()},
	} {
		duplicate, err := pubAck(&nats.Msg{Data: []byte(tc.data), Header: tc.header})
		got := ""
		if err != nil {
			got = err.Error()
		}
		if duplicate != tc.duplicate || got != tc.err {
			t.Errorf("pubAck(%q, %v) = %v, %q; want %v, %q", tc.data, tc.header, duplicate, got, tc.duplicate, tc.err)
		}
	}
}

// FuzzPubAck: the fast reading of an acknowledgement agrees with
// encoding/json wherever it answers.
func FuzzPubAck(f *testing.F) {
	for _, s := range []string{`{"stream":"PRESENCE","seq":1}`, `{"stream":"S","domain":"d","seq":9,"duplicate": true}`,
		`{"stream":"S","seq":9,"duplicate":true}`, `{"error":{"code":503}}`, `{"stream":"S\"","seq":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		duplicate, ok := plainPubAck(data)
		if !ok {
			_, _ = pubAck(&nats.Msg{Data: data}) // must not panic
			return
		}
		var a struct {
			Error     json.RawMessage `json:"error"`
			Stream    string          `json:"stream"`
			Seq       json.Number     `json:"seq"`
			Duplicate bool            `json:"duplicate"`
		}
		if err := json.Unmarshal(data, &a); err != nil || a.Error != nil || a.Stream == "" || a.Duplicate != duplicate {
			t.Fatalf("plainPubAck(%q) = %v, true; encoding/json: %+v, %v", data, duplicate, a, err)
		}
	})
}

// TestLateAnswerIsIgnored: an attempt that JetStream did not answer within
// publish_timeout is retried with a reply subject of its own, and the late
// answer to the first attempt neither completes the message nor anything
// else; the retry's answer does. A stand-in for JetStream (a plain NATS
// subscriber) holds the answers.
func TestLateAnswerIsIgnored(t *testing.T) {
	ns := natstest.Start(t)
	nc, _ := ns.Connect(t)
	m, err := newMetrics(noop.NewMeterProvider().Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cfg := DefaultConfig()
	cfg.PublishTimeout = 500 * time.Millisecond
	s := &Service{cfg: cfg, nc: nc, log: slog.New(slog.DiscardHandler), acks: newAckQueue(4), inflight: make(chan struct{}, 4),
		metrics: m, bgCtx: ctx, workCtx: ctx, tracer: tracenoop.NewTracerProvider().Tracer("test")}
	s.pub = newPublisher(s)
	if err := s.pub.start(); err != nil {
		t.Fatal(err)
	}
	defer s.pub.shutdown()

	requests := make(chan *nats.Msg, 16)
	if _, err := nc.ChanSubscribe("stand-in.>", requests); err != nil {
		t.Fatal(err)
	}
	next := func() *nats.Msg {
		t.Helper()
		select {
		case r := <-requests:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("no publish attempt within 5s")
			return nil
		}
	}
	var items []*item
	for i, subject := range []string{"stand-in.a", "stand-in.b"} {
		s.wg.Add(1)
		if !s.acquire() {
			t.Fatal("acquire failed")
		}
		it := &item{m: fakeMessage{id: uint16(i + 1), acked: new([]uint16), mu: new(sync.Mutex)}}
		it.p.msg = &nats.Msg{Subject: subject, Data: []byte("x")}
		_, it.p.span = s.tracer.Start(ctx, "test")
		s.acks.push(it)
		items = append(items, it)
	}
	s.pub.publish(items[0])
	first := next()
	retry := next() // the first attempt timed out: published again
	if retry.Subject != "stand-in.a" || retry.Reply == first.Reply {
		t.Fatalf("retry %s → %s after %s → %s, want stand-in.a with another reply subject", retry.Subject, retry.Reply, first.Subject, first.Reply)
	}
	s.pub.publish(items[1])
	second := next()
	if second.Subject != "stand-in.b" {
		t.Fatalf("got a publish to %s, want stand-in.b", second.Subject)
	}
	answer := func(reply, ack string) {
		t.Helper()
		if err := nc.Publish(reply, []byte(ack)); err != nil {
			t.Fatal(err)
		}
	}
	stored := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for s.Stats().Published+s.Stats().Duplicates < n {
			if time.Now().After(deadline) {
				t.Fatalf("stats %+v, want %d stored", s.Stats(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	done := func(it *item) bool {
		s.acks.mu.Lock()
		defer s.acks.mu.Unlock()
		return it.done
	}
	answer(first.Reply, `{"stream":"S","seq":1}`)  // late
	answer(second.Reply, `{"stream":"S","seq":2}`) // delivered after the late one
	stored(1)
	if !done(items[1]) || done(items[0]) || s.Stats().Published != 1 {
		t.Fatalf("after the late answer and b's: a done %v, b done %v, stats %+v; want b alone stored", done(items[0]), done(items[1]), s.Stats())
	}
	answer(retry.Reply, `{"stream":"S","seq":1,"duplicate": true}`)
	stored(2)
	if st := s.Stats(); st.Duplicates != 1 || st.Published != 1 || st.PublishErrors < 1 {
		t.Fatalf("stats %+v, want a duplicate (a), a published (b) and the timed-out attempt counted", st)
	}
	if !done(items[0]) {
		t.Fatal("a is not done after its retry's answer")
	}
}

// TestEventMsgIntoRebuildsTheWholeMessage: a message rebuilt in a used
// msgBuf equals the one eventMsg builds afresh, byte for byte, with nothing
// left of the previous message (its headers, its longer data, its reply
// subject), and the buffer is reused rather than reallocated.
func TestEventMsgIntoRebuildsTheWholeMessage(t *testing.T) {
	s := &Service{cfg: DefaultConfig()}
	event := func(device string, connectedAt int64) events.PresenceEvent {
		ev, err := events.NewPresenceEvent(events.PresenceEvent{DeviceID: device, Kind: events.KindConnected, Node: "emqx@test",
			BrokerTSMS: connectedAt, ConnectedAtMS: connectedAt, Source: SourceEMQXSys, ReceivedAtMS: 1718000000999})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	var b msgBuf
	first := event("a-device-with-a-much-longer-client-id-than-the-next-one", 1718000000000)
	msg := s.eventMsgInto(t.Context(), &first, &b)
	msg.Reply = "_INBOX.x.1"
	msg.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	data := &b.data[:1][0]

	second := event("b", 1718000000001)
	got := s.eventMsgInto(t.Context(), &second, &b)
	want := s.eventMsg(t.Context(), &second)
	if got.Subject != want.Subject || got.Reply != "" || !bytes.Equal(got.Data, want.Data) || !reflect.DeepEqual(got.Header, want.Header) {
		t.Fatalf("rebuilt message %q reply %q %q %v, want %q %q %v", got.Subject, got.Reply, got.Data, got.Header, want.Subject, want.Data, want.Header)
	}
	if got.Header.Get(events.HeaderMsgID) != second.ID || got.Header.Get(events.HeaderMsgID) == first.ID {
		t.Fatalf("Nats-Msg-Id %q, want %q", got.Header.Get(events.HeaderMsgID), second.ID)
	}
	if &got.Data[0] != data {
		t.Error("the data buffer was reallocated, not reused")
	}

	b.data = make([]byte, 0, maxReusedData+1) // grown by an outsized message: not kept
	got = s.eventMsgInto(t.Context(), &second, &b)
	if cap(b.data) > maxReusedData || !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("after an outsized buffer: cap %d, data %q; want at most %d and %q", cap(b.data), got.Data, maxReusedData, want.Data)
	}
}

// TestRecycleKeepsOnlyStoredItems: a stored item is cleared for reuse, its
// message storage kept; an item given up (not stored) is left as it is,
// never reused.
func TestRecycleKeepsOnlyStoredItems(t *testing.T) {
	s := &Service{cfg: DefaultConfig()}
	ev, err := events.NewPresenceEvent(events.PresenceEvent{DeviceID: "d", Kind: events.KindConnected, Node: "emqx@test",
		BrokerTSMS: 1718000000000, Source: SourceEMQXSys, ReceivedAtMS: 1718000000999})
	if err != nil {
		t.Fatal(err)
	}
	build := func(stored bool) *item {
		it := newItem(fakeMessage{id: 7}, nil)
		it.p.ev = ev
		it.p.msg = s.eventMsgInto(t.Context(), &it.p.ev, it.p.buf)
		it.attempt, it.backoff, it.deadline = 2, retryMin, time.Unix(1, 0)
		it.stored, it.done = stored, true
		return it
	}

	given := build(false)
	recycle(given)
	if given.m == nil || given.p.msg == nil || given.p.ev.ID != ev.ID || !given.done || given.mb.msg.Header.Get(events.HeaderMsgID) != ev.ID {
		t.Fatalf("a given-up item was cleared for reuse: %+v", given)
	}

	it := build(true)
	header, data := it.mb.msg.Header, cap(it.mb.data)
	recycle(it)
	if it.m != nil || it.conn != nil || it.p.msg != nil || it.p.buf != nil || it.p.ev.ID != "" || it.attempt != 0 || it.backoff != 0 ||
		!it.deadline.IsZero() || it.stored || it.done {
		t.Fatalf("a recycled item keeps state: %+v", it)
	}
	if len(it.mb.msg.Header) != 0 || it.mb.msg.Data != nil || it.mb.msg.Subject != "" || it.mb.id[0] != "" {
		t.Fatalf("a recycled item keeps its message: %+v", it.mb.msg)
	}
	if reflect.ValueOf(it.mb.msg.Header).Pointer() != reflect.ValueOf(header).Pointer() || cap(it.mb.data) != data {
		t.Error("a recycled item dropped its header map or data buffer")
	}
}
