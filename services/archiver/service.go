// Package archiver is the archiver stage: it consumes the PRESENCE, ALERTS
// and DELIVERIES streams and writes every event into ClickHouse, in batches,
// over the native protocol.
//
// Each stream has one durable pull consumer shared by all replicas. A
// batch is fetched (up to batch_size messages or batch_wait), every message
// is decoded and validated (a bad one goes to DEADLETTER and is acked), the
// good ones are inserted with one INSERT, and only then acked. Up to
// inflight_batches batches per stream are in flight: one is fetched while
// earlier ones are decoded and inserted, each acking its own messages once
// its INSERT succeeded. A failed INSERT is retried with the same rows, with
// capped exponential backoff, while in-progress acks keep JetStream from
// redelivering them: nothing is acked before it is stored, nothing is
// dropped, and no new batch is fetched while every batch in flight waits
// for ClickHouse. Replays and redeliveries
// insert duplicates that the ReplacingMergeTree tables collapse by event id
// (see package schema for how to query them).
//
// The schema is created and migrated at start (package schema); the rows
// are built and sent by package sink.
package archiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
	"github.com/fleetwatch/fleetwatch/services/archiver/sink"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Stage is the stage name used in dead letters and logs.
const Stage = "archiver"

// Deps are the archiver's collaborators.
type Deps struct {
	// NATS is a connected client; the streams exist (events.EnsureStreams).
	NATS *nats.Conn
	// Logger (nil: slog.Default()).
	Logger *slog.Logger
	// TracerProvider and MeterProvider (nil: the otel globals).
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// Service archives the configured streams into ClickHouse.
type Service struct {
	cfg     Config
	log     *slog.Logger
	js      jetstream.JetStream
	ch      driver.Conn
	writer  *sink.Writer
	tracer  trace.Tracer
	metrics *metrics

	running atomic.Int32
	caps    atomic.Pointer[schema.Capabilities]
}

// streamSpec ties a configured stream name to its JetStream stream, durable
// consumer and table.
type streamSpec struct {
	stream  string
	durable string
	filter  string
	table   string
}

var streamSpecs = map[string]streamSpec{
	StreamPresence:   {events.StreamPresence, events.ConsumerArchiverPresence, events.PresencePrefix + ".>", schema.TablePresence},
	StreamAlerts:     {events.StreamAlerts, events.ConsumerArchiverAlerts, events.AlertsPrefix + ".>", schema.TableAlerts},
	StreamDeliveries: {events.StreamDeliveries, events.ConsumerArchiverDeliveries, events.DeliveriesPrefix + ".>", schema.TableDeliveries},
}

// New validates cfg and builds the service. It reads the ClickHouse
// password but does not connect yet: Run does.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NATS == nil {
		return nil, errors.New("archiver: Deps.NATS is nil: pass a connected *nats.Conn")
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.Default()
	}
	tp := deps.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	mp := deps.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	js, err := jetstream.New(deps.NATS)
	if err != nil {
		return nil, fmt.Errorf("archiver: jetstream: %w", err)
	}
	m, err := newMetrics(mp)
	if err != nil {
		return nil, fmt.Errorf("archiver: metrics: %w", err)
	}
	// One connection per batch in flight, one for pings and migrations.
	ch, err := openClickHouse(cfg.ClickHouse, len(cfg.Streams)*cfg.InflightBatches+1)
	if err != nil {
		return nil, err
	}
	return &Service{
		cfg:     cfg,
		log:     logger,
		js:      js,
		ch:      ch,
		writer:  sink.NewWriter(ch, cfg.ClickHouse.Database),
		tracer:  tp.Tracer("github.com/fleetwatch/fleetwatch/services/archiver"),
		metrics: m,
	}, nil
}

