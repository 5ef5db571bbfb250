// Command ingest runs fleetwatch's ingest stage: EMQX $SYS presence messages
// in over MQTT, validated presence events out to the PRESENCE stream.
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
		Summary: "Subscribes to EMQX's $SYS client presence messages (v4 and v5) over MQTT with a persistent " +
			"QoS 1 session, stores each as a presence event in the PRESENCE stream (acknowledging the MQTT " +
			"message only after JetStream did) and sends what it cannot parse to DEADLETTER with the reason.",
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
