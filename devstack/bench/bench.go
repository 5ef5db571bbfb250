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
var Steps = []string{"jetstream", "clickhouse", "ingest", "core", "memory", "evaluator", "notifier", "archiver", "latency"}

// DefaultConfig is what `make bench` runs.
func DefaultConfig() Config {
	return Config{
		Events:         100_000,
		MemoryDevices:  []int{1_000_000, 10_000_000},
		LatencySamples: 30,
		BackgroundRate: 10_000,
		ClickHouseAddr: os.Getenv("FLEETWATCH_CLICKHOUSE_ADDR"),
		Progress:       os.Stderr,
	}
}

// Result is one row of the table.
type Result struct {
	// Name says what was measured.
	Name string
	// Value and Unit are the figure.
	Value float64
	Unit  string
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

func (r *Report) value(name string) float64 {
	for _, x := range r.Results {
		if x.Name == name {
			return x.Value
		}
	}
	return 0
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
		{"evaluator", "evaluator service", benchEvaluatorService},
		{"notifier", "notifier throughput", benchNotifier},
		{"archiver", "archiver throughput", benchArchiver},
		{"latency", "end-to-end latency", benchLatency},
	}
	for _, s := range steps {
		if len(cfg.Only) > 0 && !slices.Contains(cfg.Only, s.key) {
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
	rows := [][]string{{"measurement", "value", "vs baseline", "target", "met"}}
	for _, x := range r.Results {
		rows = append(rows, []string{x.Name, formatValue(x.Value, x.Unit), formatRatio(x), x.Target, formatMet(x.Met)})
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
	b.WriteString("Written by `make bench` (`go run ./devstack/cmd/fleetwatch bench --out docs/benchmarks.md`). ")
	b.WriteString("Every figure below comes from that command. Baselines were measured in the same run on the same machine. ")
	b.WriteString("Machines here are shared and noisy: compare ratios across runs, absolute figures only within one run.\n\n")
	fmt.Fprintf(&b, "- date: %s\n- machine: %s\n- run took: %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Machine, r.Took.Round(time.Second))
	b.WriteString("| measurement | value | vs baseline | target | met | note |\n|---|---|---|---|---|---|\n")
	for _, x := range r.Results {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", x.Name, formatValue(x.Value, x.Unit), formatRatio(x), x.Target, formatMet(x.Met), x.Note)
	}
	if len(r.Failures) > 0 {
		b.WriteString("\nMeasurements that failed in this run:\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "- %s\n", f)
		}
	}
	b.WriteString(`
## Reproduce and profile

- ` + "`make bench`" + ` runs everything (ClickHouse rows need ` + "`FLEETWATCH_CLICKHOUSE_ADDR`" + `; ` + "`.ci/run`" + ` installs ClickHouse).
- ` + "`go run ./devstack/cmd/fleetwatch bench --quick`" + ` runs a smaller, faster set.
- ` + "`go run ./devstack/cmd/fleetwatch bench --cpuprofile cpu.out --memprofile mem.out`" + ` writes profiles; read them with ` + "`go tool pprof`" + `.
- Hot paths have Go benchmarks, runnable one by one with ` + "`-benchmem`" + `, e.g. ` + "`cd services/evaluator && go test -run '^$' -bench . -benchmem ./tracker`" + `.
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
		return "yes"
	}
	return "NO"
}
