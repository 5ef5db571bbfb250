// Package ingest is fleetwatch's first stage: it takes device presence from
// EMQX ($SYS v4/v5, rule-engine $events, v4 web hooks and v5 HTTP actions),
// AWS IoT lifecycle events, the Last-Will/birth convention and Sparkplug B
// edge nodes' NBIRTH/NDEATH, turns each
// input into a validated events.PresenceEvent and stores it in the PRESENCE
// stream; an input it cannot parse goes, raw and with the reason, to the
// DEADLETTER stream. Optionally it watches EMQX nodes (heartbeats) and
// reconciles against the EMQX REST API. docs/ingest-sources.md describes
// every source and the EMQX configuration that feeds it.
//
// Delivery is at least once end to end: the MQTT session is persistent
// (clean_session=false, QoS 1), and a message is acknowledged to the broker
// only after JetStream acknowledged the event (or the dead letter). When
// JetStream is unavailable the message is retried with backoff and stays
// unacknowledged, so the broker keeps it. Redeliveries and other replicas'
// copies carry the same content-derived Nats-Msg-Id, so JetStream stores
// each event once.
package ingest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natsconn"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
	"github.com/fleetwatch/fleetwatch/services/ingest/lastwill"
	"github.com/fleetwatch/fleetwatch/services/ingest/nodewatch"
	"github.com/fleetwatch/fleetwatch/services/ingest/sparkplug"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Stage is the stage name used in dead letters, logs and telemetry.
const Stage = "ingest"

// instrumentation names the tracer and meter.
const instrumentation = "github.com/fleetwatch/fleetwatch/services/ingest"

// Deps are the service's collaborators.
type Deps struct {
	// NATS is a connected client; the streams must exist (events.EnsureStreams).
	NATS *nats.Conn
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider and MeterProvider default to the otel globals.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Now is the clock for PresenceEvent.ReceivedAtMS and node health
	// (default time.Now).
	Now func() time.Time
	// NodePublisher receives node health changes (default: logged and
	// counted only, until pkg/events has a wire type for them).
	NodePublisher NodePublisher
}

// NodePublisher publishes a broker node's health change. It is called from
// the health loop, one change at a time; an error is logged and the change
// retried at the next check.
type NodePublisher interface {
	PublishNode(ctx context.Context, c nodewatch.Change) error
}

// Stats counts what the service did since it was created.
type Stats struct {
	// Received is the number of inputs (MQTT messages of a presence
	// source, HTTP bodies) handed to the service.
	Received int64
	// Published is the number of events JetStream stored.
	Published int64
	// Duplicates is the number of events JetStream already had (same id).
	Duplicates int64
	// DeadLettered is the number of inputs stored in DEADLETTER.
	DeadLettered int64
	// PublishErrors is the number of failed JetStream publish attempts
	// (each one retried).
	PublishErrors int64
	// Ignored is the number of inputs that carry no presence (EMQX
	// subscribed events, a cleared retained status, an unclaimed topic).
	Ignored int64
	// Heartbeats is the number of node heartbeats heard (health).
	Heartbeats int64
}

// Service is the running ingest stage.
type Service struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	tracer  trace.Tracer
	metrics *metrics
	now     func() time.Time

	password  string // never logged
	tlsConfig *tls.Config

	routes     []route
	watcher    *nodewatch.Watcher // nil when health is off
	known      *knownNodes        // nil when health is off or keeps no bucket
	nodePub    NodePublisher
	pending    []nodewatch.Change // node changes not yet published (health loop only)
	webhook    *webhook           // nil when the webhook is off
	reconciler *reconciler        // nil when reconciliation is off

	inflight chan struct{} // semaphore of MaxInFlight
	acks     *ackQueue     // MQTT messages not yet acknowledged, in receive order
	pub      *publisher    // asynchronous JetStream publishes of the MQTT path
	bgCtx    context.Context

	nodeMu sync.Mutex // guards pending

	mu       sync.Mutex // guards stopping and wg.Add
	stopping bool
	wg       sync.WaitGroup
	workCtx  context.Context // ends when in-flight retries must give up

	running    atomic.Bool
	client     atomic.Pointer[paho.Client]
	conn       atomic.Pointer[bufferedConn] // the latest broker connection
	subscribed atomic.Bool
	connGen    atomic.Int64 // counts connects and losses, to end stale subscribe loops

	received, published, duplicates, deadLettered, publishErrors, ignored, heartbeats atomic.Int64
}

