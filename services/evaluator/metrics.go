package evaluator

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are the evaluator's instruments.
type metrics struct {
	events    metric.Int64Counter
	decisions metric.Int64Counter
	blips     metric.Int64Counter
	reloads   metric.Int64Counter
	// silencesExpired counts expire_when_resolved silences deleted.
	silencesExpired metric.Int64Counter
	// snapshots counts snapshots by outcome; snapshotSeconds times their
	// phases (take, put, restore); replayed counts the PRESENCE events
	// replayed at start-up.
	snapshots       metric.Int64Counter
	snapshotSeconds metric.Float64Histogram
	replayed        metric.Int64Counter
}

// Event outcomes.
var (
	outcomeApplied      = metric.WithAttributes(attribute.String("outcome", "applied"))
	outcomeStale        = metric.WithAttributes(attribute.String("outcome", "stale"))
	outcomeDuplicate    = metric.WithAttributes(attribute.String("outcome", "duplicate"))
	outcomeInvalid      = metric.WithAttributes(attribute.String("outcome", "invalid"))
	outcomeDeadLettered = metric.WithAttributes(attribute.String("outcome", "dead_lettered"))
)

func newMetrics(mp metric.MeterProvider, devices, snapBytes *atomic.Int64, units *unitStats) (*metrics, error) {
	m := mp.Meter("github.com/fleetwatch/fleetwatch/services/evaluator")
	var (
		out metrics
		err error
	)
	if out.events, err = m.Int64Counter("fleetwatch_evaluator_events",
		metric.WithDescription("Presence events consumed, by outcome (applied, stale, duplicate, invalid, dead_lettered).")); err != nil {
		return nil, fmt.Errorf("metric events: %w", err)
	}
	if out.decisions, err = m.Int64Counter("fleetwatch_evaluator_decisions",
		metric.WithDescription("Alerts published to ALERTS, by status and receiver.")); err != nil {
		return nil, fmt.Errorf("metric decisions: %w", err)
	}
	if out.blips, err = m.Int64Counter("fleetwatch_evaluator_blips",
		metric.WithDescription("Outages that ended within the grace period (no alert).")); err != nil {
		return nil, fmt.Errorf("metric blips: %w", err)
	}
	if out.reloads, err = m.Int64Counter("fleetwatch_evaluator_reloads",
		metric.WithDescription("Configs reloaded (SIGHUP) and applied.")); err != nil {
		return nil, fmt.Errorf("metric reloads: %w", err)
	}
	if out.silencesExpired, err = m.Int64Counter("fleetwatch_evaluator_silences_expired",
		metric.WithDescription("Silences with expire_when_resolved deleted once everything they matched recovered.")); err != nil {
		return nil, fmt.Errorf("metric silences_expired: %w", err)
	}
	if out.snapshots, err = m.Int64Counter("fleetwatch_evaluator_snapshots",
		metric.WithDescription("State snapshots taken, by outcome (written, failed).")); err != nil {
		return nil, fmt.Errorf("metric snapshots: %w", err)
	}
	if out.snapshotSeconds, err = m.Float64Histogram("fleetwatch_evaluator_snapshot_duration_seconds", metric.WithUnit("s"),
		metric.WithDescription("Time to take a snapshot (on the processing goroutine), put it in the bucket, or restore it at start-up, by phase.")); err != nil {
		return nil, fmt.Errorf("metric snapshot_duration: %w", err)
	}
	if out.replayed, err = m.Int64Counter("fleetwatch_evaluator_replayed_events",
		metric.WithDescription("PRESENCE events replayed at start-up (after the snapshot's sequence, or all).")); err != nil {
		return nil, fmt.Errorf("metric replayed_events: %w", err)
	}
	if _, err = m.Int64ObservableGauge("fleetwatch_evaluator_snapshot_bytes",
		metric.WithDescription("Size of the last snapshot written."), metric.WithUnit("By"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(snapBytes.Load())
			return nil
		})); err != nil {
		return nil, fmt.Errorf("metric snapshot_bytes: %w", err)
	}
	if _, err = m.Int64ObservableGauge("fleetwatch_evaluator_devices",
		metric.WithDescription("Devices tracked."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(devices.Load())
			return nil
		})); err != nil {
		return nil, fmt.Errorf("metric devices: %w", err)
	}
	// Per ownership unit ("all", or "l<l>of<L>" with lease partitions),
	// for the units this replica owns.
	if _, err = m.Int64ObservableGauge("fleetwatch_evaluator_unit_consumer_pending",
		metric.WithDescription("Messages the unit's durable consumer has not delivered yet (num_pending at the last fetch): the consumer lag."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			units.each(func(name string, st unitStat) {
				o.Observe(int64(st.pending), metric.WithAttributes(attribute.String("unit", name)))
			})
			return nil
		})); err != nil {
		return nil, fmt.Errorf("metric unit_consumer_pending: %w", err)
	}
	if _, err = m.Int64ObservableGauge("fleetwatch_evaluator_unit_snapshot_bytes",
		metric.WithDescription("Size of the unit's last snapshot written by this replica."), metric.WithUnit("By"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			units.each(func(name string, st unitStat) {
				if !st.snapWritten.IsZero() {
					o.Observe(st.snapBytes, metric.WithAttributes(attribute.String("unit", name)))
				}
			})
			return nil
		})); err != nil {
		return nil, fmt.Errorf("metric unit_snapshot_bytes: %w", err)
	}
	if _, err = m.Float64ObservableGauge("fleetwatch_evaluator_unit_snapshot_age_seconds", metric.WithUnit("s"),
		metric.WithDescription("Time since this replica last wrote the unit's snapshot."),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			units.each(func(name string, st unitStat) {
				if !st.snapWritten.IsZero() {
					o.Observe(time.Since(st.snapWritten).Seconds(), metric.WithAttributes(attribute.String("unit", name)))
				}
			})
			return nil
		})); err != nil {
		return nil, fmt.Errorf("metric unit_snapshot_age: %w", err)
	}
	return &out, nil
}

// countApplied adds what the tracker did between two snapshots of its stats.
func (m *metrics) countApplied(ctx context.Context, before, after tracker.Stats) {
	stale := after.Stale - before.Stale
	dup := after.Duplicates - before.Duplicates
	inv := after.Invalid - before.Invalid
	applied := after.Events - before.Events - stale - dup - inv
	for _, c := range []struct {
		n   uint64
		opt metric.AddOption
	}{{applied, outcomeApplied}, {stale, outcomeStale}, {dup, outcomeDuplicate}, {inv, outcomeInvalid}} {
		if c.n > 0 {
			m.events.Add(ctx, int64(c.n), c.opt)
		}
	}
	if b := after.Blips - before.Blips; b > 0 {
		m.blips.Add(ctx, int64(b))
	}
}
