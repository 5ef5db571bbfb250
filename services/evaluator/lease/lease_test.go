package lease_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry/telemetrytest"
	"github.com/fleetwatch/fleetwatch/services/evaluator/lease"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Test timings. Hand-overs and clean stops do not wait for leases to run
// out, so most tests use long leases (steady): a lease is lost only if it
// could not be renewed for 8s, which keeps them exact on a loaded machine.
// Tests of abrupt deaths and lost connections wait for leases to run out and
// use short ones: a partition whose owner died is free 4s later, and a
// replica cut off gives its partitions up 2.5s after its last renewal.
var (
	steady = lease.Config{TTL: 10 * time.Second, Renew: 200 * time.Millisecond}
	short  = lease.Config{TTL: 4 * time.Second, Renew: 250 * time.Millisecond, Margin: 1500 * time.Millisecond}
)

// settle bounds every wait for the replicas to agree; it is far above what
// they need (a few renewal intervals, plus a TTL after an abrupt death).
const settle = 15 * time.Second

// flush is how long Release takes on a hand-over or shutdown.
const flush = 20 * time.Millisecond

// recorder is the shared view of who processes which partition, driven only
// by the Handler callbacks: a replica holds a partition from the start of
// its Acquire to the end of its Release. It records every moment two
// replicas would hold one partition.
type recorder struct {
	mu       sync.Mutex
	holder   map[int]string
	ownCtx   map[int]context.Context
	epoch    map[int]uint64
	dead     map[string]bool
	acquired map[string]int
	released map[string]map[lease.Reason]int
	errs     []string
}

func newRecorder() *recorder {
	return &recorder{
		holder:   map[int]string{},
		ownCtx:   map[int]context.Context{},
		epoch:    map[int]uint64{},
		dead:     map[string]bool{},
		acquired: map[string]int{},
		released: map[string]map[lease.Reason]int{},
	}
}

func (r *recorder) fail(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) handler(name string) lease.Handler {
	return lease.Handler{
		Acquire: func(ctx context.Context, p int, epoch uint64) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.dead[name] {
				return errors.New("dead")
			}
			if h, ok := r.holder[p]; ok {
				r.fail("partition %d acquired by %s while %s holds it", p, name, h)
			}
			if epoch <= r.epoch[p] {
				r.fail("partition %d acquired by %s with epoch %d, not above the previous %d", p, name, epoch, r.epoch[p])
			}
			r.holder[p], r.ownCtx[p], r.epoch[p] = name, ctx, epoch
			r.acquired[name]++
			return nil
		},
		Release: func(ctx context.Context, p int, reason lease.Reason) error {
			if reason != lease.Lost {
				// A flush and a snapshot take a while: another replica
				// claiming the partition meanwhile would be caught below.
				time.Sleep(flush)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.dead[name] {
				return nil // a dead process releases nothing
			}
			if h := r.holder[p]; h != name {
				r.fail("partition %d released by %s (%s) but held by %q", p, name, reason, h)
				return nil
			}
			if r.ownCtx[p].Err() == nil {
				r.fail("partition %d released by %s (%s) while its ownership context is live", p, name, reason)
			}
			if reason == lease.Lost && ctx.Err() == nil {
				r.fail("partition %d lost by %s with a live release context", p, name)
			}
			delete(r.holder, p)
			delete(r.ownCtx, p)
			if r.released[name] == nil {
				r.released[name] = map[lease.Reason]int{}
			}
			r.released[name][reason]++
			return nil
		},
	}
}

// kill is an abrupt death: the replica's processing stops at once, and its
// callbacks from now on are those of a dead process.
func (r *recorder) kill(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dead[name] = true
	for p, h := range r.holder {
		if h == name {
			delete(r.holder, p)
			delete(r.ownCtx, p)
		}
	}
}

