// Package bench measures fleetwatch on the machine it runs on: each stage's
// throughput next to a raw baseline (JetStream publish and consume,
// clickhouse-go batch insert) measured in the same run, evaluator memory per
// device, and end-to-end alert latency. It prints one table and can write it
// as docs/benchmarks.md. Machines are shared and noisy: compare ratios across
// runs, absolute figures only within one run.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
)

// Config sizes a benchmark run.
type Config struct {
	// Events is the message count of the throughput measurements.
	Events int
	// MemoryDevices lists the device counts of the memory measurement.
	MemoryDevices []int
	// LatencySamples is the number of alerts timed end to end.
	LatencySamples int
	// BackgroundRate is the presence event rate of the loaded latency run.
	BackgroundRate int
	// SnapshotDevices is the device count of the snapshot measurement.
	SnapshotDevices int
	// RestartDevices is the device count of the evaluator restart
	// measurement (0 skips it).
	RestartDevices int
	// BacktestEvents is the event count of the backtest measurement.
	BacktestEvents int
	// ClickHouseAddr enables the ClickHouse measurements ("" skips them).
	ClickHouseAddr string
	// Progress receives a line per step.
	Progress io.Writer
	// Logger receives the stages' logs (nil: discarded).
	Logger *slog.Logger
	// Only limits the run to these steps (see Steps); empty runs all.
	Only []string
}

// Steps are the measurement steps, in run order.
var Steps = []string{"jetstream", "clickhouse", "ingest", "core", "memory", "snapshot", "backtest", "evaluator", "restart", "notifier", "archiver", "latency"}

// baselineOf names the baseline step a step's ratio needs: Only adds it, so
// that every ratio compares with a baseline measured in the same run.
var baselineOf = map[string]string{"ingest": "jetstream", "evaluator": "jetstream", "archiver": "clickhouse"}

// DefaultConfig is what `make bench` runs.
func DefaultConfig() Config {
	return Config{
		Events:          100_000,
		MemoryDevices:   []int{1_000_000, 10_000_000},
		SnapshotDevices: 1_000_000,
		RestartDevices:  1_000_000,
		BacktestEvents:  1_000_000,
		LatencySamples:  30,
		BackgroundRate:  10_000,
		ClickHouseAddr:  os.Getenv("FLEETWATCH_CLICKHOUSE_ADDR"),
		Progress:        os.Stderr,
	}
}

// Result is one row of the table.
type Result struct {
	// Name says what was measured.
	Name string
	// Value and Unit are the figure.
	Value float64
	Unit  string
	// CPU is the process's CPU time per unit of Value, in µs (0: not
	// measured): every in-process component (embedded NATS, broker,
	// stages) included, steadier than rates on a shared machine.
	CPU float64
	// Ratio is Value / the baseline's value (0: no baseline).
	Ratio float64
	// Baseline names the row Ratio compares with.
	Baseline string
	// Target is the target, as text ("" when none).
	Target string
	// Met says whether the target was met (nil: no target).
	Met *bool
	// Note explains the figure.
	Note string
}

// Report is the outcome of a run.
type Report struct {
	Started  time.Time
	Took     time.Duration
	Machine  string
	Results  []Result
	Failures []string
}

func (r *Report) add(res Result) { r.Results = append(r.Results, res) }

func (r *Report) fail(what string, err error) {
	r.Failures = append(r.Failures, fmt.Sprintf("%s: %v", what, err))
}

func (r *Report) value(name string) float64 { return r.row(name).Value }

// row returns the result named name (zero when there is none).
func (r *Report) row(name string) Result {
	for _, x := range r.Results {
		if x.Name == name {
			return x
		}
	}
	return Result{}
}

// selectSteps returns the steps to run: every step, or only's with the
// baselines their ratios need.
func selectSteps(only []string) map[string]bool {
	run := map[string]bool{}
	for _, s := range Steps {
		run[s] = len(only) == 0 || slices.Contains(only, s)
	}
	for _, s := range only {
		if b, ok := baselineOf[s]; ok {
			run[b] = true
		}
	}
	return run
}

// Run measures everything Config asks for. A measurement that fails is
// recorded in Report.Failures and the run goes on.
func Run(ctx context.Context, cfg Config) *Report {
	r := &Report{Started: time.Now(), Machine: machine()}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &progress{w: cfg.Progress}
	steps := []struct {
		key, name string
		run       func(context.Context, Config, *Report, *slog.Logger) error
	}{
		{"jetstream", "raw JetStream publish and consume", baselineJetStream},
		{"clickhouse", "raw ClickHouse insert", baselineClickHouse},
		{"ingest", "ingest throughput", benchIngest},
		{"core", "evaluator core", benchEvaluatorCore},
		{"memory", "evaluator memory", benchEvaluatorMemory},
		{"snapshot", "evaluator snapshot", benchEvaluatorSnapshot},
		{"backtest", "evaluator backtest", benchBacktest},
		{"evaluator", "evaluator service", benchEvaluatorService},
		{"restart", "evaluator restart", benchEvaluatorRestart},
		{"notifier", "notifier throughput", benchNotifier},
		{"archiver", "archiver throughput", benchArchiver},
		{"latency", "end-to-end latency", benchLatency},
	}
	run := selectSteps(cfg.Only)
	for _, s := range steps {
		if !run[s.key] {
			continue
		}
		if ctx.Err() != nil {
			r.fail(s.name, ctx.Err())
			break
		}
		p.printf("bench: %s …", s.name)
		t0 := time.Now()
		if err := s.run(ctx, cfg, r, logger); err != nil {
			r.fail(s.name, err)
			p.printf("bench: %s failed after %s: %v", s.name, since(t0), err)
			continue
		}
		p.printf("bench: %s done in %s", s.name, since(t0))
	}
	r.Took = time.Since(r.Started)
	return r
}

