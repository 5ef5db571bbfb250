package ingest

import (
	"fmt"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are the stage's counters (exported as
// fleetwatch_ingest_*_total by the Prometheus exporter).
type metrics struct {
	received      metric.Int64Counter
	events        metric.Int64Counter
	publishErrors metric.Int64Counter
	inFlight      metric.Int64UpDownCounter
	nodes         metric.Int64Counter
	reconciled    metric.Int64Counter

	// outcomes holds the attribute set of every outcome of every source,
	// built in newMetrics and only read afterwards (a sync.Map lookup
	// would allocate its interface key at every event).
	outcomes map[outcomeKey]metric.AddOption
	attrs    sync.Map // outcomeKey → metric.AddOption of any other pair
}

type outcomeKey struct{ outcome, source string }

func newMetrics(m metric.Meter) (*metrics, error) {
	var out metrics
	var err error
	if out.received, err = m.Int64Counter("fleetwatch_ingest_received",
		metric.WithDescription("MQTT messages received from the broker")); err != nil {
		return nil, fmt.Errorf("ingest metrics: %w", err)
	}
	if out.events, err = m.Int64Counter("fleetwatch_ingest_events",
		metric.WithDescription("Inputs by source and outcome: published, duplicate (JetStream had the id), deadlettered, ignored (not presence)")); err != nil {
		return nil, fmt.Errorf("ingest metrics: %w", err)
	}
	if out.publishErrors, err = m.Int64Counter("fleetwatch_ingest_publish_errors",
		metric.WithDescription("Failed JetStream publish attempts (each is retried; the MQTT message stays unacknowledged)")); err != nil {
		return nil, fmt.Errorf("ingest metrics: %w", err)
	}
	if out.inFlight, err = m.Int64UpDownCounter("fleetwatch_ingest_in_flight",
		metric.WithDescription("Inputs received and not yet acknowledged (bounded by ingest.max_in_flight; beyond it the broker keeps them)")); err != nil {
		return nil, fmt.Errorf("ingest metrics: %w", err)
	}
	if out.nodes, err = m.Int64Counter("fleetwatch_ingest_node_changes",
		metric.WithDescription("Broker nodes that went silent or came back, by kind")); err != nil {
		return nil, fmt.Errorf("ingest metrics: %w", err)
	}
	if out.reconciled, err = m.Int64Counter("fleetwatch_ingest_reconciled",
		metric.WithDescription("Corrective events emitted by reconciliation against the EMQX REST API, by kind")); err != nil {
		return nil, fmt.Errorf("ingest metrics: %w", err)
	}
	out.outcomes = make(map[outcomeKey]metric.AddOption)
	for _, source := range []string{SourceEMQXSys, SourceEMQXRule, SourceAWSIoT, SourceLastWill, SourceSparkplug, SourceEMQXWebhook, SourceUnrouted} {
		for _, outcome := range []string{outcomePublished, outcomeDuplicate, outcomeDeadLettered, outcomeIgnored} {
			out.outcomes[outcomeKey{outcome, source}] = outcomeAttrs(outcome, source)
		}
	}
	return &out, nil
}

// outcome is the attribute set of fleetwatch_ingest_events for one outcome
// and source, built once: the hot path adds without allocating.
func (m *metrics) outcome(outcome, source string) metric.AddOption {
	k := outcomeKey{outcome, source}
	if o, ok := m.outcomes[k]; ok {
		return o
	}
	if o, ok := m.attrs.Load(k); ok {
		return o.(metric.AddOption)
	}
	o, _ := m.attrs.LoadOrStore(k, outcomeAttrs(outcome, source))
	return o.(metric.AddOption)
}

func outcomeAttrs(outcome, source string) metric.AddOption {
	return metric.WithAttributes(attribute.String("outcome", outcome), attribute.String("source", source))
}
