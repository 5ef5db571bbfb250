// Command fleetwatch-notifier delivers fleetwatch alerts to DingTalk,
// Feishu, WeCom, Slack and generic webhooks. See notifier.ExampleConfig
// (config.example.yaml). `fleetwatch-notifier test <receiver>` sends a test
// message and prints the remote's answer.
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
	Summary: "Delivers ALERTS to DingTalk, Feishu, WeCom, Slack and webhooks (signed, keyword-safe, within size and\n" +
		"rate limits shared by every replica, merged into digests in a storm), records every attempt in DELIVERIES,\n" +
		"and never sends an alert id twice.\n\n" +
		"fleetwatch-notifier test [--config file] <receiver> sends a test message and prints the remote's answer.",
	Example: notifier.ExampleConfig,
}

func main() { os.Exit(run()) }

func run() int {
	if len(os.Args) > 1 && os.Args[1] == "test" {
		return runTest(os.Args[2:], os.Stdout, os.Stderr, nil)
	}
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
