package bench

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
)

// snapshotTracker is a tracker labelled and routed like the one of
// BenchmarkSnapshot1M (services/evaluator/tracker): client id regex,
// username and /24 labels, a route tree grouping by site with a sub-route
// and an escalation tier.
func snapshotTracker() (*tracker.Tracker, error) {
	lc := labels.Config{
		ClientID: []labels.ClientIDRule{{Regex: `^(?P<site>site[0-9]+)-(?P<gateway>gw[0-9]+)-`}},
		Username: "tenant",
		IPPrefix: labels.IPPrefix{Label: "subnet"},
	}
	l, err := labels.NewLabeler(lc, labels.NewTable(), nil)
	if err != nil {
		return nil, err
	}
	wait, interval, repeat := time.Duration(0), 5*time.Minute, 4*time.Hour
	rc := route.Config{Receivers: []string{"ops"}, GroupBy: []string{"site"}, GroupWait: &wait, GroupInterval: &interval, RepeatInterval: &repeat,
		Routes: []route.Config{{Matchers: []string{`site=~"site1[0-9]"`}, Receivers: []string{"ops", "site-team"},
			Escalations: []route.Escalation{{After: time.Hour, Receivers: []string{"oncall"}}}}}}
	const grace = 30 * time.Second
	tree, err := route.New(rc, route.Defaults{Receivers: []string{"default"}, GroupBy: []string{labels.DeviceID}, Grace: grace}, "routes")
	if err != nil {
		return nil, err
	}
	return tracker.New(tracker.Config{Grace: grace, Severity: events.SeverityWarning, Routes: tree, Labeler: l})
}

// benchEvaluatorSnapshot measures a snapshot of SnapshotDevices labelled
// devices (half of them offline, a quarter alerting in per-site groups):
// its size, the time to write it and the time to restore it into a fresh
// tracker — what a partition hand-over loads before replaying the tail.
func benchEvaluatorSnapshot(_ context.Context, cfg Config, r *Report, _ *slog.Logger) error {
	n := cfg.SnapshotDevices
	if n <= 0 {
		return nil
	}
	tr, err := snapshotTracker()
	if err != nil {
		return err
	}
	base := time.Now().Add(-2 * time.Hour).UnixMilli()
	var e events.PresenceEvent
	for i := range n {
		id := fmt.Sprintf("site%d-gw%d-%08d", i%40, i%7, i)
		e = events.PresenceEvent{DeviceID: id, Kind: events.KindConnected, Node: "emqx@n1", Username: "tenant-a",
			IP: fmt.Sprintf("10.%d.%d.7", i%200, i%100), KeepaliveS: 60, BrokerTSMS: base + int64(i), ConnectedAtMS: base + int64(i)}
		tr.Apply(tracker.Event{PresenceEvent: &e})
		if i%2 == 1 {
			e.Kind, e.Reason, e.BrokerTSMS = events.KindDisconnected, events.ReasonKeepaliveTimeout, e.BrokerTSMS+1_000
			if i%4 == 1 {
				e.BrokerTSMS += 3_600_000 // still in its grace at the tick
			}
			tr.Apply(tracker.Event{PresenceEvent: &e})
		}
	}
	tr.Apply(tracker.Tick{Now: time.UnixMilli(base + int64(n) + 60_000)})
	t0, cpu := time.Now(), startCPU()
	snap, err := tr.MarshalSnapshot()
	if err != nil {
		return err
	}
	write, writeCPU := time.Since(t0), cpu.perOp(1)
	back, err := snapshotTracker()
	if err != nil {
		return err
	}
	t0, cpu = time.Now(), startCPU()
	if err := back.RestoreSnapshot(snap); err != nil {
		return err
	}
	restore, restoreCPU := time.Since(t0), cpu.perOp(1)
	if back.Len() != tr.Len() || back.Groups() != tr.Groups() {
		return fmt.Errorf("restored %d devices and %d groups, want %d and %d", back.Len(), back.Groups(), tr.Len(), tr.Groups())
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	devices := groupThousands(int64(n))
	what := fmt.Sprintf("%s labelled devices (client id regex, username, /24), half offline, a quarter alerting in %d per-site groups; the workload of BenchmarkSnapshot1M", devices, tr.Groups())
	r.add(Result{Name: fmt.Sprintf("evaluator snapshot of %s devices: size", devices), Value: float64(len(snap)) / float64(n), Unit: "B/device",
		Note: fmt.Sprintf("%.1f MB; %s", float64(len(snap))/1e6, what)})
	r.add(Result{Name: fmt.Sprintf("evaluator snapshot of %s devices: write", devices), Value: ms(write), Unit: "ms",
		Note: fmt.Sprintf("MarshalSnapshot on one goroutine, %.0f ms CPU", writeCPU/1000)})
	r.add(Result{Name: fmt.Sprintf("evaluator snapshot of %s devices: restore", devices), Value: ms(restore), Unit: "ms",
		Note: fmt.Sprintf("RestoreSnapshot into a fresh tracker with the same routes, %.0f ms CPU", restoreCPU/1000)})
	return nil
}
