package evaluator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/services/evaluator"
	"github.com/fleetwatch/fleetwatch/services/evaluator/lease"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// The lease-mode tests run several evaluator replicas in-process, each
// with its own NATS connection, on one shared fake clock (the grace
// periods) while the leases run on the wall clock (ttl 2s). The scenario's
// alerts are decided by event times and the fake clock only, so every run
// expects the same set, whatever moment a replica dies.

// leaseConfig is a replica's config: L lease partitions, short leases.
func leaseConfig(name string, l int) evaluator.Config {
	cfg := testConfig("ops")
	cfg.SnapshotInterval = time.Second
	cfg.Lease = lease.Config{Replica: name, Partitions: l, TTL: 2 * time.Second, Renew: 400 * time.Millisecond,
		Margin: 400 * time.Millisecond, ShutdownTimeout: 10 * time.Second}
	return cfg
}

// replica is an evaluator replica on its own connection.
type replica struct {
	name   string
	nc     *nats.Conn
	svc    *evaluator.Service
	cancel context.CancelFunc
	done   chan error
	ended  atomic.Bool
}

// startReplica starts a replica connected to url.
func (h *harness) startReplica(t *testing.T, url, name string, l int) *replica {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	cfg := leaseConfig(name, l)
	cfg.Lease.BucketReplicas = max(h.topo.Replicas, 1) // the lease bucket like the streams
	svc, err := evaluator.New(cfg, evaluator.Deps{
		NATS:           nc,
		Logger:         slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})).With("replica", name),
		TracerProvider: sdktrace.NewTracerProvider(),
		MeterProvider:  sdkmetric.NewMeterProvider(),
		Now:            h.clock.Now,
		Topology:       h.topo,
	})
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{name: name, nc: nc, svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop is a clean shutdown: the replica releases its units.
func (r *replica) stop(t *testing.T) {
	t.Helper()
	if r.ended.Swap(true) {
		return
	}
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("replica %s: Run: %v", r.name, err)
	}
	r.nc.Close()
}

// kill is an abrupt death: the connection goes first, so that nothing is
// released, snapshotted or purged; its leases expire.
func (r *replica) kill(t *testing.T) {
	t.Helper()
	if r.ended.Swap(true) {
		return
	}
	r.nc.Close()
	r.cancel()
	<-r.done // an error is expected: nothing could be released
}

// owned counts the units the live replicas own.
func owned(rs ...*replica) int {
	n := 0
	for _, r := range rs {
		if !r.ended.Load() {
			n += len(r.svc.Owned())
		}
	}
	return n
}

