package notifier

import (
	"context"
	"fmt"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are the notifier's instruments.
type metrics struct {
	deliveries metric.Int64Counter
	latency    metric.Float64Histogram
	alerts     metric.Int64Counter
	digests    metric.Int64Counter
	folded     metric.Int64Counter
	holding    metric.Int64UpDownCounter
	escalated  metric.Int64Counter
}

func newMetrics(mp metric.MeterProvider) (metrics, error) {
	m := mp.Meter("github.com/fleetwatch/fleetwatch/services/notifier")
	var (
		ms  metrics
		err error
	)
	if ms.deliveries, err = m.Int64Counter("fleetwatch_notifier_deliveries_total",
		metric.WithDescription("Delivery attempts by receiver, channel and outcome (delivered, retryable, rate_limited, permanent).")); err != nil {
		return ms, fmt.Errorf("notifier metrics: %w", err)
	}
	if ms.latency, err = m.Float64Histogram("fleetwatch_notifier_delivery_duration_seconds",
		metric.WithDescription("Duration of delivery attempts that reached the chat service."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20)); err != nil {
		return ms, fmt.Errorf("notifier metrics: %w", err)
	}
	if ms.alerts, err = m.Int64Counter("fleetwatch_notifier_alerts_total",
		metric.WithDescription("Alerts finished by result: delivered, permanent, duplicate, silenced, inhibited, unknown_receiver, deadletter.")); err != nil {
		return ms, fmt.Errorf("notifier metrics: %w", err)
	}
	if ms.digests, err = m.Int64Counter("fleetwatch_notifier_digests_total",
		metric.WithDescription("Digest messages delivered by receiver (a receiver's budget was short).")); err != nil {
		return ms, fmt.Errorf("notifier metrics: %w", err)
	}
	if ms.folded, err = m.Int64Counter("fleetwatch_notifier_folded_alerts_total",
		metric.WithDescription("Alerts delivered inside a digest, by receiver.")); err != nil {
		return ms, fmt.Errorf("notifier metrics: %w", err)
	}
	if ms.holding, err = m.Int64UpDownCounter("fleetwatch_notifier_held_alerts",
		metric.WithDescription("Alerts held for a receiver, waiting for its budget, a digest or a retry.")); err != nil {
		return ms, fmt.Errorf("notifier metrics: %w", err)
	}
	if ms.escalated, err = m.Int64Counter("fleetwatch_notifier_escalations_total",
		metric.WithDescription("Escalation copies published by a receiver's chain, by target receiver and status (firing, resolved).")); err != nil {
		return ms, fmt.Errorf("notifier metrics: %w", err)
	}
	return ms, nil
}

func (m metrics) delivery(ctx context.Context, receiver, channel string, r notify.Result) {
	attrs := metric.WithAttributes(attribute.String("receiver", receiver), attribute.String("channel", channel),
		attribute.String("outcome", string(r.Outcome)))
	m.deliveries.Add(ctx, 1, attrs)
	if r.Latency > 0 {
		m.latency.Record(ctx, r.Latency.Seconds(), metric.WithAttributes(attribute.String("channel", channel),
			attribute.String("outcome", string(r.Outcome))))
	}
}

func (m metrics) alert(ctx context.Context, result string) {
	m.alerts.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result)))
}

func alertResult(o events.Outcome) metric.AddOption {
	return metric.WithAttributes(attribute.String("result", string(o)))
}

func (m metrics) digest(ctx context.Context, receiver string, alerts int) {
	attrs := metric.WithAttributes(attribute.String("receiver", receiver))
	m.digests.Add(ctx, 1, attrs)
	m.folded.Add(ctx, int64(alerts), attrs)
}

func (m metrics) held(ctx context.Context, receiver string, n int) {
	m.holding.Add(ctx, int64(n), metric.WithAttributes(attribute.String("receiver", receiver)))
}

func (m metrics) escalation(ctx context.Context, receiver string, status events.AlertStatus) {
	m.escalated.Add(ctx, 1, metric.WithAttributes(attribute.String("receiver", receiver), attribute.String("status", string(status))))
}
