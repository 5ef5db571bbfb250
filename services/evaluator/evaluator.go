// Package evaluator is fleetwatch's evaluator stage: it consumes presence
// events from the PRESENCE stream, runs them through the pure state machine
// of package tracker, and publishes the notifications it decides to the
// ALERTS stream: device_offline group notifications (firing, with the new,
// recovered and still-firing devices, and resolved), one per receiver of
// the route that grouped them. Devices are labelled by package labels
// (client id rules, username, IP, inventory file) and routed by package
// route (an Alertmanager-style tree). Without labels and routes it sends one
// firing and one resolved notification per outage and receiver.
//
// # Processing
//
// One goroutine owns the tracker. It fetches batches from the durable pull
// consumer "evaluator" (filter presence.v1.>), decodes and validates each
// message (bad ones go to DEADLETTER and are acked), applies it, and
// publishes every decision to alerts.v1.<receiver> with Nats-Msg-Id = alert
// id and the input's trace context. Only when every publish of the batch is
// acknowledged are the inputs acked; a failed publish is retried until it
// succeeds or the service stops, in which case the inputs stay unacked. Between
// fetches (at least every Config.Tick) the same goroutine applies a clock tick
// with Deps.Now, which fires the outages whose grace period has passed.
// A separate goroutine fetches; the processing goroutine also serves,
// between batches, everything else that reads or changes the tracker: HTTP
// API queries (package api), SIGHUP reloads (Reload), the silences of the
// KV bucket and the configured maintenance windows (package silencestore,
// fed as tracker.Silences on every change and when a window's occurrence
// ends), the dynamic inventory of the KV bucket (package inventorykv,
// layered over the inventory file by labels.Dynamic), and broker node
// health from the NODES stream (tracker.Node).
//
// # Restart recovery
//
// The state lives in memory and is snapshotted to a NATS object store
// bucket every Config.SnapshotInterval and at a clean shutdown (see
// snapshot.go). At start-up, after creating (or updating) the durable
// consumer and before it fetches from it, the evaluator loads the latest
// snapshot, if there is a usable one, and rebuilds the rest:
//
//  1. It reads the id (Nats-Msg-Id) of every alert in ALERTS after the
//     snapshot's ALERTS sequence (all of them without a snapshot), headers
//     only.
//  2. It replays PRESENCE after the snapshot's sequence (all of it without
//     a snapshot), up to its last sequence at that moment, with an ordered
//     consumer. After each replayed event, an outage whose firing alert id
//     is in ALERTS is marked as alerted (Tracker.MarkAlerted), so it is not
//     fired again and is resolved when the device comes back. A resolved
//     alert decided during the replay that is not in ALERTS (the device came
//     back while no evaluator ran, or a crash came between a decision and
//     its publish) is published.
//  3. It applies one tick at Deps.Now: outages whose grace passed while the
//     evaluator was down fire now, and firing alerts of alerted outages that
//     are missing in ALERTS (a crash between receivers) are re-published.
//  4. It consumes from the durable consumer. The messages it delivers that the
//     replay already applied are duplicates to the tracker (no decision) and
//     are simply acked.
//
// A restart therefore neither loses a pending alert nor sends one twice.
// Without leases this assumes one evaluator instance at a time (two would
// both alert). With Config.Lease, replicas share lease partitions (units,
// see leased.go and unit.go): each unit is rebuilt this way, from its own
// snapshot and its own filtered consumer, by the replica that acquires it.
package evaluator

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/api"
	"github.com/fleetwatch/fleetwatch/services/evaluator/inventorykv"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/lease"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silencestore"
	"github.com/fleetwatch/fleetwatch/services/evaluator/snapshotstore"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ExampleConfig is a working config file for the evaluator binary.
//
//go:embed config.example.yaml
var ExampleConfig string

// StageName names the evaluator in dead letters, logs and telemetry.
const StageName = "evaluator"

