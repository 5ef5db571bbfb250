// Package storm is fleetwatch's storm harness: it runs the whole dev stack
// (embedded NATS, the EMQX-like broker, ingest, evaluator, notifier,
// archiver when ClickHouse is configured, strict DingTalk/Feishu stand-ins)
// and drives it with presence storms of many simulated devices, then checks
// that the pipeline stayed lossless and quiet: every device whose offline
// state should be notified reached a chat message, no device that stayed
// online was alerted, no chat API answered "too fast", and ClickHouse holds
// one row per event after dedup.
//
// # Devices and events
//
// Devices live at the presence-event level: the harness publishes EMQX v5
// $SYS messages ($SYS/brokers/<node>/clients/<id>/connected|disconnected,
// field for field what emqxsim's own presence hook publishes) through the
// stack's broker, so every event goes through the real ingest (MQTT
// subscription, parse, Nats-Msg-Id dedup, JetStream ack). The broker keeps
// at most 8192 unacknowledged messages per subscriber and drops beyond
// that, as EMQX does; the harness therefore keeps fewer than Config.Window
// messages unacknowledged by ingest at the broker.
//
// # Time
//
// The stages run on the real clock with a real grace (Config.Grace, 5 s by
// default) and the events carry real broker timestamps (the wall clock when
// published). Event-time windows are therefore compressed to what the
// pipeline ingests: a reconnect storm of N devices lasts as long as
// publishing 2N events takes (seconds), each device staying away for the
// time about Config.Lag events take to publish — well below the grace, as a
// storm of devices back "within 60 s" is below a production grace of 90 s.
// Use a larger grace and lag to stretch it.
//
// # Alerting config
//
// The evaluator runs with the config a site operator would write, scaled
// to the compressed time: devices are labelled site and gateway from their
// ids; flap suppression is on with the default penalties and limits and a
// half-life of Config.FlapHalfLife (default 10 s instead of 5 min);
// mass-outage correlation is on for the site label (half of a site's
// devices offline within a minute); group_outage and device_flapping
// alerts are grouped per site with a group_wait of one grace. The
// node-silent scenario also turns on broker node health (heartbeats every
// quarter of Config.NodeSilentAfter).
//
// Each scenario runs on a fresh stack, so its counters are its own.
package storm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/devstack"
	"github.com/fleetwatch/fleetwatch/devstack/simulator"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Scenario names, in the order Run runs them.
const (
	ScenarioReconnect  = "reconnect"
	ScenarioOutage     = "outage"
	ScenarioFlapping   = "flapping"
	ScenarioTakeover   = "takeover"
	ScenarioNodeSilent = "node-silent"
)

// Scenarios lists every scenario.
var Scenarios = []string{ScenarioReconnect, ScenarioOutage, ScenarioFlapping, ScenarioTakeover, ScenarioNodeSilent}

// Config describes a storm run.
type Config struct {
	// Devices is the simulated fleet size.
	Devices int
	// Sites and GatewaysPerSite spread the devices (ids s<site>-gw<gw>-d<n>).
	Sites, GatewaysPerSite int
	// Grace is the evaluator's grace; Tick its clock tick.
	Grace, Tick time.Duration
	// Lag is how many events a dropped device's return is published after
	// its drop (reconnect storm, flaps): its offline time in event time.
	Lag int
	// Window bounds the messages the broker holds unacknowledged by ingest.
	Window int
	// FlapCycles is how often each flapping device drops and returns.
	FlapCycles int
	// FlapHalfLife is the flap suppression's half-life (the route's flap
	// block, otherwise the defaults): the penalty of a disconnect halves
	// in that time, and a flapping device calms down when it has decayed
	// below the reuse limit (750): about three half-lives after five
	// disconnects in a row. The tracker keeps the time of the penalty in
	// seconds, so half-lives under a few seconds decay noticeably faster
	// than set.
	FlapHalfLife time.Duration
	// NodeSilentAfter is how long ingest waits for a sign of life of a
	// broker node before it reports the node silent (node-silent scenario;
	// heartbeats every quarter of it). It must be at most half the grace,
	// so that the grace of the silent node's last disconnects ends while
	// the node is known silent.
	NodeSilentAfter time.Duration
	// PahoDevices are real paho MQTT clients connected to the stack's
	// broker that join the reconnect storm: their sockets are cut and they
	// reconnect, and the broker itself reports it.
	PahoDevices int
	// Scenarios to run (nil: all).
	Scenarios []string
	// ClickHouseAddr turns archiving and the row check on.
	ClickHouseAddr string
	// Timeout bounds each scenario's wait for the pipeline to settle.
	Timeout time.Duration
	// Logger receives the stages' logs (nil: warnings and errors to Progress).
	Logger *slog.Logger
	// Progress receives a line per step (nil: discarded).
	Progress io.Writer
}

