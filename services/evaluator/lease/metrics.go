package lease

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are the lease manager's instruments.
type metrics struct {
	renewals     metric.Int64Counter
	acquisitions metric.Int64Counter
	releases     metric.Int64Counter
	losses       metric.Int64Counter
}

// Outcomes of renewals and acquisitions.
var (
	outcomeOK     = metric.WithAttributes(attribute.String("outcome", "ok"))
	outcomeFailed = metric.WithAttributes(attribute.String("outcome", "failed"))
	outcomeLost   = metric.WithAttributes(attribute.String("outcome", "lost"))
)

func reasonAttrs(r Reason) attribute.Set {
	return attribute.NewSet(attribute.String("reason", r.String()))
}

func newMetrics(mp metric.MeterProvider, m *Manager) (*metrics, error) {
	meter := mp.Meter("github.com/fleetwatch/fleetwatch/services/evaluator/lease")
	var (
		out metrics
		err error
	)
	if out.renewals, err = meter.Int64Counter("fleetwatch_evaluator_lease_renewals",
		metric.WithDescription("Partition lease renewals, by outcome (ok; failed: no answer or an error, retried until the lease runs out; lost: the lease expired or was taken over).")); err != nil {
		return nil, fmt.Errorf("metric lease_renewals: %w", err)
	}
	if out.acquisitions, err = meter.Int64Counter("fleetwatch_evaluator_lease_acquisitions",
		metric.WithDescription("Partitions claimed and acquired, by outcome of the evaluator's Acquire (ok, failed).")); err != nil {
		return nil, fmt.Errorf("metric lease_acquisitions: %w", err)
	}
	if out.releases, err = meter.Int64Counter("fleetwatch_evaluator_lease_releases",
		metric.WithDescription("Partitions released, by reason (rebalance, shutdown, lost).")); err != nil {
		return nil, fmt.Errorf("metric lease_releases: %w", err)
	}
	if out.losses, err = meter.Int64Counter("fleetwatch_evaluator_lease_losses",
		metric.WithDescription("Partition leases lost: not renewed in time or found taken over; processing of the partition was stopped.")); err != nil {
		return nil, fmt.Errorf("metric lease_losses: %w", err)
	}
	if _, err = meter.Int64ObservableGauge("fleetwatch_evaluator_partitions_owned",
		metric.WithDescription("Partitions this replica processes."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(len(m.Owned())))
			return nil
		})); err != nil {
		return nil, fmt.Errorf("metric partitions_owned: %w", err)
	}
	if _, err = meter.Int64ObservableGauge("fleetwatch_evaluator_lease_members",
		metric.WithDescription("Live evaluator replicas seen in the lease bucket, this one included."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(len(m.Members())))
			return nil
		})); err != nil {
		return nil, fmt.Errorf("metric lease_members: %w", err)
	}
	return &out, nil
}
