package main

import (
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/stage"
	"github.com/fleetwatch/fleetwatch/services/ingest"
)

// TestExampleConfig: the shipped example parses strictly and validates.
func TestExampleConfig(t *testing.T) {
	cfg := defaultConfig()
	if err := stage.Load([]byte(ingest.ExampleConfig), "config.example.yaml", cfg); err != nil {
		t.Fatalf("example config: %v", err)
	}
	if cfg.Ingest.MQTT.ClientID != "fleetwatch-ingest-0" || len(cfg.Ingest.MQTT.Topics) != 2 ||
		cfg.NATS.URL != "nats://127.0.0.1:4222" {
		t.Errorf("example config decoded to %+v", cfg.Ingest)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	cfg := defaultConfig()
	err := stage.Load([]byte("ingest:\n  mqtt:\n    broker: \"\"\n"), "bad.yaml", cfg)
	if err == nil || err.Error() != "bad.yaml: ingest.mqtt.broker is empty: set it to tcp://host:1883 (or ssl://host:8883)" {
		t.Fatalf("Load = %v", err)
	}
	err = stage.Load([]byte("ingest:\n  mqtt:\n    brokr: tcp://h:1883\n"), "typo.yaml", defaultConfig())
	if err == nil || !strings.Contains(err.Error(), "field brokr not found") {
		t.Fatalf("Load with an unknown key = %v", err)
	}
}
