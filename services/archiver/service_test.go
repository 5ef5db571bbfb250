package archiver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry/telemetrytest"
	"github.com/fleetwatch/fleetwatch/services/archiver"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestMain(m *testing.M) {
	// What telemetry.Setup installs in a process: W3C trace context.
	otel.SetTextMapPropagator(propagation.TraceContext{})
	os.Exit(m.Run())
}

const waitFor = 30 * time.Second

// eventually polls cond until it returns "" or the deadline passes.
func eventually(t *testing.T, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	last := ""
	for time.Now().Before(deadline) {
		if last = cond(); last == "" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s: %s", what, last)
}

// env is one test's NATS server, ClickHouse database and telemetry.
type env struct {
	t      *testing.T
	nc     *nats.Conn
	js     jetstream.JetStream
	ch     driver.Conn
	db     string
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ch := chtest.Open(t) // skips (or fails in CI) without ClickHouse
	return newEnvOn(t, ch, func() string { return chtest.FreshDatabase(t, ch) })
}

// newEnvOn builds an env that queries ClickHouse through ch, in the
// database freshDB returns.
func newEnvOn(t *testing.T, ch driver.Conn, freshDB func() string) *env {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	topo := events.DefaultTopology()
	topo.MemoryStorage = true
	if err := events.EnsureStreams(t.Context(), js, topo); err != nil {
		t.Fatal(err)
	}
	spans := tracetest.NewSpanRecorder()
	reader := sdkmetric.NewManualReader()
	return &env{
		t: t, nc: nc, js: js, ch: ch, db: freshDB(),
		spans:  spans,
		tp:     sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)),
		reader: reader,
		mp:     sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
	}
}

func (e *env) config(addr string) archiver.Config {
	c := archiver.DefaultConfig()
	c.ClickHouse.Addr = []string{addr}
	c.ClickHouse.Database = e.db
	c.ClickHouse.DialTimeout = time.Second
	c.BatchSize = 100
	c.BatchWait = 100 * time.Millisecond
	c.AckWait = time.Second
	c.InsertTimeout = 2 * time.Second
	c.Retry = archiver.RetryConfig{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	return c
}

// start runs a service until the test ends (or stop is called) and checks
// that Run returned nil.
func (e *env) start(cfg archiver.Config) (svc *archiver.Service, stop func()) {
	e.t.Helper()
	svc, err := archiver.New(cfg, archiver.Deps{
		NATS:           e.nc,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		TracerProvider: e.tp,
		MeterProvider:  e.mp,
	})
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(waitFor):
				e.t.Errorf("Run did not return after cancel")
			}
		})
	}
	e.t.Cleanup(stop)
	return svc, stop
}

func (e *env) waitReady(svc *archiver.Service) {
	e.t.Helper()
	eventually(e.t, "Ready", func() string {
		if err := svc.Ready(); err != nil {
			return err.Error()
		}
		return ""
	})
}

// publish stores one event with the given message id, carrying trace
// context from ctx.
func (e *env) publish(ctx context.Context, subject, msgID string, v any) {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	e.publishRaw(ctx, subject, msgID, b)
}

func (e *env) publishRaw(ctx context.Context, subject, msgID string, data []byte) {
	e.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(events.HeaderMsgID, msgID)
	telemetry.Inject(ctx, m)
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		e.t.Fatalf("publish %s: %v", subject, err)
	}
}

func (e *env) count(query string) uint64 {
	e.t.Helper()
	return chtest.Count(e.t, e.ch, strings.ReplaceAll(query, "DB.", e.db+"."))
}

// waitRows waits until SELECT count() FROM table FINAL is want.
func (e *env) waitRows(table string, want uint64) {
	e.t.Helper()
	eventually(e.t, fmt.Sprintf("%d rows in %s", want, table), func() string {
		if n := e.count("SELECT count() FROM DB." + table + " FINAL"); n != want {
			return fmt.Sprintf("%d rows", n)
		}
		return ""
	})
}

