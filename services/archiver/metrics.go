package archiver

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are the archiver's instruments. Every one has a table attribute.
type metrics struct {
	rows         metric.Int64Counter
	batchSeconds metric.Float64Histogram
	insertErrors metric.Int64Counter
	deadLetters  metric.Int64Counter
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	m := mp.Meter("github.com/fleetwatch/fleetwatch/services/archiver")
	var (
		out metrics
		err error
	)
	if out.rows, err = m.Int64Counter("fleetwatch_archiver_rows_total",
		metric.WithDescription("Rows inserted into ClickHouse (and then acked), per table.")); err != nil {
		return nil, err
	}
	if out.batchSeconds, err = m.Float64Histogram("fleetwatch_archiver_batch_duration_seconds",
		metric.WithDescription("Duration of one INSERT attempt of a batch, per table and outcome (ok, error)."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)); err != nil {
		return nil, err
	}
	if out.insertErrors, err = m.Int64Counter("fleetwatch_archiver_insert_errors_total",
		metric.WithDescription("Failed INSERT attempts, per table; the batch is retried.")); err != nil {
		return nil, err
	}
	if out.deadLetters, err = m.Int64Counter("fleetwatch_archiver_deadletters_total",
		metric.WithDescription("Messages that could not be archived and went to DEADLETTER, per table.")); err != nil {
		return nil, err
	}
	return &out, nil
}

func (m *metrics) insert(ctx context.Context, table string, d time.Duration, rows int, err error) {
	t := attribute.String("table", table)
	if err != nil {
		m.insertErrors.Add(ctx, 1, metric.WithAttributes(t))
		m.batchSeconds.Record(ctx, d.Seconds(), metric.WithAttributes(t, attribute.String("outcome", "error")))
		return
	}
	m.batchSeconds.Record(ctx, d.Seconds(), metric.WithAttributes(t, attribute.String("outcome", "ok")))
	m.rows.Add(ctx, int64(rows), metric.WithAttributes(t))
}

func (m *metrics) deadLetter(ctx context.Context, table string) {
	m.deadLetters.Add(ctx, 1, metric.WithAttributes(attribute.String("table", table)))
}
