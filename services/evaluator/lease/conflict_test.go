package lease

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric/noop"
)

// TestRenewalConflicts writes lease keys behind a Manager's back. A write
// of its own (as when the answer to a renewal was lost) is adopted: the
// lease is kept. Someone else's write loses the lease at once.
func TestRenewalConflicts(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	_, js := s.Connect(t)
	var (
		mu     sync.Mutex
		lost   []int
		closed = map[int]bool{}
	)
	h := Handler{
		Acquire: func(context.Context, int, uint64) error { return nil },
		Release: func(ctx context.Context, p int, r Reason) error {
			mu.Lock()
			defer mu.Unlock()
			if r == Lost {
				lost = append(lost, p)
				closed[p] = ctx.Err() != nil
			}
			return nil
		},
	}
	m, err := New(Config{Replica: "r1", Partitions: 2, TTL: 10 * time.Second, Renew: 100 * time.Millisecond}, h,
		Deps{JetStream: js, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MeterProvider: noop.NewMeterProvider()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	natstest.Eventually(t, 10*time.Second, func() bool { return slices.Equal(m.Owned(), []int{0, 1}) })
	e0, _ := m.Epoch(0)
	e1, _ := m.Epoch(1)

	write := func(p int, r record) {
		t.Helper()
		if _, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: "$KV." + DefaultBucket + "." + partitionKey(p), Data: r.encode()},
			jetstream.WithMsgTTL(10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	revision := func(p int) uint64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.leases[p].rev
	}

	// Our own write, unknown to the Manager: renewals go on from it.
	mine := m.record(e0)
	write(0, mine)
	before := revision(0)
	natstest.Eventually(t, 10*time.Second, func() bool { return revision(0) > before+1 })
	if e, ok := m.Epoch(0); !ok || e != e0 || !slices.Contains(m.Owned(), 0) {
		t.Fatalf("partition 0: epoch %d, %v, owned %v: want it kept", e, ok, m.Owned())
	}

	// Another replica's write: the lease is lost at once, Release(Lost) runs
	// with a cancelled context.
	write(1, record{Owner: "r2", Instance: "other", Epoch: e1 + 100})
	natstest.Eventually(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(lost) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if lost[0] != 1 || !closed[1] {
		t.Fatalf("lost %v (context cancelled: %v), want partition 1 with a cancelled context", lost, closed)
	}
	if got := m.Owned(); !slices.Equal(got, []int{0}) {
		t.Fatalf("owned %v, want [0]", got)
	}
	// The key is someone else's: it is not purged.
	e, err := m.last(t.Context(), partitionKey(1))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := decodeRecord(e.value); err != nil || !e.found || r.Instance != "other" {
		t.Fatalf("partition 1 key %+v, %v: want the other replica's", r, err)
	}
}

func TestLastReadsMarkersAsMissing(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	_, js := s.Connect(t)
	m, err := New(Config{Replica: "r1"}, Handler{
		Acquire: func(context.Context, int, uint64) error { return nil },
		Release: func(context.Context, int, Reason) error { return nil },
	}, Deps{JetStream: js, MeterProvider: noop.NewMeterProvider()})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := m.open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if e, err := m.last(t.Context(), "p.0"); err != nil || e.found {
		t.Fatalf("missing key: %+v, %v", e, err)
	}
	rev, err := kv.Create(t.Context(), "p.0", []byte("x"), jetstream.KeyTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if e, err := m.last(t.Context(), "p.0"); err != nil || !e.found || e.rev != rev || string(e.value) != "x" {
		t.Fatalf("present key: %+v, %v", e, err)
	}
	if err := kv.Purge(t.Context(), "p.0", jetstream.PurgeTTL(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if e, err := m.last(t.Context(), "p.0"); err != nil || e.found {
		t.Fatalf("purged key: %+v, %v", e, err)
	}
	// Expired: the server leaves a marker (Nats-Marker-Reason).
	rev, err = kv.Create(t.Context(), "p.1", []byte("y"), jetstream.KeyTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		e, err := m.last(t.Context(), "p.1")
		return err == nil && !e.found && e.rev > rev
	})
}
