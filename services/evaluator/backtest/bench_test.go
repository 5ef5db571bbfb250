package backtest

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
)

// benchHistory generates a history of n events over 20,000 devices.
func benchHistory(b *testing.B, n int) []byte {
	b.Helper()
	var buf bytes.Buffer
	if err := Generate(&buf, GenOptions{Devices: 20_000, Events: n, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkDecode measures the JSON-lines decoder alone, per event.
func BenchmarkDecode(b *testing.B) {
	data := benchHistory(b, 100_000)
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	dec := &events.PresenceDecoder{IgnoreID: true, Borrow: true} // as ReadJSONL
	b.SetBytes(int64(len(data) / len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu := telemetry.ProcessCPU().Nanoseconds()
	for i := 0; i < b.N; i++ {
		var e events.PresenceEvent // as decodeLines: a zero event per line
		if err := dec.Decode(lines[i%len(lines)], &e); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(telemetry.ProcessCPU().Nanoseconds()-cpu)/float64(b.N), "cpu-ns/op")
}

// BenchmarkReplay measures a whole backtest from JSON lines, per event:
// decoding and the candidate's tracker, with the default config.
func BenchmarkReplay(b *testing.B) {
	data := benchHistory(b, 1_000_000)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := telemetry.ProcessCPU().Nanoseconds()
	n := 0
	for i := 0; i < b.N; i++ {
		tr, err := tracker.New(tracker.Config{Grace: 30 * time.Second, Receivers: []string{"default"}, Severity: events.SeverityWarning})
		if err != nil {
			b.Fatal(err)
		}
		res, err := Run(NewSim("candidate", tr, time.Second), nil, Options{}, func(apply func([]events.PresenceEvent)) (Input, error) {
			return ReadJSONL(bytes.NewReader(data), apply)
		})
		if err != nil {
			b.Fatal(err)
		}
		n += res.Candidate.Events
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(telemetry.ProcessCPU().Nanoseconds()-cpu)/float64(n), "cpu-ns/event")
}

// BenchmarkDecodeEncodingJSON is the baseline of BenchmarkDecode:
// encoding/json on the same lines.
func BenchmarkDecodeEncodingJSON(b *testing.B) {
	data := benchHistory(b, 100_000)
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	b.SetBytes(int64(len(data) / len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu := telemetry.ProcessCPU().Nanoseconds()
	for i := 0; i < b.N; i++ {
		var e events.PresenceEvent
		if err := json.Unmarshal(lines[i%len(lines)], &e); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(telemetry.ProcessCPU().Nanoseconds()-cpu)/float64(b.N), "cpu-ns/op")
}
