package ingest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry/telemetrytest"
	"github.com/fleetwatch/fleetwatch/services/ingest"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqx"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqxsim"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

const (
	node       = emqxsim.DefaultNode
	receivedMS = 1718000999000
	wait       = 10 * time.Second
)

func TestMain(m *testing.M) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	os.Exit(m.Run())
}

// clock is a settable fake clock.
type clock struct{ ms atomic.Int64 }

func (c *clock) Now() time.Time { return time.UnixMilli(c.ms.Load()) }
func (c *clock) Set(ms int64)   { c.ms.Store(ms) }

// env is one test's world: JetStream with the streams, an EMQX-like broker
// with a fake clock, and the ingest service.
type env struct {
	t       *testing.T
	nats    *natstest.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	broker  *emqxsim.Broker
	clock   *clock
	metrics *sdkmetric.ManualReader
	// deps, when set, edits the service's dependencies before New.
	deps func(*ingest.Deps)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, nats: natstest.Start(t), clock: &clock{}}
	e.clock.Set(1718000000123)
	e.nc, e.js = e.nats.Connect(t)
	if err := events.EnsureStreams(t.Context(), e.js, events.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	b, err := emqxsim.New(emqxsim.Config{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	e.broker = b
	return e
}

func (e *env) config() ingest.Config {
	cfg := ingest.DefaultConfig()
	cfg.MQTT.Broker = e.broker.Addr()
	cfg.MQTT.ClientID = "fleetwatch-ingest-test"
	cfg.PublishTimeout = time.Second
	return cfg
}

// start runs a service until the returned stop function is called (or the
// test ends) and waits until it is ready.
func (e *env) start(cfg ingest.Config) (*ingest.Service, func()) {
	e.t.Helper()
	return e.startWith(cfg, nil)
}

// startWith is start with the logs also written to extra.
func (e *env) startWith(cfg ingest.Config, extra io.Writer) (*ingest.Service, func()) {
	e.t.Helper()
	e.metrics = sdkmetric.NewManualReader()
	log := e.logger()
	if extra != nil {
		log = slog.New(slog.NewTextHandler(io.MultiWriter(e.t.Output(), extra), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	deps := ingest.Deps{
		NATS:           e.nc,
		Logger:         log,
		TracerProvider: sdktrace.NewTracerProvider(),
		MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.metrics)),
		Now:            func() time.Time { return time.UnixMilli(receivedMS) },
	}
	if e.deps != nil {
		e.deps(&deps)
	}
	svc, err := ingest.New(cfg, deps)
	if err != nil {
		e.t.Fatalf("ingest.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("Run: %v", err)
			}
		case <-time.After(wait):
			e.t.Error("Run did not return within 10s of cancel")
		}
	}
	e.t.Cleanup(stop)
	e.eventually("service ready", func() error { return svc.Ready() })
	return svc, stop
}

// logger writes to the test's output (shown with -v or on failure).
func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (e *env) eventually(what string, cond func() error) {
	e.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: still not true after 10s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) waitStats(svc *ingest.Service, want ingest.Stats) {
	e.t.Helper()
	e.eventually("stats", func() error {
		if got := svc.Stats(); got != want {
			return errors.New("got " + jsonString(got) + ", want " + jsonString(want))
		}
		return nil
	})
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// device connects a paho device (no auto-reconnect, so a taken-over
// connection stays down).
func (e *env) device(id string, configure func(*paho.ClientOptions)) paho.Client {
	e.t.Helper()
	opts := paho.NewClientOptions().AddBroker(e.broker.Addr()).SetClientID(id).
		SetAutoReconnect(false).SetKeepAlive(30 * time.Second)
	if configure != nil {
		configure(opts)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		e.t.Fatalf("device %s connect: %v", id, tok.Error())
	}
	e.t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(0)
		}
	})
	return c
}

// presenceReader reads PRESENCE in order from its start, each call
// continuing where the last one stopped.
type presenceReader struct {
	e    *env
	cons jetstream.Consumer
}