type progress struct{ w io.Writer }

func (p *progress) printf(format string, args ...any) {
	if p.w != nil {
		fmt.Fprintf(p.w, format+"\n", args...)
	}
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func atLeast(v, target float64) *bool { ok := v >= target; return &ok }
func atMost(v, target float64) *bool  { ok := v <= target; return &ok }

func machine() string {
	host, _ := os.Hostname()
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(line[strings.Index(line, ":")+1:])
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs (%s), %s/%s, %s", host, runtime.NumCPU(), cpu, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// Table renders the results as an aligned text table.
func (r *Report) Table() string {
	var b strings.Builder
	rows := [][]string{{"measurement", "value", "CPU", "vs baseline", "target", "met"}}
	for _, x := range r.Results {
		rows = append(rows, []string{x.Name, formatValue(x.Value, x.Unit), formatCPU(x), formatRatio(x), x.Target, formatMet(x.Met)})
	}
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for i, row := range rows {
		for j, c := range row {
			fmt.Fprintf(&b, "%-*s  ", widths[j], c)
		}
		b.WriteString("\n")
		if i == 0 {
			for j := range row {
				b.WriteString(strings.Repeat("-", widths[j]) + "  ")
			}
			b.WriteString("\n")
		}
	}
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "FAILED %s\n", f)
	}
	return b.String()
}

