// Command fleetwatch-archiver archives fleetwatch's PRESENCE, ALERTS and
// DELIVERIES streams into ClickHouse. See config.example.yaml.
//
// Subcommands:
//
//	fleetwatch-archiver report <query> [flags]   run an analytics query, print a table
//	fleetwatch-archiver replay --from <t> [flags] re-archive a time range from JetStream
//	fleetwatch-archiver loadgen --database <db>   fill a database with a synthetic history
//
// Without a subcommand it runs the stage.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/stage"
	"github.com/fleetwatch/fleetwatch/services/archiver"
)

// fileConfig is the archiver's config file: the shared sections plus
// archiver:.
type fileConfig struct {
	stage.Common `yaml:",inline"`
	Archiver     archiver.Config `yaml:"archiver"`
}

func (c *fileConfig) CommonConfig() *stage.Common { return &c.Common }

func (c *fileConfig) Validate() error { return c.Archiver.Validate() }

func defaultConfig() *fileConfig {
	return &fileConfig{Common: stage.DefaultCommon(archiver.Stage), Archiver: archiver.DefaultConfig()}
}

var spec = stage.Spec{
	Name: archiver.Stage,
	Summary: "Archives the PRESENCE, ALERTS and DELIVERIES streams into ClickHouse in batches " +
		"(native protocol, ClickHouse 18.16 or newer), creating and migrating the schema at start. " +
		"Messages are acked only after their rows are inserted.",
	Example: archiver.ExampleConfig(),
}

func main() { os.Exit(run()) }

func run() int {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "report":
			ctx, stop := signalContext()
			defer stop()
			return report(ctx, os.Args[2:], os.Stdout, os.Stderr, time.Now)
		case "replay":
			ctx, stop := signalContext()
			defer stop()
			return replay(ctx, os.Args[2:], os.Stdout, os.Stderr, time.Now)
		case "loadgen":
			ctx, stop := signalContext()
			defer stop()
			return loadgenCmd(ctx, os.Args[2:], os.Stdout, os.Stderr)
		}
	}
	cfg := defaultConfig()
	return stage.Main(spec, cfg, func(ctx context.Context, env *stage.Env) error {
		svc, err := archiver.New(cfg.Archiver, archiver.Deps{
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

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
