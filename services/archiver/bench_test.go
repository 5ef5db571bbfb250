package archiver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
	"github.com/fleetwatch/fleetwatch/services/archiver"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// benchSetting reads a positive number from the environment variable
// name, or returns def.
func benchSetting(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number", name, s)
	}
	return n
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
// message), the raw clickhouse-go batch insert rate of the same rows, and
// two raw JetStream rates from the same stream: fetch and explicitly ack
// every message, nothing else (what the archiver does besides its work),
// and fetch without acks (delivery alone). Run it with -benchtime=1x; each iteration is a full
// round. FLEETWATCH_BENCH_EVENTS, FLEETWATCH_BENCH_BATCH (batch size of
// both, default the archiver's batch_size) and FLEETWATCH_BENCH_INFLIGHT (the archiver's
// inflight_batches, default its default) change the run;
// FLEETWATCH_BENCH_CPUPROFILE writes a CPU profile of the archiver phase.
func BenchmarkArchiverVsRawInsert(b *testing.B) {
	ch := chtest.Open(b)
	n := benchSetting(b, "FLEETWATCH_BENCH_EVENTS", 200_000)
	evs := benchPresence(b, n)
	payloads := make([][]byte, n)
	for i, e := range evs {
		payloads[i], _ = json.Marshal(e)
	}
	batchSize := benchSetting(b, "FLEETWATCH_BENCH_BATCH", archiver.DefaultConfig().BatchSize)
	inflight := benchSetting(b, "FLEETWATCH_BENCH_INFLIGHT", archiver.DefaultConfig().InflightBatches)
	var rawTotal, jsTotal, jsNoAckTotal, archTotal time.Duration
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

		start = time.Now()
		rawConsume(b, js, n, batchSize, true)
		jsTotal += time.Since(start)
		start = time.Now()
		rawConsume(b, js, n, batchSize, false)
		jsNoAckTotal += time.Since(start)

		cfg := archiver.DefaultConfig()
		cfg.ClickHouse.Addr = []string{chtest.Addr()}
		cfg.ClickHouse.Database = archDB
		cfg.Streams = []string{archiver.StreamPresence}
		cfg.BatchSize = batchSize
		cfg.BatchWait = 200 * time.Millisecond
		cfg.InflightBatches = inflight
		svc, err := archiver.New(cfg, archiver.Deps{NATS: nc, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(b.Context())
		done := make(chan error, 1)
		stopProfile := startCPUProfile(b, i)
		start = time.Now()
		go func() { done <- svc.Run(ctx) }()
		waitAcked(b, js, n)
		archTotal += time.Since(start)
		stopProfile()
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
	raw, rawJS, rawJSNoAck, arch := rows/rawTotal.Seconds(), rows/jsTotal.Seconds(), rows/jsNoAckTotal.Seconds(), rows/archTotal.Seconds()
	b.ReportMetric(arch, "archiver_rows/s")
	b.ReportMetric(raw, "raw_rows/s")
	b.ReportMetric(rawJS, "raw_js_msgs/s")
	b.ReportMetric(rawJSNoAck, "raw_js_noack_msgs/s")
	b.ReportMetric(arch/raw, "ratio")
	b.ReportMetric(0, "ns/op")
	b.Logf("\n%-42s %12s\n%-42s %12.0f\n%-42s %12.0f\n%-42s %12.0f\n%-42s %12.0f\n%-42s %12.3f\n%-42s %12.3f\n"+
		"(%d events per round, batches of %d, %d in flight, %d round(s))",
		"measure", "value",
		"archiver JetStream→ClickHouse rows/s", arch,
		"raw clickhouse-go batch rows/s", raw,
		"raw JetStream fetch + explicit ack msgs/s", rawJS,
		"raw JetStream fetch, no ack msgs/s", rawJSNoAck,
		"ratio archiver/raw clickhouse-go", arch/raw,
		"ratio archiver/raw JetStream (acked)", arch/rawJS, n, batchSize, inflight, b.N)
}

// rawConsume is the JetStream baseline: a durable pull consumer of its own
// on the same stream fetches batches and, with ack, acks every message
// explicitly, as the archiver does (without: an AckNone consumer, the
// delivery alone); nothing is decoded or stored.
func rawConsume(b *testing.B, js jetstream.JetStream, n, batchSize int, ack bool) {
	b.Helper()
	cfg := events.ConsumerConfig("bench_raw_ack", events.PresencePrefix+".>", 30*time.Second, 4*batchSize)
	if !ack {
		cfg = events.ConsumerConfig("bench_raw_noack", events.PresencePrefix+".>", 30*time.Second, 0)
		cfg.AckPolicy = jetstream.AckNonePolicy
	}
	cons, err := events.EnsureConsumer(b.Context(), js, events.StreamPresence, cfg)
	if err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for got := 0; got < n; {
		if time.Now().After(deadline) {
			b.Fatalf("raw consumer got %d of %d messages in 10 minutes", got, n)
		}
		batch, err := cons.Fetch(batchSize, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			b.Fatal(err)
		}
		for m := range batch.Messages() {
			if ack {
				if err := m.Ack(); err != nil {
					b.Fatal(err)
				}
			}
			got++
		}
	}
	if ack {
		waitConsumerAcked(b, js, cfg.Durable, n)
	}
}

// startCPUProfile writes a CPU profile of the archiver phase of round i
// (the archiver, and the embedded NATS server it fetches from) to
// $FLEETWATCH_BENCH_CPUPROFILE when it is set; read it with go tool pprof.
func startCPUProfile(b *testing.B, i int) (stop func()) {
	path := os.Getenv("FLEETWATCH_BENCH_CPUPROFILE")
	if path == "" || i > 0 {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
}

func publishAll(b *testing.B, js jetstream.JetStream, evs []events.PresenceEvent, payloads [][]byte) {
	b.Helper()
	for i, e := range evs {
		m := nats.NewMsg(e.Subject(events.DefaultPartitions))
		m.Data = payloads[i]
		m.Header.Set(events.HeaderMsgID, e.ID)
		// What ingest writes without an OTLP endpoint: a trace that is
		// not sampled.
		telemetry.HeaderCarrier(m.Header).Set("traceparent", fmt.Sprintf("00-%032x-%016x-00", i+1, i+1))
		for {
			_, err := js.PublishMsgAsync(m)
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				// A busy machine: let the outstanding publishes complete.
				<-js.PublishAsyncComplete()
				continue
			}
			if err != nil {
				b.Fatal(err)
			}
			break
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
	waitConsumerAcked(b, js, events.ConsumerArchiverPresence, n)
}

func waitConsumerAcked(b *testing.B, js jetstream.JetStream, durable string, n int) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		c, err := js.Consumer(b.Context(), events.StreamPresence, durable)
		if err == nil {
			info, err := c.Info(b.Context())
			if err == nil && info.AckFloor.Stream >= uint64(n) && info.NumAckPending == 0 {
				return
			}
		}
		time.Sleep(25 * time.Millisecond) // each poll costs the server a consumer info
	}
	b.Fatalf("consumer %s did not ack every message in 10 minutes", durable)
}