func (e *env) readPresence() *presenceReader {
	e.t.Helper()
	c, err := e.js.OrderedConsumer(e.t.Context(), events.StreamPresence, jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	return &presenceReader{e: e, cons: c}
}

// drain hands fn every event stored since the last call whose device id
// starts with prefix (the broker also reports the service's own
// connections), with its message.
func (r *presenceReader) drain(prefix string, fn func(jetstream.Msg, events.PresenceEvent)) error {
	for {
		batch, err := r.cons.FetchNoWait(500)
		if err != nil {
			return err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			var ev events.PresenceEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				r.e.t.Fatalf("stored data %q: %v", m.Data(), err)
			}
			if strings.HasPrefix(ev.DeviceID, prefix) {
				fn(m, ev)
			}
		}
		if got == 0 {
			return nil
		}
	}
}

// subscriber reads one subject of a stream in order.
type subscriber struct {
	e    *env
	cons jetstream.Consumer
}

func (e *env) subscribe(stream, subject string) *subscriber {
	e.t.Helper()
	c, err := e.js.OrderedConsumer(e.t.Context(), stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		e.t.Fatal(err)
	}
	return &subscriber{e: e, cons: c}
}

func (s *subscriber) next() jetstream.Msg {
	s.e.t.Helper()
	m, err := s.cons.Next(jetstream.FetchMaxWait(wait))
	if err != nil {
		s.e.t.Fatalf("no message on the stream within 10s: %v", err)
	}
	return m
}

// nextEvent reads the next presence event and checks the message around it.
func (s *subscriber) nextEvent() events.PresenceEvent {
	s.e.t.Helper()
	m := s.next()
	var ev events.PresenceEvent
	if err := json.Unmarshal(m.Data(), &ev); err != nil {
		s.e.t.Fatalf("event %s: %v", m.Data(), err)
	}
	if err := ev.Validate(); err != nil {
		s.e.t.Errorf("stored event is invalid: %v", err)
	}
	if got, want := m.Subject(), events.PresenceSubject(ev.DeviceID, events.DefaultPartitions); got != want {
		s.e.t.Errorf("subject %q, want %q", got, want)
	}
	if got := m.Headers().Get(events.HeaderMsgID); got != ev.ID {
		s.e.t.Errorf("Nats-Msg-Id %q, want the event id %q", got, ev.ID)
	}
	if tp := m.Headers().Get("traceparent"); !strings.HasPrefix(tp, "00-") {
		s.e.t.Errorf("traceparent header %q, want a W3C trace context", tp)
	}
	return ev
}

func expect(t *testing.T, e events.PresenceEvent) events.PresenceEvent {
	t.Helper()
	e.Node, e.Source, e.ReceivedAtMS = node, emqx.SourceSysV5, receivedMS
	e, err := events.NewPresenceEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestConnectAndCleanDisconnect(t *testing.T) {
	e := newEnv(t)
	svc, _ := e.start(e.config())
	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("dev-1", events.DefaultPartitions))

	e.clock.Set(1718000000123)
	dev := e.device("dev-1", func(o *paho.ClientOptions) { o.SetUsername("alice") })
	want := expect(t, events.PresenceEvent{DeviceID: "dev-1", Kind: events.KindConnected,
		BrokerTSMS: 1718000000123, ConnectedAtMS: 1718000000123, IP: "127.0.0.1", Username: "alice",
		Protocol: "mqtt", ProtoVer: 4, KeepaliveS: 30})
	if got := sub.nextEvent(); got != want {
		t.Fatalf("connected:\n got %+v\nwant %+v", got, want)
	}

	e.clock.Set(1718000300412)
	dev.Disconnect(250)
	want = expect(t, events.PresenceEvent{DeviceID: "dev-1", Kind: events.KindDisconnected,
		Reason: events.ReasonNormal, RawReason: "normal",
		BrokerTSMS: 1718000300412, ConnectedAtMS: 1718000000123, IP: "127.0.0.1", Username: "alice",
		Protocol: "mqtt", ProtoVer: 4})
	if got := sub.nextEvent(); got != want {
		t.Fatalf("disconnected:\n got %+v\nwant %+v", got, want)
	}
	e.waitStats(svc, ingest.Stats{Received: 2, Published: 2})
	e.eventually("both acknowledged to the broker", func() error {
		if n := e.broker.Unacked("fleetwatch-ingest-test"); n != 0 {
			return fmt.Errorf("the broker holds %d unacknowledged deliveries", n)
		}
		return nil
	})
}

