package lastwill_test

import (
	"testing"

	"github.com/fleetwatch/fleetwatch/services/ingest/lastwill"
)

// BenchmarkParse: parse + normalise a plain and a JSON status.
func BenchmarkParse(b *testing.B) {
	plain := parser(b, nil)
	structured := parser(b, func(c *lastwill.Config) { c.StateField, c.TimestampField = "status", "ts" })
	for _, tc := range []struct {
		name    string
		p       *lastwill.Parser
		payload []byte
	}{
		{"plain", plain, []byte("offline")},
		{"json", structured, []byte(`{"status":"online","ts":1718000000000}`)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.p.Parse("devices/dev-42/status", tc.payload, false, received); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
