package ingest

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
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
