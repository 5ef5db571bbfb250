// Package cli implements the fleetwatch command and its subcommands.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fleetwatch/fleetwatch/devstack"
)

const usage = `fleetwatch — device-presence alerting for MQTT fleets.

Usage:
  fleetwatch dev [flags]    run the whole pipeline in one process (what make run starts)
  fleetwatch bench [flags]  measure every stage next to raw baselines (what make bench runs)
  fleetwatch storm [flags]  presence storms through the whole pipeline, checked (what make storm runs)
  fleetwatch help           this text

Each stage also has its own binary for production: fleetwatch-ingest,
fleetwatch-evaluator, fleetwatch-notifier, fleetwatch-archiver (--help on each).
`

// Run runs the fleetwatch command with args and returns the exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "dev":
		return dev(args[1:], stdout, stderr)
	case "bench":
		return benchCmd(args[1:], stdout, stderr)
	case "storm":
		return stormCmd(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "fleetwatch: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func dev(args []string, stdout, stderr io.Writer) int {
	cfg := devstack.DefaultConfig()
	fs := flag.NewFlagSet("fleetwatch dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Simulator.Devices, "devices", cfg.Simulator.Devices, "simulated devices (real paho MQTT clients); 0 turns the simulator off")
	fs.IntVar(&cfg.Simulator.Sites, "sites", cfg.Simulator.Sites, "sites the devices are spread over (1-26; ids site-<a..>-dev-<n>)")
	fs.DurationVar(&cfg.Simulator.DropInterval, "drop-interval", cfg.Simulator.DropInterval, "mean time between random device drops across the fleet; 0 turns them off")
	fs.DurationVar(&cfg.Simulator.MinOffline, "min-offline", cfg.Simulator.MinOffline, "shortest time a dropped device stays away")
	fs.DurationVar(&cfg.Simulator.MaxOffline, "max-offline", cfg.Simulator.MaxOffline, "longest time a dropped device stays away")
	fs.DurationVar(&cfg.Grace, "grace", cfg.Grace, "how long a device must stay offline before an alert")
	fs.StringVar(&cfg.Language, "lang", cfg.Language, "chat message language: zh or en")
	fs.StringVar(&cfg.HTTPListen, "http-listen", cfg.HTTPListen, "address of the inbox page, the chat stand-ins and the dev API")
	fs.StringVar(&cfg.MQTTListen, "mqtt-listen", cfg.MQTTListen, "address of the embedded EMQX-like MQTT broker")
	fs.StringVar(&cfg.ClickHouseAddr, "clickhouse", cfg.ClickHouseAddr, "ClickHouse native address (host:9000) to archive into; empty: no archiving (default $FLEETWATCH_CLICKHOUSE_ADDR)")
	fs.StringVar(&cfg.ClickHouseDatabase, "clickhouse-db", cfg.ClickHouseDatabase, "ClickHouse database to archive into")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: fleetwatch dev [flags]\n\nRuns embedded NATS (JetStream), an EMQX-like MQTT broker, a device simulator,\nall four stages, and strict DingTalk/Feishu stand-ins whose inbox page shows\nevery chat message. Ctrl-C stops it.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "fleetwatch dev: --log-level %q: use debug, info, warn or error\n", *logLevel)
		return 2
	}
	if cfg.Language != "zh" && cfg.Language != "en" {
		fmt.Fprintf(stderr, "fleetwatch dev: --lang %q: use zh or en\n", cfg.Language)
		return 2
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	st, err := devstack.Start(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "fleetwatch dev: %v\n", err)
		return 1
	}
	archive := "off (set FLEETWATCH_CLICKHOUSE_ADDR or --clickhouse to turn it on)"
	if st.Archiving() {
		archive = fmt.Sprintf("on: ClickHouse %s, database %s", cfg.ClickHouseAddr, cfg.ClickHouseDatabase)
	}
	fmt.Fprintf(stdout, `
fleetwatch dev stack is up
  inbox (chat messages)   %[1]s/
  fleet status (JSON)     %[1]s/api/fleet
  simulate an outage      curl -X POST '%[1]s/api/outage?site=a&fraction=0.5&for=2m'
  MQTT broker (EMQX-like) %[2]s
  NATS (JetStream)        %[3]s
  archiving               %[4]s
Devices offline longer than %[5]s raise alerts. Ctrl-C stops everything.

`, st.HTTPURL(), st.BrokerURL(), st.NATSURL(), archive, cfg.Grace)
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping…")
	done := make(chan error, 1)
	go func() { done <- st.Close() }()
	select {
	case err = <-done:
	case <-time.After(15 * time.Second):
		err = errors.New("shutdown took longer than 15s")
	}
	if err != nil {
		fmt.Fprintf(stderr, "fleetwatch dev: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "stopped")
	return 0
}
