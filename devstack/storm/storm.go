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
// that, as EMQX does; the harness therefore keeps at most Config.Window
// messages between the broker and the PRESENCE stream.
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
// Each scenario runs on a fresh stack, so its counters are its own.
package storm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/devstack"
	"github.com/fleetwatch/fleetwatch/devstack/simulator"
	"github.com/fleetwatch/fleetwatch/pkg/events"
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
	// Window bounds the messages between the broker and PRESENCE.
	Window int
	// FlapCycles is how often each flapping device drops and returns.
	FlapCycles int
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
	// Took until they were evaluated, notified and archived (including
	// the grace the last drop waits for).
	Ingested, Took time.Duration
	// ExpectedOffline is how many devices stay offline past the grace.
	ExpectedOffline int
	// Late is the devices that returned but stayed away at least the
	// grace (event time) once: the pipeline fell so far behind that the
	// harness's own drop-to-return gap grew; alerts for them are right.
	Late int
	// Alerts is the ALERTS stream's count (every receiver); Firing the
	// devices with a firing device_offline alert.
	Alerts, Firing int
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
	return !r.Evaluated || (r.Lost == 0 && r.False == 0 && r.RateLimited == 0 && r.Stored == uint64(r.SetupEvents+r.Events) && (!r.RowsChecked || r.RowsMatch()))
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

func runScenario(ctx context.Context, cfg Config, name string) (Result, error) {
	res := Result{Scenario: name, Devices: cfg.Devices}
	if name == ScenarioNodeSilent {
		res.Note = "not evaluated: ingest can report a silent node (NodeEvent, health.enabled), but the evaluator does not consume node events yet, so no node_silent alert can be decided"
		return res, nil
	}
	res.Evaluated = true
	sc := devstack.DefaultConfig()
	sc.HTTPListen, sc.MQTTListen = "127.0.0.1:0", "127.0.0.1:0"
	sc.Grace, sc.Tick = cfg.Grace, cfg.Tick
	sc.Language = "en"
	sc.Simulator.Devices = 0
	sc.ClickHouseAddr = cfg.ClickHouseAddr
	sc.ClickHouseDatabase = fmt.Sprintf("fleetwatch_storm_%s_%d", strings.ReplaceAll(name, "-", "_"), time.Now().UnixNano())
	sc.Logger = cfg.Logger
	st, err := devstack.Start(ctx, sc)
	if err != nil {
		return res, err
	}
	defer st.Close()
	if st.Archiving() {
		defer dropDatabase(cfg.ClickHouseAddr, sc.ClickHouseDatabase)
	}
	nc, err := nats.Connect(st.NATSURL(), nats.Name("fleetwatch-storm"))
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	f := newFleet(cfg, st, js)
	sub, err := nc.Subscribe(events.PresencePrefix+".>", func(*nats.Msg) { f.seen.Add(1) })
	if err != nil {
		return res, err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return res, err
	}

	// Every device comes online on node 1.
	t0 := time.Now()
	for i := range f.ids {
		if err := f.connect(ctx, i, f.node1); err != nil {
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
	switch name {
	case ScenarioReconnect:
		if err = f.reconnectStorm(ctx); err == nil && len(f.paho) > 0 {
			f.lastEvent = time.Now()
			err = f.pahoStorm(ctx)
			f.lastEvent = time.Now()
		}
	case ScenarioOutage:
		err = f.siteOutage(ctx, expected)
	case ScenarioFlapping:
		err = f.flapping(ctx, expected)
	case ScenarioTakeover:
		err = f.takeovers(ctx, expected)
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
	fmt.Fprintf(cfg.Progress, "storm: %s: all in PRESENCE after %s; waiting for the grace and every stage\n", name, res.Ingested.Round(time.Millisecond))
	// Wait until the last drop's grace has passed, then for every stage.
	if err := f.settle(ctx, cfg.Timeout, f.lastEvent.Add(cfg.Grace+3*cfg.Tick)); err != nil {
		return res, err
	}
	res.Took = time.Since(t0)
	res.ExpectedOffline = len(expected)
	fmt.Fprintf(cfg.Progress, "storm: %s: settled after %s; counting\n", name, res.Took.Round(time.Millisecond))
	if err := f.count(ctx, &res, expected); err != nil {
		return res, err
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