// Config is the evaluator's section of the config file.
type Config struct {
	// Grace is how long a device must stay offline before it is alerted:
	// the routing tree's default (routes may set their own, or derive it
	// from the keepalive).
	Grace time.Duration `yaml:"grace"`
	// Tick is how often the clock is applied (timer resolution), and the
	// longest a fetch waits for messages.
	Tick time.Duration `yaml:"tick"`
	// Receivers get one alert each per decision: the routing tree's
	// default receivers.
	Receivers []string `yaml:"receivers"`
	// Severity of device_offline alerts: info, warning or critical (the
	// routing tree's default).
	Severity events.Severity `yaml:"severity"`
	// Partitions is the deployment's presence partition count; it must match
	// the ingest's. The skeleton owns every partition.
	Partitions int `yaml:"partitions"`
	// FetchBatch is how many messages one fetch asks for.
	FetchBatch int `yaml:"fetch_batch"`
	// AckWait is how long JetStream waits for an ack before redelivering.
	AckWait time.Duration `yaml:"ack_wait"`
	// Labels says how devices are labelled (client id rules, username, IP,
	// inventory). Labels drive routing and grouping.
	Labels labels.Config `yaml:"labels"`
	// Route is the routing tree. Unset fields of its root default to
	// receivers = Receivers, group_by = [device_id], no waits and no
	// repeats; without it, every alert goes to Receivers, one group per
	// device: one firing and one resolved notification per outage.
	Route *route.Config `yaml:"route"`
	// API is the HTTP API (off unless api.listen is set).
	API api.Config `yaml:"api"`
	// Silences are stored in a KV bucket; recurring maintenance windows
	// come from here.
	Silences silencestore.Config `yaml:"silences"`
	// InventoryKV is the KV bucket of the dynamic inventory (labels set
	// through the API, overriding the inventory file's).
	InventoryKV inventorykv.Config `yaml:"inventory_kv"`
	// Correlation folds a mass outage (many devices of one site, gateway,
	// broker node, … offline within a window) into one group_outage alert;
	// off unless keys are set. See tracker.Correlation.
	Correlation tracker.Correlation `yaml:"correlation"`
	// NodeSeverity is the severity of node_silent alerts (a broker node
	// whose heartbeat stopped): info, warning or critical.
	NodeSeverity events.Severity `yaml:"node_severity"`
	// SnapshotInterval is how often the state is written to the snapshot
	// bucket (and at a clean shutdown), so that a restart replays only the
	// PRESENCE events after it.
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// SnapshotBucket is the NATS object store bucket of the snapshots.
	SnapshotBucket string `yaml:"snapshot_bucket"`
	// Lease shares the work among evaluator replicas through partition
	// leases (docs/scaling.md). Off unless lease.replica is set: then
	// lease.partitions (L, default 1) ownership units are leased, unit l
	// covering the presence partitions p with p mod L = l.
	Lease lease.Config `yaml:"lease"`
}

// DefaultConfig returns the evaluator's defaults.
func DefaultConfig() Config {
	return Config{
		Grace:        30 * time.Second,
		Tick:         time.Second,
		Receivers:    []string{"default"},
		Severity:     events.SeverityWarning,
		NodeSeverity: events.SeverityWarning,
		Partitions:   events.DefaultPartitions,
		FetchBatch:   256,
		AckWait:      30 * time.Second,
		API:          api.Config{}.WithDefaults(),
		Silences:     silencestore.Config{}.WithDefaults(),
		InventoryKV:  inventorykv.Config{}.WithDefaults(),

		SnapshotInterval: time.Minute,
		SnapshotBucket:   snapshotstore.DefaultBucket,
	}
}