// DefaultConfig is what `fleetwatch storm` runs with no flags.
func DefaultConfig() Config {
	return Config{
		Devices:         100_000,
		Sites:           20,
		GatewaysPerSite: 10,
		Grace:           5 * time.Second,
		Tick:            250 * time.Millisecond,
		Lag:             2000,
		Window:          4096,
		FlapCycles:      5,
		FlapHalfLife:    10 * time.Second,
		NodeSilentAfter: 1250 * time.Millisecond,
		PahoDevices:     2000,
		ClickHouseAddr:  os.Getenv("FLEETWATCH_CLICKHOUSE_ADDR"),
		Timeout:         5 * time.Minute,
	}
}

// Validate checks the settings.
func (c Config) Validate() error {
	switch {
	case c.Devices < 10:
		return fmt.Errorf("devices is %d: use at least 10", c.Devices)
	case c.Sites < 1 || c.GatewaysPerSite < 1:
		return fmt.Errorf("sites %d, gateways per site %d: use at least 1 each", c.Sites, c.GatewaysPerSite)
	case c.Devices < c.Sites*c.GatewaysPerSite:
		return fmt.Errorf("devices %d is fewer than sites×gateways %d: use more devices or fewer gateways", c.Devices, c.Sites*c.GatewaysPerSite)
	case c.Grace <= 0 || c.Tick <= 0:
		return fmt.Errorf("grace %s, tick %s: use positive durations such as 5s and 250ms", c.Grace, c.Tick)
	case c.Lag < 1 || c.Window < 1 || c.Window > 8000:
		return fmt.Errorf("lag %d, window %d: lag ≥ 1, window in [1, 8000] (the broker's inflight limit is 8192)", c.Lag, c.Window)
	case c.PahoDevices < 0:
		return fmt.Errorf("paho devices %d: use 0 or more", c.PahoDevices)
	case c.FlapCycles < 1:
		return fmt.Errorf("flap cycles %d: use at least 1", c.FlapCycles)
	case c.FlapHalfLife < time.Second || c.FlapHalfLife > 24*time.Hour:
		return fmt.Errorf("flap half-life %s: use 1s to 24h, e.g. 10s", c.FlapHalfLife)
	case c.NodeSilentAfter <= 0 || c.NodeSilentAfter > c.Grace/2:
		return fmt.Errorf("node silent after %s: use a positive duration of at most half the grace (%s), e.g. a quarter of it", c.NodeSilentAfter, c.Grace/2)
	case c.Timeout <= 0:
		return fmt.Errorf("timeout %s: use a positive duration", c.Timeout)
	}
	for _, s := range c.Scenarios {
		if !contains(Scenarios, s) {
			return fmt.Errorf("scenario %q: use one of %s", s, strings.Join(Scenarios, ", "))
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Result is what one scenario measured.
type Result struct {
	Scenario string
	// Evaluated is false when the pipeline cannot decide this scenario
	// yet; Note says why.
	Evaluated bool
	Note      string
	// Paho is how many of the devices were real MQTT clients.
	Paho int
	// Devices in the fleet; Events the scenario published (after the
	// fleet's initial connects) and Stored how many PRESENCE holds of all.
	Devices, Events int
	// Setup is the initial connect of every device (not in Events).
	SetupEvents int
	Stored      uint64
	// Ingested is how long the scenario's events took to reach PRESENCE;
	// Processed until every stage had also acked every stream (evaluated,
	// notified, archived: what was due by then); Took until the pipeline
	// was quiet after the last drop's grace (and group_wait, calm-down or
	// node recovery, per scenario) and everything that fell due was
	// notified and archived.
	Ingested, Processed, Took time.Duration
	// ExpectedOffline is how many devices stay offline past the grace.
	ExpectedOffline int
	// Late is the devices that returned but stayed away at least the
	// grace (event time) once: the pipeline fell so far behind that the
	// harness's own drop-to-return gap grew; alerts for them are right.
	Late int
	// Alerts is the ALERTS stream's count (every receiver); Firing the
	// devices with a firing device_offline alert (inhibited copies
	// included); Flapping those with a firing device_flapping alert.
	Alerts, Firing, Flapping int
	// Kinds counts the firing notifications per alert kind; inhibited and
	// silenced ones (recorded, not delivered) under "<kind> inhibited" and
	// "<kind> silenced".
	Kinds map[string]int
	// Folded is the expected devices accounted for at some receiver by a
	// group_outage total rather than by name.
	Folded int
	// FirstWindow is the chat messages per receiver accepted within 5
	// minutes of the scenario's first event (event time: the harness
	// stamps events with the wall clock).
	FirstWindow map[string]int
	// Messages and Digests per receiver (chat robot).
	Messages, Digests map[string]int
	// RateLimited are "too fast" answers of the chat stand-ins (must be
	// 0); Rejected every other rejection.
	RateLimited, Rejected int
	// Lost is the devices expected offline that some receiver never got a
	// message for (must be 0); False the devices alerted offline that
	// never stayed offline for the grace (must be 0).
	Lost, False int
	// RowsChecked says whether ClickHouse was counted; Rows and Want per
	// table (FINAL) against the streams' counts.
	RowsChecked bool
	Rows, Want  map[string]uint64
	// Checks are the scenario's own correctness checks (part of OK);
	// Targets the targets for it (reported, not part of OK).
	Checks, Targets []Check
	// Remarks are further figures of the scenario, printed.
	Remarks []string
}

// Check is one named check and whether it held.
type Check struct {
	// What says what was checked, with the figure and what it should be.
	What string
	OK   bool
}

func check(ok bool, format string, args ...any) Check {
	return Check{What: fmt.Sprintf(format, args...), OK: ok}
}

// ChecksOK reports whether every scenario check held.
func (r Result) ChecksOK() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// RowsMatch reports whether every table holds as many rows as its stream.
func (r Result) RowsMatch() bool {
	for t, w := range r.Want {
		if r.Rows[t] != w {
			return false
		}
	}
	return true
}

// OK reports whether the correctness counters hold.
func (r Result) OK() bool {
	return !r.Evaluated || (r.Lost == 0 && r.False == 0 && r.RateLimited == 0 && r.Stored == uint64(r.SetupEvents+r.Events) &&
		(!r.RowsChecked || r.RowsMatch()) && r.ChecksOK())
}

// Run runs the configured scenarios one after another, each on a fresh
// stack, and returns their results. It stops at the first error.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(cfg.Progress, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	names := cfg.Scenarios
	if len(names) == 0 {
		names = Scenarios
	}
	var out []Result
	for _, name := range Scenarios {
		if !contains(names, name) {
			continue
		}
		fmt.Fprintf(cfg.Progress, "storm: %s, %d devices…\n", name, cfg.Devices)
		r, err := runScenario(ctx, cfg, name)
		if err != nil {
			return out, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Alerting settings of the storm's stacks (see the package comment).
const (
	// siteLabel is the topology label of the correlation.
	siteLabel = "site"
	// correlationWindow is the span in which a site's devices must drop.
	correlationWindow = time.Minute
	// correlationRatio is the share of a site's devices that makes a mass
	// outage.
	correlationRatio = 0.5
	// firstWindow is the event-time span of the outage target: at most 3
	// messages per receiver in the first 5 minutes.
	firstWindow = 5 * time.Minute
	// slowGroupInterval is the group_interval of the group_outage and
	// device_flapping routes: later changes wait that long.
	slowGroupInterval = 5 * time.Minute
)

// calmBound is the longest a flapping device of the flapping scenario
// takes to calm down after its last disconnect: its penalty is at most
// FlapCycles+1 default penalties (capped at max_penalty), and it calms when
// that has decayed below the reuse limit; plus a second of slack for the
// ticks.
func calmBound(cfg Config) time.Duration {
	p := min(float64(cfg.FlapCycles+1)*route.DefaultFlapPenalty, route.DefaultFlapMaxPenalty)
	halfLives := max(math.Log2(p/route.DefaultFlapReuse), 0)
	return time.Duration(halfLives*float64(cfg.FlapHalfLife)) + time.Second
}

// stackConfig is the dev stack of one scenario.
func stackConfig(cfg Config, name string) devstack.Config {
	sc := devstack.DefaultConfig()
	sc.HTTPListen, sc.MQTTListen = "127.0.0.1:0", "127.0.0.1:0"
	sc.Grace, sc.Tick = cfg.Grace, cfg.Tick
	sc.Language = "en"
	sc.Simulator.Devices = 0
	sc.ClickHouseAddr = cfg.ClickHouseAddr
	sc.ClickHouseDatabase = fmt.Sprintf("fleetwatch_storm_%s_%d", strings.ReplaceAll(name, "-", "_"), time.Now().UnixNano())
	sc.Logger = cfg.Logger
	sc.Labels = labels.Config{ClientID: []labels.ClientIDRule{{Regex: `^(?P<site>s[0-9]+)-(?P<gateway>gw[0-9]+)-`}}}
	wait, interval := cfg.Grace, slowGroupInterval
	perSite := func(alertname string) route.Config {
		return route.Config{Matchers: []string{`alertname="` + alertname + `"`}, GroupBy: []string{siteLabel}, GroupWait: &wait, GroupInterval: &interval}
	}
	sc.Route = &route.Config{
		Flap:   &route.FlapConfig{HalfLife: cfg.FlapHalfLife},
		Routes: []route.Config{perSite(string(events.AlertGroupOutage)), perSite(string(events.AlertDeviceFlapping))},
	}
	sc.Correlation = tracker.Correlation{Keys: []string{siteLabel}, Window: correlationWindow, MinRatio: correlationRatio}
	if name == ScenarioNodeSilent {
		sc.NodeHealth = devstack.NodeHealth{SilentAfter: cfg.NodeSilentAfter, Heartbeat: cfg.NodeSilentAfter / 4}
	}
	return sc
}

func runScenario(ctx context.Context, cfg Config, name string) (Result, error) {
	res := Result{Scenario: name, Devices: cfg.Devices, Evaluated: true}
	sc := stackConfig(cfg, name)
	st, err := devstack.Start(ctx, sc)
	if err != nil {
		return res, err
	}
	defer func() {
		// Stop the archiver before its database goes.
		_ = st.Close()
		if st.Archiving() {
			dropDatabase(cfg.ClickHouseAddr, sc.ClickHouseDatabase)
		}
	}()
	nc, err := nats.Connect(st.NATSURL(), nats.Name("fleetwatch-storm"))
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	if name == ScenarioNodeSilent {
		// Ingest's silence threshold is short: keep its backlog, and so
		// the delay of the nodes' heartbeats behind presence events, small.
		cfg.Window = min(cfg.Window, 512)
	}
	f := newFleet(cfg, st, js)
	if name == ScenarioNodeSilent {
		hctx, stopHeartbeat := context.WithCancel(ctx)
		defer stopHeartbeat()
		go f.heartbeat(hctx, f.node2, sc.NodeHealth.Heartbeat)
	}

	// Every device comes online on node 1 (node-silent: one in 10 on
	// node 2, the node that will fall silent).
	t0 := time.Now()
	for i := range f.ids {
		node := f.node1
		if name == ScenarioNodeSilent && f.onNode2(i) {
			node = f.node2
		}
		if err := f.connect(ctx, i, node); err != nil {
			return res, err
		}
	}
	if name == ScenarioReconnect && cfg.PahoDevices > 0 {
		for i := range cfg.PahoDevices {
			d := simulator.NewDevice(st.BrokerURL(), fmt.Sprintf("p%02d-gw00-d%06d", i%cfg.Sites, i), simulator.DeviceOptions{Username: "storm"})
			f.paho = append(f.paho, d)
			defer func() { _ = d.Kill() }()
		}
		res.Paho = cfg.PahoDevices
		if err := f.pahoConnect(ctx); err != nil {
			return res, err
		}
	}
	if err := f.settle(ctx, cfg.Timeout, time.Time{}); err != nil {
		return res, fmt.Errorf("fleet start: %w", err)
	}
	res.SetupEvents = f.published
	fmt.Fprintf(cfg.Progress, "storm: %s: %d devices online in %s\n", name, cfg.Devices, time.Since(t0).Round(time.Millisecond))

	f.published = 0
	f.base = res.SetupEvents
	expected := map[string]bool{}
	t0 = time.Now()
	// After the last event, wait for its grace and a few ticks; scenarios
	// may wait longer.
	quiet := func() time.Time { return f.lastEvent.Add(cfg.Grace + 3*cfg.Tick) }
	switch name {
	case ScenarioReconnect:
		if err = f.reconnectStorm(ctx); err == nil && len(f.paho) > 0 {
			f.lastEvent = time.Now()
			err = f.pahoStorm(ctx)
			f.lastEvent = time.Now()
		}
	case ScenarioOutage:
		err = f.siteOutage(ctx, expected)
		// The group_outage waits group_wait (one grace) after the first
		// device folded in.
		quiet = func() time.Time { return f.lastEvent.Add(2*cfg.Grace + 3*cfg.Tick) }
	case ScenarioFlapping:
		err = f.flapping(ctx, expected)
		// A flapping device's offline alert waits until it calms down.
		quiet = func() time.Time { return f.lastEvent.Add(cfg.Grace + max(cfg.Grace, calmBound(cfg)) + 3*cfg.Tick) }
	case ScenarioTakeover:
		err = f.takeovers(ctx, expected)
	case ScenarioNodeSilent:
		err = f.nodeSilent(ctx, expected)
		// The held timers run when the node is back, at once.
		quiet = func() time.Time { return time.Now().Add(3 * cfg.Tick) }
	}
	if err != nil {
		return res, err
	}
	res.Events = f.published
	fmt.Fprintf(cfg.Progress, "storm: %s: %d events published in %s\n", name, f.published, time.Since(t0).Round(time.Millisecond))
	if err := f.waitStored(ctx, f.base+f.published, cfg.Timeout); err != nil {
		return res, err
	}
	res.Ingested = time.Since(t0)
	if err := f.waitAcked(ctx, cfg.Timeout); err != nil {
		return res, err
	}
	res.Processed = time.Since(t0)
	fmt.Fprintf(cfg.Progress, "storm: %s: all in PRESENCE after %s, processed by every stage after %s; waiting for the grace and every stage\n",
		name, res.Ingested.Round(time.Millisecond), res.Processed.Round(time.Millisecond))
	if err := f.settle(ctx, cfg.Timeout, quiet()); err != nil {
		return res, err
	}
	res.Took = time.Since(t0)
	if bs := st.Broker().Stats(); bs.InflightDropped > 0 || bs.MessagesDropped > 0 {
		return res, fmt.Errorf("the broker dropped messages (inflight limit %d, outbound queue %d): the run does not count; lower --window", bs.InflightDropped, bs.MessagesDropped)
	}
	res.ExpectedOffline = len(expected)
	fmt.Fprintf(cfg.Progress, "storm: %s: settled after %s; counting\n", name, res.Took.Round(time.Millisecond))
	if err := f.count(ctx, &res, expected, t0); err != nil {
		return res, err
	}
	switch name {
	case ScenarioReconnect:
		res.Targets = append(res.Targets, check(res.Processed <= 15*time.Second,
			"reconnect storm of %s devices (%s events): processed, archived and notified by every stage %s after its first event (target ≤ 15 s for 100,000 devices)",
			groupThousands(int64(cfg.Devices+res.Paho)), groupThousands(int64(res.Events)), dur(res.Processed)))
	case ScenarioOutage:
		most := 0
		for _, n := range res.FirstWindow {
			most = max(most, n)
		}
		res.Targets = append(res.Targets, check(most <= 3 && res.Lost == 0,
			"site outage of %s devices: messages per receiver in the first 5 minutes at most %d (target ≤ 3), %s of %s devices accounted for",
			groupThousands(int64(len(expected))), most, groupThousands(int64(len(expected)-res.Lost)), groupThousands(int64(len(expected)))))
	case ScenarioNodeSilent:
		f.nodeChecks(&res, t0)
	}
	if st.Archiving() {
		if err := countRows(ctx, f, cfg.ClickHouseAddr, sc.ClickHouseDatabase, &res); err != nil {
			return res, err
		}
	}
	return res, st.Err()
}

// streamCount is the number of messages a stream holds.
func streamCount(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.Msgs, nil
}

// acked reports whether a durable consumer has acked all of its stream.
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
	return info.AckFloor.Stream >= s.CachedInfo().State.LastSeq && info.NumPending == 0 && info.NumAckPending == 0, nil
}

// readAll decodes every message of a stream into v's element type.
func readAll[T any](ctx context.Context, js jetstream.JetStream, stream string) ([]T, error) {
	n, err := streamCount(ctx, js, stream)
	if err != nil || n == 0 {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return nil, err
	}
	defer it.Stop()
	out := make([]T, 0, n)
	for uint64(len(out)) < n {
		m, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("%s: read %d of %d messages: %w", stream, len(out), n, err)
		}
		var v T
		if err := json.Unmarshal(m.Data(), &v); err != nil {
			return nil, fmt.Errorf("%s: %w", stream, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func groupThousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