// waitOwned waits until the live replicas own all l units.
func waitOwned(t *testing.T, l int, rs ...*replica) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for owned(rs...) != l {
		if time.Now().After(deadline) {
			t.Fatalf("the replicas own %d of %d units after 30s", owned(rs...), l)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// scenario is the traffic of the lease tests: 80 devices.
//
//	phase 1: devices 0..59 connect and disconnect; those with i%3 == 0
//	         reconnect within the grace (blips, no alert). Clock → +40s:
//	         40 outages fire.
//	phase 2: clock → +60s; devices with i%3 == 1 come back (20 resolved);
//	         devices 60..79 connect and disconnect. Clock → +90s: 20 more
//	         outages fire.
//
// Expected: 60 firing and 20 resolved notifications, one receiver.
func scenarioPhase1(t *testing.T) []events.PresenceEvent {
	var es []events.PresenceEvent
	for i := range 60 {
		d := fmt.Sprintf("dev-%02d", i)
		es = append(es, connected(t, d, "n1", t0+int64(i)),
			disconnected(t, d, "n1", t0+int64(i), t0+1000+int64(i), events.ReasonKeepaliveTimeout))
	}
	for i := 0; i < 60; i += 3 {
		d := fmt.Sprintf("dev-%02d", i)
		es = append(es, connected(t, d, "n1", t0+2000+int64(i)))
	}
	return es
}

func scenarioPhase2(t *testing.T) []events.PresenceEvent {
	var es []events.PresenceEvent
	for i := 1; i < 60; i += 3 {
		es = append(es, connected(t, fmt.Sprintf("dev-%02d", i), "n1", t0+50_000+int64(i)))
	}
	for i := 60; i < 80; i++ {
		d := fmt.Sprintf("dev-%02d", i)
		es = append(es, connected(t, d, "n1", t0+45_000+int64(i)),
			disconnected(t, d, "n1", t0+45_000+int64(i), t0+46_000+int64(i), events.ReasonKeepaliveTimeout))
	}
	return es
}

// expected is "device/status" of every notification the scenario decides.
func expected() []string {
	var out []string
	for i := range 80 {
		d := fmt.Sprintf("dev-%02d", i)
		if i < 60 && i%3 == 0 {
			continue
		}
		out = append(out, d+"/firing")
		if i < 60 && i%3 == 1 {
			out = append(out, d+"/resolved")
		}
	}
	sort.Strings(out)
	return out
}

// drained reports whether every unit's consumer delivered and got acked
// everything.
func (h *harness) drained(t *testing.T, l int) bool {
	for u := range l {
		name := events.ConsumerEvaluator
		if l > 1 {
			name = fmt.Sprintf("%s-l%dof%d", events.ConsumerEvaluator, u, l)
		}
		c, err := h.js.Consumer(t.Context(), events.StreamPresence, name)
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		if err != nil || info.NumPending != 0 || info.NumAckPending != 0 {
			return false
		}
	}
	return true
}

// publishTracked publishes es and records in last, per unit, the stream
// sequence of its last event.
func (h *harness) publishTracked(t *testing.T, l int, last map[int]uint64, es []events.PresenceEvent) {
	t.Helper()
	for _, e := range es {
		u := events.Partition(e.DeviceID, events.DefaultPartitions) % l
		last[u] = max(last[u], h.publish(t, e))
	}
}

// ackedUpTo reports whether the consumer of every unit u has acked
// everything up to stream sequence last[u].
func (h *harness) ackedUpTo(t *testing.T, l int, last map[int]uint64) bool {
	for u, seq := range last {
		name := events.ConsumerEvaluator
		if l > 1 {
			name = fmt.Sprintf("%s-l%dof%d", events.ConsumerEvaluator, u, l)
		}
		c, err := h.js.Consumer(t.Context(), events.StreamPresence, name)
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		if err != nil || info.AckFloor.Stream < seq {
			return false
		}
	}
	return true
}

// checkExactlyOnce waits for the expected notifications, lets the
// replicas run a little longer, and checks that ALERTS holds each exactly
// once: one message per Nats-Msg-Id, and one per (device, status), so that
// a decision doubled under another id would show.
func (h *harness) checkExactlyOnce(t *testing.T, l int) {
	t.Helper()
	want := expected()
	waitFor(t, "every notification", func() bool { return len(h.alerts(t)) >= len(want) && h.drained(t, l) })
	time.Sleep(1500 * time.Millisecond) // a doubled decision would come now
	byID := map[string]int{}
	var got []string
	for _, a := range h.alerts(t) {
		byID[a.header.Get(events.HeaderMsgID)]++
		if a.header.Get(events.HeaderMsgID) != a.alert.ID {
			t.Errorf("Nats-Msg-Id %q != alert id %q", a.header.Get(events.HeaderMsgID), a.alert.ID)
		}
		for _, d := range a.alert.Devices {
			got = append(got, d.DeviceID+"/"+string(a.alert.Status))
		}
	}
	for id, n := range byID {
		if n != 1 {
			t.Errorf("alert id %s stored %d times", id, n)
		}
	}
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Fatalf("notifications (device/status) differ:\n got %d %v\nwant %d %v", len(got), got, len(want), want)
	}
}

// publishRetry publishes like the ingest: an unacknowledged publish is
// retried with the same Nats-Msg-Id (a stream leader election may be
// under way).
func (h *harness) publishRetry(t *testing.T, es ...events.PresenceEvent) {
	t.Helper()
	for _, e := range es {
		if err := h.publishAcked(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
}

// publishAcked publishes one event, retrying with the same Nats-Msg-Id
// until the stream acknowledges it (for at most 20s).
func (h *harness) publishAcked(ctx context.Context, e events.PresenceEvent) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		m := nats.NewMsg(events.PresenceSubject(e.DeviceID, events.DefaultPartitions))
		m.Data = data
		m.Header.Set(events.HeaderMsgID, e.ID)
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := h.js.PublishMsg(pctx, m)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("publish %s: %w", e.ID, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runScenario drives the traffic; disrupt runs between the two phases,
// right after the first outages became due.
func (h *harness) runScenario(t *testing.T, l int, disrupt func()) {
	t.Helper()
	// The fake clock must not jump past events not applied yet: a
	// reconnect still queued would not be seen in time (with the wall
	// clock, ingest latency is far below the grace). A unit has applied
	// its events once its consumer's ack floor reaches the last one's
	// sequence (the evaluator acks only what it applied).
	last := map[int]uint64{}
	h.publishTracked(t, l, last, scenarioPhase1(t))
	waitFor(t, "phase 1 applied", func() bool { return h.ackedUpTo(t, l, last) && h.drained(t, l) })
	h.clock.set(t0 + 40_000)
	disrupt()
	h.clock.set(t0 + 60_000)
	h.publishRetry(t, scenarioPhase2(t)...)
	h.clock.set(t0 + 90_000)
	h.checkExactlyOnce(t, l)
}

func TestLeaseFailoverExactlyOnce(t *testing.T) {
	for _, l := range []int{4, 8} {
		t.Run(fmt.Sprintf("L=%d", l), func(t *testing.T) {
			h := newHarness(t)
			srv := h.nc.ConnectedUrl()
			rs := []*replica{h.startReplica(t, srv, "r0", l), h.startReplica(t, srv, "r1", l), h.startReplica(t, srv, "r2", l)}
			waitOwned(t, l, rs...)
			h.runScenario(t, l, func() {
				victim := rs[1]
				lost := len(victim.svc.Owned())
				killed := time.Now()
				victim.kill(t)
				waitOwned(t, l, rs...)
				t.Logf("r1 (%d of %d units) killed; the others own every unit again %s later (lease ttl 2s)", lost, l, time.Since(killed).Round(10*time.Millisecond))
			})
		})
	}
}

func TestLeaseRestartAllAtOnce(t *testing.T) {
	const l = 4
	h := newHarness(t)
	srv := h.nc.ConnectedUrl()
	rs := []*replica{h.startReplica(t, srv, "r0", l), h.startReplica(t, srv, "r1", l), h.startReplica(t, srv, "r2", l)}
	waitOwned(t, l, rs...)
	h.runScenario(t, l, func() {
		for _, r := range rs {
			go r.kill(t)
		}
		waitFor(t, "replicas gone", func() bool { return owned(rs...) == 0 })
		rs = []*replica{h.startReplica(t, srv, "r0", l), h.startReplica(t, srv, "r1", l), h.startReplica(t, srv, "r2", l)}
		waitOwned(t, l, rs...)
	})
}

func TestLeaseScaleOneThreeOne(t *testing.T) {
	const l = 4
	h := newHarness(t)
	srv := h.nc.ConnectedUrl()
	r0 := h.startReplica(t, srv, "r0", l)
	waitOwned(t, l, r0)
	last := map[int]uint64{}
	h.publishTracked(t, l, last, scenarioPhase1(t)[:40])
	r1, r2 := h.startReplica(t, srv, "r1", l), h.startReplica(t, srv, "r2", l)
	waitFor(t, "units spread", func() bool { return len(r1.svc.Owned()) > 0 && len(r2.svc.Owned()) > 0 })
	h.publishTracked(t, l, last, scenarioPhase1(t)[40:])
	waitFor(t, "phase 1 applied", func() bool { return h.ackedUpTo(t, l, last) && h.drained(t, l) })
	h.clock.set(t0 + 40_000)
	r1.stop(t)
	r2.stop(t)
	waitOwned(t, l, r0)
	h.clock.set(t0 + 60_000)
	h.publish(t, scenarioPhase2(t)...)
	h.clock.set(t0 + 90_000)
	h.checkExactlyOnce(t, l)
}

// TestLeaseOneUnitIsTheSingleInstance: with L = 1 the replicas share the
// single-instance consumer and snapshot, and a standby takes over.
func TestLeaseOneUnitIsTheSingleInstance(t *testing.T) {
	h := newHarness(t)
	srv := h.nc.ConnectedUrl()
	rs := []*replica{h.startReplica(t, srv, "r0", 1), h.startReplica(t, srv, "r1", 1)}
	waitOwned(t, 1, rs...)
	h.runScenario(t, 1, func() {
		active := rs[0]
		if len(rs[1].svc.Owned()) == 1 {
			active = rs[1]
		}
		active.kill(t)
		waitOwned(t, 1, rs...)
	})
}

// TestLeaseNATSRestart: the (single, file-storage) NATS server restarts
// between the phases; the replicas reconnect, lose and regain their leases.
func TestLeaseNATSRestart(t *testing.T) {
	const l = 4
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	start := func() *server.Server {
		ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir,
			JetStreamMaxMemory: 1 << 40, JetStreamMaxStore: 1 << 40, NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server not ready")
		}
		return ns
	}
	ns := start()
	t.Cleanup(func() { ns.Shutdown() })
	url := ns.ClientURL()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.EnsureStreams(t.Context(), js, events.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	h := &harness{nc: nc, js: js, clock: &fakeClock{}}
	h.clock.set(t0)
	rs := []*replica{h.startReplica(t, url, "r0", l), h.startReplica(t, url, "r1", l)}
	waitOwned(t, l, rs...)
	h.runScenario(t, l, func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		time.Sleep(500 * time.Millisecond)
		ns = start()
		waitOwned(t, l, rs...)
	})
}

// TestLeaseOnThreeNodeCluster runs two replicas (L = 4) over a 3-node
// JetStream cluster where everything is R3 (the streams, the lease bucket,
// the silences and inventory buckets, the snapshot store), and stops a NATS
// node while presence events are being published: in phase 1 a node that
// does not lead PRESENCE; in phase 2, once it is back, the one that does
// (a stream leader election). The publisher retries like the ingest: every
// event must be acknowledged and stored once, and every expected
// notification must be in ALERTS exactly once.
func TestLeaseOnThreeNodeCluster(t *testing.T) {
	const l = 4
	c := natstest.StartCluster(t, 3)
	nc, js := c.Connect(t)
	topo := events.DefaultTopology()
	topo.Replicas = 3
	// R3 assets right after the cluster formed: placement can fail until
	// every peer reported in.
	natstest.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		err := events.EnsureStreams(ctx, js, topo)
		if err != nil {
			t.Logf("ensure streams, will retry: %v", err)
		}
		return err == nil
	})
	h := &harness{nc: nc, js: js, clock: &fakeClock{}, topo: topo}
	h.clock.set(t0)
	rs := []*replica{h.startReplica(t, c.URLs(), "r0", l), h.startReplica(t, c.URLs(), "r1", l)}
	waitOwned(t, l, rs...)

	// publishStopping publishes es from another goroutine and stops node
	// victim() once a third of them are acknowledged; it returns the node.
	publishStopping := func(es []events.PresenceEvent, victim func() int) int {
		t.Helper()
		var acked atomic.Int64
		done := make(chan error, 1)
		go func() {
			for _, e := range es {
				if err := h.publishAcked(t.Context(), e); err != nil {
					done <- err
					return
				}
				acked.Add(1)
				time.Sleep(10 * time.Millisecond) // paced, so that the stop comes mid-stream
			}
			done <- nil
		}()
		natstest.Eventually(t, 20*time.Second, func() bool { return acked.Load() >= int64(len(es)/3) })
		node := victim()
		c.Stop(node)
		t.Logf("stopped node %d after %d of %d events acknowledged", node, acked.Load(), len(es))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return node
	}
	leader := func() int {
		var n int
		natstest.Eventually(t, 10*time.Second, func() bool { n = c.StreamLeader(events.StreamPresence); return n >= 0 })
		return n
	}

	phase1, phase2 := scenarioPhase1(t), scenarioPhase2(t)
	stopped := publishStopping(phase1, func() int { return (leader() + 1) % c.Size() })
	began := time.Now()
	h.waitDrained(t, l, "phase 1 applied")
	t.Logf("phase 1 applied %s after the stop", time.Since(began).Round(10*time.Millisecond))
	h.clock.set(t0 + 40_000)
	c.Restart(stopped)
	h.clock.set(t0 + 60_000)
	old := publishStopping(phase2, leader)
	t.Logf("PRESENCE leader: node %d, was node %d", leader(), old)
	began = time.Now()
	h.waitDrained(t, l, "phase 2 applied")
	t.Logf("phase 2 applied %s after publishing", time.Since(began).Round(10*time.Millisecond))
	h.clock.set(t0 + 90_000)
	h.checkExactlyOnce(t, l)

	// No event lost, none stored twice.
	ids := map[string]int{}
	for _, m := range h.streamMsgs(t, events.StreamPresence) {
		ids[m.Header.Get(events.HeaderMsgID)]++
	}
	for _, e := range append(phase1, phase2...) {
		if ids[e.ID] != 1 {
			t.Errorf("event %s stored %d times in PRESENCE, want 1", e.ID, ids[e.ID])
		}
	}
	if len(ids) != len(phase1)+len(phase2) {
		t.Errorf("PRESENCE holds %d distinct events, want %d", len(ids), len(phase1)+len(phase2))
	}
}

// waitDrained waits until every unit's consumer is drained, for at most
// 40s: a node stop can stall a replica's processing goroutine for up to
// the snapshot timeout (30s), see TestLeaseOnThreeNodeCluster. On timeout
// it reports the consumers' state.
func (h *harness) waitDrained(t *testing.T, l int, what string) {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for !h.drained(t, l) {
		if time.Now().After(deadline) {
			for u := range l {
				name := fmt.Sprintf("%s-l%dof%d", events.ConsumerEvaluator, u, l)
				c, err := h.js.Consumer(t.Context(), events.StreamPresence, name)
				if err != nil {
					t.Logf("consumer %s: %v", name, err)
					continue
				}
				info, err := c.Info(t.Context())
				if err != nil {
					t.Logf("consumer %s: %v", name, err)
					continue
				}
				t.Logf("consumer %s: pending %d, ack pending %d, waiting pulls %d, leader %s, delivered %d, ack floor %d", name,
					info.NumPending, info.NumAckPending, info.NumWaiting, info.Cluster.Leader, info.Delivered.Stream, info.AckFloor.Stream)
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
