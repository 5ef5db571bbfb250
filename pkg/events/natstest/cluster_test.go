package natstest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestStartCluster(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	if c.Size() != 3 || len(strings.Split(c.URLs(), ",")) != 3 {
		t.Fatalf("size %d, URLs %q: want 3 nodes", c.Size(), c.URLs())
	}
	for i := range 3 {
		s := c.Server(i)
		if s == nil || !s.JetStreamIsClustered() || s.NumRoutes() < 2 {
			t.Fatalf("node %d: running %v, want a clustered JetStream node routed to the other two", i, s != nil)
		}
		if got := s.ClientURL(); got != c.URL(i) {
			t.Fatalf("node %d client URL %s, want %s", i, got, c.URL(i))
		}
	}
	leaders := 0
	for i := range 3 {
		if peers := c.Server(i).JetStreamClusterPeers(); peers != nil {
			leaders++
			if len(peers) != 3 {
				t.Fatalf("meta group peers %v: want 3", peers)
			}
		}
	}
	if leaders != 1 {
		t.Fatalf("%d meta leaders, want 1", leaders)
	}
}

// TestClusterNodeStopMidStream publishes to an R3 stream while the node
// leading it stops, with a publisher that retries every failed publish with
// the same Nats-Msg-Id until it is acknowledged: the stream must end up with
// every message exactly once, and the restarted node must catch up.
func TestClusterNodeStopMidStream(t *testing.T) {
	const (
		stream = "FAULT"
		total  = 600
		stopAt = 200
	)
	c := natstest.StartCluster(t, 3)
	_, js := c.Connect(t)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       stream,
		Subjects:   []string{"fault.>"},
		Storage:    jetstream.FileStorage,
		Replicas:   3,
		Duplicates: time.Minute,
	}); err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	var leader int
	natstest.Eventually(t, 10*time.Second, func() bool { leader = c.StreamLeader(stream); return leader >= 0 })

	var retries, dups atomic.Int64
	publish := func(i int) error {
		msg := &nats.Msg{Subject: fmt.Sprintf("fault.%d", i%7), Data: []byte(fmt.Sprint(i)), Header: nats.Header{}}
		id := fmt.Sprintf("msg-%04d", i)
		deadline := time.Now().Add(20 * time.Second)
		for {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			ack, err := js.PublishMsg(pctx, msg, jetstream.WithMsgID(id))
			cancel()
			if err == nil {
				if ack.Duplicate {
					dups.Add(1)
				}
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("publish %s: %w", id, err)
			}
			retries.Add(1)
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Four publishers keep messages in flight while the leader stops.
	const workers = 4
	var acked atomic.Int64
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := w; i < total; i += workers {
				if err := publish(i); err != nil {
					errs <- err
					return
				}
				acked.Add(1)
			}
			errs <- nil
		}()
	}
	natstest.Eventually(t, 20*time.Second, func() bool { return acked.Load() >= stopAt })
	c.Stop(leader)
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	newLeader := c.StreamLeader(stream)
	if newLeader < 0 || newLeader == leader {
		t.Fatalf("stream leader after stopping node %d: %d, want another node", leader, newLeader)
	}
	t.Logf("stopped stream leader n%d after %d messages; new leader n%d; %d publish retries, %d acknowledged as duplicates",
		leader, stopAt, newLeader, retries.Load(), dups.Load())

	// Right after the leader change a JetStream API request may find no
	// responder yet (the meta group or the client's server settling).
	info, err := retrying(10*time.Second, func() (jetstream.Stream, error) { return js.Stream(ctx, stream) })
	if err != nil {
		t.Fatal(err)
	}
	st := info.CachedInfo().State
	if st.Msgs != total || st.FirstSeq != 1 || st.LastSeq != total {
		t.Fatalf("stream state msgs=%d first=%d last=%d: want %d messages at sequences 1..%d", st.Msgs, st.FirstSeq, st.LastSeq, total, total)
	}
	seen := readIDs(t, js, stream, total)
	for i := range total {
		if n := seen[fmt.Sprintf("msg-%04d", i)]; n != 1 {
			t.Fatalf("msg-%04d stored %d times, want once", i, n)
		}
	}

	// The stopped node comes back with its store and catches up.
	c.Restart(leader)
	natstest.Eventually(t, 20*time.Second, func() bool {
		return storedOn(c.Server(leader), stream) == total
	})
}

// readIDs reads every message of the stream with an ordered consumer and
// counts the Nats-Msg-Id values.
func readIDs(t *testing.T, js jetstream.JetStream, stream string, want int) map[string]int {
	t.Helper()
	cons, err := retrying(10*time.Second, func() (jetstream.Consumer, error) {
		return js.OrderedConsumer(t.Context(), stream, jetstream.OrderedConsumerConfig{})
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for n := 0; n < want; {
		batch, err := cons.Fetch(want-n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			seen[m.Headers().Get(jetstream.MsgIDHeader)]++
			got++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
		if got == 0 {
			t.Fatalf("read %d of %d messages", n, want)
		}
		n += got
	}
	return seen
}

// storedOn is how many messages a node's replica of the stream holds.
func storedOn(s *server.Server, stream string) uint64 {
	if s == nil {
		return 0
	}
	jsz, err := s.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		return 0
	}
	for _, acc := range jsz.AccountDetails {
		for _, st := range acc.Streams {
			if st.Name == stream {
				return st.State.Msgs
			}
		}
	}
	return 0
}

// retrying calls f until it succeeds or timeout passes, and returns its
// last result: a JetStream API request right after a leader change may find
// no responder yet.
func retrying[T any](timeout time.Duration, f func() (T, error)) (T, error) {
	deadline := time.Now().Add(timeout)
	for {
		v, err := f()
		if err == nil || time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
