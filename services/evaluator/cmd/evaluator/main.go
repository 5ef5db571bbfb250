// Command fleetwatch-evaluator runs the evaluator stage: presence state,
// grace periods and device_offline alerts (see package evaluator).
package main

import (
	"context"
	"os"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/stage"
	"github.com/fleetwatch/fleetwatch/services/evaluator"
)

// fileConfig is the evaluator's config file.
type fileConfig struct {
	stage.Common `yaml:",inline"`
	Evaluator    evaluator.Config `yaml:"evaluator"`
}

func (c *fileConfig) CommonConfig() *stage.Common { return &c.Common }

func (c *fileConfig) Validate() error { return c.Evaluator.Validate() }

func defaultConfig() *fileConfig {
	return &fileConfig{Common: stage.DefaultCommon(evaluator.StageName), Evaluator: evaluator.DefaultConfig()}
}

var spec = stage.Spec{
	Name: evaluator.StageName,
	Summary: "Consumes presence events from the PRESENCE stream, tracks every device's connection state " +
		"(ordering, duplicates and session takeovers handled), and publishes device_offline alerts " +
		"(firing after the grace period, resolved on reconnect) to the ALERTS stream.",
	Example: evaluator.ExampleConfig,
}

func main() { os.Exit(run()) }

func run() int {
	cfg := defaultConfig()
	return stage.Main(spec, cfg, serve(cfg))
}

// serve runs the evaluator in a stage environment.
func serve(cfg *fileConfig) func(ctx context.Context, env *stage.Env) error {
	return func(ctx context.Context, env *stage.Env) error {
		svc, err := evaluator.New(cfg.Evaluator, evaluator.Deps{
			NATS:           env.NATS,
			Logger:         env.Logger,
			TracerProvider: env.Telemetry.TracerProvider,
			MeterProvider:  env.Telemetry.MeterProvider,
			Now:            time.Now,
		})
		if err != nil {
			return err
		}
		env.SetReady(svc.Ready)
		return svc.Run(ctx)
	}
}
