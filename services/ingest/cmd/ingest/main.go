// Command ingest runs fleetwatch's ingest stage: presence from EMQX ($SYS,
// rule-engine events, webhooks), AWS IoT lifecycle events and Last-Will
// statuses in, validated presence events out to the PRESENCE stream.
package main

import (
	"context"
	"os"

	"github.com/fleetwatch/fleetwatch/pkg/stage"
	"github.com/fleetwatch/fleetwatch/services/ingest"
)

// fileConfig is the whole config file: the shared sections plus ingest's.
type fileConfig struct {
	stage.Common `yaml:",inline"`
	Ingest       ingest.Config `yaml:"ingest"`
}

func (c *fileConfig) CommonConfig() *stage.Common { return &c.Common }
func (c *fileConfig) Validate() error             { return c.Ingest.Validate() }

func defaultConfig() *fileConfig {
	return &fileConfig{Common: stage.DefaultCommon(ingest.Stage), Ingest: ingest.DefaultConfig()}
}

func main() { os.Exit(run()) }

func run() int {
	spec := stage.Spec{
		Name: ingest.Stage,
		Summary: "Takes device presence from EMQX ($SYS v4/v5, rule-engine $events, v4 web hooks and v5 HTTP " +
			"actions), AWS IoT lifecycle events and Last-Will statuses, over MQTT (persistent QoS 1 session) " +
			"and HTTP, stores each as a presence event in the PRESENCE stream (acknowledging the input only " +
			"after JetStream did) and sends what it cannot parse to DEADLETTER with the reason. Optionally " +
			"watches EMQX nodes' heartbeats and reconciles against the EMQX REST API.",
		Example: ingest.ExampleConfig,
	}
	cfg := defaultConfig()
	return stage.Main(spec, cfg, func(ctx context.Context, env *stage.Env) error {
		svc, err := ingest.New(cfg.Ingest, ingest.Deps{
			NATS:           env.NATS,
			Logger:         env.Logger,
			TracerProvider: env.Telemetry.TracerProvider,
			MeterProvider:  env.Telemetry.MeterProvider,
		})
		if err != nil {
			return err
		}
		env.SetReady(svc.Ready)
		return svc.Run(ctx)
	})
}