// withDefaults fills zero fields with DefaultConfig's values (a tick no
// longer than the grace).
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Grace == 0 {
		c.Grace = d.Grace
	}
	if c.Tick == 0 {
		c.Tick = min(d.Tick, c.Grace)
	}
	if len(c.Receivers) == 0 {
		c.Receivers = d.Receivers
	}
	if c.Severity == "" {
		c.Severity = d.Severity
	}
	if c.NodeSeverity == "" {
		c.NodeSeverity = d.NodeSeverity
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = d.SnapshotInterval
	}
	if c.SnapshotBucket == "" {
		c.SnapshotBucket = d.SnapshotBucket
	}
	if c.Partitions == 0 {
		c.Partitions = d.Partitions
	}
	if c.FetchBatch == 0 {
		c.FetchBatch = d.FetchBatch
	}
	if c.AckWait == 0 {
		c.AckWait = d.AckWait
	}
	if c.Lease.Replica != "" {
		if c.Lease.Partitions == 0 {
			c.Lease.Partitions = 1
		}
		c.Lease = c.Lease.WithDefaults()
	}
	c.API = c.API.WithDefaults()
	c.Silences = c.Silences.WithDefaults()
	c.InventoryKV = c.InventoryKV.WithDefaults()
	return c
}

// Validate checks the settings.
func (c Config) Validate() error {
	switch {
	case c.Grace <= 0:
		return fmt.Errorf("evaluator.grace is %s: set a positive duration, e.g. 30s", c.Grace)
	case c.Tick <= 0:
		return fmt.Errorf("evaluator.tick is %s: set a positive duration, e.g. 1s", c.Tick)
	case c.Tick > c.Grace:
		return fmt.Errorf("evaluator.tick %s is longer than evaluator.grace %s: use a tick of at most the grace, e.g. 1s", c.Tick, c.Grace)
	case len(c.Receivers) == 0:
		return errors.New("evaluator.receivers is empty: list at least one receiver name, e.g. [default]")
	case !validSeverity(c.Severity):
		return fmt.Errorf("evaluator.severity is %q: use info, warning or critical", c.Severity)
	case c.NodeSeverity != "" && !validSeverity(c.NodeSeverity):
		return fmt.Errorf("evaluator.node_severity is %q: use info, warning or critical", c.NodeSeverity)
	case c.Partitions < 1:
		return fmt.Errorf("evaluator.partitions is %d: use the ingest's partition count (default %d)", c.Partitions, events.DefaultPartitions)
	case c.FetchBatch < 1 || c.FetchBatch > 10_000:
		return fmt.Errorf("evaluator.fetch_batch is %d: use 1 to 10000, e.g. 256", c.FetchBatch)
	case c.AckWait < time.Second:
		return fmt.Errorf("evaluator.ack_wait is %s: use at least 1s, e.g. 30s", c.AckWait)
	case c.SnapshotInterval < time.Second:
		return fmt.Errorf("evaluator.snapshot_interval is %s: use at least 1s, e.g. 1m", c.SnapshotInterval)
	}
	if err := snapshotstore.ValidateBucket("evaluator.snapshot_bucket", c.SnapshotBucket); err != nil {
		return err
	}
	if err := c.validateLease(); err != nil {
		return err
	}
	seen := make(map[string]bool, len(c.Receivers))
	for i, r := range c.Receivers {
		switch {
		case r == "":
			return fmt.Errorf("evaluator.receivers[%d] is empty: name the receiver, e.g. default", i)
		case seen[r]:
			return fmt.Errorf("evaluator.receivers[%d] %q is listed twice: remove the duplicate", i, r)
		}
		seen[r] = true
	}
	if err := c.Labels.Validate("evaluator.labels"); err != nil {
		return err
	}
	if err := c.API.WithDefaults().Validate("evaluator.api"); err != nil {
		return err
	}
	if err := c.Silences.WithDefaults().Validate("evaluator.silences"); err != nil {
		return err
	}
	if err := c.InventoryKV.WithDefaults().Validate("evaluator.inventory_kv"); err != nil {
		return err
	}
	if err := c.Correlation.Validate("evaluator.correlation"); err != nil {
		return err
	}
	_, err := c.routes()
	return err
}