func (e *env) consumerInfo(stream, durable string) *jetstream.ConsumerInfo {
	e.t.Helper()
	c, err := e.js.Consumer(context.Background(), stream, durable)
	if err != nil {
		e.t.Fatalf("consumer %s: %v", durable, err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		e.t.Fatalf("consumer %s info: %v", durable, err)
	}
	return info
}

// waitDrained waits until a consumer has delivered and acked everything.
func (e *env) waitDrained(stream, durable string) {
	e.t.Helper()
	eventually(e.t, durable+" drained", func() string {
		info := e.consumerInfo(stream, durable)
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Sprintf("num_pending %d, num_ack_pending %d", info.NumPending, info.NumAckPending)
		}
		return ""
	})
}

func (e *env) counter(name string) int64 {
	e.t.Helper()
	return telemetrytest.Total(e.t, e.reader, name)
}

var baseMS = time.Date(2026, 3, 14, 9, 26, 53, 589_000_000, time.UTC).UnixMilli()

func presenceEvent(t *testing.T, i int) events.PresenceEvent {
	t.Helper()
	e := events.PresenceEvent{
		DeviceID:     fmt.Sprintf("site-%d/传感器.%03d *", i%3, i),
		Kind:         events.KindConnected,
		Node:         "emqx@10.0.0.11",
		BrokerTSMS:   baseMS + int64(i)*1000,
		IP:           "10.1.2." + fmt.Sprint(i%250),
		Username:     "u" + fmt.Sprint(i),
		Protocol:     "mqtt",
		ProtoVer:     5,
		KeepaliveS:   60,
		Source:       "emqx_sys_v5",
		ReceivedAtMS: baseMS + int64(i)*1000 + 7,
	}
	if i%2 == 1 {
		e.Kind, e.Reason, e.RawReason = events.KindDisconnected, events.ReasonKeepaliveTimeout, "keepalive_timeout"
		e.ConnectedAtMS = baseMS - 60_000
	}
	ev, err := events.NewPresenceEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func alertEvent(t *testing.T, i int) events.AlertEvent {
	t.Helper()
	a, err := events.NewAlertEvent(events.AlertEvent{
		Fingerprint: fmt.Sprintf("fp-%d", i),
		Receiver:    "ops-dingtalk",
		Status:      events.StatusFiring,
		Kind:        events.AlertDeviceOffline,
		Severity:    events.SeverityCritical,
		GroupKey:    fmt.Sprintf(`{}:{site="s%d"}`, i),
		GroupLabels: map[string]string{"site": fmt.Sprintf("s%d", i), "gateway": "gw-7"},
		Devices: []events.AlertDevice{
			{DeviceID: fmt.Sprintf("dev-%d-a", i), Status: events.StatusFiring, SinceMS: baseMS},
			{DeviceID: fmt.Sprintf("dev-%d-b", i), Status: events.StatusFiring, SinceMS: baseMS},
		},
		DevicesTotal: 40,
		StartsAtMS:   baseMS + int64(i),
		CreatedAtMS:  baseMS + int64(i) + 30_000,
		Silenced:     i%5 == 0,
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func deliveryEvent(t *testing.T, i int) events.DeliveryEvent {
	t.Helper()
	d, err := events.NewDeliveryEvent(events.DeliveryEvent{
		AlertID:       fmt.Sprintf("alert-%d", i/2),
		Fingerprint:   fmt.Sprintf("fp-%d", i/2),
		AlertStatus:   events.StatusFiring,
		Receiver:      "ops-feishu",
		Channel:       "feishu",
		Attempt:       i%2 + 1,
		Outcome:       events.OutcomePermanent,
		HTTPStatus:    200,
		RemoteCode:    "19021",
		RemoteMessage: "sign match fail or timestamp is not within one hour from current time",
		Hint:          "check the secret",
		Bytes:         812,
		LatencyMS:     int64(40 + i),
		AtMS:          baseMS + int64(i)*10,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type published struct {
	presence   []events.PresenceEvent
	alerts     []events.AlertEvent
	deliveries []events.DeliveryEvent
}

// publishAll publishes n presence events, n/5 alerts and n/4 deliveries;
// suffix is appended to the message ids (a replay uses a new suffix so
// that JetStream stores the events again).
func (e *env) publishAll(ctx context.Context, n int, suffix string) published {
	var p published
	for i := range n {
		ev := presenceEvent(e.t, i)
		e.publish(ctx, ev.Subject(events.DefaultPartitions), ev.ID+suffix, ev)
		p.presence = append(p.presence, ev)
	}
	for i := range n / 5 {
		a := alertEvent(e.t, i)
		e.publish(ctx, a.Subject(), a.ID+suffix, a)
		p.alerts = append(p.alerts, a)
	}
	for i := range n / 4 {
		d := deliveryEvent(e.t, i)
		e.publish(ctx, d.Subject(), d.ID+suffix, d)
		p.deliveries = append(p.deliveries, d)
	}
	return p
}

func TestArchivesEveryStreamExactlyOnceAfterReplay(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 250 // presence; with batch_size 100 several batches per stream

	tracer := e.tp.Tracer("test")
	pubCtx, pubSpan := tracer.Start(context.Background(), "publish")
	p := e.publishAll(pubCtx, n, "")
	pubSpan.End()

	svc, _ := e.start(e.config(chtest.Addr()))
	e.waitReady(svc)
	e.waitRows("presence_events", n)
	e.waitRows("alerts", n/5)
	e.waitRows("deliveries", n/4)
	for _, c := range [][2]string{
		{events.StreamPresence, events.ConsumerArchiverPresence},
		{events.StreamAlerts, events.ConsumerArchiverAlerts},
		{events.StreamDeliveries, events.ConsumerArchiverDeliveries},
	} {
		e.waitDrained(c[0], c[1])
	}
	if caps, ok := svc.Capabilities(); !ok || caps.Version.Major == 0 {
		t.Errorf("Capabilities() = %+v, %v", caps, ok)
	}

	// Spot-check rows against the events.
	ev := p.presence[7] // a disconnect
	var (
		id, device, kind, reason, raw, node, ip, user, source string
		brokerTS, date                                        time.Time
		brokerMS, connAt, recv                                uint64
		protoVer                                              uint8
		keepalive                                             uint32
	)
	if err := e.ch.QueryRow(t.Context(), "SELECT id, device_id, kind, reason, raw_reason, node, ip, username, source, broker_ts, date, broker_ts_ms, connected_at_ms, received_at_ms, proto_ver, keepalive_s FROM "+e.db+".presence_events FINAL WHERE device_id = ?", ev.DeviceID).
		Scan(&id, &device, &kind, &reason, &raw, &node, &ip, &user, &source, &brokerTS, &date, &brokerMS, &connAt, &recv, &protoVer, &keepalive); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(id, device, kind, reason, raw, node, ip, user, source, brokerTS.UTC().Format(time.RFC3339), date.Format(time.DateOnly), brokerMS, connAt, recv, protoVer, keepalive)
	want := fmt.Sprint(ev.ID, ev.DeviceID, "disconnected", "keepalive_timeout", "keepalive_timeout", ev.Node, ev.IP, ev.Username, ev.Source,
		"2026-03-14T09:27:00Z", "2026-03-14", ev.BrokerTSMS, ev.ConnectedAtMS, ev.ReceivedAtMS, uint8(5), uint32(60))
	if got != want {
		t.Errorf("presence row\n got %s\nwant %s", got, want)
	}

	a := p.alerts[5]
	var keys, vals, devices []string
	var total uint32
	var silenced uint8
	var starts uint64
	if err := e.ch.QueryRow(t.Context(), "SELECT group_label_keys, group_label_values, device_ids, devices_total, silenced, starts_at_ms FROM "+e.db+".alerts FINAL WHERE id = ?", a.ID).
		Scan(&keys, &vals, &devices, &total, &silenced, &starts); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(keys, vals, devices, total, silenced, starts), fmt.Sprint([]string{"gateway", "site"}, []string{"gw-7", "s5"}, []string{"dev-5-a", "dev-5-b"}, 40, 1, a.StartsAtMS); got != want {
		t.Errorf("alert row %s, want %s", got, want)
	}

	d := p.deliveries[3]
	var alertID, code, msg string
	var attempt uint32
	var latency uint64
	if err := e.ch.QueryRow(t.Context(), "SELECT alert_id, attempt, remote_code, remote_message, latency_ms FROM "+e.db+".deliveries FINAL WHERE id = ?", d.ID).
		Scan(&alertID, &attempt, &code, &msg, &latency); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(alertID, attempt, code, msg, latency), fmt.Sprint("alert-1", 2, "19021", d.RemoteMessage, 43); got != want {
		t.Errorf("delivery row %s, want %s", got, want)
	}

	// Every message got a span, child of the publisher's trace.
	eventually(t, "a span per message", func() string {
		archived := 0
		for _, s := range e.spans.Ended() {
			if strings.HasPrefix(s.Name(), "archive ") {
				archived++
				if s.Parent().TraceID() != pubSpan.SpanContext().TraceID() {
					t.Fatalf("span %s has trace %s, want the publisher's %s", s.Name(), s.Parent().TraceID(), pubSpan.SpanContext().TraceID())
				}
			}
		}
		if want := n + n/5 + n/4; archived != want {
			return fmt.Sprintf("%d archive spans, want %d", archived, want)
		}
		return ""
	})
	if got := e.counter("fleetwatch_archiver_rows_total"); got != int64(n+n/5+n/4) {
		t.Errorf("rows_total = %d, want %d", got, n+n/5+n/4)
	}

	// Replay: the same events stored again in the streams (new message
	// ids) are inserted again but collapse by id. They carry a trace that
	// is not sampled, so no span is recorded for them.
	unsampled := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, Remote: true}))
	e.publishAll(unsampled, n, "-replay")
	eventually(t, "replay archived", func() string {
		if got := e.counter("fleetwatch_archiver_rows_total"); got != 2*int64(n+n/5+n/4) {
			return fmt.Sprintf("rows_total %d", got)
		}
		return ""
	})
	for _, c := range [][2]string{
		{events.StreamPresence, events.ConsumerArchiverPresence},
		{events.StreamAlerts, events.ConsumerArchiverAlerts},
		{events.StreamDeliveries, events.ConsumerArchiverDeliveries},
	} {
		e.waitDrained(c[0], c[1])
	}
	archived := 0
	for _, s := range e.spans.Ended() {
		if strings.HasPrefix(s.Name(), "archive ") {
			archived++
		}
	}
	if want := n + n/5 + n/4; archived != want {
		t.Errorf("%d archive spans after the unsampled replay, want still %d", archived, want)
	}
	for table, want := range map[string]uint64{"presence_events": n, "alerts": n / 5, "deliveries": n / 4} {
		if got := e.count("SELECT count() FROM DB." + table + " FINAL"); got != want {
			t.Errorf("after replay: count() FROM %s FINAL = %d, want %d", table, got, want)
		}
		if got := e.count("SELECT uniqExact(id) FROM DB." + table); got != want {
			t.Errorf("after replay: uniqExact(id) FROM %s = %d, want %d", table, got, want)
		}
		// Once merged, the duplicates are gone for plain queries too. (An
		// OPTIMIZE that meets a running background merge silently does
		// nothing, hence the loop.)
		eventually(t, "merged "+table, func() string {
			if err := e.ch.Exec(t.Context(), "OPTIMIZE TABLE "+e.db+"."+table+" FINAL"); err != nil {
				return err.Error()
			}
			if got := e.count("SELECT count() FROM DB." + table); got != want {
				return fmt.Sprintf("count() = %d after OPTIMIZE FINAL", got)
			}
			return ""
		})
	}
}

func TestBadMessagesGoToDeadLetterAndTheRestIsArchived(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	var good []events.PresenceEvent
	for i := range 5 {
		ev := presenceEvent(t, i)
		good = append(good, ev)
		e.publish(ctx, ev.Subject(events.DefaultPartitions), ev.ID, ev)
	}
	bogus := presenceEvent(t, 10)
	bogus.Kind = "bogus"
	future := presenceEvent(t, 11)
	future.BrokerTSMS = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	future, err := events.NewPresenceEvent(future) // valid for events, not storable
	if err != nil {
		t.Fatal(err)
	}
	bogusJSON, _ := json.Marshal(bogus)
	futureJSON, _ := json.Marshal(future)
	bad := map[string]struct {
		subject, payload, reason, source string
	}{
		"garbage":    {"presence.v1.0.garbage", "{not json", "decode json: invalid character 'n' looking for beginning of object key string", "PRESENCE"},
		"bogus kind": {bogus.Subject(events.DefaultPartitions), string(bogusJSON), `invalid event: kind "bogus" is neither connected nor disconnected`, "PRESENCE"},
		"year 2200": {future.Subject(events.DefaultPartitions), string(futureJSON),
			fmt.Sprintf("broker_ts_ms %d: time outside the range ClickHouse can store (1970-01-01 to 2105-12-31)", future.BrokerTSMS), "PRESENCE"},
		"bad alert": {"alerts.v1.ops", `{"v":1,"id":"x"}`, "invalid event: fingerprint is empty", "ALERTS"},
	}
	for name, b := range bad {
		e.publishRaw(ctx, b.subject, "bad-"+name, []byte(b.payload))
	}
	for i := 5; i < 8; i++ { // after the bad ones, in the same batch
		ev := presenceEvent(t, i)
		good = append(good, ev)
		e.publish(ctx, ev.Subject(events.DefaultPartitions), ev.ID, ev)
	}
	a := alertEvent(t, 1)
	e.publish(ctx, a.Subject(), a.ID, a)

	svc, _ := e.start(e.config(chtest.Addr()))
	e.waitReady(svc)
	e.waitRows("presence_events", uint64(len(good)))
	e.waitRows("alerts", 1)
	e.waitDrained(events.StreamPresence, events.ConsumerArchiverPresence)
	e.waitDrained(events.StreamAlerts, events.ConsumerArchiverAlerts)
	if n := e.count("SELECT count() FROM DB.presence_events FINAL WHERE kind = 'bogus' OR broker_ts_ms = " + fmt.Sprint(future.BrokerTSMS)); n != 0 {
		t.Errorf("%d bad rows stored", n)
	}

	dl, err := e.js.Stream(ctx, events.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dl.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(bad)) {
		t.Fatalf("DEADLETTER has %d messages, want %d", info.State.Msgs, len(bad))
	}
	seen := map[string]bool{}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := dl.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var name string
		for n, b := range bad {
			if b.payload == string(m.Data) {
				name = n
			}
		}
		if name == "" {
			t.Fatalf("unexpected dead letter %q", m.Data)
		}
		seen[name] = true
		b := bad[name]
		if got := m.Header.Get(events.HeaderReason); got != b.reason {
			t.Errorf("%s: reason %q, want %q", name, got, b.reason)
		}
		if m.Header.Get(events.HeaderStage) != "archiver" || m.Header.Get(events.HeaderSource) != b.source || m.Header.Get(events.HeaderTopic) != b.subject {
			t.Errorf("%s: headers %v", name, m.Header)
		}
		if want := events.DeadLetterSubject("archiver", b.source); m.Subject != want {
			t.Errorf("%s: subject %s, want %s", name, m.Subject, want)
		}
	}
	if len(seen) != len(bad) {
		t.Errorf("dead letters %v, want all of %d", seen, len(bad))
	}
	if got := e.counter("fleetwatch_archiver_deadletters_total"); got != int64(len(bad)) {
		t.Errorf("deadletters_total = %d, want %d", got, len(bad))
	}
}

// proxy forwards TCP connections to a target and can be cut off and
// restored on the same address, to make ClickHouse disappear.
type proxy struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	p := &proxy{t: t, target: target, conns: map[net.Conn]bool{}}
	p.listen("127.0.0.1:0")
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) listen(addr string) {
	p.t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port may linger briefly after stop
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("proxy listen on %s: %v", addr, err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(up, c); _ = up.Close(); _ = c.Close() })
			p.wg.Go(func() { _, _ = io.Copy(c, up); _ = up.Close(); _ = c.Close() })
		}
	})
}

