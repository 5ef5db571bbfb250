package ingest

import (
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are the stage's counters (exported as
// fleetwatch_ingest_*_total by the Prometheus exporter).
type metrics struct {
	received      metric.Int64Counter
	events        metric.Int64Counter
	publishErrors metric.Int64Counter
}

func newMetrics(m metric.Meter) (*metrics, error) {
	var out metrics
	var err error
	if out.received, err = m.Int64Counter("fleetwatch_ingest_received",
		metric.WithDescription("MQTT messages received from the broker")); err != nil {
		return nil, fmt.Errorf("ingest metrics: %w", err)
	}
	if out.events, err = m.Int64Counter("fleetwatch_ingest_events",
		metric.WithDescription("Inputs stored, by outcome: published, duplicate (JetStream had the id), deadlettered")); err != nil {
		return nil, fmt.Errorf("ingest metrics: %w", err)
	}
	if out.publishErrors, err = m.Int64Counter("fleetwatch_ingest_publish_errors",
		metric.WithDescription("Failed JetStream publish attempts (each is retried; the MQTT message stays unacknowledged)")); err != nil {
		return nil, fmt.Errorf("ingest metrics: %w", err)
	}
	return &out, nil
}

func outcomeAttr(outcome string) metric.AddOption {
	return metric.WithAttributes(attribute.String("outcome", outcome))
}
