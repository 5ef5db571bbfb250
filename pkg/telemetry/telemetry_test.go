package telemetry

import (
	"context"
	"io"
	"net/http"
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
	if span.IsRecording() {
		t.Error("span is recorded with no exporter: nothing would read it")
	}
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

func TestTraceSampleRatio(t *testing.T) {
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
	defer collector.Close()
	ratio := func(f float64) *float64 { return &f }
	for _, tc := range []struct {
		name      string
		ratio     *float64
		recording bool
	}{
		{"default records every trace", nil, true},
		{"ratio 1", ratio(1), true},
		{"ratio 0", ratio(0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Setup(t.Context(), Config{ServiceName: "fleetwatch-test", OTLPEndpoint: collector.URL, TraceSampleRatio: tc.ratio})
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			defer func() { _ = p.Shutdown(context.Background()) }()
			ctx, span := p.TracerProvider.Tracer("test").Start(t.Context(), "publish")
			if span.IsRecording() != tc.recording {
				t.Fatalf("recording = %v, want %v", span.IsRecording(), tc.recording)
			}
			msg := nats.NewMsg("x")
			Inject(ctx, msg)
			span.End()
			// The next stage follows the decision carried in the header.
			_, child := p.TracerProvider.Tracer("test").Start(Extract(context.Background(), msg.Header), "consume")
			defer child.End()
			if child.IsRecording() != tc.recording || child.SpanContext().TraceID() != span.SpanContext().TraceID() {
				t.Fatalf("child recording %v trace %s, want %v and %s", child.IsRecording(), child.SpanContext().TraceID(), tc.recording, span.SpanContext().TraceID())
			}
		})
	}
	for _, bad := range []float64{-0.1, 1.5} {
		_, err := Setup(t.Context(), Config{ServiceName: "fleetwatch-test", TraceSampleRatio: &bad})
		if err == nil || !strings.Contains(err.Error(), "telemetry.trace_sample_ratio is") || !strings.Contains(err.Error(), "from 0 to 1") {
			t.Errorf("ratio %v: err = %v, want the trace_sample_ratio message", bad, err)
		}
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