// rawConn makes paho dial a plain socket and keeps it in *sock, so that a
// test can close it abruptly.
func rawConn(sock *io.Closer) paho.OpenConnectionFunc {
	return func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
		c, err := net.Dial("tcp", u.Host)
		*sock = c
		return c, err
	}
}

func TestAbruptClose(t *testing.T) {
	e := newEnv(t)
	e.start(e.config())
	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("dev-2", events.DefaultPartitions))
	var sock io.Closer
	e.device("dev-2", func(o *paho.ClientOptions) { o.SetCustomOpenConnectionFn(rawConn(&sock)) })
	if got := sub.nextEvent(); got.Kind != events.KindConnected {
		t.Fatalf("got %+v, want connected", got)
	}
	e.clock.Set(1718000000999)
	_ = sock.Close()
	want := expect(t, events.PresenceEvent{DeviceID: "dev-2", Kind: events.KindDisconnected,
		Reason: events.ReasonClosed, RawReason: "tcp_closed",
		BrokerTSMS: 1718000000999, ConnectedAtMS: 1718000000123, IP: "127.0.0.1", Protocol: "mqtt", ProtoVer: 4})
	if got := sub.nextEvent(); got != want {
		t.Fatalf("disconnected:\n got %+v\nwant %+v", got, want)
	}
}

// TestTakeover: a second connection with the same client id yields the old
// connection's disconnected(takenover) and the new connected.
func TestTakeover(t *testing.T) {
	e := newEnv(t)
	e.start(e.config())
	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("dev-3", events.DefaultPartitions))
	e.clock.Set(1718000000100)
	e.device("dev-3", func(o *paho.ClientOptions) { o.SetCleanSession(false) })
	if got := sub.nextEvent(); got.Kind != events.KindConnected || got.ConnectedAtMS != 1718000000100 {
		t.Fatalf("got %+v, want connected at 1718000000100", got)
	}
	e.clock.Set(1718000000200)
	e.device("dev-3", func(o *paho.ClientOptions) { o.SetCleanSession(false) })
	// ingest does not promise an order (contracts/emqx.md rule 7): compare as a set.
	got := []events.PresenceEvent{sub.nextEvent(), sub.nextEvent()}
	slices.SortFunc(got, func(a, b events.PresenceEvent) int { return strings.Compare(string(a.Kind), string(b.Kind)) })
	want := []events.PresenceEvent{
		expect(t, events.PresenceEvent{DeviceID: "dev-3", Kind: events.KindConnected,
			BrokerTSMS: 1718000000200, ConnectedAtMS: 1718000000200, IP: "127.0.0.1",
			Protocol: "mqtt", ProtoVer: 4, KeepaliveS: 30}),
		expect(t, events.PresenceEvent{DeviceID: "dev-3", Kind: events.KindDisconnected,
			Reason: events.ReasonTakenOver, RawReason: "takenover",
			BrokerTSMS: 1718000000200, ConnectedAtMS: 1718000000100, IP: "127.0.0.1", Protocol: "mqtt", ProtoVer: 4}),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("takeover events:\n got %+v\nwant %+v", got, want)
	}
}