// held lists the partitions the recorder sees name holding.
func (r *recorder) held(name string) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for p, h := range r.holder {
		if h == name {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

func (r *recorder) acquisitions(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acquired[name]
}

func (r *recorder) releases(name string, reason lease.Reason) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.released[name][reason]
}

func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) > 0 {
		t.Fatalf("%d violations:\n%s", len(r.errs), strings.Join(r.errs, "\n"))
	}
}

// replica is one Manager running on its own NATS connection.
type replica struct {
	name    string
	m       *lease.Manager
	nc      *nats.Conn
	metrics *sdkmetric.ManualReader
	cancel  context.CancelFunc
	exited  chan struct{} // closed when Run returned
	err     error         // Run's result, once exited
}

// testLogger writes to the test log until the test ends (replica goroutines
// may outlive it by a little).
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct {
	mu     sync.Mutex
	t      *testing.T
	closed bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimSpace(string(b)))
	}
	return len(b), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
}

func startReplica(t *testing.T, url, name string, cfg lease.Config, rec *recorder, logger *slog.Logger) *replica {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Replica = name
	reader := sdkmetric.NewManualReader()
	m, err := lease.New(cfg, rec.handler(name), lease.Deps{
		JetStream:     js,
		Logger:        logger.With("test_replica", name),
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{name: name, m: m, nc: nc, metrics: reader, cancel: cancel, exited: make(chan struct{})}
	go func() {
		r.err = m.Run(ctx)
		close(r.exited)
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and waits for it (a clean shutdown); it returns Run's
// error.
func (r *replica) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case <-r.exited:
		return r.err
	case <-time.After(settle):
		t.Fatalf("%s: Run did not return", r.name)
		return nil
	}
}

// running fails the test if Run returned on its own.
func (r *replica) running(t *testing.T) {
	t.Helper()
	select {
	case <-r.exited:
		t.Fatalf("%s: Run returned: %v", r.name, r.err)
	default:
	}
}

// waitShares waits until the replicas own every partition, disjointly, each
// exactly want[name], and the recorder agrees with every Owned list.
func waitShares(t *testing.T, rec *recorder, partitions int, want map[string]int, rs ...*replica) {
	t.Helper()
	var last string
	deadline := time.Now().Add(settle)
	for {
		owner := map[int]string{}
		ok := true
		var b strings.Builder
		for _, r := range rs {
			r.running(t)
			owned := r.m.Owned()
			fmt.Fprintf(&b, "%s owns %v, recorder %v; ", r.name, owned, rec.held(r.name))
			if len(owned) != want[r.name] || !slices.Equal(owned, rec.held(r.name)) {
				ok = false
			}
			for _, p := range owned {
				if o, dup := owner[p]; dup {
					t.Fatalf("partition %d owned by %s and %s", p, o, r.name)
				}
				owner[p] = r.name
			}
		}
		if ok && len(owner) == partitions {
			rec.check(t)
			return
		}
		last = b.String()
		if time.Now().After(deadline) {
			t.Fatalf("shares %v not reached within %v: %s", want, settle, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func withPartitions(c lease.Config, p int) lease.Config {
	c.Partitions = p
	return c
}

func TestOneReplicaOwnsEveryPartitionAndKeepsThem(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	rec, log := newRecorder(), testLogger(t)
	r1 := startReplica(t, s.URL(), "r1", withPartitions(short, 8), rec, log)
	waitShares(t, rec, 8, map[string]int{"r1": 8}, r1)
	epochs := map[int]uint64{}
	for p := range 8 {
		e, ok := r1.m.Epoch(p)
		if !ok || e == 0 {
			t.Fatalf("partition %d: epoch %d, %v", p, e, ok)
		}
		epochs[p] = e
	}
	// After more renewals than fit in a TTL, the leases are still the same
	// ones: renewed, never lost and claimed again.
	renewed := func() int64 {
		return telemetrytest.Int64s(t, r1.metrics, "fleetwatch_evaluator_lease_renewals", "outcome")["ok"]
	}
	natstest.Eventually(t, settle, func() bool { return renewed() >= 8*(int64(short.TTL/short.Renew)+2) })
	waitShares(t, rec, 8, map[string]int{"r1": 8}, r1)
	for p := range 8 {
		if e, _ := r1.m.Epoch(p); e != epochs[p] {
			t.Fatalf("partition %d: epoch %d, was %d: the lease was claimed again", p, e, epochs[p])
		}
	}
	if got := telemetrytest.Int64s(t, r1.metrics, "fleetwatch_evaluator_lease_acquisitions", "outcome"); got["ok"] != 8 || got["failed"] != 0 {
		t.Fatalf("acquisitions %v, want 8 ok", got)
	}
	if got := telemetrytest.Int64s(t, r1.metrics, "fleetwatch_evaluator_lease_losses", ""); got[""] != 0 {
		t.Fatalf("losses %v, want none", got)
	}
	if got := telemetrytest.Int64s(t, r1.metrics, "fleetwatch_evaluator_partitions_owned", ""); got[""] != 8 {
		t.Fatalf("partitions_owned %v, want 8", got)
	}
	if got := r1.m.Members(); !slices.Equal(got, []string{"r1"}) {
		t.Fatalf("members %v", got)
	}

	if err := r1.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := rec.releases("r1", lease.Shutdown); got != 8 {
		t.Fatalf("%d shutdown releases, want 8", got)
	}
	rec.check(t)
	// A clean shutdown leaves no key behind.
	_, js := s.Connect(t)
	kv, err := js.KeyValue(t.Context(), lease.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := kv.Keys(t.Context()); !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatalf("keys after shutdown %v, %v: want none", keys, err)
	}
}

func TestThreeReplicasSplitEvenly(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	rec, log := newRecorder(), testLogger(t)
	cfg := withPartitions(steady, 16)
	var rs []*replica
	for _, name := range []string{"r3", "r1", "r2"} {
		rs = append(rs, startReplica(t, s.URL(), name, cfg, rec, log))
	}
	// 16 = 6 + 5 + 5: the extra one goes to the first name.
	waitShares(t, rec, 16, map[string]int{"r1": 6, "r2": 5, "r3": 5}, rs...)
	for _, r := range rs {
		if got := r.m.Members(); !slices.Equal(got, []string{"r1", "r2", "r3"}) {
			t.Fatalf("%s sees members %v", r.name, got)
		}
	}
}

func TestJoinHandsOverWithoutOverlap(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	rec, log := newRecorder(), testLogger(t)
	cfg := withPartitions(steady, 8)
	r1 := startReplica(t, s.URL(), "r1", cfg, rec, log)
	waitShares(t, rec, 8, map[string]int{"r1": 8}, r1)
	before := map[int]uint64{}
	for p := range 8 {
		before[p], _ = r1.m.Epoch(p)
	}

	r2 := startReplica(t, s.URL(), "r2", cfg, rec, log)
	waitShares(t, rec, 8, map[string]int{"r1": 4, "r2": 4}, r1, r2)
	if got := rec.releases("r1", lease.Rebalance); got != 4 {
		t.Fatalf("r1 handed over %d partitions, want 4", got)
	}
	for _, p := range r2.m.Owned() {
		if e, _ := r2.m.Epoch(p); e <= before[p] {
			t.Fatalf("partition %d: r2's epoch %d not above r1's %d", p, e, before[p])
		}
	}
	if got := telemetrytest.Int64s(t, r1.metrics, "fleetwatch_evaluator_lease_releases", "reason"); got["rebalance"] != 4 || len(got) != 1 {
		t.Fatalf("r1 releases %v, want 4 rebalance", got)
	}
	if got := telemetrytest.Int64s(t, r2.metrics, "fleetwatch_evaluator_partitions_owned", ""); got[""] != 4 {
		t.Fatalf("r2 partitions_owned %v, want 4", got)
	}
	if got := telemetrytest.Int64s(t, r2.metrics, "fleetwatch_evaluator_lease_members", ""); got[""] != 2 {
		t.Fatalf("r2 lease_members %v, want 2", got)
	}
	for _, r := range []*replica{r1, r2} {
		if got := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_lease_losses", ""); got[""] != 0 {
			t.Fatalf("%s lost %v leases, want none", r.name, got)
		}
	}
}

func TestAbruptDeathIsTakenOverAfterTTL(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	rec, log := newRecorder(), testLogger(t)
	cfg := withPartitions(short, 9)
	r1 := startReplica(t, s.URL(), "r1", cfg, rec, log)
	r2 := startReplica(t, s.URL(), "r2", cfg, rec, log)
	r3 := startReplica(t, s.URL(), "r3", cfg, rec, log)
	waitShares(t, rec, 9, map[string]int{"r1": 3, "r2": 3, "r3": 3}, r1, r2, r3)

	// r2 dies: it stops processing at once, and neither renews nor releases
	// anything (its connection is gone).
	rec.kill("r2")
	r2.nc.Close()
	waitShares(t, rec, 9, map[string]int{"r1": 5, "r3": 4}, r1, r3)
	for _, r := range []*replica{r1, r3} {
		if got := r.m.Members(); !slices.Equal(got, []string{"r1", "r3"}) {
			t.Fatalf("%s sees members %v", r.name, got)
		}
	}
}

func TestCleanStopIsTakenOverAtOnce(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	rec, log := newRecorder(), testLogger(t)
	// Leases of 60s: a take-over within the test's bounded wait can only
	// come from the release, not from an expiry.
	cfg := withPartitions(lease.Config{TTL: time.Minute, Renew: 250 * time.Millisecond}, 8)
	r1 := startReplica(t, s.URL(), "r1", cfg, rec, log)
	r2 := startReplica(t, s.URL(), "r2", cfg, rec, log)
	waitShares(t, rec, 8, map[string]int{"r1": 4, "r2": 4}, r1, r2)

	if err := r2.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := rec.releases("r2", lease.Shutdown); got != 4 {
		t.Fatalf("r2 released %d partitions on shutdown, want 4", got)
	}
	waitShares(t, rec, 8, map[string]int{"r1": 8}, r1)
	if got := r1.m.Members(); !slices.Equal(got, []string{"r1"}) {
		t.Fatalf("r1 sees members %v", got)
	}
}

func TestScaleOneToThreeToOne(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	rec, log := newRecorder(), testLogger(t)
	cfg := withPartitions(steady, 12)
	r1 := startReplica(t, s.URL(), "r1", cfg, rec, log)
	waitShares(t, rec, 12, map[string]int{"r1": 12}, r1)
	r2 := startReplica(t, s.URL(), "r2", cfg, rec, log)
	r3 := startReplica(t, s.URL(), "r3", cfg, rec, log)
	waitShares(t, rec, 12, map[string]int{"r1": 4, "r2": 4, "r3": 4}, r1, r2, r3)
	for _, r := range []*replica{r2, r3} {
		if err := r.stop(t); err != nil {
			t.Fatalf("%s Run: %v", r.name, err)
		}
	}
	waitShares(t, rec, 12, map[string]int{"r1": 12}, r1)
	if got := rec.releases("r1", lease.Rebalance); got != 8 {
		t.Fatalf("r1 handed over %d partitions, want 8", got)
	}
	// What r2 and r3 acquired (r1's 8, and any that one of them freed while
	// the other still ran) they released on shutdown.
	acquired := rec.acquisitions("r2") + rec.acquisitions("r3")
	if got := rec.releases("r2", lease.Shutdown) + rec.releases("r3", lease.Shutdown); got != acquired || got < 8 {
		t.Fatalf("r2 and r3 released %d partitions on shutdown, acquired %d: want all of them, at least 8", got, acquired)
	}
	for _, name := range []string{"r1", "r2", "r3"} {
		if got := rec.releases(name, lease.Lost); got != 0 {
			t.Fatalf("%s lost %d leases", name, got)
		}
	}
}

// TestConnectionLossStopsProcessingBeforeTakeOver cuts one replica off NATS:
// it must give its partitions up (Release with Lost) before the others can
// claim them — the recorder fails on any overlap — and get its share back
// once NATS is reachable again.
func TestConnectionLossStopsProcessingBeforeTakeOver(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	proxy := natstest.StartProxy(t, s.URL())
	rec, log := newRecorder(), testLogger(t)
	cfg := withPartitions(short, 8)
	r1 := startReplica(t, s.URL(), "r1", cfg, rec, log)
	r2 := startReplica(t, proxy.URL(), "r2", cfg, rec, log)
	waitShares(t, rec, 8, map[string]int{"r1": 4, "r2": 4}, r1, r2)

	lost := rec.releases("r2", lease.Lost)
	proxy.Cut()
	waitShares(t, rec, 8, map[string]int{"r1": 8, "r2": 0}, r1, r2)
	if got := rec.releases("r2", lease.Lost) - lost; got != 4 {
		t.Fatalf("r2 gave up %d partitions as lost, want 4", got)
	}
	if got := telemetrytest.Int64s(t, r2.metrics, "fleetwatch_evaluator_lease_losses", ""); got[""] != int64(lost+4) {
		t.Fatalf("r2 lease_losses %v, want %d", got, lost+4)
	}

	handed := rec.releases("r1", lease.Rebalance)
	proxy.Restore()
	waitShares(t, rec, 8, map[string]int{"r1": 4, "r2": 4}, r1, r2)
	if got := rec.releases("r1", lease.Rebalance) - handed; got != 4 {
		t.Fatalf("r1 handed %d partitions back, want 4", got)
	}
}

// TestAcquireFailureReleasesTheLease: a partition whose Acquire fails is
// released and claimed again later; nothing else is disturbed.
func TestAcquireFailureReleasesTheLease(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	_, js := s.Connect(t)
	var (
		mu       sync.Mutex
		attempts = map[int]int{}
	)
	h := lease.Handler{
		Acquire: func(_ context.Context, p int, _ uint64) error {
			mu.Lock()
			defer mu.Unlock()
			attempts[p]++
			if p == 2 && attempts[p] == 1 {
				return errors.New("snapshot unreadable")
			}
			return nil
		},
		Release: func(context.Context, int, lease.Reason) error { return nil },
	}
	cfg := withPartitions(steady, 4)
	cfg.Replica = "r1"
	reader := sdkmetric.NewManualReader()
	m, err := lease.New(cfg, h, lease.Deps{JetStream: js, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	natstest.Eventually(t, settle, func() bool { return slices.Equal(m.Owned(), []int{0, 1, 2, 3}) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !maps.Equal(attempts, map[int]int{0: 1, 1: 1, 2: 2, 3: 1}) {
		t.Fatalf("Acquire calls per partition %v, want partition 2 twice, others once", attempts)
	}
	if got := telemetrytest.Int64s(t, reader, "fleetwatch_evaluator_lease_acquisitions", "outcome"); got["ok"] != 4 || got["failed"] != 1 {
		t.Fatalf("acquisitions %v, want 4 ok and 1 failed", got)
	}
}

func TestRunRejectsABucketWithoutPerKeyTTL(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	_, js := s.Connect(t)
	ctx := t.Context()
	for _, tc := range []struct {
		bucket string
		cfg    jetstream.KeyValueConfig
		want   string
	}{
		{"plain", jetstream.KeyValueConfig{}, "lease bucket plain does not allow per-key TTLs: delete it (nats kv del plain) and let the evaluator create it"},
		{"short", jetstream.KeyValueConfig{TTL: 5 * time.Second, LimitMarkerTTL: time.Minute},
			"lease bucket short expires keys after 5s, before evaluator.lease.ttl 10s: remove the bucket's TTL or delete the bucket (nats kv del short)"},
	} {
		tc.cfg.Bucket = tc.bucket
		if _, err := js.CreateKeyValue(ctx, tc.cfg); err != nil {
			t.Fatal(err)
		}
		m, err := lease.New(lease.Config{Replica: "r1", Bucket: tc.bucket}, newRecorder().handler("r1"), lease.Deps{JetStream: js})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Run(ctx); err == nil || err.Error() != tc.want {
			t.Fatalf("Run: %v\nwant: %s", err, tc.want)
		}
	}
}

func TestRunTwice(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	_, js := s.Connect(t)
	cfg := steady
	cfg.Replica = "r1"
	m, err := lease.New(cfg, newRecorder().handler("r1"), lease.Deps{JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	natstest.Eventually(t, settle, func() bool { return len(m.Owned()) == 64 })
	if err := m.Run(ctx); err == nil || err.Error() != "lease: Run called twice" {
		t.Fatalf("second Run: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNewValidates(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)
	h := newRecorder().handler("r1")
	for _, tc := range []struct {
		cfg  lease.Config
		h    lease.Handler
		deps lease.Deps
		want string
	}{
		{lease.Config{}, h, lease.Deps{JetStream: js}, "evaluator.lease.replica is empty: set a name unique among the evaluator replicas, e.g. the pod name"},
		{lease.Config{Replica: "a.b"}, h, lease.Deps{JetStream: js}, `evaluator.lease.replica "a.b": use 1 to 128 letters, digits, - and _, e.g. evaluator-0`},
		{lease.Config{Replica: "r1", Partitions: -1}, h, lease.Deps{JetStream: js}, "evaluator.lease.partitions is -1: use the ingest's partition count (default 64)"},
		{lease.Config{Replica: "r1", Bucket: "a.b"}, h, lease.Deps{JetStream: js}, `evaluator.lease.bucket "a.b": use letters, digits, - and _, e.g. fleetwatch_evaluator_leases`},
		{lease.Config{Replica: "r1", BucketReplicas: 7}, h, lease.Deps{JetStream: js}, "evaluator.lease.bucket_replicas is 7: use 1 to 5 (3 on a production cluster)"},
		{lease.Config{Replica: "r1", TTL: 1500 * time.Millisecond}, h, lease.Deps{JetStream: js}, "evaluator.lease.ttl is 1.5s: use whole seconds, at least 1s (JetStream counts per-key TTLs in seconds), e.g. 10s"},
		{lease.Config{Replica: "r1", TTL: 10 * time.Second, Margin: 10 * time.Second}, h, lease.Deps{JetStream: js}, "evaluator.lease.margin is 10s: use a positive duration below evaluator.lease.ttl 10s, e.g. 2s"},
		{lease.Config{Replica: "r1", TTL: 10 * time.Second, Renew: 5 * time.Second}, h, lease.Deps{JetStream: js}, "evaluator.lease.renew is 5s: use a positive duration of at most (ttl - margin)/2 = 4s, e.g. 2s"},
		{lease.Config{Replica: "r1", ShutdownTimeout: -time.Second}, h, lease.Deps{JetStream: js}, "evaluator.lease.shutdown_timeout is -1s: use a positive duration, e.g. 30s"},
		{lease.Config{Replica: "r1"}, lease.Handler{Acquire: h.Acquire}, lease.Deps{JetStream: js}, "lease: Handler.Acquire and Handler.Release are both required"},
		{lease.Config{Replica: "r1"}, h, lease.Deps{}, "lease: Deps.JetStream is nil: pass the replica's JetStream context"},
	} {
		_, err := lease.New(tc.cfg, tc.h, tc.deps)
		if err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v): %v\nwant: %s", tc.cfg, err, tc.want)
		}
	}
	m, err := lease.New(lease.Config{Replica: "evaluator-0"}, h, lease.Deps{JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	want := lease.Config{Replica: "evaluator-0", Partitions: 64, Bucket: lease.DefaultBucket, BucketReplicas: 1,
		TTL: 10 * time.Second, Renew: 2 * time.Second, Margin: 2 * time.Second, ShutdownTimeout: 30 * time.Second}
	if got := m.Config(); got != want {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
}

func TestReasonString(t *testing.T) {
	got := []string{lease.Rebalance.String(), lease.Shutdown.String(), lease.Lost.String(), lease.Reason(9).String()}
	want := []string{"rebalance", "shutdown", "lost", "Reason(9)"}
	if !slices.Equal(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}

// TestKVTTLBehaviour pins the nats.go and nats-server behaviour the package
// is built on: KeyValue.Update writes a revision without the key's TTL (it
// never expires), so renewals publish with a Nats-TTL header instead, and a
// key written so expires by itself.
func TestKVTTLBehaviour(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	_, js := s.Connect(t)
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ttl", History: 1, LimitMarkerTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Create(ctx, "updated", []byte("1"), jetstream.KeyTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "updated", []byte("2"), rev); err != nil {
		t.Fatal(err)
	}
	rev, err = kv.Create(ctx, "renewed", []byte("1"), jetstream.KeyTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "$KV.ttl.renewed", Data: []byte("2")},
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, settle, func() bool {
		_, err := kv.Get(ctx, "renewed")
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	// "updated" was written before "renewed": had it kept its TTL, it would
	// be gone too (1.5s more cover the server's expiry timer).
	time.Sleep(1500 * time.Millisecond)
	if e, err := kv.Get(ctx, "updated"); err != nil || string(e.Value()) != "2" {
		t.Fatalf("updated key: %v, %v: want it kept without TTL", e, err)
	}
}

// TestOnAThreeNodeCluster runs three replicas over a 3-node JetStream
// cluster with an R3 lease bucket, and stops the node leading the bucket:
// the replicas keep their partitions (renewals go to the new leader) and
// never overlap.
func TestOnAThreeNodeCluster(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	rec, log := newRecorder(), testLogger(t)
	cfg := withPartitions(steady, 8)
	cfg.BucketReplicas = 3
	var rs []*replica
	for _, name := range []string{"r1", "r2", "r3"} {
		rs = append(rs, startReplica(t, c.URLs(), name, cfg, rec, log))
	}
	waitShares(t, rec, 8, map[string]int{"r1": 3, "r2": 3, "r3": 2}, rs...)
	epochs := map[int]uint64{}
	for _, r := range rs {
		for _, p := range r.m.Owned() {
			epochs[p], _ = r.m.Epoch(p)
		}
	}

	leader := c.StreamLeader("KV_" + lease.DefaultBucket)
	if leader < 0 {
		t.Fatal("no leader for the lease bucket")
	}
	c.Stop(leader)
	// Renewals succeed again once a new leader is elected.
	ok := func() int64 {
		var n int64
		for _, r := range rs {
			n += telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_lease_renewals", "outcome")["ok"]
		}
		return n
	}
	after := ok()
	natstest.Eventually(t, settle, func() bool { return ok() >= after+3*8 && c.StreamLeader("KV_"+lease.DefaultBucket) >= 0 })
	waitShares(t, rec, 8, map[string]int{"r1": 3, "r2": 3, "r3": 2}, rs...)
	for _, r := range rs {
		for _, p := range r.m.Owned() {
			if e, _ := r.m.Epoch(p); e != epochs[p] {
				t.Fatalf("partition %d: epoch %d, was %d: the lease did not survive the node stop", p, e, epochs[p])
			}
		}
		if got := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_lease_losses", ""); got[""] != 0 {
			t.Fatalf("%s lost %v leases", r.name, got)
		}
	}
}
