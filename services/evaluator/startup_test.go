package evaluator_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// TestStartupMisconfigurationFailsAtOnce: R3 buckets on a server that is
// not clustered is a permanent misconfiguration: Run must fail at once with
// the server's reason, not retry it like a cluster that is still forming.
func TestStartupMisconfigurationFailsAtOnce(t *testing.T) {
	h := newHarness(t)
	topo := events.DefaultTopology()
	topo.Replicas = 3
	svc, err := evaluator.New(testConfig("ops"), evaluator.Deps{
		NATS:           h.nc,
		Logger:         slog.New(slog.NewTextHandler(t.Output(), nil)),
		TracerProvider: sdktrace.NewTracerProvider(),
		MeterProvider:  sdkmetric.NewMeterProvider(),
		Now:            h.clock.Now,
		Topology:       topo,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err = svc.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "create or update kv bucket fleetwatch_silences") ||
		!strings.Contains(err.Error(), "replicas > 1 not supported in non-clustered mode") {
		t.Fatalf("Run: %v: want the silences bucket's placement error", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Run retried a permanent error until its context ended")
	}
}