// validateLease checks evaluator.lease: off (no replica, nothing else
// set), or L lease partitions that divide the presence partitions.
func (c Config) validateLease() error {
	if c.Lease.Replica == "" {
		if c.Lease != (lease.Config{}) {
			return errors.New("evaluator.lease.replica is empty but other evaluator.lease fields are set: set replica to a name unique among the evaluator replicas (e.g. the pod name, or $FLEETWATCH_EVALUATOR_REPLICA), or remove evaluator.lease")
		}
		return nil
	}
	l := c.Lease.WithDefaults()
	if c.Lease.Partitions == 0 {
		l.Partitions = 1
	}
	switch {
	case l.Partitions < 1 || l.Partitions > c.Partitions:
		return fmt.Errorf("evaluator.lease.partitions is %d: use 1 to evaluator.partitions (%d), a divisor of it, e.g. 1 or 4", l.Partitions, c.Partitions)
	case c.Partitions%l.Partitions != 0:
		return fmt.Errorf("evaluator.lease.partitions %d does not divide evaluator.partitions %d: use a divisor of it, e.g. 1, 2, 4 or 8 for 64", l.Partitions, c.Partitions)
	}
	return l.Validate()
}

// leased reports whether partition leases are on.
func (c Config) leased() bool { return c.Lease.Replica != "" }

func validSeverity(s events.Severity) bool {
	return s == events.SeverityInfo || s == events.SeverityWarning || s == events.SeverityCritical
}

// trackerConfig is the tracker's part of c, with routes and labeler.
func (c Config) trackerConfig(routes *route.Tree, l *labels.Labeler) tracker.Config {
	return tracker.Config{Grace: c.Grace, Receivers: c.Receivers, Severity: c.Severity, Routes: routes, Labeler: l,
		Correlation: c.Correlation, NodeSeverity: c.NodeSeverity}
}

// routes compiles the routing tree.
func (c Config) routes() (*route.Tree, error) {
	rc := route.Config{}
	if c.Route != nil {
		rc = *c.Route
	}
	return route.New(rc, route.Defaults{Receivers: c.Receivers, GroupBy: []string{labels.DeviceID}, Grace: c.Grace, Severity: string(c.Severity)}, "evaluator.route")
}

// Deps are the evaluator's collaborators.
type Deps struct {
	// NATS is the connection (required); the streams must exist.
	NATS *nats.Conn
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider and MeterProvider default to the otel globals.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Now is the clock applied on every tick; defaults to time.Now.
	Now func() time.Time
	// Topology places the KV buckets (replicas, memory storage) like the
	// streams; the zero value is one replica on file storage.
	Topology events.Topology
}

// Service is a running evaluator. Create it with New, then call Run once.
type Service struct {
	cfg     Config // owned by the processing goroutine once Run started
	js      jetstream.JetStream
	log     *slog.Logger
	tracer  trace.Tracer
	now     func() time.Time
	metrics *metrics
	topo    events.Topology

	routes  *route.Tree
	table   *labels.Table
	dynamic *labels.Dynamic // file inventory + KV inventory

	ready     atomic.Pointer[error]
	devices   atomic.Int64
	snapBytes atomic.Int64 // size of the last snapshot written
	snap      snapshots

	// units are the trackers this replica runs, by lease partition
	// (one, covering every partition, without leases). Owned by the
	// processing goroutine; stats is their metrics' view.
	units   []*unit
	batches chan fetched
	stats   unitStats
	leases  *lease.Manager  // nil without leases
	runWG   *sync.WaitGroup // Run's goroutines (lease mode: the units' fetchers)

	ctl control
}

var (
	errRecovering = errors.New("evaluator is rebuilding its state from PRESENCE")
	errStopped    = errors.New("evaluator is stopped")
)

