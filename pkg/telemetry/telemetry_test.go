package telemetry

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
)

func TestSetupExportsMetricsAndPropagatesTraceContext(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	p, err := Setup(t.Context(), Config{ServiceName: "fleetwatch-test"})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })

	counter, err := p.MeterProvider.Meter("test").Int64Counter("fleetwatch_test_things")
	if err != nil {
		t.Fatal(err)
	}
	counter.Add(t.Context(), 3)
	rec := httptest.NewRecorder()
	p.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if !strings.Contains(string(body), "fleetwatch_test_things_total") || !strings.Contains(string(body), `service_name="fleetwatch-test"`) {
		t.Fatalf("metrics output lacks the counter or service name:\n%s", body)
	}

	ctx, span := p.TracerProvider.Tracer("test").Start(t.Context(), "publish")
	defer span.End()
	msg := nats.NewMsg("x")
	Inject(ctx, msg)
	if msg.Header.Get("traceparent") == "" {
		t.Fatal("Inject wrote no traceparent header")
	}
	got := trace.SpanContextFromContext(Extract(context.Background(), msg.Header))
	if got.TraceID() != span.SpanContext().TraceID() {
		t.Fatalf("extracted trace id %s, want %s", got.TraceID(), span.SpanContext().TraceID())
	}
}

func TestSetupRejectsEmptyServiceName(t *testing.T) {
	_, err := Setup(t.Context(), Config{})
	if err == nil || !strings.Contains(err.Error(), "telemetry.service_name is empty") {
		t.Fatalf("err = %v, want the service_name message", err)
	}
}

func TestWithScheme(t *testing.T) {
	for in, want := range map[string]string{
		"collector:4318":        "https://collector:4318",
		"http://collector:4318": "http://collector:4318",
		"https://c:4318/v1":     "https://c:4318/v1",
	} {
		if got := withScheme(in, false); got != want {
			t.Errorf("withScheme(%q) = %q, want %q", in, got, want)
		}
	}
	if got := withScheme("c:4318", true); got != "http://c:4318" {
		t.Errorf("insecure: got %q", got)
	}
}