// Run creates the durable consumers, migrates the ClickHouse schema
// (retrying while ClickHouse is unreachable) and archives until ctx ends.
// It returns nil on a clean stop; batches not yet stored are nak'ed so that
// they are redelivered at once. It returns an error when the configuration
// needs a feature the server lacks (schema.ErrUnsupported).
func (s *Service) Run(ctx context.Context) error {
	defer s.ch.Close()
	consumers := make([]jetstream.Consumer, len(s.cfg.Streams))
	for i, name := range s.cfg.Streams {
		spec := streamSpecs[name]
		c, err := events.EnsureConsumer(ctx, s.js, spec.stream,
			events.ConsumerConfig(spec.durable, spec.filter, s.cfg.AckWait, s.cfg.maxAckPending()))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("archiver: %w", err)
		}
		consumers[i] = c
	}
	if err := s.migrate(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("archiver: %w", err)
	}
	var wg sync.WaitGroup
	for i, name := range s.cfg.Streams {
		p := s.newPipeline(name, consumers[i])
		wg.Go(func() {
			s.running.Add(1)
			defer s.running.Add(-1)
			p.run(ctx)
		})
	}
	s.log.Info("archiving", "streams", s.cfg.Streams, "database", s.cfg.ClickHouse.Database,
		"batch_size", s.cfg.BatchSize, "batch_wait", s.cfg.BatchWait, "inflight_batches", s.cfg.InflightBatches)
	wg.Wait()
	return nil
}

// Ready returns nil when every consumer is running and ClickHouse answers
// a ping.
func (s *Service) Ready() error {
	if n := int(s.running.Load()); n != len(s.cfg.Streams) {
		return fmt.Errorf("archiver: %d of %d stream consumers running (schema not migrated yet, or stopped)", n, len(s.cfg.Streams))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.ch.Ping(ctx); err != nil {
		return fmt.Errorf("archiver: clickhouse ping: %w", err)
	}
	return nil
}

// Capabilities returns the ClickHouse server's capabilities, once the
// schema has been migrated.
func (s *Service) Capabilities() (schema.Capabilities, bool) {
	c := s.caps.Load()
	if c == nil {
		return schema.Capabilities{}, false
	}
	return *c, true
}

// migrate applies the schema migrations, retrying with backoff until it
// succeeds or ctx ends; a configuration the server cannot support
// (schema.ErrUnsupported) is returned at once.
func (s *Service) migrate(ctx context.Context) error {
	b := backoff{cfg: s.cfg.Retry}
	for attempt := 1; ; attempt++ {
		mctx, cancel := context.WithTimeout(ctx, s.cfg.InsertTimeout)
		res, err := schema.Migrate(mctx, s.ch, s.cfg.ClickHouse.Database, s.cfg.ClickHouse.migrateOptions(s.log))
		cancel()
		if err == nil {
			s.caps.Store(&res.Capabilities)
			s.log.Info("clickhouse schema up to date", "database", s.cfg.ClickHouse.Database,
				"server_version", res.Capabilities.Version.String(), "applied", res.Ran)
			if len(res.Unknown) > 0 {
				s.log.Warn("clickhouse schema has migrations this archiver does not know: a newer archiver migrated it",
					"versions", res.Unknown)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, schema.ErrUnsupported) {
			return err
		}
		d := b.next()
		s.log.Warn("clickhouse not ready for the archiver; retrying", "attempt", attempt, "retry_in", d, "err", err)
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// backoff is a capped exponential backoff with jitter (each delay is
// between half and all of the nominal one).
type backoff struct {
	cfg     RetryConfig
	nominal time.Duration
}

func (b *backoff) next() time.Duration {
	if b.nominal == 0 {
		b.nominal = b.cfg.Initial
	} else {
		b.nominal = min(b.nominal*2, b.cfg.Max)
	}
	half := b.nominal / 2
	return half + rand.N(b.nominal-half+1)
}

func (b *backoff) reset() { b.nominal = 0 }

// sleep waits for d or until ctx ends; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
