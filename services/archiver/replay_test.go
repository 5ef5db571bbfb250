package archiver_test

import (
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/archiver"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
)

func TestReplayReArchivesATimeRangeIdempotently(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	first := e.publishAll(ctx, 20, "")
	e.publishRaw(ctx, events.PresencePrefix+".0.bad", "bad-1", []byte(`{"v":1,"id":"x"}`))
	// Everything stored so far has a JetStream timestamp at or before
	// split; everything published next is stored after it.
	split := time.Now()
	for !time.Now().After(split) {
	}
	var second []events.PresenceEvent
	for i := 20; i < 30; i++ {
		ev := presenceEvent(t, i)
		e.publish(ctx, ev.Subject(events.DefaultPartitions), ev.ID, ev)
		second = append(second, ev)
	}
	cfg := e.config(chtest.Addr())
	deps := archiver.Deps{NATS: e.nc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	opts := archiver.ReplayOptions{FetchWait: 200 * time.Millisecond}

	// Only the second batch's window.
	opts.From = split
	res, err := archiver.Replay(ctx, cfg, deps, opts)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	want := []archiver.ReplayResult{
		{Stream: "presence", Messages: 10, Rows: 10},
		{Stream: "alerts"},
		{Stream: "deliveries"},
	}
	if !slices.Equal(res, want) {
		t.Fatalf("Replay [split, now) = %+v, want %+v", res, want)
	}
	if n := e.count("SELECT uniqExact(id) FROM DB.presence_events"); n != 10 {
		t.Fatalf("%d presence events archived, want the second batch's 10", n)
	}
	if n := e.count("SELECT count() FROM DB.presence_events WHERE broker_ts_ms < " + itoa(second[0].BrokerTSMS)); n != 0 {
		t.Fatalf("%d events of the first batch archived", n)
	}

	// Everything, twice, in batches smaller than the stream.
	opts.From = time.Unix(0, 0)
	cfg.BatchSize = 7
	want = []archiver.ReplayResult{
		{Stream: "presence", Messages: 31, Rows: 30, Skipped: 1},
		{Stream: "alerts", Messages: len(first.alerts), Rows: len(first.alerts)},
		{Stream: "deliveries", Messages: len(first.deliveries), Rows: len(first.deliveries)},
	}
	for round := range 2 {
		res, err := archiver.Replay(ctx, cfg, deps, opts)
		if err != nil {
			t.Fatalf("round %d: Replay: %v", round, err)
		}
		if !slices.Equal(res, want) {
			t.Fatalf("round %d: Replay = %+v, want %+v", round, res, want)
		}
	}
	for table, n := range map[string]uint64{"presence_events": 30, "alerts": uint64(len(first.alerts)), "deliveries": uint64(len(first.deliveries))} {
		if got := e.count("SELECT count() FROM DB." + table + " FINAL"); got != n {
			t.Errorf("%s FINAL: %d rows, want %d", table, got, n)
		}
		if got := e.count("SELECT uniqExact(id) FROM DB." + table); got != n {
			t.Errorf("%s: %d distinct ids, want %d", table, got, n)
		}
	}
	// presenceEvent: 15 connects (one connection each) and 15 disconnects
	// of one shared older connection per device; ids differ per device.
	if got := e.count("SELECT count() FROM DB.sessions FINAL"); got != 30 {
		t.Errorf("sessions FINAL: %d rows, want 30", got)
	}

	// The window is checked.
	opts.From, opts.To = split, split
	if _, err := archiver.Replay(ctx, cfg, deps, opts); err == nil {
		t.Error("Replay with an empty window succeeded")
	}
	opts.To, opts.Streams = time.Time{}, []string{"audit"}
	if _, err := archiver.Replay(ctx, cfg, deps, opts); err == nil || err.Error() != `replay stream "audit": use presence, alerts, deliveries` {
		t.Errorf("Replay of an unknown stream: %v", err)
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
