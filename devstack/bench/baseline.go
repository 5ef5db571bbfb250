package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/services/archiver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the baseline rows, referred to by the ratios.
const (
	rowRawPublish = "raw JetStream async publish with Nats-Msg-Id"
	rowRawConsume = "raw JetStream pull consume, explicit ack"
	rowRawInsert  = "raw clickhouse-go batch insert"
)

// jsEnv is an embedded NATS server with fleetwatch's streams (file storage,
// as in production) and a client connection.
type jsEnv struct {
	srv *natstest.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	dir string
}

func newJS(ctx context.Context) (*jsEnv, error) {
	dir, err := os.MkdirTemp("", "fleetwatch-bench-")
	if err != nil {
		return nil, err
	}
	srv, err := natstest.New(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	e := &jsEnv{srv: srv, dir: dir}
	if e.nc, err = e.connect(); err != nil {
		e.close()
		return nil, err
	}
	if e.js, err = jetstream.New(e.nc); err != nil {
		e.close()
		return nil, err
	}
	if err := events.EnsureStreams(ctx, e.js, events.DefaultTopology()); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *jsEnv) connect() (*nats.Conn, error) { return nats.Connect(e.srv.URL()) }

func (e *jsEnv) close() {
	if e.nc != nil {
		e.nc.Close()
	}
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	_ = os.RemoveAll(e.dir)
}

// presenceEvents builds n valid presence events over devices devices:
// alternating connects and disconnects, each with its own broker time.
func presenceEvents(n, devices int, base time.Time) ([]events.PresenceEvent, error) {
	out := make([]events.PresenceEvent, 0, n)
	for i := range n {
		dev := i % devices
		round := i / devices
		connectedAt := base.Add(time.Duration(round/2*2000+dev) * time.Millisecond).UnixMilli()
		e := events.PresenceEvent{
			DeviceID: "bench-dev-" + strconv.Itoa(dev), Node: "emqx@127.0.0.1", Source: "bench",
			ConnectedAtMS: connectedAt, ReceivedAtMS: connectedAt, IP: "127.0.0.1", Username: "bench",
			Protocol: "mqtt", ProtoVer: 5, KeepaliveS: 60,
		}
		if round%2 == 0 {
			e.Kind, e.BrokerTSMS = events.KindConnected, connectedAt
		} else {
			e.Kind, e.BrokerTSMS = events.KindDisconnected, connectedAt+1000
			e.Reason, e.RawReason = events.ReasonKeepaliveTimeout, "keepalive_timeout"
		}
		ev, err := events.NewPresenceEvent(e)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// presenceMsgsOf builds n presence messages over devices devices.
func presenceMsgsOf(n, devices int) ([]*nats.Msg, error) {
	evs, err := presenceEvents(n, devices, time.Now())
	if err != nil {
		return nil, err
	}
	return presenceMsgs(evs)
}

func presenceMsgs(evs []events.PresenceEvent) ([]*nats.Msg, error) {
	msgs := make([]*nats.Msg, len(evs))
	for i, ev := range evs {
		b, err := json.Marshal(ev)
		if err != nil {
			return nil, err
		}
		m := nats.NewMsg(ev.Subject(events.DefaultPartitions))
		m.Data = b
		m.Header.Set(events.HeaderMsgID, ev.ID)
		msgs[i] = m
	}
	return msgs, nil
}

// publishAll publishes msgs with async publish and waits for every ack.
// When the client stalls with too many publishes pending (a busy machine:
// acks lag), it waits and retries the same message instead of failing.
func publishAll(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg) error {
	for _, m := range msgs {
		_, err := js.PublishMsgAsync(m)
		for errors.Is(err, jetstream.ErrTooManyStalledMsgs) && ctx.Err() == nil {
			_, err = js.PublishMsgAsync(m)
		}
		if err != nil {
			return err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func baselineJetStream(ctx context.Context, cfg Config, r *Report, _ *slog.Logger) error {
	env, err := newJS(ctx)
	if err != nil {
		return err
	}
	defer env.close()
	msgs, err := presenceMsgsOf(cfg.Events, cfg.Events/2)
	if err != nil {
		return err
	}
	t0, cpu := time.Now(), startCPU()
	if err := publishAll(ctx, env.js, msgs); err != nil {
		return err
	}
	pub := time.Since(t0)
	r.add(Result{Name: rowRawPublish, Value: rate(len(msgs), pub), Unit: "msgs/s", CPU: cpu.perOp(len(msgs)),
		Note: fmt.Sprintf("%s presence events (~%d B), file storage, at most 4,000 unacknowledged (a stalled publish waits and retries)", groupThousands(int64(len(msgs))), len(msgs[0].Data))})

	cons, err := env.js.CreateOrUpdateConsumer(ctx, events.StreamPresence, events.ConsumerConfig("bench-raw", events.PresencePrefix+".>", 30*time.Second, 1024))
	if err != nil {
		return err
	}
	t0, cpu = time.Now(), startCPU()
	got := 0
	for got < len(msgs) {
		// Ask for no more than remain: a fetch that cannot fill waits out
		// its FetchMaxWait.
		batch, err := cons.Fetch(min(256, len(msgs)-got), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			if err := m.Ack(); err != nil {
				return err
			}
			n++
		}
		if n == 0 {
			return fmt.Errorf("consumed %d of %d: no more messages", got, len(msgs))
		}
		got += n
	}
	r.add(Result{Name: rowRawConsume, Value: rate(got, time.Since(t0)), Unit: "msgs/s", CPU: cpu.perOp(got),
		Note: "Fetch(256) + Ack per message, as the stages consume"})
	return nil
}

func openClickHouse(addr string) (clickhouse.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{Addr: []string{addr},
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionLZ4}, DialTimeout: 5 * time.Second})
}

var errNoClickHouse = errors.New("skipped: set FLEETWATCH_CLICKHOUSE_ADDR to measure against ClickHouse")

func baselineClickHouse(ctx context.Context, cfg Config, r *Report, _ *slog.Logger) error {
	if cfg.ClickHouseAddr == "" {
		return errNoClickHouse
	}
	conn, err := openClickHouse(cfg.ClickHouseAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	db := fmt.Sprintf("fleetwatch_bench_raw_%d", time.Now().UnixNano())
	if err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		return err
	}
	defer func() { _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db) }()
	// The same shape as the archiver's presence_events table.
	if err := conn.Exec(ctx, `CREATE TABLE `+db+`.raw (id String, device_id String, kind String, reason String,
		raw_reason String, node String, broker_ts DateTime, broker_ts_ms UInt64, connected_at_ms UInt64,
		conn_version Int64, ip String, username String, protocol String, proto_ver UInt8, keepalive_s UInt32,
		source String, received_at_ms UInt64, date Date)
		ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(date) ORDER BY (device_id, broker_ts_ms, id)`); err != nil {
		return err
	}
	evs, err := presenceEvents(cfg.Events, cfg.Events/2, time.Now())
	if err != nil {
		return err
	}
	// The archiver's batch size: ClickHouse's cost per row falls steeply
	// with the rows per INSERT, so a fair baseline inserts the same.
	batchSize := archiver.DefaultConfig().BatchSize
	t0, server := time.Now(), startServerCPU(cfg.ClickHouseAddr)
	for start := 0; start < len(evs); start += batchSize {
		batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".raw (id, device_id, kind, reason, raw_reason, node, broker_ts, broker_ts_ms, connected_at_ms, conn_version, ip, username, protocol, proto_ver, keepalive_s, source, received_at_ms, date)")
		if err != nil {
			return err
		}
		for _, e := range evs[start:min(start+batchSize, len(evs))] {
			ts := time.UnixMilli(e.BrokerTSMS).UTC()
			if err := batch.Append(e.ID, e.DeviceID, string(e.Kind), string(e.Reason), e.RawReason, e.Node, ts,
				uint64(e.BrokerTSMS), uint64(e.ConnectedAtMS), e.ConnVersion, e.IP, e.Username, e.Protocol,
				uint8(e.ProtoVer), uint32(e.KeepaliveS), e.Source, uint64(e.ReceivedAtMS), ts); err != nil {
				return err
			}
		}
		if err := batch.Send(); err != nil {
			return err
		}
	}
	v := rate(len(evs), time.Since(t0))
	note := fmt.Sprintf("%s presence rows in batches of %s, native protocol, LZ4, server %s", groupThousands(int64(len(evs))), groupThousands(int64(batchSize)), serverVersion(ctx, conn))
	if us := server.perOp(len(evs)); us > 0 {
		note += fmt.Sprintf("; the ClickHouse server spent %.1f µs CPU per row", us)
	}
	r.add(Result{Name: rowRawInsert, Value: v, Unit: "rows/s", Note: note})
	return nil
}

func serverVersion(ctx context.Context, conn clickhouse.Conn) string {
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return "unknown"
	}
	return v
}