// TestGarbageIsDeadLettered: a payload that is not a presence message goes
// to DEADLETTER with the reason, and the service keeps going.
func TestGarbageIsDeadLettered(t *testing.T) {
	e := newEnv(t)
	svc, _ := e.start(e.config())
	dlq := e.subscribe(events.StreamDeadLetter, events.DeadLetterSubject(ingest.Stage, ingest.SourceEMQXSys))
	topic := "$SYS/brokers/" + node + "/clients/bad/connected"
	if err := e.broker.Publish(topic, []byte("not json"), 1); err != nil {
		t.Fatal(err)
	}
	m := dlq.next()
	if string(m.Data()) != "not json" {
		t.Errorf("dead letter payload %q, want the raw input", m.Data())
	}
	for h, want := range map[string]string{
		events.HeaderReason: "invalid emqx $SYS presence payload: not a JSON object",
		events.HeaderStage:  "ingest",
		events.HeaderSource: "emqx_sys",
		events.HeaderTopic:  topic,
	} {
		if got := m.Headers().Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}

	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("dev-4", events.DefaultPartitions))
	e.device("dev-4", nil)
	if got := sub.nextEvent(); got.DeviceID != "dev-4" || got.Kind != events.KindConnected {
		t.Fatalf("after the dead letter got %+v, want dev-4 connected", got)
	}
	e.waitStats(svc, ingest.Stats{Received: 2, Published: 1, DeadLettered: 1})
	if got := counter(t, e.metrics, "fleetwatch_ingest_events", "deadlettered"); got != 1 {
		t.Errorf("fleetwatch_ingest_events{outcome=deadlettered} = %d, want 1", got)
	}
}

// counter is the int64 counter name for one outcome ("" for every one).
func counter(t *testing.T, r *sdkmetric.ManualReader, name, outcome string) int64 {
	t.Helper()
	if outcome == "" {
		return telemetrytest.Total(t, r, name)
	}
	return telemetrytest.Int64s(t, r, name, "outcome")[outcome]
}

// TestDuplicateStoredOnce: the same EMQX message twice (a QoS 1
// redelivery, a second replica) is stored once.
func TestDuplicateStoredOnce(t *testing.T) {
	e := newEnv(t)
	svc, _ := e.start(e.config())
	raw, err := os.ReadFile("emqx/testdata/v5_sys_connected.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Topic   string          `json:"topic"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := e.broker.Publish(fx.Topic, fx.Payload, 1); err != nil {
			t.Fatal(err)
		}
	}
	e.waitStats(svc, ingest.Stats{Received: 2, Published: 1, Duplicates: 1})
	subject := events.PresenceSubject("dev-42", events.DefaultPartitions)
	stream, err := e.js.Stream(t.Context(), events.StreamPresence)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[subject]; n != 1 {
		t.Fatalf("%s holds %d messages, want 1", subject, n)
	}
	if got := counter(t, e.metrics, "fleetwatch_ingest_events", "duplicate"); got != 1 {
		t.Errorf("fleetwatch_ingest_events{outcome=duplicate} = %d, want 1", got)
	}
}

// TestJetStreamOutageLosesNothing: while PRESENCE is missing, publishes
// fail and the MQTT message stays unacknowledged; a new run with the same
// client id gets it again from the persistent session and stores it.
func TestJetStreamOutageLosesNothing(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.PublishTimeout = 300 * time.Millisecond
	svc, stop := e.start(cfg)
	if err := e.js.DeleteStream(t.Context(), events.StreamPresence); err != nil {
		t.Fatal(err)
	}
	e.device("dev-5", nil)
	e.eventually("publish errors", func() error {
		if svc.Stats().PublishErrors < 2 {
			return errors.New("fewer than 2 failed attempts")
		}
		return nil
	})
	stop() // gives up while retrying: the message must stay unacknowledged
	if s := svc.Stats(); s.Published != 0 || s.Received != 1 {
		t.Fatalf("stats after the outage %+v, want 1 received and nothing published", s)
	}
	if err := events.EnsureStreams(t.Context(), e.js, events.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("dev-5", events.DefaultPartitions))
	svc2, _ := e.start(cfg)
	if got := sub.nextEvent(); got.DeviceID != "dev-5" || got.Kind != events.KindConnected {
		t.Fatalf("got %+v, want dev-5 connected", got)
	}
	// Besides dev-5, the session held ingest's own disconnect (first run)
	// and gets its own connect (second run): EMQX reports every client.
	// dev-5 is stored by the second run, or was by a retry of the first
	// that reached the recreated stream just before it stopped (then the
	// second run's publish is a duplicate): either way once.
	e.eventually("stats", func() error {
		if s := svc2.Stats(); s.Received != 3 || s.Published+s.Duplicates != 3 || s.Duplicates > 1 || s.DeadLettered != 0 {
			return errors.New("got " + jsonString(s) + ", want 3 received, 3 published or duplicate (at most dev-5)")
		}
		return nil
	})
	info, err := e.js.Stream(t.Context(), events.StreamPresence)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 3 {
		t.Fatalf("PRESENCE holds %d events, want 3 (dev-5 once, ingest's own disconnect and connect)", n)
	}
}

