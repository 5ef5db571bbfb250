package emqx_test

import (
	"testing"

	"github.com/fleetwatch/fleetwatch/services/ingest/emqx"
)

// Parse + normalise (validation and content id included) per format:
//
//	go test ./emqx -run '^$' -bench . -benchmem
func BenchmarkParseSys(b *testing.B) {
	for _, name := range []string{"v5_sys_connected.json", "v5_sys_disconnected.json", "v4_sys_connected.json", "v4_sys_disconnected.json"} {
		fx := readFixture(b, name)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := emqx.ParseSys(fx.Topic, fx.Payload, received); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseRule(b *testing.B) {
	for _, name := range []string{"v5_events_client_connected.json", "v5_events_client_disconnected.json"} {
		fx := readFixture(b, name)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := emqx.ParseRule(fx.Payload, received); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseWebhook(b *testing.B) {
	for _, name := range []string{"v4_webhook_client_connected.json", "v4_webhook_client_disconnected.json", "v5_events_client_disconnected.json"} {
		fx := readFixture(b, name)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := emqx.ParseWebhook(fx.Payload, received); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
