package bench

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/backtest"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
)

// benchBacktest measures a backtest replaying BacktestEvents presence
// events from JSON lines in memory (the history of `fleetwatch-evaluator
// generate` over 20,000 devices) through the default config: decoding and
// the candidate's tracker, as `fleetwatch-evaluator backtest --file` runs
// them (BenchmarkReplay in services/evaluator/backtest).
func benchBacktest(_ context.Context, cfg Config, r *Report, _ *slog.Logger) error {
	n := cfg.BacktestEvents
	if n <= 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := backtest.Generate(&buf, backtest.GenOptions{Devices: 20_000, Events: n, Seed: 1}); err != nil {
		return err
	}
	tr, err := tracker.New(tracker.Config{Grace: 30 * time.Second, Receivers: []string{"default"}, Severity: events.SeverityWarning})
	if err != nil {
		return err
	}
	t0, cpu := time.Now(), startCPU()
	res, err := backtest.Run(backtest.NewSim("candidate", tr, time.Second), nil, backtest.Options{}, func(apply func([]events.PresenceEvent)) (backtest.Input, error) {
		return backtest.ReadJSONL(bytes.NewReader(buf.Bytes()), apply)
	})
	if err != nil {
		return err
	}
	took := time.Since(t0)
	got := res.Candidate.Events
	if got != n {
		return fmt.Errorf("backtest replayed %d events, want %d", got, n)
	}
	v := rate(got, took)
	r.add(Result{Name: "evaluator backtest: JSON lines → report", Value: v, Unit: "events/s", CPU: cpu.perOp(got),
		Target: "≥ 1,000,000 events/s", Met: atLeast(v, 1_000_000),
		Note: fmt.Sprintf("%s generated events over 20,000 devices (%.0f MB), default config; decoding on two goroutines, the tracker on a third; %s notifications",
			groupThousands(int64(got)), float64(buf.Len())/1e6, groupThousands(int64(res.Candidate.Notifications)))})
	return nil
}
