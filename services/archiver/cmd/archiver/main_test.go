package main

import (
	"reflect"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/stage"
	"github.com/fleetwatch/fleetwatch/services/archiver"
)

func TestExampleConfigLoads(t *testing.T) {
	cfg := defaultConfig()
	if err := stage.Load([]byte(archiver.ExampleConfig()), "config.example.yaml", cfg); err != nil {
		t.Fatalf("example config: %v", err)
	}
	// The example spells out the defaults.
	if want := archiver.DefaultConfig(); !reflect.DeepEqual(cfg.Archiver, want) {
		t.Errorf("example archiver section = %+v, want the defaults %+v", cfg.Archiver, want)
	}
	if cfg.NATS.URL != "nats://127.0.0.1:4222" || cfg.Admin.Listen != "127.0.0.1:9467" {
		t.Errorf("nats.url, admin.listen = %q, %q", cfg.NATS.URL, cfg.Admin.Listen)
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	err := stage.Load([]byte("archiver:\n  batchsize: 10\n"), "c.yaml", defaultConfig())
	if err == nil {
		t.Fatal("unknown key accepted")
	}
}

func TestInvalidSectionNamesTheField(t *testing.T) {
	err := stage.Load([]byte("archiver:\n  streams: [presence, audit]\n"), "c.yaml", defaultConfig())
	want := `c.yaml: archiver.streams[1] is "audit": use presence, alerts, deliveries`
	if err == nil || err.Error() != want {
		t.Fatalf("Load error = %v, want %q", err, want)
	}
}
