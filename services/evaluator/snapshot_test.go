package evaluator_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry/telemetrytest"
	"github.com/fleetwatch/fleetwatch/services/evaluator"
	"github.com/fleetwatch/fleetwatch/services/evaluator/snapshotstore"
	"github.com/nats-io/nats.go/jetstream"
)

// snapshotScenario runs the same history through an evaluator, calling
// between its two halves mid, which either lets the evaluator run on or
// restarts it (and returns the running one). The second half's presence
// events are published inside mid. It returns the alerts stored.
func snapshotScenario(t *testing.T, mid func(h *harness, r *running, cfg evaluator.Config, tail []events.PresenceEvent) *running) []events.AlertEvent {
	return snapshotScenario2(t, nil, mid)
}

// snapshotScenario2 is snapshotScenario with a hook early, after the first
// alerts, that may restart the evaluator too.
func snapshotScenario2(t *testing.T, early func(h *harness, r *running, cfg evaluator.Config) *running,
	mid func(h *harness, r *running, cfg evaluator.Config, tail []events.PresenceEvent) *running) []events.AlertEvent {
	h := newHarness(t)
	cfg := testConfig("ops", "oncall")
	cfg.SnapshotInterval = time.Hour // only the one at shutdown
	r := h.start(t, cfg)
	var es []events.PresenceEvent
	for _, d := range []string{"d1", "d2", "d3", "d4", "d5"} {
		es = append(es, connected(t, d, "n1", t0))
	}
	es = append(es, disconnected(t, "d1", "n1", t0, t0+1_000, events.ReasonKeepaliveTimeout),
		disconnected(t, "d2", "n1", t0, t0+2_000, events.ReasonKeepaliveTimeout))
	h.waitProcessed(t, h.publish(t, es...))
	h.clock.set(t0 + 40_000)
	h.waitAlerts(t, 4)
	if early != nil {
		r = early(h, r, cfg)
	}
	h.waitProcessed(t, h.publish(t, disconnected(t, "d3", "n1", t0, t0+41_000, events.ReasonClosed), connected(t, "d1", "n1", t0+45_000)))
	h.waitAlerts(t, 6)

	tail := []events.PresenceEvent{connected(t, "d2", "n1", t0+50_000),
		disconnected(t, "d4", "n1", t0, t0+51_000, events.ReasonClosed), disconnected(t, "d5", "n1", t0, t0+52_000, events.ReasonClosed)}
	r = mid(h, r, cfg, tail)
	h.waitAlerts(t, 8) // d2 back
	h.clock.set(t0 + 100_000)
	h.waitAlerts(t, 14) // d3, d4, d5 fire
	h.waitTicks(t, 3)
	var out []events.AlertEvent
	for _, a := range h.wantAlerts(t, 14) {
		out = append(out, a.alert)
	}
	r.stop()
	return out
}