// stop refuses new connections and cuts the open ones.
func (p *proxy) stop() {
	p.mu.Lock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
	p.mu.Unlock()
	p.wg.Wait()
}

// restart listens again on the same address.
func (p *proxy) restart() { p.listen(p.addr) }

func TestClickHouseOutageAcksNothingAndLosesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	px := newProxy(t, chtest.Addr())
	svc, _ := e.start(e.config(px.addr))
	e.waitReady(svc)

	px.stop()
	const n = 20
	ctx := context.Background()
	for i := range n {
		ev := presenceEvent(t, i)
		e.publish(ctx, ev.Subject(events.DefaultPartitions), ev.ID, ev)
	}
	// The batch is fetched and its insert fails, again and again, for
	// longer than the 1s ack wait (30 attempts with backoff capped at
	// 100ms, jittered down to 50ms, take more than 1.2s): in-progress acks
	// keep it from being redelivered.
	eventually(t, "retried inserts", func() string {
		if got := e.counter("fleetwatch_archiver_insert_errors_total"); got < 30 {
			return fmt.Sprintf("%d insert errors", got)
		}
		return ""
	})
	// Nothing acked: every message is still pending, either delivered in
	// the batch being retried or not yet delivered (a batch fetched while
	// the first messages were still being published holds the rest back).
	info := e.consumerInfo(events.StreamPresence, events.ConsumerArchiverPresence)
	if info.NumPending+uint64(info.NumAckPending) != n || info.NumAckPending == 0 || info.AckFloor.Stream != 0 || info.NumRedelivered != 0 {
		t.Errorf("during the outage: num_pending %d, num_ack_pending %d, ack_floor %d, num_redelivered %d; want %d pending in all, some delivered, none acked or redelivered",
			info.NumPending, info.NumAckPending, info.AckFloor.Stream, info.NumRedelivered, n)
	}
	if err := svc.Ready(); err == nil {
		t.Error("Ready() = nil while ClickHouse is unreachable")
	}
	if got := e.count("SELECT count() FROM system.tables WHERE database = '" + e.db + "' AND name = 'presence_events'"); got != 1 {
		t.Fatalf("presence_events missing")
	}
	if got := e.count("SELECT count() FROM DB.presence_events"); got != 0 {
		t.Errorf("%d rows stored during the outage", got)
	}

	px.restart()
	e.waitRows("presence_events", n)
	e.waitDrained(events.StreamPresence, events.ConsumerArchiverPresence)
	e.waitReady(svc)
}

