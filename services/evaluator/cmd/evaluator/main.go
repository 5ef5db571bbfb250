// Command fleetwatch-evaluator runs the evaluator stage: presence state,
// grace periods, routing and grouping, silences, and the HTTP API (see
// package evaluator). Subcommands: backtest (replay history through a
// candidate config) and generate (write a synthetic presence history).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
	_ "time/tzdata" // maintenance windows' time zones, also in minimal images

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

// defaultConfig is the config before the file: evaluator.lease.replica
// defaults to $FLEETWATCH_EVALUATOR_REPLICA (e.g. the pod name), which turns
// partition leases on unless the file sets another name.
func defaultConfig() *fileConfig {
	cfg := &fileConfig{Common: stage.DefaultCommon(evaluator.StageName), Evaluator: evaluator.DefaultConfig()}
	cfg.Evaluator.Lease.Replica = os.Getenv("FLEETWATCH_EVALUATOR_REPLICA")
	return cfg
}

var spec = stage.Spec{
	Name: evaluator.StageName,
	Summary: "Consumes presence events from the PRESENCE stream, tracks every device's connection state " +
		"(ordering, duplicates and session takeovers handled), and publishes grouped device_offline alerts " +
		"(firing after the grace period, escalated, resolved on reconnect) to the ALERTS stream. Silences and the " +
		"dynamic inventory live in NATS KV buckets; evaluator.api.listen serves the HTTP API (docs/evaluator-api.md). " +
		"SIGHUP reloads the config file (the old one stays in force if the new one is invalid).\n\n" +
		"Subcommands:\n" +
		"  fleetwatch-evaluator backtest --config candidate.yaml [--baseline current.yaml] (--jsonl FILE | --from T --to T)\n" +
		"  fleetwatch-evaluator generate --devices N --events N [--seed N] > history.jsonl\n" +
		"(run a subcommand with --help for its flags)",
	Example: evaluator.ExampleConfig,
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "backtest":
			return backtestMain(args[1:], stdout, stderr)
		case "generate":
			return generateMain(args[1:], stdout, stderr)
		}
	}
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
			Topology:       cfg.Topology,
		})
		if err != nil {
			return err
		}
		env.SetReady(svc.Ready)
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					_ = reload(ctx, env.ConfigPath, svc, env.Logger)
				}
			}
		}()
		return svc.Run(ctx)
	}
}

// reload re-reads the config file and applies its evaluator section; on
// any error the old config stays in force. Only the evaluator section is
// reloaded: nats, topology, telemetry, admin and log take effect at the
// next start.
func reload(ctx context.Context, path string, svc *evaluator.Service, log *slog.Logger) error {
	if path == "" {
		err := fmt.Errorf("%w: no --config file was given, nothing to re-read", evaluator.ErrReload)
		log.Error("SIGHUP", "err", err)
		return err
	}
	fresh := defaultConfig()
	if err := stage.LoadFile(path, fresh); err != nil {
		err = fmt.Errorf("%w: %w", evaluator.ErrReload, err)
		log.Error("SIGHUP: config rejected", "file", path, "err", err)
		return err
	}
	if err := svc.Reload(ctx, fresh.Evaluator); err != nil {
		log.Error("SIGHUP: config rejected", "file", path, "err", err)
		return err
	}
	log.Info("SIGHUP: config reloaded", "file", path)
	return nil
}