// New validates cfg (zero fields take DefaultConfig's values) and returns a
// Service.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NATS == nil {
		return nil, errors.New("evaluator: Deps.NATS is nil: pass a connected *nats.Conn")
	}
	js, err := jetstream.New(deps.NATS)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	s := &Service{cfg: cfg, js: js, log: deps.Logger, now: deps.Now, topo: deps.Topology}
	if s.routes, err = cfg.routes(); err != nil {
		return nil, err
	}
	s.table = labels.NewTable()
	inv, err := labels.LoadInventory(cfg.Labels.Inventory, s.table)
	if err != nil {
		return nil, fmt.Errorf("evaluator.labels.inventory: %w", err)
	}
	s.dynamic = labels.NewDynamic(s.table, inv)
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
	s.tracer = tp.Tracer("github.com/fleetwatch/fleetwatch/services/evaluator")
	mp := deps.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if s.metrics, err = newMetrics(mp, &s.devices, &s.snapBytes, &s.stats); err != nil {
		return nil, err
	}
	if err := s.ctl.init(cfg); err != nil {
		return nil, err
	}
	if cfg.leased() {
		s.leases, err = lease.New(cfg.Lease, lease.Handler{Acquire: s.acquireUnit, Release: s.releaseUnit},
			lease.Deps{JetStream: js, Logger: s.log, MeterProvider: mp})
		if err != nil {
			return nil, err
		}
	}
	s.snap.pending = map[string]takenSnapshot{}
	s.snap.signal = make(chan struct{}, 1)
	s.snap.written = map[string]uint64{}
	s.batches = make(chan fetched)
	s.setReady(errRecovering)
	return s, nil
}

// Ready returns nil while the service is consuming live events: after
// recovery and until Run returns.
func (s *Service) Ready() error { return *s.ready.Load() }

func (s *Service) setReady(err error) { s.ready.Store(&err) }

// trackerConfig is the tracker's part of cfg, with a labeler that reads the
// service's label table and inventory, and the unit's id scope.
func (s *Service) trackerConfig(cfg Config, routes *route.Tree, scope string) (tracker.Config, error) {
	l, err := labels.NewLabeler(cfg.Labels, s.table, s.dynamic.Inventory())
	if err != nil {
		return tracker.Config{}, err
	}
	tc := cfg.trackerConfig(routes, l)
	tc.IDScope = scope
	return tc, nil
}

func (s *Service) newTracker(scope string) (*tracker.Tracker, error) {
	tc, err := s.trackerConfig(s.cfg, s.routes, scope)
	if err != nil {
		return nil, err
	}
	return tracker.New(tc)
}

// Run ensures the KV buckets, serves the API and processes presence events
// until ctx ends; it returns nil on a clean stop. Without leases it ensures
// the durable consumer, rebuilds the state (see the package doc) and
// processes every partition. With leases it joins the replicas in the lease
// bucket and runs one tracker per lease partition it owns (see lease.go).
func (s *Service) Run(ctx context.Context) error {
	defer s.setReady(errStopped)
	s.setReady(errRecovering)
	if s.cfg.leased() {
		return s.runLeased(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	defer close(s.ctl.loopDone)
	s.runWG = &wg
	u := newUnit(s.cfg, 0, 0, 0, ctx)
	cons, err := s.ensureConsumer(ctx, u)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := s.startSide(ctx, &wg); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := s.recoverUnit(ctx, u, cons); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("recover state: %w", err)
	}
	s.startNodes(ctx, &wg)
	s.startSnapshotWriter(ctx, &wg)
	s.startFetch(u, &wg)
	s.addUnit(u)
	s.setReady(nil)
	s.log.Info("evaluating", "grace", s.cfg.Grace, "receivers", s.cfg.Receivers, "devices", u.tr.Len())
	s.loop(ctx)
	s.stopUnit(u)
	s.finalSnapshot(context.WithoutCancel(ctx), u)
	return nil
}

// NewTracker returns a fresh tracker for cfg (zero fields take
// DefaultConfig's values), labelled with its rules and inventory file: what
// the backtest replays events through.
func (c Config) NewTracker() (*tracker.Tracker, error) {
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	routes, err := c.routes()
	if err != nil {
		return nil, err
	}
	table := labels.NewTable()
	inv, err := labels.LoadInventory(c.Labels.Inventory, table)
	if err != nil {
		return nil, fmt.Errorf("evaluator.labels.inventory: %w", err)
	}
	l, err := labels.NewLabeler(c.Labels, table, inv)
	if err != nil {
		return nil, err
	}
	return tracker.New(c.trackerConfig(routes, l))
}

// TickInterval is the config's tick (default applied).
func (c Config) TickInterval() time.Duration { return c.withDefaults().Tick }
