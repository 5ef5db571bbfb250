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
	svc, err := evaluator.New(leaseConfig(name, l), evaluator.Deps{
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
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			m := nats.NewMsg(events.PresenceSubject(e.DeviceID, events.DefaultPartitions))
			m.Data = data
			m.Header.Set(events.HeaderMsgID, e.ID)
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			_, err := h.js.PublishMsg(ctx, m)
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("publish %s: %v", e.ID, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// runScenario drives the traffic; disrupt runs between the two phases,
// right after the first outages became due.
func (h *harness) runScenario(t *testing.T, l int, disrupt func()) {
	t.Helper()
	h.publish(t, scenarioPhase1(t)...)
	// The fake clock must not jump past events not applied yet: a
	// reconnect still queued would not be seen in time (with the wall
	// clock, ingest latency is far below the grace).
	waitFor(t, "phase 1 applied", func() bool { return h.drained(t, l) })
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
	h.publish(t, scenarioPhase1(t)[:40]...)
	r1, r2 := h.startReplica(t, srv, "r1", l), h.startReplica(t, srv, "r2", l)
	waitFor(t, "units spread", func() bool { return len(r1.svc.Owned()) > 0 && len(r2.svc.Owned()) > 0 })
	h.publish(t, scenarioPhase1(t)[40:]...)
	waitFor(t, "phase 1 applied", func() bool { return h.drained(t, l) })
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