// TestClickHouseOutageHoldsAtMostTheBatchesInFlight: while ClickHouse is
// down the archiver holds at most inflight_batches batches, each retried
// and kept alive by its worker, and fetches nothing more (back-pressure);
// once ClickHouse is back every batch is stored and acks its own messages.
func TestClickHouseOutageHoldsAtMostTheBatchesInFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	px := newProxy(t, chtest.Addr())
	cfg := e.config(px.addr)
	cfg.InflightBatches = 3
	svc, _ := e.start(cfg)
	e.waitReady(svc)

	px.stop()
	const n = 1000
	for i := range n {
		ev := presenceEvent(t, i)
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(ev.Subject(events.DefaultPartitions))
		m.Data = b
		m.Header.Set(events.HeaderMsgID, ev.ID)
		if _, err := e.js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(waitFor):
		t.Fatal("publishing did not complete")
	}
	limit := cfg.InflightBatches * cfg.BatchSize
	held := func() string {
		info := e.consumerInfo(events.StreamPresence, events.ConsumerArchiverPresence)
		switch {
		case info.NumAckPending > limit:
			return fmt.Sprintf("%d messages delivered and not acked, more than %d batches of %d", info.NumAckPending, cfg.InflightBatches, cfg.BatchSize)
		case info.NumPending+uint64(info.NumAckPending) != n || info.AckFloor.Stream != 0 || info.NumRedelivered != 0:
			return fmt.Sprintf("num_pending %d, num_ack_pending %d, ack_floor %d, num_redelivered %d; want %d in all, none acked or redelivered",
				info.NumPending, info.NumAckPending, info.AckFloor.Stream, info.NumRedelivered, n)
		case info.NumAckPending <= cfg.BatchSize:
			return fmt.Sprintf("%d messages delivered: not yet more than one batch", info.NumAckPending)
		}
		return ""
	}
	eventually(t, "several batches held", held)
	// Hold them for longer than the 1s ack wait: 30 more failed attempts
	// (each worker retries with backoff capped at 100ms).
	errs := e.counter("fleetwatch_archiver_insert_errors_total")
	eventually(t, "retried inserts", func() string {
		if got := e.counter("fleetwatch_archiver_insert_errors_total"); got < errs+30 {
			return fmt.Sprintf("%d insert errors", got-errs)
		}
		return ""
	})
	if msg := held(); msg != "" {
		t.Errorf("during the outage: %s", msg)
	}
	if got := e.count("SELECT count() FROM DB.presence_events"); got != 0 {
		t.Errorf("%d rows stored during the outage", got)
	}

	px.restart()
	e.waitRows("presence_events", n)
	e.waitDrained(events.StreamPresence, events.ConsumerArchiverPresence)
	if info := e.consumerInfo(events.StreamPresence, events.ConsumerArchiverPresence); info.NumRedelivered != 0 {
		t.Errorf("%d messages redelivered", info.NumRedelivered)
	}
}

func TestStartsWithoutClickHouseAndLosesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close() // nothing listens here now

	const n = 30
	ctx := context.Background()
	for i := range n {
		ev := presenceEvent(t, i)
		e.publish(ctx, ev.Subject(events.DefaultPartitions), ev.ID, ev)
	}
	svc, stop := e.start(e.config(closed))
	eventually(t, "consumer created", func() string {
		if _, err := e.js.Consumer(ctx, events.StreamPresence, events.ConsumerArchiverPresence); err != nil {
			return err.Error()
		}
		return ""
	})
	err = svc.Ready()
	if err == nil || !strings.Contains(err.Error(), "stream consumers running") {
		t.Errorf("Ready() = %v, want not ready (schema not migrated)", err)
	}
	stop()
	info := e.consumerInfo(events.StreamPresence, events.ConsumerArchiverPresence)
	if info.NumPending != n || info.NumAckPending != 0 {
		t.Errorf("after a run without ClickHouse: num_pending %d, num_ack_pending %d; want %d, 0", info.NumPending, info.NumAckPending, n)
	}

	svc2, _ := e.start(e.config(chtest.Addr()))
	e.waitReady(svc2)
	e.waitRows("presence_events", n)
	e.waitDrained(events.StreamPresence, events.ConsumerArchiverPresence)
}

func TestOnlyConfiguredStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.config(chtest.Addr())
	cfg.Streams = []string{archiver.StreamAlerts}
	svc, _ := e.start(cfg)
	e.waitReady(svc)
	ctx := context.Background()
	if _, err := e.js.Consumer(ctx, events.StreamPresence, events.ConsumerArchiverPresence); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("presence consumer: %v, want ErrConsumerNotFound", err)
	}
	a := alertEvent(t, 3)
	e.publish(ctx, a.Subject(), a.ID, a)
	e.waitRows("alerts", 1)
	e.waitDrained(events.StreamAlerts, events.ConsumerArchiverAlerts)
	info := e.consumerInfo(events.StreamAlerts, events.ConsumerArchiverAlerts)
	if info.Config.MaxAckPending != 2*cfg.InflightBatches*cfg.BatchSize || info.Config.AckWait != cfg.AckWait || info.Config.Durable != events.ConsumerArchiverAlerts {
		t.Errorf("consumer config: max_ack_pending %d, ack_wait %s, durable %s", info.Config.MaxAckPending, info.Config.AckWait, info.Config.Durable)
	}
}

// TestRetentionFollowsTheServer: a retention TTL is applied where the
// server supports it, and is a start-up error (not an endless retry) where
// it does not (18.16).
func TestRetentionFollowsTheServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.config(chtest.Addr())
	cfg.ClickHouse.RetentionDays = 30
	svc, err := archiver.New(cfg, archiver.Deps{NATS: e.nc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var version string
	if err := e.ch.QueryRow(t.Context(), "SELECT version()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	v, err := schema.ParseVersion(version)
	if err != nil {
		t.Fatal(err)
	}
	if !schema.CapabilitiesOf(v).TTL {
		err := svc.Run(t.Context())
		if err == nil || !errors.Is(err, schema.ErrUnsupported) || !strings.Contains(err.Error(), "retention of 30 days needs table TTL") {
			t.Fatalf("Run on %s with retention = %v, want ErrUnsupported", version, err)
		}
		return
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	e.waitReady(svc)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var ddl string
	if err := e.ch.QueryRow(t.Context(), "SELECT create_table_query FROM system.tables WHERE database = ? AND name = 'presence_events'", e.db).Scan(&ddl); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ddl, "TTL date + toIntervalDay(30)") {
		t.Errorf("presence_events DDL has no 30-day TTL: %s", ddl)
	}
}