// Markdown renders the report as docs/benchmarks.md.
func (r *Report) Markdown() string {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by `make bench` (`go run ./devstack/cmd/fleetwatch bench --out docs/benchmarks.md`, code in `devstack/bench`): ")
	b.WriteString("do not edit by hand. Every figure below comes from that command; every baseline was measured in the same run on the same machine. ")
	b.WriteString("Machines here are shared and noisy: compare ratios and CPU per operation across runs, absolute rates only within one run.\n\n")
	fmt.Fprintf(&b, "- date: %s\n- machine: %s\n- run took: %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Machine, r.Took.Round(time.Second))
	b.WriteString("| measurement | value | CPU | vs baseline | target | met | note |\n|---|---|---|---|---|---|---|\n")
	for _, x := range r.Results {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", x.Name, formatValue(x.Value, x.Unit), formatCPU(x), formatRatio(x), x.Target, formatMet(x.Met), x.Note)
	}
	if len(r.Failures) > 0 {
		b.WriteString("\nMeasurements that failed in this run:\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "- %s\n", f)
		}
	}
	var missed []string
	for _, x := range r.Results {
		if x.Met != nil && !*x.Met {
			missed = append(missed, fmt.Sprintf("- %s: %s, target %s.", x.Name, formatValue(x.Value, x.Unit), x.Target))
		}
	}
	if len(missed) > 0 {
		b.WriteString("\nTargets of issue 8 NOT met in this run (the notes above say what bounds each; the issue's note says what would fix it):\n\n")
		b.WriteString(strings.Join(missed, "\n") + "\n")
	}
	b.WriteString(`
## How to read the table

- **CPU** is the process's CPU time (user + system, every thread, ` + "`getrusage`" + `) per unit of the
  value, over the same span. The embedded NATS server, the MQTT broker and the stage run in the
  one process, so it is the cost of the whole in-process path; it stays put on a busy machine
  where rates drop, and "CPU × rate" is the number of cores kept busy.
- **Baselines**: raw JetStream async publish with ` + "`Nats-Msg-Id`" + ` (a publish that stalls with
  4,000 unacknowledged waits and retries), raw pull consume with explicit acks, raw clickhouse-go
  batch insert. ` + "`--only`" + ` adds the baseline a ratio needs, so a ratio never compares with
  another run.
- **Ingest ceiling**: cores ÷ (CPU per message of the broker → paho subscriber reference + CPU
  per raw publish) is what any ingest could reach on this machine with the broker and NATS in
  the same process, before parsing or encoding anything. When it is below the 40,000 events/s
  target, no ingest can meet the target here; the ingest row's note gives its share of the
  ceiling. The same figures come from ` + "`cd services/ingest && go test -run '^$' -bench IngestThroughput -benchtime 20000x .`" + `
  (` + "`cpu_us/event`, `cores`, `mqtt_only_msgs/s`, `ceiling_events/s`" + `).
- **Evaluator core, memory and snapshot** are the workloads of ` + "`BenchmarkStageCore`" + `,
  ` + "`BenchmarkStageMemory`" + ` and ` + "`BenchmarkSnapshot1M`" + ` in ` + "`services/evaluator/tracker`" + `.
- **Latency** rows are percentiles of one run's samples (the p99 of 30 samples is the largest
  one): a single stall on a shared machine moves them.

## Reproduce and profile

- ` + "`make bench`" + ` runs everything in at most 10 minutes on 2 cores (ClickHouse rows need
  ` + "`FLEETWATCH_CLICKHOUSE_ADDR`" + `; ` + "`.ci/run`" + ` installs and starts ClickHouse).
- ` + "`go run ./devstack/cmd/fleetwatch bench --quick`" + ` runs a smaller, faster set;
  ` + "`--only ingest,core`" + ` runs some steps (` + strings.Join(Steps, ", ") + `); ` + "`--help`" + ` lists the rest.
- **Profiles, one flag each**: ` + "`go run ./devstack/cmd/fleetwatch bench --only ingest --cpuprofile cpu.out --memprofile mem.out`" + `
  (or ` + "`make bench BENCH_FLAGS='--cpuprofile cpu.out --memprofile mem.out'`" + `) writes a CPU profile of
  the run and a heap profile at its end; read them with
  ` + "`go tool pprof -top cpu.out`" + ` or ` + "`go tool pprof -http 127.0.0.1:8080 cpu.out`" + `. ` + "`fleetwatch storm`" + ` takes the same two flags.
- Hot paths have Go benchmarks, runnable one by one with ` + "`-benchmem`" + `, and profiled with go test's
  own one-flag profiles (` + "`-cpuprofile cpu.out`, `-memprofile mem.out`" + `), e.g.
  ` + "`cd services/evaluator && go test -run '^$' -bench StageCore -benchtime 1000000x -benchmem -cpuprofile cpu.out ./tracker`" + `:
  parse — ` + "`services/ingest/emqx`" + ` BenchmarkParseSys/ParseRule/ParseWebhook, ` + "`services/ingest/{lastwill,awsiot,sparkplug}`" + ` BenchmarkParse,
  ` + "`pkg/events`" + ` BenchmarkPresenceID; apply — ` + "`services/evaluator/tracker`" + ` BenchmarkApplyEvent, ApplyDuplicate, TickFiring,
  MixedTraffic, StageCore, StageMemory, Snapshot1M; render/sign — ` + "`services/notifier`" + ` BenchmarkSend, Digest5000;
  batch encode — ` + "`services/archiver/sink`" + ` BenchmarkPresenceRowsAdd, PresenceAppendBatch, PresenceInsert, ` + "`services/archiver`" + `
  BenchmarkDecodePresence, ArchiverVsRawInsert; ingest end to end — ` + "`services/ingest`" + ` BenchmarkIngestThroughput.
`)
	return b.String()
}

func formatValue(v float64, unit string) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%s %s", groupThousands(int64(v+0.5)), unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	default:
		return fmt.Sprintf("%.2f %s", v, unit)
	}
}

func groupThousands(n int64) string {
	s := fmt.Sprint(n)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func formatRatio(x Result) string {
	if x.Ratio == 0 {
		return ""
	}
	return fmt.Sprintf("%.0f%% of %s", x.Ratio*100, x.Baseline)
}

func formatMet(m *bool) string {
	switch {
	case m == nil:
		return ""
	case *m:
		return "met"
	}
	return "NOT met"
}

// formatCPU is the process CPU time per unit of the row's value.
func formatCPU(x Result) string {
	if x.CPU <= 0 {
		return ""
	}
	unit := x.Unit
	if i := strings.LastIndex(unit, "/"); i >= 0 {
		unit = unit[:i]
	}
	switch {
	case x.CPU >= 100:
		return fmt.Sprintf("%s µs/%s", groupThousands(int64(x.CPU+0.5)), singular(unit))
	case x.CPU >= 10:
		return fmt.Sprintf("%.1f µs/%s", x.CPU, singular(unit))
	}
	return fmt.Sprintf("%.2f µs/%s", x.CPU, singular(unit))
}

func singular(unit string) string {
	if strings.HasSuffix(unit, "s") && unit != "s" {
		return unit[:len(unit)-1]
	}
	return unit
}

// cpuMeter measures the process CPU time spent on a number of operations.
type cpuMeter time.Duration

func startCPU() cpuMeter { return cpuMeter(telemetry.ProcessCPU()) }

// perOp returns the CPU µs per operation for n operations since the meter
// started (0: not measured).
func (m cpuMeter) perOp(n int) float64 {
	d := telemetry.ProcessCPU() - time.Duration(m)
	if n <= 0 || d <= 0 || m == 0 {
		return 0
	}
	return d.Seconds() * 1e6 / float64(n)
}
