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
	"strings"
	"syscall"

	"github.com/fleetwatch/fleetwatch/devstack/storm"
)

func stormCmd(args []string, stdout, stderr io.Writer) int {
	cfg := storm.DefaultConfig()
	fs := flag.NewFlagSet("fleetwatch storm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Devices, "devices", cfg.Devices, "simulated devices (presence-event level, $SYS messages through the embedded broker)")
	fs.IntVar(&cfg.Sites, "sites", cfg.Sites, "sites the devices are spread over (site 0 is the one that fails in the outage)")
	fs.IntVar(&cfg.GatewaysPerSite, "gateways", cfg.GatewaysPerSite, "gateways per site")
	fs.DurationVar(&cfg.Grace, "grace", cfg.Grace, "the evaluator's grace (real time)")
	fs.DurationVar(&cfg.Tick, "tick", cfg.Tick, "the evaluator's clock tick")
	fs.IntVar(&cfg.Lag, "lag", cfg.Lag, "a dropped device returns this many drops later (its offline time in event time)")
	fs.IntVar(&cfg.Window, "window", cfg.Window, "most $SYS messages the broker holds unacknowledged by ingest (the broker drops past 8192 per subscriber)")
	fs.IntVar(&cfg.PahoDevices, "paho", cfg.PahoDevices, "real paho MQTT devices that join the reconnect storm (sockets cut, then reconnected)")
	fs.IntVar(&cfg.FlapCycles, "flap-cycles", cfg.FlapCycles, "drops and returns per flapping device")
	fs.DurationVar(&cfg.FlapHalfLife, "flap-half-life", cfg.FlapHalfLife, "half-life of the flap suppression penalty (the route's flap block; the other settings are the defaults)")
	fs.DurationVar(&cfg.NodeSilentAfter, "node-silent-after", cfg.NodeSilentAfter, "node-silent: ingest reports a broker node silent after this long without a sign of life (at most half the grace)")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "longest wait for the pipeline to settle, per scenario")
	fs.StringVar(&cfg.ClickHouseAddr, "clickhouse", cfg.ClickHouseAddr, "ClickHouse native address: archive and check row counts (default $FLEETWATCH_CLICKHOUSE_ADDR; empty: no archiving)")
	scenario := fs.String("scenario", "", "comma-separated scenarios to run (default all): "+strings.Join(storm.Scenarios, ","))
	verbose := fs.Bool("v", false, "show the stages' info logs (default: warnings and errors)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (every stage: one process) to this file (go tool pprof)")
	memProfile := fs.String("memprofile", "", "write a heap profile at the end of the run to this file (go tool pprof)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: fleetwatch storm [flags]\n\nDrives the whole pipeline (embedded NATS, EMQX-like broker, ingest, evaluator,\nnotifier, archiver with ClickHouse, strict DingTalk/Feishu stand-ins) with\npresence storms, each scenario on a fresh stack, and prints per scenario: events\nand time, alerts, chat messages per receiver, rate-limit answers, lost and false\ndevices, ClickHouse rows against the streams. Exits 1 if a counter is wrong.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *scenario != "" {
		cfg.Scenarios = strings.Split(*scenario, ",")
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "fleetwatch storm: %v\n", err)
		return 2
	}
	cfg.Progress = stderr
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	prof, err := startProfiles(*cpuProfile, *memProfile)
	if err != nil {
		fmt.Fprintf(stderr, "fleetwatch storm: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	results, err := storm.Run(ctx, cfg)
	if perr := prof.stop(); perr != nil {
		fmt.Fprintf(stderr, "fleetwatch storm: %v\n", perr)
	}
	fmt.Fprintf(stdout, "\n%s", storm.Table(results))
	if err != nil {
		fmt.Fprintf(stderr, "fleetwatch storm: %v\n", err)
		return 1
	}
	for _, r := range results {
		if !r.OK() {
			fmt.Fprintf(stderr, "fleetwatch storm: %s: a correctness counter is wrong\n", r.Scenario)
			return 1
		}
	}
	return 0
}