// TestRecoversWhileJetStreamComesBack: the retry loop itself stores the
// event once the stream is back, without a restart.
func TestRecoversWhileJetStreamComesBack(t *testing.T) {
	e := newEnv(t)
	svc, _ := e.start(e.config())
	if err := e.js.DeleteStream(t.Context(), events.StreamPresence); err != nil {
		t.Fatal(err)
	}
	e.device("dev-6", nil)
	e.eventually("a failed publish", func() error {
		if svc.Stats().PublishErrors == 0 {
			return errors.New("no failed attempt yet")
		}
		return nil
	})
	if err := events.EnsureStreams(t.Context(), e.js, events.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("dev-6", events.DefaultPartitions))
	if got := sub.nextEvent(); got.DeviceID != "dev-6" {
		t.Fatalf("got %+v, want dev-6", got)
	}
}

// TestMissedWhileDown: events published while ingest is stopped are
// delivered from its persistent session when it comes back.
func TestMissedWhileDown(t *testing.T) {
	e := newEnv(t)
	_, stop := e.start(e.config())
	stop()
	e.eventually("ingest gone from the broker", func() error {
		if e.broker.IsConnected("fleetwatch-ingest-test") {
			return errors.New("still connected")
		}
		return nil
	})
	e.device("dev-7", nil)
	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("dev-7", events.DefaultPartitions))
	e.start(e.config())
	if got := sub.nextEvent(); got.DeviceID != "dev-7" || got.Kind != events.KindConnected {
		t.Fatalf("got %+v, want dev-7 connected", got)
	}
}

func TestSharedGroup(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.MQTT.SharedGroup = "fleetwatch"
	e.start(cfg)
	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("dev-8", events.DefaultPartitions))
	e.device("dev-8", nil)
	if got := sub.nextEvent(); got.DeviceID != "dev-8" {
		t.Fatalf("got %+v, want dev-8", got)
	}
}

func TestReadyReportsMQTT(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.MQTT.Broker = "tcp://" + ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	svc, err := ingest.New(cfg, ingest.Deps{NATS: e.nc, Logger: e.logger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Ready(); err == nil || !strings.HasPrefix(err.Error(), "mqtt is not connected to tcp://127.0.0.1:") {
		t.Fatalf("Ready before Run = %v, want mqtt is not connected", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	if err := svc.Ready(); err == nil {
		t.Fatal("Ready = nil with no broker")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	if _, err := ingest.New(cfg, ingest.Deps{}); err == nil || err.Error() != "ingest: deps.NATS is nil: pass a connected NATS client" {
		t.Errorf("New without NATS = %v", err)
	}
	cfg.MQTT.Username = "fleetwatch"
	cfg.MQTT.PasswordEnv = "FLEETWATCH_TEST_UNSET_PASSWORD"
	if _, err := ingest.New(cfg, ingest.Deps{NATS: e.nc}); err == nil ||
		err.Error() != "ingest.mqtt.password_env: environment variable FLEETWATCH_TEST_UNSET_PASSWORD is not set" {
		t.Errorf("New with an unset password env = %v", err)
	}
	cfg.MQTT.PasswordEnv = ""
	cfg.MQTT.Broker = "ssl://127.0.0.1:8883"
	cfg.MQTT.TLS.CAFile = "/nonexistent/ca.pem"
	if _, err := ingest.New(cfg, ingest.Deps{NATS: e.nc}); err == nil || !strings.HasPrefix(err.Error(), "ingest.mqtt.tls.ca_file: ") {
		t.Errorf("New with a missing CA file = %v", err)
	}
	cfg = e.config()
	cfg.Partitions = 0
	if _, err := ingest.New(cfg, ingest.Deps{NATS: e.nc}); err == nil {
		t.Error("New with an invalid config = nil error")
	}
}
