package archiver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/services/archiver"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// benchEvents is the number of presence events per round
// (FLEETWATCH_BENCH_EVENTS overrides it).
func benchEvents(b *testing.B) int {
	if s := os.Getenv("FLEETWATCH_BENCH_EVENTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("FLEETWATCH_BENCH_EVENTS=%q: want a positive number", s)
		}
		return n
	}
	return 200_000
}

// benchPresence returns n valid presence events of 10,000 devices:
// alternating connects and disconnects, one second apart per device.
func benchPresence(b *testing.B, n int) []events.PresenceEvent {
	out := make([]events.PresenceEvent, n)
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	for i := range out {
		dev := i % 10_000
		round := int64(i / 10_000)
		ts := base + round*1000 + int64(dev)
		e := events.PresenceEvent{
			DeviceID: fmt.Sprintf("site-%c-dev-%05d", 'a'+dev%26, dev), Node: "emqx@10.0.0.11",
			BrokerTSMS: ts, ConnectedAtMS: ts, IP: "10.1.2.3", Username: "u", Protocol: "mqtt",
			ProtoVer: 5, KeepaliveS: 60, Source: "emqx_sys_v5", ReceivedAtMS: ts + 5, Kind: events.KindConnected,
		}
		if round%2 == 1 {
			e.Kind, e.Reason, e.RawReason, e.ConnectedAtMS = events.KindDisconnected, events.ReasonKeepaliveTimeout, "keepalive_timeout", ts-1000
		}
		ev, err := events.NewPresenceEvent(e)
		if err != nil {
			b.Fatal(err)
		}
		out[i] = ev
	}
	return out
}

// rawInsert is the baseline: the same rows, in batches of batchSize, with
// clickhouse-go's row-wise batch API (PrepareBatch, Append, Send), into the
// same schema (sessions view included).
func rawInsert(ctx context.Context, conn driver.Conn, db string, evs []events.PresenceEvent, batchSize int) error {
	for start := 0; start < len(evs); start += batchSize {
		batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".presence_events (id, device_id, kind, reason, raw_reason, node, broker_ts, broker_ts_ms, connected_at_ms, conn_version, ip, username, protocol, proto_ver, keepalive_s, source, received_at_ms, date)")
		if err != nil {
			return err
		}
		for _, e := range evs[start:min(start+batchSize, len(evs))] {
			t := time.UnixMilli(e.BrokerTSMS).UTC()
			if err := batch.Append(e.ID, e.DeviceID, string(e.Kind), string(e.Reason), e.RawReason, e.Node, t,
				uint64(e.BrokerTSMS), uint64(e.ConnectedAtMS), e.ConnVersion, e.IP, e.Username, e.Protocol,
				uint8(e.ProtoVer), uint32(e.KeepaliveS), e.Source, uint64(e.ReceivedAtMS), t); err != nil {
				return err
			}
		}
		if err := batch.Send(); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkArchiverVsRawInsert measures, in one run on one ClickHouse, the
// archiver's rate from JetStream into ClickHouse (fetch, decode, validate,
// insert, ack: from start until the durable consumer has acked every
// message) and the raw clickhouse-go batch insert rate of the same rows.
// Run it with -benchtime=1x; each iteration is a full round.
func BenchmarkArchiverVsRawInsert(b *testing.B) {
	ch := chtest.Open(b)
	n := benchEvents(b)
	evs := benchPresence(b, n)
	payloads := make([][]byte, n)
	for i, e := range evs {
		payloads[i], _ = json.Marshal(e)
	}
	const batchSize = 5000
	var rawTotal, archTotal time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		srv := natstest.Start(b)
		nc, js := srv.Connect(b)
		topo := events.DefaultTopology()
		topo.MemoryStorage = true
		if err := events.EnsureStreams(b.Context(), js, topo); err != nil {
			b.Fatal(err)
		}
		publishAll(b, js, evs, payloads)
		rawDB, archDB := chtest.FreshDatabase(b, ch), chtest.FreshDatabase(b, ch)
		for _, db := range []string{rawDB, archDB} {
			if _, err := schema.Migrate(b.Context(), ch, db, schema.Options{Logger: slog.New(slog.DiscardHandler)}); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()

		start := time.Now()
		if err := rawInsert(b.Context(), ch, rawDB, evs, batchSize); err != nil {
			b.Fatal(err)
		}
		rawTotal += time.Since(start)

		cfg := archiver.DefaultConfig()
		cfg.ClickHouse.Addr = []string{chtest.Addr()}
		cfg.ClickHouse.Database = archDB
		cfg.Streams = []string{archiver.StreamPresence}
		cfg.BatchSize = batchSize
		cfg.BatchWait = 200 * time.Millisecond
		svc, err := archiver.New(cfg, archiver.Deps{NATS: nc, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(b.Context())
		done := make(chan error, 1)
		start = time.Now()
		go func() { done <- svc.Run(ctx) }()
		waitAcked(b, js, n)
		archTotal += time.Since(start)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for _, db := range []string{rawDB, archDB} {
			if got := chtest.Count(b, ch, "SELECT uniqExact(id) FROM "+db+".presence_events"); got != uint64(n) {
				b.Fatalf("%s: %d distinct events stored, want %d", db, got, n)
			}
		}
		nc.Close()
		b.StartTimer()
	}
	rows := float64(n * b.N)
	raw, arch := rows/rawTotal.Seconds(), rows/archTotal.Seconds()
	b.ReportMetric(arch, "archiver_rows/s")
	b.ReportMetric(raw, "raw_rows/s")
	b.ReportMetric(arch/raw, "ratio")
	b.ReportMetric(0, "ns/op")
	b.Logf("\n%-34s %12s\n%-34s %12.0f\n%-34s %12.0f\n%-34s %12.3f\n(%d events per round, batches of %d, %d round(s))",
		"measure", "value",
		"archiver JetStream→ClickHouse rows/s", arch,
		"raw clickhouse-go batch rows/s", raw,
		"ratio archiver/raw", arch/raw, n, batchSize, b.N)
}

func publishAll(b *testing.B, js jetstream.JetStream, evs []events.PresenceEvent, payloads [][]byte) {
	b.Helper()
	for i, e := range evs {
		m := nats.NewMsg(e.Subject(events.DefaultPartitions))
		m.Data = payloads[i]
		m.Header.Set(events.HeaderMsgID, e.ID)
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("publishing did not complete")
	}
}

// waitAcked polls the archiver's durable consumer until every message is
// acked.
func waitAcked(b *testing.B, js jetstream.JetStream, n int) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		c, err := js.Consumer(b.Context(), events.StreamPresence, events.ConsumerArchiverPresence)
		if err == nil {
			info, err := c.Info(b.Context())
			if err == nil && info.AckFloor.Stream >= uint64(n) && info.NumAckPending == 0 {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatal("the archiver did not ack every message in 10 minutes")
}
