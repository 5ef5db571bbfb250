// Package ingest is fleetwatch's first stage: it subscribes to EMQX's
// presence messages over MQTT, turns each one into a validated
// events.PresenceEvent and stores it in the PRESENCE stream; an input it
// cannot parse goes, raw and with the reason, to the DEADLETTER stream.
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
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fleetwatch/fleetwatch/pkg/events/natsconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
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
	// Now is the clock for PresenceEvent.ReceivedAtMS (default time.Now).
	Now func() time.Time
}

// Stats counts what the service did since it was created.
type Stats struct {
	// Received is the number of MQTT messages handed to the service.
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

	inflight chan struct{} // semaphore of MaxInFlight

	mu       sync.Mutex // guards stopping and wg.Add
	stopping bool
	wg       sync.WaitGroup
	workCtx  context.Context // ends when in-flight retries must give up

	running    atomic.Bool
	client     atomic.Pointer[paho.Client]
	subscribed atomic.Bool
	connGen    atomic.Int64 // counts connects and losses, to end stale subscribe loops

	received, published, duplicates, deadLettered, publishErrors atomic.Int64
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
	return s, nil
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

	client := paho.NewClient(s.clientOptions())
	s.client.Store(&client)
	s.log.Info("connecting to mqtt", "broker", redactURL(s.cfg.MQTT.Broker), "client_id", s.cfg.MQTT.ClientID,
		"shared_group", s.cfg.MQTT.SharedGroup, "topics", s.cfg.MQTT.Topics)
	client.Connect() // with ConnectRetry the token completes on success; onConnect takes over

	<-ctx.Done()

	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	drained := make(chan struct{})
	go func() { s.wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(s.cfg.PublishTimeout):
		s.log.Warn("stopping with messages in flight: they stay unacknowledged in the mqtt session")
		cancelWork()
		<-drained
	}
	client.Disconnect(250)
	s.subscribed.Store(false)
	return nil
}

// Ready reports whether the service is processing: NATS connected, MQTT
// connected and subscribed.
func (s *Service) Ready() error {
	if !s.nc.IsConnected() {
		return errors.New("nats is not connected")
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
	}
}
