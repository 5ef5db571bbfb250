// Package telemetrytest reads what a stage recorded, for tests: metric
// values from a manual reader, and logs from a buffer.
package telemetrytest

import (
	"bytes"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Int64s returns the int64 sums and gauges of the metric name, added up by
// the value of the attribute attr ("" for points without it).
func Int64s(t testing.TB, r *sdkmetric.ManualReader, name, attr string) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			var points []metricdata.DataPoint[int64]
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				points = d.DataPoints
			case metricdata.Gauge[int64]:
				points = d.DataPoints
			}
			for _, p := range points {
				v, _ := p.Attributes.Value(attribute.Key(attr))
				out[v.AsString()] += p.Value
			}
		}
	}
	return out
}

// Total returns the int64 sums and gauges of the metric name, added up over
// every point.
func Total(t testing.TB, r *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	var total int64
	for _, v := range Int64s(t, r, name, "") {
		total += v
	}
	return total
}

// LogBuffer is a log sink safe for concurrent writes.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
