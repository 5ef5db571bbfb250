package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
	"github.com/fleetwatch/fleetwatch/services/archiver"
	"github.com/fleetwatch/fleetwatch/services/evaluator"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
	"github.com/fleetwatch/fleetwatch/services/ingest"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqxsim"
	"github.com/fleetwatch/fleetwatch/services/notifier"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/dingtalk"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// waitFor polls cond every 5 ms until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not done within %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

type runnable interface {
	Run(context.Context) error
	Ready() error
}

// start runs svc until the returned stop is called, and waits until it is
// ready.
func start(ctx context.Context, svc runnable) (stop func(), err error) {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	if err := waitFor(ctx, time.Minute, "service ready", func() (bool, error) {
		select {
		case err := <-done:
			done <- err
			return false, fmt.Errorf("service stopped: %v", err)
		default:
		}
		return svc.Ready() == nil, nil
	}); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// acked reports whether a durable consumer has acked everything in its stream.
func acked(ctx context.Context, js jetstream.JetStream, stream, durable string) (bool, error) {
	cons, err := js.Consumer(ctx, stream, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return false, err
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return false, err
	}
	last := s.CachedInfo().State.LastSeq
	if si, err := s.Info(ctx); err == nil {
		last = si.State.LastSeq
	}
	return info.AckFloor.Stream >= last && info.NumPending == 0 && info.NumAckPending == 0, nil
}

// sysConnected is an EMQX v5 $SYS "connected" payload.
func sysConnected(clientID string, connectedAt int64) []byte {
	b, _ := json.Marshal(map[string]any{
		"clientid": clientID, "username": "bench", "ipaddress": "127.0.0.1", "sockport": 1883,
		"protocol": "mqtt", "proto_name": "MQTT", "proto_ver": 5, "connected_at": connectedAt,
		"ts": connectedAt, "keepalive": 60, "clean_start": true, "expiry_interval": 0,
	})
	return b
}

// window bounds the QoS 1 deliveries the broker holds unacknowledged for
// the subscriber (emqxsim's Broker.Unacked): past its per-session limit
// (emqxsim.DefaultMaxInflight, 8192; EMQX's max_mqueue_len 1000) a broker
// drops deliveries, as EMQX does. The measurements therefore measure what
// the consumer sustains. What the subscriber received or stored does not
// bound it: its PUBACKs reach the broker later, thousands of them on a busy
// machine, and a window counted that way once let mochi drop 258 messages.
const window = 4096

// rowMQTTOnly names the broker → paho reference row of the ingest step.
const rowMQTTOnly = "broker → paho subscriber only (no ingest)"

func benchIngest(ctx context.Context, cfg Config, r *Report, log *slog.Logger) error {
	env, err := newJS(ctx)
	if err != nil {
		return err
	}
	defer env.close()
	broker, err := emqxsim.New(emqxsim.Config{Logger: log, HeartbeatInterval: -1})
	if err != nil {
		return err
	}
	if err := broker.Start(); err != nil {
		return err
	}
	defer broker.Close()
	nc, err := env.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	ic := ingest.DefaultConfig()
	ic.MQTT.Broker = broker.Addr()
	ic.MQTT.ClientID = "fleetwatch-ingest-bench"
	svc, err := ingest.New(ic, ingest.Deps{NATS: nc, Logger: log})
	if err != nil {
		return err
	}
	stop, err := start(ctx, svc)
	if err != nil {
		return err
	}
	defer stop()

	n := cfg.Events
	base := time.Now().UnixMilli()
	topics := make([]string, n)
	payloads := make([][]byte, n)
	for i := range n {
		id := "bench-dev-" + strconv.Itoa(i)
		topics[i] = "$SYS/brokers/" + broker.Node() + "/clients/" + id + "/connected"
		payloads[i] = sysConnected(id, base+int64(i))
	}
	done := func() int64 { st := svc.Stats(); return st.Published + st.Duplicates + st.DeadLettered }
	t0, cpu := time.Now(), startCPU()
	err = publishWindowed(ctx, broker, ic.MQTT.ClientID, topics, payloads)
	if err == nil {
		err = waitFor(ctx, 3*time.Minute, "ingest", func() (bool, error) { return done() >= int64(n), nil })
	}
	took := time.Since(t0)
	ingestCPU := cpu.perOp(n)
	st := svc.Stats()
	if err != nil {
		return fmt.Errorf("%w (stored %d of %d; %s)", err, st.Published, n, brokerState(broker, ic.MQTT.ClientID))
	}
	v := rate(n, took)
	stop()

	// The reference: the same broker delivering as many messages to a paho
	// subscriber tuned like ingest's that only acknowledges them.
	mqttRate, mqttCPU, err := mqttOnly(ctx, broker, n)
	if err != nil {
		return fmt.Errorf("broker → paho reference: %w", err)
	}
	raw := r.row(rowRawPublish)
	note := fmt.Sprintf("%s v5 $SYS messages via the embedded broker, QoS 1, PUBACK after the JetStream ack, at most %s in flight; stored %s, dead-lettered %d",
		groupThousands(int64(n)), groupThousands(window), groupThousands(st.Published), st.DeadLettered)
	if ingestCPU > 0 {
		note += fmt.Sprintf("; %.2f cores busy (CPU/event × rate: broker, ingest and NATS in one process)", ingestCPU*v/1e6)
	}
	var ceiling float64
	if mqttCPU > 0 && raw.CPU > 0 {
		ceiling = float64(runtime.NumCPU()) * 1e6 / (mqttCPU + raw.CPU)
		note += fmt.Sprintf("; %.0f%% of this machine's ceiling", 100*v/ceiling)
		if ceiling < 40_000 {
			note += " (the ceiling is below the target: no ingest can meet it on this machine with the broker and NATS beside it)"
		}
	}
	r.add(Result{Name: "ingest: MQTT $SYS message in → JetStream ack", Value: v, Unit: "events/s", CPU: ingestCPU,
		Ratio: ratio(v, raw.Value), Baseline: "raw publish", Target: "≥ 40,000 events/s", Met: atLeast(v, 40_000), Note: note})
	r.add(Result{Name: rowMQTTOnly, Value: mqttRate, Unit: "msgs/s", CPU: mqttCPU,
		Note: fmt.Sprintf("%s messages from the same broker to a paho subscriber tuned like ingest's (persistent session, QoS 1, PUBACK in order through paho's Ack, buffered reads, coalesced writes, no store) that only acknowledges them", groupThousands(int64(n)))})
	if ceiling > 0 {
		r.add(Result{Name: "ingest ceiling here: cores ÷ (broker → paho CPU + raw publish CPU)", Value: ceiling, Unit: "events/s",
			Note: fmt.Sprintf("%d cores ÷ (%.1f + %.1f µs): what any ingest could reach on this machine with the broker and NATS in the same process, before parsing or encoding anything",
				runtime.NumCPU(), mqttCPU, raw.CPU)})
	}
	return nil
}

func ratio(v, baseline float64) float64 {
	if baseline == 0 {
		return 0
	}
	return v / baseline
}

func benchEvaluatorCore(_ context.Context, cfg Config, r *Report, _ *slog.Logger) error {
	n := cfg.Events * 10
	evs, err := presenceEvents(n, max(n/20, 1), time.Now())
	if err != nil {
		return err
	}
	run := func() (*tracker.Tracker, int, error) {
		tr, err := tracker.New(tracker.Config{Grace: 30 * time.Second, Receivers: []string{"ops"}, Severity: events.SeverityWarning})
		if err != nil {
			return nil, 0, err
		}
		decisions := 0
		for i := range evs {
			decisions += len(tr.Apply(tracker.Event{PresenceEvent: &evs[i]}))
			if i%1024 == 0 {
				decisions += len(tr.Apply(tracker.Tick{Now: time.UnixMilli(evs[i].BrokerTSMS)}))
			}
		}
		return tr, decisions, nil
	}
	// An untimed run first, on a tracker of its own: the timed run then
	// allocates from memory the process already holds, as a long-running
	// evaluator does, rather than faulting in every page from the kernel
	// (a tenth of a cold run's time).
	if _, _, err := run(); err != nil {
		return err
	}
	runtime.GC()
	t0, cpu := time.Now(), startCPU()
	tr, decisions, err := run()
	if err != nil {
		return err
	}
	v := rate(n, time.Since(t0))
	r.add(Result{Name: "evaluator core: Apply on one core (pre-decoded)", Value: v, Unit: "events/s", CPU: cpu.perOp(n),
		Target: "≥ 1,000,000 events/s", Met: atLeast(v, 1_000_000),
		Note: fmt.Sprintf("%s events over %s devices: connects, disconnects, a tick every 1,024 events; %s decisions; timed after an untimed warm-up run (the workload of BenchmarkStageCore in services/evaluator/tracker)",
			groupThousands(int64(n)), groupThousands(int64(tr.Len())), groupThousands(int64(decisions)))})
	return nil
}

func benchEvaluatorMemory(_ context.Context, cfg Config, r *Report, _ *slog.Logger) error {
	for _, n := range cfg.MemoryDevices {
		perDevice, err := bytesPerDevice(n)
		if err != nil {
			return err
		}
		r.add(Result{Name: fmt.Sprintf("evaluator memory at %s devices", groupThousands(int64(n))), Value: perDevice, Unit: "B/device",
			Target: "≤ 200 B/device", Met: atMost(perDevice, 200),
			Note: "heap after GC / devices; ids like plant-07/gw-012/dev-00000001, every 4th device offline with a pending timer"})
	}
	return nil
}

func bytesPerDevice(n int) (float64, error) {
	tr, err := tracker.New(tracker.Config{Grace: time.Hour, Receivers: []string{"ops"}, Severity: events.SeverityWarning})
	if err != nil {
		return 0, err
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	base := time.Now().UnixMilli()
	for i := range n {
		id := fmt.Sprintf("plant-%02d/gw-%03d/dev-%08d", i%50, i%997, i)
		e := events.PresenceEvent{DeviceID: id, Kind: events.KindConnected, Node: "emqx@10.0.0." + strconv.Itoa(i%3),
			BrokerTSMS: base + int64(i), ConnectedAtMS: base + int64(i), Source: "bench", ReceivedAtMS: base + int64(i)}
		tr.Apply(tracker.Event{PresenceEvent: &e})
		if i%4 == 0 {
			e.Kind, e.BrokerTSMS, e.Reason = events.KindDisconnected, e.BrokerTSMS+1000, events.ReasonKeepaliveTimeout
			tr.Apply(tracker.Event{PresenceEvent: &e})
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if tr.Len() != n {
		return 0, fmt.Errorf("tracker holds %d devices, want %d", tr.Len(), n)
	}
	runtime.KeepAlive(tr)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n), nil
}

// benchEvaluatorConfig is the evaluator of the service and restart
// measurements: one receiver, a grace no event outlasts.
var benchEvaluatorConfig = evaluator.Config{Grace: time.Minute, Tick: time.Second, Receivers: []string{"ops"}}

// startEvaluator starts an evaluator on its own connection to env and
// waits until it is ready; stop stops it and closes the connection.
func startEvaluator(ctx context.Context, env *jsEnv, log *slog.Logger) (svc *evaluator.Service, stop func(), err error) {
	nc, err := env.connect()
	if err != nil {
		return nil, nil, err
	}
	if svc, err = evaluator.New(benchEvaluatorConfig, evaluator.Deps{NATS: nc, Logger: log}); err != nil {
		nc.Close()
		return nil, nil, err
	}
	stopSvc, err := start(ctx, svc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return svc, func() { stopSvc(); nc.Close() }, nil
}

func benchEvaluatorService(ctx context.Context, cfg Config, r *Report, log *slog.Logger) error {
	env, err := newJS(ctx)
	if err != nil {
		return err
	}
	defer env.close()
	_, stop, err := startEvaluator(ctx, env, log)
	if err != nil {
		return err
	}
	defer stop()
	msgs, err := presenceMsgsOf(cfg.Events, cfg.Events/4)
	if err != nil {
		return err
	}
	// Like the raw consume baseline, the evaluator consumes a stream that
	// already holds the events: its consumer is paused while they are
	// published (JetStream consumer pause, server 2.11), then resumed.
	if _, err := env.js.PauseConsumer(ctx, events.StreamPresence, events.ConsumerEvaluator, time.Now().Add(time.Hour)); err != nil {
		return fmt.Errorf("pause the evaluator's consumer: %w", err)
	}
	if err := publishAll(ctx, env.js, msgs); err != nil {
		return err
	}
	if _, err := env.js.ResumeConsumer(ctx, events.StreamPresence, events.ConsumerEvaluator); err != nil {
		return fmt.Errorf("resume the evaluator's consumer: %w", err)
	}
	// The clock starts with the first delivery: an idle evaluator's pull
	// may wait out its expiry (one tick) before it sees the resumed
	// consumer, as the raw baseline's first fetch does not.
	cons, err := env.js.Consumer(ctx, events.StreamPresence, events.ConsumerEvaluator)
	if err != nil {
		return err
	}
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.Delivered.Stream > 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	t0, cpu := time.Now(), startCPU()
	if err := waitFor(ctx, 3*time.Minute, "evaluator", func() (bool, error) {
		return acked(ctx, env.js, events.StreamPresence, events.ConsumerEvaluator)
	}); err != nil {
		return err
	}
	v := rate(len(msgs), time.Since(t0))
	evalCPU := cpu.perOp(len(msgs))
	raw := r.value(rowRawConsume)
	var met *bool
	if raw > 0 {
		met = atLeast(v/raw, 0.5)
	}
	r.add(Result{Name: "evaluator service: JetStream in → decisions out → ack", Value: v, Unit: "events/s", CPU: evalCPU,
		Ratio: ratio(v, raw), Baseline: "raw consume", Target: "≥ 50% of raw consume", Met: met,
		Note: fmt.Sprintf("%s events already in PRESENCE (published while its consumer was paused), consumed, applied, decisions published, acked", groupThousands(int64(len(msgs))))})
	return nil
}

func benchNotifier(ctx context.Context, cfg Config, r *Report, log *slog.Logger) error {
	env, err := newJS(ctx)
	if err != nil {
		return err
	}
	defer env.close()
	// DingTalk allows 20 messages a minute per robot: spread the
	// notifications over enough robots to stay below the local limit.
	n := min(cfg.Events/50, 2000)
	const perRobot = 10
	robots := make([]chatsim.Robot, n/perRobot)
	dir, err := os.MkdirTemp("", "fleetwatch-bench-secrets-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	chat := chatsim.New(chatsim.Config{Keep: n})
	if err := chat.Start("127.0.0.1:0"); err != nil {
		return err
	}
	defer chat.Close()
	ncfg := notifier.DefaultConfig()
	for i := range robots {
		robots[i] = chatsim.Robot{Name: "ops-" + strconv.Itoa(i), Token: "token-" + strconv.Itoa(i), Secret: "SECbench" + strconv.Itoa(i), Keywords: []string{"告警"}}
		chat.AddRobot(chatsim.DingTalk, robots[i])
		secret := filepath.Join(dir, robots[i].Name)
		if err := os.WriteFile(secret, []byte(robots[i].Secret), 0o600); err != nil {
			return err
		}
		ncfg.Receivers = append(ncfg.Receivers, notifier.Receiver{Name: robots[i].Name, Channel: notifier.ChannelDingTalk,
			DingTalk: &dingtalk.Config{URL: chat.URL() + "/robot/send?access_token=" + url.QueryEscape(robots[i].Token), SecretFile: secret, Keyword: "告警"}})
	}
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range n {
		dev := "bench-dev-" + strconv.Itoa(i)
		a, err := events.NewAlertEvent(events.AlertEvent{Fingerprint: events.ContentID("device_offline", dev), Receiver: robots[i%len(robots)].Name,
			Status: events.StatusFiring, Kind: events.AlertDeviceOffline, Severity: events.SeverityWarning, GroupKey: "device:" + dev,
			Devices:    []events.AlertDevice{{DeviceID: dev, Status: events.StatusFiring, Node: "emqx@127.0.0.1", Reason: events.ReasonKeepaliveTimeout, SinceMS: base}},
			StartsAtMS: base, CreatedAtMS: base + 30_000})
		if err != nil {
			return err
		}
		b, _ := json.Marshal(a)
		m := nats.NewMsg(a.Subject())
		m.Data = b
		m.Header.Set(events.HeaderMsgID, a.ID)
		if _, err := env.js.PublishMsgAsync(m); err != nil {
			return err
		}
	}
	<-env.js.PublishAsyncComplete()
	nc, err := env.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := notifier.New(ncfg, notifier.Deps{NATS: nc, Logger: log})
	if err != nil {
		return err
	}
	t0, cpu := time.Now(), startCPU()
	stop, err := start(ctx, svc)
	if err != nil {
		return err
	}
	defer stop()
	if _, err := chat.WaitForMessages(ctx, n); err != nil {
		return fmt.Errorf("%d of %d messages arrived: %w", len(chat.Messages()), n, err)
	}
	v := rate(n, time.Since(t0))
	r.add(Result{Name: "notifier: rendered + signed + delivered to a local DingTalk", Value: v, Unit: "notifications/s", CPU: cpu.perOp(n),
		Note: fmt.Sprintf("%s alerts over %d robots (DingTalk allows 20/min/robot), idempotency record and DeliveryEvent each", groupThousands(int64(n)), len(robots))})
	return nil
}

func benchArchiver(ctx context.Context, cfg Config, r *Report, log *slog.Logger) error {
	if cfg.ClickHouseAddr == "" {
		return errNoClickHouse
	}
	env, err := newJS(ctx)
	if err != nil {
		return err
	}
	defer env.close()
	msgs, err := presenceMsgsOf(cfg.Events, cfg.Events/2)
	if err != nil {
		return err
	}
	for i, m := range msgs {
		// What ingest writes without an OTLP endpoint: a trace that is
		// not sampled.
		telemetry.HeaderCarrier(m.Header).Set("traceparent", fmt.Sprintf("00-%032x-%016x-00", i+1, i+1))
	}
	if err := publishAll(ctx, env.js, msgs); err != nil {
		return err
	}
	nc, err := env.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	ac := archiver.DefaultConfig()
	ac.ClickHouse.Addr = []string{cfg.ClickHouseAddr}
	ac.ClickHouse.Database = fmt.Sprintf("fleetwatch_bench_%d", time.Now().UnixNano())
	ac.Streams = []string{archiver.StreamPresence}
	svc, err := archiver.New(ac, archiver.Deps{NATS: nc, Logger: log})
	if err != nil {
		return err
	}
	defer dropDatabase(cfg.ClickHouseAddr, ac.ClickHouse.Database)
	stop, err := start(ctx, svc)
	if err != nil {
		return err
	}
	defer stop()
	t0, cpu, server := time.Now(), startCPU(), startServerCPU(cfg.ClickHouseAddr)
	if err := waitFor(ctx, 3*time.Minute, "archiver", func() (bool, error) {
		return acked(ctx, env.js, events.StreamPresence, events.ConsumerArchiverPresence)
	}); err != nil {
		return err
	}
	v := rate(len(msgs), time.Since(t0))
	own, chCPU := cpu.perOp(len(msgs)), server.perOp(len(msgs))
	raw := r.value(rowRawInsert)
	note := fmt.Sprintf("%s presence events already in the stream; batch_size %s, inflight_batches %d; CPU: the archiver and the embedded NATS server",
		groupThousands(int64(len(msgs))), groupThousands(int64(ac.BatchSize)), ac.InflightBatches)
	if consume := r.value(rowRawConsume); consume > 0 {
		note += fmt.Sprintf("; %.0f%% of the raw pull consume with an explicit ack per message (%s msgs/s)", 100*v/consume, groupThousands(int64(consume)))
	}
	if own > 0 && chCPU > 0 {
		// Every process shares the machine's cores: the CPU per row of
		// this process and of ClickHouse (the sessions view included)
		// bound the rows per second the machine has room for.
		note += fmt.Sprintf("; the ClickHouse server spent %.1f µs CPU per row (its sessions view included), so %.1f µs per row in all: %d cores have room for at most %s rows/s",
			chCPU, own+chCPU, runtime.NumCPU(), groupThousands(int64(float64(runtime.NumCPU())*1e6/(own+chCPU))))
	}
	r.add(Result{Name: "archiver: JetStream → ClickHouse, acked after insert", Value: v, Unit: "rows/s", CPU: own,
		Ratio: ratio(v, raw), Baseline: "raw insert", Target: "≥ 150,000 rows/s", Met: atLeast(v, 150_000), Note: note})
	return nil
}

func dropDatabase(addr, db string) {
	conn, err := openClickHouse(addr)
	if err != nil {
		return
	}
	defer conn.Close()
	_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
}
