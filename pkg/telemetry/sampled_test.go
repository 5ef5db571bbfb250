package telemetry

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func TestUnsampledParent(t *testing.T) {
	const (
		tid = "4bf92f3577b34da6a3ce929d0e0e4736"
		sid = "00f067aa0ba902b7"
	)
	for _, tc := range []struct {
		tp   string
		want bool
	}{
		{"00-" + tid + "-" + sid + "-00", true},
		{"00-" + tid + "-" + sid + "-02", true}, // other flags, not sampled
		{"00-" + tid + "-" + sid + "-01", false},
		{"00-" + tid + "-" + sid + "-03", false},
		{"", false},                                                  // no parent: a new root, the sampler decides
		{"00-" + strings.Repeat("0", 32) + "-" + sid + "-00", false}, // invalid trace id
		{"00-" + tid + "-" + strings.Repeat("0", 16) + "-00", false}, // invalid span id
		{"00-" + strings.ToUpper(tid) + "-" + sid + "-00", false},    // upper case is invalid
		{"01-" + tid + "-" + sid + "-00", false},                     // a later version: not parsed here
		{"00-" + tid + "-" + sid + "-0", false},
		{"00-" + tid + "-" + sid + "-0g", false},
	} {
		h := nats.Header{}
		if tc.tp != "" {
			HeaderCarrier(h).Set("traceparent", tc.tp)
		}
		if got := UnsampledParent(h); got != tc.want {
			t.Errorf("UnsampledParent(%q) = %v, want %v", tc.tp, got, tc.want)
		}
		checkAgainstPropagator(t, tc.tp)
	}
	if UnsampledParent(nil) {
		t.Error("UnsampledParent(nil) = true")
	}
}

// checkAgainstPropagator fails when UnsampledParent disagrees with the W3C
// propagator Setup installs: true must mean a valid, unsampled remote
// parent, and for version 00 such a parent must give true.
func checkAgainstPropagator(t *testing.T, tp string) {
	t.Helper()
	h := nats.Header{}
	HeaderCarrier(h).Set("traceparent", tp)
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), HeaderCarrier(h)))
	unsampled := sc.IsValid() && !sc.IsSampled()
	got := UnsampledParent(h)
	if got && !unsampled {
		t.Fatalf("UnsampledParent(%q) = true, but the propagator reads valid=%v sampled=%v", tp, sc.IsValid(), sc.IsSampled())
	}
	if !got && unsampled && len(tp) == 55 && strings.HasPrefix(tp, "00-") {
		t.Fatalf("UnsampledParent(%q) = false for a valid unsampled version-00 parent", tp)
	}
}

func FuzzUnsampledParent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra")
	f.Fuzz(func(t *testing.T, tp string) {
		checkAgainstPropagator(t, tp)
	})
}
