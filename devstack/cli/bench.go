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
	"slices"
	"strings"
	"syscall"

	"github.com/fleetwatch/fleetwatch/devstack/bench"
)

func benchCmd(args []string, stdout, stderr io.Writer) int {
	cfg := bench.DefaultConfig()
	fs := flag.NewFlagSet("fleetwatch bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "a smaller, faster run (10,000 events, 1M devices for memory and snapshot, 100,000 for the restart, 200,000 backtest events, 10 latency samples)")
	fs.IntVar(&cfg.Events, "events", cfg.Events, "messages per throughput measurement")
	fs.IntVar(&cfg.LatencySamples, "latency-samples", cfg.LatencySamples, "alerts timed end to end per load level")
	fs.IntVar(&cfg.BackgroundRate, "background-rate", cfg.BackgroundRate, "presence events/s of background traffic in the loaded latency run")
	fs.StringVar(&cfg.ClickHouseAddr, "clickhouse", cfg.ClickHouseAddr, "ClickHouse native address for the insert measurements (default $FLEETWATCH_CLICKHOUSE_ADDR; empty skips them)")
	out := fs.String("out", "", "also write the report as Markdown to this file (make bench: docs/benchmarks.md)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	memProfile := fs.String("memprofile", "", "write a heap profile at the end of the run to this file (go tool pprof)")
	verbose := fs.Bool("v", false, "show the stages' logs")
	only := fs.String("only", "", "comma-separated steps to run: "+strings.Join(bench.Steps, ","))
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: fleetwatch bench [flags]\n\nMeasures each stage next to raw JetStream and ClickHouse baselines taken in the\nsame run, evaluator memory per device, and end-to-end alert latency, then prints\none table. Only loopback traffic; embedded NATS and MQTT broker.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *quick {
		cfg.Events, cfg.MemoryDevices, cfg.LatencySamples, cfg.RestartDevices, cfg.BacktestEvents = 10_000, []int{1_000_000}, 10, 100_000, 200_000
	}
	if *only != "" {
		for _, step := range strings.Split(*only, ",") {
			if !slices.Contains(bench.Steps, step) {
				fmt.Fprintf(stderr, "fleetwatch bench: --only %q: unknown step; use %s\n", step, strings.Join(bench.Steps, ","))
				return 2
			}
			cfg.Only = append(cfg.Only, step)
		}
	}
	if cfg.Events < 1000 {
		fmt.Fprintln(stderr, "fleetwatch bench: --events must be at least 1000")
		return 2
	}
	cfg.Progress = stderr
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	prof, err := startProfiles(*cpuProfile, *memProfile)
	if err != nil {
		fmt.Fprintf(stderr, "fleetwatch bench: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	report := bench.Run(ctx, cfg)
	if err := prof.stop(); err != nil {
		fmt.Fprintf(stderr, "fleetwatch bench: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "\n%s\n", report.Table())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(report.Markdown()), 0o644); err != nil {
			fmt.Fprintf(stderr, "fleetwatch bench: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "written to %s\n", *out)
	}
	return 0
}