// New validates cfg, reads the MQTT password and TLS files, and returns a
// service ready to Run.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NATS == nil {
		return nil, errors.New("ingest: deps.NATS is nil: pass a connected NATS client")
	}
	js, err := jetstream.New(deps.NATS)
	if err != nil {
		return nil, fmt.Errorf("ingest: jetstream: %w", err)
	}
	s := &Service{
		cfg:      cfg,
		nc:       deps.NATS,
		js:       js,
		log:      deps.Logger,
		now:      deps.Now,
		inflight: make(chan struct{}, cfg.MaxInFlight),
		acks:     newAckQueue(cfg.MaxInFlight),
		bgCtx:    context.Background(),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	tp := deps.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	s.tracer = tp.Tracer(instrumentation)
	mp := deps.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if s.metrics, err = newMetrics(mp.Meter(instrumentation)); err != nil {
		return nil, err
	}
	if s.password, err = natsconn.Secret("ingest.mqtt.password", cfg.MQTT.PasswordFile, cfg.MQTT.PasswordEnv); err != nil {
		return nil, err
	}
	if s.tlsConfig, err = cfg.MQTT.TLS.build(); err != nil {
		return nil, err
	}
	var lw *lastwill.Parser
	if cfg.LastWill.Enabled {
		if lw, err = lastwill.New(cfg.LastWill, brokerHost(cfg.MQTT.Broker)); err != nil {
			return nil, fmt.Errorf("ingest.%w", err)
		}
	}
	var sp *sparkplug.Parser
	if cfg.Sparkplug.Enabled {
		if sp, err = sparkplug.New(cfg.Sparkplug, brokerHost(cfg.MQTT.Broker)); err != nil {
			return nil, fmt.Errorf("ingest.%w", err)
		}
	}
	s.routes = cfg.routes(lw, sp)
	s.pub = newPublisher(s)
	if cfg.Health.Enabled {
		s.watcher = nodewatch.New(cfg.Health.SilentAfter)
		if cfg.Health.Bucket != "" {
			s.known = &knownNodes{s: s, written: map[string]writtenNode{}}
		}
		s.nodePub = deps.NodePublisher
		if s.nodePub == nil {
			s.nodePub = streamNodes{js: s.js, log: s.log}
		}
	}
	if cfg.Webhook.Enabled {
		if s.webhook, err = newWebhook(s, cfg.Webhook); err != nil {
			return nil, err
		}
	}
	if cfg.Reconcile.Enabled {
		if s.reconciler, err = newReconciler(s, cfg.Reconcile); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// brokerHost is host:port of a broker URL, the default node name of
// sources whose events do not name one.
func brokerHost(broker string) string {
	if u, err := url.Parse(broker); err == nil && u.Host != "" {
		return u.Host
	}
	return broker
}

// heard records a sign of life of an EMQX node.
func (s *Service) heard(node, mark string) {
	if s.watcher == nil {
		return
	}
	if c, back := s.watcher.Heard(node, mark, s.now()); back {
		s.nodeChanged(c)
	}
}

// hold pauses node silence detection: ingest cannot hear the nodes now.
func (s *Service) hold() {
	if s.watcher != nil {
		s.watcher.Hold(s.now())
	}
}

func (s *Service) nodeChanged(c nodewatch.Change) {
	s.metrics.nodes.Add(context.Background(), 1, metric.WithAttributes(attribute.String("kind", string(c.Kind))))
	s.nodeMu.Lock()
	s.pending = append(s.pending, c)
	s.nodeMu.Unlock()
	if c.Kind == nodewatch.KindBack {
		s.ReconcileNow()
	}
}

// checkNodes reports nodes gone silent and publishes pending changes.
func (s *Service) checkNodes(ctx context.Context) {
	for _, c := range s.watcher.Check(s.now()) {
		s.nodeChanged(c)
	}
	s.nodeMu.Lock()
	pending := s.pending
	s.pending = nil
	s.nodeMu.Unlock()
	for i, c := range pending {
		if err := s.nodePub.PublishNode(ctx, c); err != nil {
			s.log.Warn("publish node change failed; retrying at the next check", "node", c.Node, "kind", c.Kind, "err", err)
			s.nodeMu.Lock()
			s.pending = append(pending[i:], s.pending...)
			s.nodeMu.Unlock()
			return
		}
	}
}

// healthLoop checks node silence every CheckInterval until ctx ends, and
// keeps the known nodes' records.
func (s *Service) healthLoop(ctx context.Context) {
	if s.known != nil {
		s.known.sync(ctx)
	}
	t := time.NewTicker(s.cfg.Health.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.checkNodes(ctx)
			if s.known != nil {
				s.known.sync(ctx)
			}
		}
	}
}

// Nodes returns the broker nodes heard from (nil when health is off).
func (s *Service) Nodes() []nodewatch.Status {
	if s.watcher == nil {
		return nil
	}
	return s.watcher.Nodes()
}

// streamNodes is the default NodePublisher: it logs the change and stores it
// as a NodeEvent in the NODES stream, with a Nats-Msg-Id that every replica
// derives alike (from the heartbeat mark).
type streamNodes struct {
	js  jetstream.JetStream
	log *slog.Logger
}

func (p streamNodes) PublishNode(ctx context.Context, c nodewatch.Change) error {
	status := events.NodeSilent
	if c.Kind == nodewatch.KindBack {
		status = events.NodeBack
	}
	ev, err := events.NewNodeEvent(events.NodeEvent{Node: c.Node, Status: status, LastSeenMS: c.LastHeard.UnixMilli(),
		AtMS: c.At.UnixMilli(), Source: "emqx_sys_heartbeat", Mark: c.Mark})
	if err != nil {
		return err
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(ev.Subject())
	msg.Data = data
	msg.Header.Set(events.HeaderMsgID, ev.ID)
	telemetry.Inject(ctx, msg)
	if _, err := p.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish node event: %w", err)
	}
	logNode(p.log, c)
	return nil
}

func logNode(log *slog.Logger, c nodewatch.Change) {
	switch c.Kind {
	case nodewatch.KindSilent:
		log.Warn("broker node silent: the state of its devices is unknown", "node", c.Node,
			"last_heard", c.LastHeard, "silent_for", c.At.Sub(c.LastHeard).Round(time.Second))
	default:
		log.Info("broker node back", "node", c.Node, "silent_since", c.LastHeard)
	}
}

// build returns the TLS client configuration, nil when TLS is not configured.
func (t TLSConfig) build() (*tls.Config, error) {
	if !t.enabled() {
		return nil, nil
	}
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // an explicit, documented test-only switch
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ingest.mqtt.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ingest.mqtt.tls.ca_file %s holds no PEM certificate", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("ingest.mqtt.tls.cert_file/key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Run connects to the broker (retrying until it succeeds), processes
// messages until ctx ends, then stops: messages in flight get a grace period
// of one publish timeout to be stored and acknowledged; the others stay
// unacknowledged in the broker's session for the next run.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("ingest: Run called twice")
	}
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	s.workCtx = workCtx

	if err := s.pub.start(); err != nil {
		return err
	}
	defer s.pub.shutdown()
	if s.webhook != nil {
		if err := s.webhook.start(); err != nil {
			return err
		}
	}
	ackerStop, ackerDone := make(chan struct{}), make(chan struct{})
	go func() { s.acker(ackerStop); close(ackerDone) }()
	var client paho.Client
	if s.cfg.usesMQTT() {
		client = paho.NewClient(s.clientOptions())
		s.client.Store(&client)
		s.log.Info("connecting to mqtt", "broker", redactURL(s.cfg.MQTT.Broker), "client_id", s.cfg.MQTT.ClientID,
			"shared_group", s.cfg.MQTT.SharedGroup, "filters", s.cfg.filters())
		client.Connect() // with ConnectRetry the token completes on success; onConnect takes over
	}
	var loops sync.WaitGroup
	if s.watcher != nil {
		loops.Go(func() { s.healthLoop(ctx) })
	}
	if s.reconciler != nil {
		loops.Go(func() { s.reconciler.loop(ctx) })
	}

	<-ctx.Done()
	loops.Wait()

	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	drained := make(chan struct{})
	go func() { s.wg.Wait(); close(drained) }()
	if s.webhook != nil {
		s.webhook.stop(s.cfg.PublishTimeout) // waits for requests in flight
	}
	select {
	case <-drained:
	case <-time.After(s.cfg.PublishTimeout):
		s.log.Warn("stopping with messages in flight: they stay unacknowledged in the mqtt session")
		cancelWork()
		s.pub.close()
		<-drained
	}
	close(ackerStop)
	<-ackerDone
	if client != nil {
		client.Disconnect(250)
	}
	s.subscribed.Store(false)
	return nil
}

// Ready reports whether the service is processing: NATS connected, MQTT
// connected and subscribed.
func (s *Service) Ready() error {
	if !s.nc.IsConnected() {
		return errors.New("nats is not connected")
	}
	if s.webhook != nil && s.webhook.addr() == "" {
		return errors.New("the webhook endpoint is not listening")
	}
	if !s.cfg.usesMQTT() {
		return nil
	}
	if c := s.client.Load(); c == nil || !(*c).IsConnectionOpen() {
		return fmt.Errorf("mqtt is not connected to %s", redactURL(s.cfg.MQTT.Broker))
	}
	if !s.subscribed.Load() {
		return errors.New("mqtt subscriptions are not active")
	}
	return nil
}

// Stats returns the service's counters.
func (s *Service) Stats() Stats {
	return Stats{
		Received:      s.received.Load(),
		Published:     s.published.Load(),
		Duplicates:    s.duplicates.Load(),
		DeadLettered:  s.deadLettered.Load(),
		PublishErrors: s.publishErrors.Load(),
		Ignored:       s.ignored.Load(),
		Heartbeats:    s.heartbeats.Load(),
	}
}
