package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/pkg/stage"
	"github.com/fleetwatch/fleetwatch/services/evaluator"
)

func TestExampleConfigLoads(t *testing.T) {
	cfg := defaultConfig()
	if err := stage.Load([]byte(evaluator.ExampleConfig), "config.example.yaml", cfg); err != nil {
		t.Fatal(err)
	}
	if want := evaluator.DefaultConfig(); cfg.Evaluator.Grace != want.Grace || cfg.Evaluator.Partitions != want.Partitions ||
		len(cfg.Evaluator.Receivers) != 1 || cfg.Evaluator.Receivers[0] != "default" {
		t.Fatalf("example config = %+v", cfg.Evaluator)
	}
	if cfg.Evaluator.Route == nil || len(cfg.Evaluator.Route.Routes) != 3 || len(cfg.Evaluator.Labels.ClientID) != 2 {
		t.Fatalf("example routes and labels = %+v", cfg.Evaluator)
	}
	if e := cfg.Evaluator; e.Route.Flap == nil || e.Route.Flap.Suppress != 3000 || len(e.Correlation.Keys) != 3 ||
		e.Correlation.MinDevices != 20 || e.Correlation.Window != 2*time.Minute || e.NodeSeverity != events.SeverityWarning {
		t.Fatalf("example flap, correlation, node severity = %+v %+v %q", e.Route.Flap, e.Correlation, e.NodeSeverity)
	}
	if e := cfg.Evaluator; e.API.Listen != "127.0.0.1:9480" || e.API.TokenEnv != "FLEETWATCH_EVALUATOR_API_TOKEN" ||
		len(e.Silences.Windows) != 1 || e.Silences.Windows[0].TimeZone != "Asia/Shanghai" || e.InventoryKV.Bucket != "fleetwatch_inventory" {
		t.Fatalf("example api, silences, inventory_kv = %+v %+v %+v", e.API, e.Silences, e.InventoryKV)
	}
}

func TestConfigErrorsNameTheLine(t *testing.T) {
	tests := []struct {
		yaml string
		want string
	}{
		{"evaluator:\n  grace: 0s\n", "cfg.yaml: evaluator.grace is 0s: set a positive duration, e.g. 30s"},
		{"evaluator:\n  gracee: 1s\n", "cfg.yaml: yaml: unmarshal errors:\n  line 2: field gracee not found in type evaluator.Config (check the key names and value types against the example in --help)"},
		{"evaluator:\n  severity: page\n", `cfg.yaml: evaluator.severity is "page": use info, warning or critical`},
		{"evaluator:\n  route:\n    routes:\n      - reciever: [a]\n", "cfg.yaml: yaml: unmarshal errors:\n  line 4: field reciever not found in type route.Config (check the key names and value types against the example in --help)"},
		{"evaluator:\n  route:\n    routes:\n      - matchers: [site]\n", `cfg.yaml: evaluator.route.routes[0].matchers[0] "site": invalid matcher: no operator: write name=value, name!=value, name=~regexp or name!~regexp`},
		{"evaluator:\n  labels:\n    client_id:\n      - prefix: a\n", "cfg.yaml: evaluator.labels.client_id[0].labels is empty: a prefix rule needs labels to add, e.g. {site: plant-7}"},
		{"evaluator:\n  api:\n    listen: 9480\n", `cfg.yaml: evaluator.api.listen is "9480": use host:port, e.g. 127.0.0.1:9480`},
		{"evaluator:\n  silences:\n    windows:\n      - {name: w, matchers: [a=b], start: '2:00', end: '03:00'}\n",
			`cfg.yaml: evaluator.silences.windows[0].start "2:00" is not HH:MM: write HH:MM, e.g. 02:00`},
		{"evaluator:\n  silences:\n    windows:\n      - {name: w, matchers: [a=b], start: '02:00', end: '03:00', time_zone: Asia/Nowhere}\n",
			`cfg.yaml: evaluator.silences.windows[0].time_zone is "Asia/Nowhere": use an IANA zone name, e.g. Asia/Shanghai or UTC`},
		{"evaluator:\n  inventory_kv:\n    bucket: a.b\n", `cfg.yaml: evaluator.inventory_kv.bucket is "a.b": use letters, digits, _ and -, e.g. fleetwatch_inventory`},
		{"evaluator:\n  correlation:\n    keys: [site]\n    window: 2m\n", "cfg.yaml: evaluator.correlation: set min_devices, min_ratio or both, e.g. min_devices: 20"},
		{"evaluator:\n  correlation:\n    keys: [site]\n    windw: 2m\n", "cfg.yaml: yaml: unmarshal errors:\n  line 4: field windw not found in type tracker.Correlation (check the key names and value types against the example in --help)"},
		{"evaluator:\n  node_severity: loud\n", `cfg.yaml: evaluator.node_severity is "loud": use info, warning or critical`},
	}
	for _, tc := range tests {
		err := stage.Load([]byte(tc.yaml), "cfg.yaml", defaultConfig())
		if err == nil || err.Error() != tc.want {
			t.Errorf("Load(%q) = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

var _ stage.Config = (*fileConfig)(nil)

// TestServe runs the stage wiring against an embedded NATS server until the
// evaluator's durable consumer exists, then stops it.
func TestServe(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	cfg := defaultConfig()
	cfg.NATS.URL = srv.URL()
	cfg.Topology.MemoryStorage = true
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- stage.Start(ctx, cfg.Common, slog.New(slog.NewTextHandler(t.Output(), nil)), serve(cfg))
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := js.Consumer(t.Context(), events.StreamPresence, events.ConsumerEvaluator); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the evaluator did not create its consumer")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
