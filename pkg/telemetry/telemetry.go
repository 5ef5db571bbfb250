// Package telemetry sets up OpenTelemetry for every fleetwatch stage in one
// place: a tracer provider (exporting over OTLP/HTTP only when an endpoint is
// configured), a meter provider exposed in the Prometheus text format, and the
// propagation of trace context through NATS message headers.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Config selects the exporters. The zero value exports nothing over the
// network: spans are created but not recorded (so trace context still flows
// between stages, at the cost of an id and no more) and metrics are only
// readable through MetricsHandler.
type Config struct {
	// ServiceName is reported as service.name (e.g. fleetwatch-ingest).
	ServiceName string `yaml:"service_name"`
	// OTLPEndpoint, when set, exports spans over OTLP/HTTP to this
	// host:port (or URL). Defaults to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
	// OTEL_EXPORTER_OTLP_ENDPOINT from the environment.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// OTLPInsecure sends OTLP without TLS.
	OTLPInsecure bool `yaml:"otlp_insecure"`
	// TraceSampleRatio is the fraction of new traces recorded and exported
	// when an OTLP endpoint is set (nil: 1, every trace). A stage continuing
	// a trace follows the upstream stage's decision. Without an endpoint no
	// span is recorded: nothing would read it.
	TraceSampleRatio *float64 `yaml:"trace_sample_ratio"`
}

// sampler decides which spans are recorded: none without an exporter (a
// recorded span costs allocations and attributes on every message, and
// would be dropped at End), else the configured ratio of new traces and
// the parent's decision for continued ones.
func (c Config) sampler(exporting bool) sdktrace.Sampler {
	if !exporting {
		return sdktrace.NeverSample()
	}
	ratio := 1.0
	if c.TraceSampleRatio != nil {
		ratio = *c.TraceSampleRatio
	}
	return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
}

// Providers holds the tracer and meter providers of a process.
type Providers struct {
	// TracerProvider creates the stage's tracers.
	TracerProvider trace.TracerProvider
	// MeterProvider creates the stage's meters.
	MeterProvider metric.MeterProvider

	registry *prometheus.Registry
	shutdown []func(context.Context) error
}

// Setup builds the providers for cfg and installs them as the otel globals
// together with the W3C trace-context propagator.
func Setup(ctx context.Context, cfg Config) (*Providers, error) {
	if cfg.ServiceName == "" {
		return nil, errors.New("telemetry.service_name is empty: name the stage, e.g. fleetwatch-ingest")
	}
	if r := cfg.TraceSampleRatio; r != nil && !(*r >= 0 && *r <= 1) {
		return nil, fmt.Errorf("telemetry.trace_sample_ratio is %v: use a fraction from 0 to 1 (1 records every trace, 0.01 one in a hundred)", *r)
	}
	// Schemaless: merging with resource.Default() must not depend on which
	// semconv version the SDK was built with.
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(cfg.ServiceName)))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	p := &Providers{registry: prometheus.NewRegistry()}
	p.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	exporter, err := otelprom.New(otelprom.WithRegisterer(p.registry))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(exporter))
	p.MeterProvider = mp
	p.shutdown = append(p.shutdown, mp.Shutdown)

	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	endpoint := cfg.OTLPEndpoint
	if endpoint == "" {
		endpoint = os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	}
	if endpoint == "" {
		endpoint = os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if endpoint != "" {
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(withScheme(endpoint, cfg.OTLPInsecure))}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("otlp trace exporter for %q: %w", endpoint, err)
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(append(tpOpts, sdktrace.WithSampler(cfg.sampler(endpoint != "")))...)
	p.TracerProvider = tp
	p.shutdown = append(p.shutdown, tp.Shutdown)

	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return p, nil
}

func withScheme(endpoint string, insecure bool) string {
	for _, s := range []string{"http://", "https://"} {
		if len(endpoint) >= len(s) && endpoint[:len(s)] == s {
			return endpoint
		}
	}
	if insecure {
		return "http://" + endpoint
	}
	return "https://" + endpoint
}

// MetricsHandler serves every metric of the process in the Prometheus text
// format.
func (p *Providers) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{Registry: p.registry})
}

// Shutdown flushes and stops the providers.
func (p *Providers) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range p.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// HeaderCarrier adapts NATS message headers to the otel propagation API.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key.
func (h HeaderCarrier) Get(key string) string { return nats.Header(h).Get(key) }

// Set replaces the values of key.
func (h HeaderCarrier) Set(key, value string) { nats.Header(h).Set(key, value) }

// Keys lists the header names.
func (h HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the trace context of ctx into msg's headers (traceparent).
func Inject(ctx context.Context, msg *nats.Msg) {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	otel.GetTextMapPropagator().Inject(ctx, HeaderCarrier(msg.Header))
}

// Extract returns ctx carrying the trace context found in msg's headers.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, HeaderCarrier(h))
}

// UnsampledParent reports whether h carries a valid W3C trace context
// (version 00) whose sampled flag is off. The samplers Setup installs
// never record a span that continues such a trace (ParentBased follows
// the parent; without an exporter nothing is recorded), so a stage can
// skip creating per-message spans for it: on a busy stream, starting and
// ending spans that are never recorded costs more than the trace is worth.
// A missing or malformed traceparent reports false: a span started for it
// is a new root, which the sampler decides.
func UnsampledParent(h nats.Header) bool {
	if h == nil {
		return false
	}
	tp := HeaderCarrier(h).Get("traceparent")
	// 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>
	if len(tp) != 55 || tp[:3] != "00-" || tp[35] != '-' || tp[52] != '-' {
		return false
	}
	if !nonZeroHex(tp[3:35]) || !nonZeroHex(tp[36:52]) || !isHex(tp[53:]) {
		return false
	}
	// Version 00 defines two flags, sampled (1) and random (2); the other
	// bits are reserved and make the header invalid.
	flags := unhex(tp[53])<<4 | unhex(tp[54])
	return flags <= 3 && flags&1 == 0
}

// nonZeroHex reports whether s is lower-case hex and not all zeros (W3C:
// an all-zero id is invalid).
func nonZeroHex(s string) bool {
	zero := true
	for i := 0; i < len(s); i++ {
		if !isHexDigit(s[i]) {
			return false
		}
		zero = zero && s[i] == '0'
	}
	return !zero
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHexDigit(s[i]) {
			return false
		}
	}
	return true
}

func isHexDigit(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}