func alertsJSON(t *testing.T, as []events.AlertEvent) string {
	t.Helper()
	b, err := json.MarshalIndent(as, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRestartFromSnapshot: an evaluator stopped cleanly writes a snapshot;
// the next one loads it and replays only the presence events published
// after it, and the alerts are exactly those of an evaluator that never
// stopped. A corrupt snapshot is ignored: full replay, the same alerts.
func TestRestartFromSnapshot(t *testing.T) {
	want := snapshotScenario(t, func(h *harness, r *running, _ evaluator.Config, tail []events.PresenceEvent) *running {
		h.waitProcessed(t, h.publish(t, tail...))
		return r
	})

	got := snapshotScenario(t, func(h *harness, r *running, cfg evaluator.Config, tail []events.PresenceEvent) *running {
		r.stop()
		if n := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_snapshots", "outcome"); n["written"] != 1 || n["failed"] != 0 {
			t.Fatalf("snapshots at shutdown %v", n)
		}
		if n := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_snapshot_bytes", ""); n[""] <= 0 {
			t.Fatalf("snapshot bytes %v", n)
		}
		st, err := snapshotstore.Open(t.Context(), h.js, snapshotstore.DefaultBucket, 1, false)
		if err != nil {
			t.Fatal(err)
		}
		snap, _, ok, err := st.Get(t.Context(), snapshotstore.KeyAll)
		if err != nil || !ok || snap.PresenceSeq != 9 || snap.AlertsSeq != 6 || snap.Partitions != events.DefaultPartitions {
			t.Fatalf("stored snapshot: ok %v err %v seqs %d %d", ok, err, snap.PresenceSeq, snap.AlertsSeq)
		}
		h.publish(t, tail...)
		r = h.start(t, cfg)
		if n := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_replayed_events", ""); n[""] != int64(len(tail)) {
			t.Fatalf("replayed %v, want the %d events of the tail", n, len(tail))
		}
		return r
	})
	if a, b := alertsJSON(t, got), alertsJSON(t, want); a != b {
		t.Fatalf("alerts with a restart from a snapshot:\n%s\nwithout:\n%s", a, b)
	}

	got = snapshotScenario(t, func(h *harness, r *running, cfg evaluator.Config, tail []events.PresenceEvent) *running {
		r.stop()
		obs, err := h.js.ObjectStore(t.Context(), snapshotstore.DefaultBucket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := obs.PutBytes(t.Context(), snapshotstore.KeyAll, []byte("FWES\x01garbage")); err != nil {
			t.Fatal(err)
		}
		h.publish(t, tail...)
		r = h.start(t, cfg)
		if n := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_replayed_events", ""); n[""] != 9+int64(len(tail)) {
			t.Fatalf("replayed %v, want every event", n)
		}
		return r
	})
	if a, b := alertsJSON(t, got), alertsJSON(t, want); a != b {
		t.Fatalf("alerts with a corrupt snapshot:\n%s\nwithout a restart:\n%s", a, b)
	}

	// A crash: the evaluator went on after the snapshot it restarts from
	// (alerts published, events acked), and wrote no other.
	var older []byte
	objects := func(h *harness) interface {
		GetBytes(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) ([]byte, error)
		PutBytes(ctx context.Context, name string, data []byte) (*jetstream.ObjectInfo, error)
	} {
		obs, err := h.js.ObjectStore(t.Context(), snapshotstore.DefaultBucket)
		if err != nil {
			t.Fatal(err)
		}
		return obs
	}
	got = snapshotScenario2(t, func(h *harness, r *running, cfg evaluator.Config) *running {
		r.stop()
		var err error
		if older, err = objects(h).GetBytes(t.Context(), snapshotstore.KeyAll); err != nil {
			t.Fatal(err)
		}
		return h.start(t, cfg)
	}, func(h *harness, r *running, cfg evaluator.Config, tail []events.PresenceEvent) *running {
		r.stop()
		if _, err := objects(h).PutBytes(t.Context(), snapshotstore.KeyAll, older); err != nil {
			t.Fatal(err)
		}
		h.publish(t, tail...)
		r = h.start(t, cfg)
		if n := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_replayed_events", ""); n[""] != 2+int64(len(tail)) {
			t.Fatalf("replayed %v, want the 2 events after the older snapshot and the tail", n)
		}
		return r
	})
	if a, b := alertsJSON(t, got), alertsJSON(t, want); a != b {
		t.Fatalf("alerts with a restart from an older snapshot:\n%s\nwithout a restart:\n%s", a, b)
	}
}

// TestPeriodicSnapshot: a running evaluator writes snapshots at its
// interval, covering what it applied and published.
func TestPeriodicSnapshot(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig("ops")
	cfg.SnapshotInterval = time.Second
	r := h.start(t, cfg)
	seq := h.publish(t, connected(t, "d1", "n1", t0), disconnected(t, "d1", "n1", t0, t0+1_000, events.ReasonClosed))
	h.waitProcessed(t, seq)
	h.clock.set(t0 + 40_000)
	h.waitAlerts(t, 1)
	st, err := snapshotstore.Open(t.Context(), h.js, snapshotstore.DefaultBucket, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a snapshot covering the alert", func() bool {
		snap, _, ok, err := st.Get(t.Context(), snapshotstore.KeyAll)
		if err != nil {
			t.Fatal(err)
		}
		return ok && snap.PresenceSeq == seq && snap.AlertsSeq == 1
	})
	if n := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_snapshots", "outcome"); n["written"] < 1 || n["failed"] != 0 {
		t.Fatalf("snapshots %v", n)
	}
}
