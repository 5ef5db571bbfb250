package awsiot_test

import (
	"testing"

	"github.com/fleetwatch/fleetwatch/services/ingest/awsiot"
)

// BenchmarkParse: parse + normalise an AWS IoT lifecycle event.
func BenchmarkParse(b *testing.B) {
	for _, name := range []string{"aws_iot_connected.json", "aws_iot_disconnected.json"} {
		fx := readFixture(b, name)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := awsiot.Parse(fx.Topic, fx.Payload, "aws-iot", received); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
