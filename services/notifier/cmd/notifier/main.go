// Command fleetwatch-notifier delivers fleetwatch alerts to DingTalk and
// Feishu robots. See notifier.ExampleConfig (config.example.yaml).
package main

import (
	"context"
	"os"
	_ "time/tzdata" // receivers' timezones work on hosts without zoneinfo

	"github.com/fleetwatch/fleetwatch/pkg/stage"
	"github.com/fleetwatch/fleetwatch/services/notifier"
)

// fileConfig is the whole config file.
type fileConfig struct {
	stage.Common `yaml:",inline"`
	Notifier     notifier.Config `yaml:"notifier"`
}

func (c *fileConfig) CommonConfig() *stage.Common { return &c.Common }

func (c *fileConfig) Validate() error { return c.Notifier.Validate() }

func defaultConfig() *fileConfig {
	return &fileConfig{Common: stage.DefaultCommon(notifier.Stage), Notifier: notifier.DefaultConfig()}
}

var spec = stage.Spec{
	Name: notifier.Stage,
	Summary: "Delivers ALERTS to DingTalk and Feishu robots (signed, keyword-safe, within size and rate limits),\n" +
		"records every attempt in DELIVERIES, and never sends an alert id twice.",
	Example: notifier.ExampleConfig,
}

func main() { os.Exit(run()) }

func run() int {
	cfg := defaultConfig()
	return stage.Main(spec, cfg, func(ctx context.Context, env *stage.Env) error {
		svc, err := notifier.New(cfg.Notifier, notifier.Deps{
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
