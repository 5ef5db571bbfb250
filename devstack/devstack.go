// Package devstack runs the whole fleetwatch pipeline in one process on
// embedded defaults: an embedded NATS server with JetStream, an EMQX-like MQTT
// broker, the four stages wired as in production, strict local DingTalk and
// Feishu stand-ins with an inbox page, and (optionally) a device simulator.
// `make run` and the end-to-end tests use it.
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/devstack/simulator"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
	"github.com/fleetwatch/fleetwatch/services/archiver"
	"github.com/fleetwatch/fleetwatch/services/evaluator"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
	"github.com/fleetwatch/fleetwatch/services/ingest"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqxsim"
	"github.com/fleetwatch/fleetwatch/services/notifier"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/dingtalk"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/feishu"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Receiver names used by the dev stack.
const (
	ReceiverDingTalk = "ops-dingtalk"
	ReceiverFeishu   = "ops-feishu"
	// Keyword is the chat robots' security keyword.
	Keyword = "告警"
)

// Config describes a dev stack.
type Config struct {
	// HTTPListen serves the inbox, the chat stand-ins and the dev API.
	HTTPListen string
	// MQTTListen is the embedded broker's address.
	MQTTListen string
	// StoreDir holds JetStream's files ("" : a temporary directory, removed on Close).
	StoreDir string
	// Grace is the evaluator's grace before an offline alert.
	Grace time.Duration
	// Tick is the evaluator's clock tick.
	Tick time.Duration
	// Language of the chat messages: zh or en.
	Language string
	// Channels lists the chat robots alerts go to: dingtalk, feishu or both.
	Channels []string
	// Simulator configures the device fleet (Devices 0: no simulator).
	Simulator simulator.Config
	// ClickHouseAddr turns archiving on (native protocol host:port).
	ClickHouseAddr string
	// ClickHouseDatabase receives the tables.
	ClickHouseDatabase string
	// ArchiverBatchWait bounds how long a row waits for its batch.
	ArchiverBatchWait time.Duration
	// Labels, Route and Correlation are the evaluator's labelling rules,
	// routing tree (nil: every alert to every channel, one group per
	// device) and mass-outage correlation (zero: off).
	Labels      labels.Config
	Route       *route.Config
	Correlation tracker.Correlation
	// NodeHealth turns on broker node health: the broker's heartbeat
	// interval and ingest's silence threshold (zero: off).
	NodeHealth NodeHealth
	// Logger receives every stage's logs.
	Logger *slog.Logger
}

// NodeHealth is broker node health in the dev stack: the broker publishes
// $SYS/brokers/<node>/uptime every Heartbeat, and ingest reports a node it
// has not heard from (heartbeat or event) for SilentAfter as silent, and
// as back when it is heard again (NODES stream → node_silent alerts).
type NodeHealth struct {
	SilentAfter, Heartbeat time.Duration
}

// enabled reports whether node health is on.
func (h NodeHealth) enabled() bool { return h.SilentAfter > 0 }

// DefaultConfig is what `fleetwatch dev` runs with no flags.
func DefaultConfig() Config {
	return Config{
		HTTPListen:         "127.0.0.1:8990",
		MQTTListen:         "127.0.0.1:1883",
		Grace:              15 * time.Second,
		Tick:               500 * time.Millisecond,
		Language:           "zh",
		Channels:           []string{notifier.ChannelDingTalk, notifier.ChannelFeishu},
		ClickHouseAddr:     os.Getenv("FLEETWATCH_CLICKHOUSE_ADDR"),
		ClickHouseDatabase: "fleetwatch_dev",
		ArchiverBatchWait:  time.Second,
		Simulator: simulator.Config{
			Devices:      200,
			Sites:        4,
			DropInterval: 6 * time.Second,
			MinOffline:   2 * time.Second,
			MaxOffline:   90 * time.Second,
			Seed:         uint64(time.Now().UnixNano()),
		},
	}
}

// Validate checks the settings before anything starts.
func (c Config) Validate() error {
	if c.Grace <= 0 {
		return fmt.Errorf("grace is %v: use a positive duration such as 15s", c.Grace)
	}
	if c.Tick <= 0 {
		return fmt.Errorf("tick is %v: use a positive duration such as 500ms", c.Tick)
	}
	if c.Language != "zh" && c.Language != "en" {
		return fmt.Errorf("language is %q: use zh or en", c.Language)
	}
	if len(c.Channels) == 0 {
		return errors.New("channels is empty: list dingtalk, feishu or both")
	}
	for _, ch := range c.Channels {
		if ch != notifier.ChannelDingTalk && ch != notifier.ChannelFeishu {
			return fmt.Errorf("channels: %q is not dingtalk or feishu", ch)
		}
	}
	if h := c.NodeHealth; h.enabled() && (h.Heartbeat <= 0 || h.Heartbeat >= h.SilentAfter) {
		return fmt.Errorf("node health: heartbeat %s must be positive and below silent_after %s, e.g. a quarter of it", h.Heartbeat, h.SilentAfter)
	}
	if c.Simulator.Devices > 0 {
		sc := c.Simulator
		sc.BrokerURL = "tcp://" + c.MQTTListen
		if err := sc.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Stack is a running dev stack.
type Stack struct {
	cfg    Config
	log    *slog.Logger
	nats   *natstest.Server
	broker *emqxsim.Broker
	chat   *chatsim.Server
	sim    *simulator.Simulator
	http   *http.Server
	httpLn net.Listener
	tel    *telemetry.Providers
	conns  []*nats.Conn
	stages []namedRunner
	tmp    string

	runCtx context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
}

// Start brings the stack up and returns once every stage is ready. The
// stack runs until Close.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	st := &Stack{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			_ = st.Close()
		}
	}()
	if st.tmp, err = os.MkdirTemp("", "fleetwatch-dev-"); err != nil {
		return nil, err
	}
	store := cfg.StoreDir
	if store == "" {
		store = filepath.Join(st.tmp, "jetstream")
	}
	if st.nats, err = natstest.New(store); err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if st.tel, err = telemetry.Setup(ctx, telemetry.Config{ServiceName: "fleetwatch-dev"}); err != nil {
		return nil, err
	}

	// The chat stand-ins, with real secrets and keywords, behind the inbox page.
	ding := chatsim.Robot{Name: ReceiverDingTalk, Token: "dev-" + randomHex(16), Secret: "SEC" + randomHex(32), Keywords: []string{Keyword}}
	fs := chatsim.Robot{Name: ReceiverFeishu, Token: "dev-" + randomHex(16), Secret: randomHex(16), Keywords: []string{Keyword}}
	st.chat = chatsim.New(chatsim.Config{DingTalk: []chatsim.Robot{ding}, Feishu: []chatsim.Robot{fs}})
	if st.httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
		return nil, fmt.Errorf("dev http listen on %s: %w (choose another address with --http-listen, e.g. 127.0.0.1:0)", cfg.HTTPListen, err)
	}

	bc := emqxsim.Config{Listen: cfg.MQTTListen, Logger: log.With("stage", "broker")}
	if cfg.NodeHealth.enabled() {
		bc.HeartbeatInterval = cfg.NodeHealth.Heartbeat
	}
	if st.broker, err = emqxsim.New(bc); err != nil {
		return nil, err
	}
	if err = st.broker.Start(); err != nil {
		return nil, fmt.Errorf("mqtt broker on %s: %w (choose another address with --mqtt-listen, e.g. 127.0.0.1:0)", cfg.MQTTListen, err)
	}

	nc, err := st.connect("fleetwatch-dev")
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if err = events.EnsureStreams(ctx, js, events.DefaultTopology()); err != nil {
		return nil, err
	}

	st.runCtx, st.cancel = context.WithCancel(context.Background())
	if err = st.startStages(st.runCtx, ding, fs); err != nil {
		return nil, err
	}
	if err = st.waitReady(ctx); err != nil {
		return nil, err
	}
	if cfg.Simulator.Devices > 0 {
		sc := cfg.Simulator
		sc.BrokerURL = st.broker.Addr()
		sc.Logger = log.With("stage", "simulator")
		if st.sim, err = simulator.New(sc); err != nil {
			return nil, err
		}
		st.run(st.runCtx, "simulator", st.sim.Run)
	}
	// Serve last: the handlers read the fields set above. Requests that
	// arrived earlier wait in the listen backlog.
	st.http = &http.Server{Handler: st.routes(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = st.http.Serve(st.httpLn) }()
	return st, nil
}

type runner interface {
	Run(context.Context) error
	// Ready is nil once the stage processes input (ingest: subscribed).
	Ready() error
}

// IngestClientID is the MQTT client id of the stack's ingest: the session
// whose unacknowledged deliveries the broker bounds (emqxsim's
// Broker.Unacked).
const IngestClientID = "fleetwatch-ingest-dev"

func (st *Stack) startStages(ctx context.Context, ding, fs chatsim.Robot) error {
	cfg := st.cfg
	secretFile := func(name, value string) (string, error) {
		p := filepath.Join(st.tmp, name)
		return p, os.WriteFile(p, []byte(value), 0o600)
	}
	dingFile, err := secretFile("dingtalk.secret", ding.Secret)
	if err != nil {
		return err
	}
	feishuFile, err := secretFile("feishu.secret", fs.Secret)
	if err != nil {
		return err
	}

	ic := ingest.DefaultConfig()
	ic.MQTT.Broker = st.broker.Addr()
	ic.MQTT.ClientID = IngestClientID
	if h := cfg.NodeHealth; h.enabled() {
		ic.Health.Enabled = true
		ic.Health.SilentAfter = h.SilentAfter
		ic.Health.CheckInterval = h.Heartbeat
	}

	ec := evaluator.DefaultConfig()
	ec.Grace = cfg.Grace
	ec.Tick = cfg.Tick
	ec.Receivers = nil
	ec.Labels = cfg.Labels
	ec.Route = cfg.Route
	ec.Correlation = cfg.Correlation

	ncfg := notifier.DefaultConfig()
	ncfg.Receivers = nil
	for _, ch := range cfg.Channels {
		switch ch {
		case notifier.ChannelDingTalk:
			ec.Receivers = append(ec.Receivers, ReceiverDingTalk)
			ncfg.Receivers = append(ncfg.Receivers, notifier.Receiver{Name: ReceiverDingTalk, Channel: notifier.ChannelDingTalk, DingTalk: &dingtalk.Config{
				URL: st.HTTPURL() + "/robot/send?access_token=" + ding.Token, SecretFile: dingFile, Keyword: Keyword, Language: cfg.Language}})
		case notifier.ChannelFeishu:
			ec.Receivers = append(ec.Receivers, ReceiverFeishu)
			ncfg.Receivers = append(ncfg.Receivers, notifier.Receiver{Name: ReceiverFeishu, Channel: notifier.ChannelFeishu, Feishu: &feishu.Config{
				URL: st.HTTPURL() + "/open-apis/bot/v2/hook/" + fs.Token, SecretFile: feishuFile, Keyword: Keyword, Language: cfg.Language}})
		}
	}

	type stage struct {
		name  string
		start func(nc *nats.Conn, log *slog.Logger) (runner, error)
	}
	stages := []stage{
		{"ingest", func(nc *nats.Conn, log *slog.Logger) (runner, error) {
			return ingest.New(ic, ingest.Deps{NATS: nc, Logger: log, TracerProvider: st.tel.TracerProvider, MeterProvider: st.tel.MeterProvider})
		}},
		{"evaluator", func(nc *nats.Conn, log *slog.Logger) (runner, error) {
			return evaluator.New(ec, evaluator.Deps{NATS: nc, Logger: log, TracerProvider: st.tel.TracerProvider, MeterProvider: st.tel.MeterProvider})
		}},
		{"notifier", func(nc *nats.Conn, log *slog.Logger) (runner, error) {
			return notifier.New(ncfg, notifier.Deps{NATS: nc, Logger: log, TracerProvider: st.tel.TracerProvider, MeterProvider: st.tel.MeterProvider})
		}},
	}
	if cfg.ClickHouseAddr != "" {
		ac := archiver.DefaultConfig()
		ac.ClickHouse.Addr = []string{cfg.ClickHouseAddr}
		ac.ClickHouse.Database = cfg.ClickHouseDatabase
		if cfg.ArchiverBatchWait > 0 {
			ac.BatchWait = cfg.ArchiverBatchWait
		}
		stages = append(stages, stage{"archiver", func(nc *nats.Conn, log *slog.Logger) (runner, error) {
			return archiver.New(ac, archiver.Deps{NATS: nc, Logger: log, TracerProvider: st.tel.TracerProvider, MeterProvider: st.tel.MeterProvider})
		}})
	}
	for _, s := range stages {
		nc, err := st.connect("fleetwatch-" + s.name)
		if err != nil {
			return err
		}
		r, err := s.start(nc, st.log.With("stage", s.name))
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		st.run(ctx, s.name, r.Run)
		st.stages = append(st.stages, namedRunner{s.name, r})
	}
	return nil
}

// namedRunner is a started stage.
type namedRunner struct {
	name string
	r    runner
}

// readyTimeout bounds how long Start waits for the stages to be ready.
const readyTimeout = 30 * time.Second

// waitReady waits until every stage is ready: until ingest has subscribed,
// a presence message published to the broker has no subscriber and is lost.
func (st *Stack) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(readyTimeout)
	for _, s := range st.stages {
		for {
			err := s.r.Ready()
			if err == nil {
				break
			}
			if serr := st.Err(); serr != nil {
				return serr
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s is not ready after %s: %w (its log says why)", s.name, readyTimeout, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	return nil
}

// connect opens an independent NATS connection, as a separate process would.
func (st *Stack) connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect(st.nats.URL(), nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect %s to embedded nats: %w", name, err)
	}
	st.conns = append(st.conns, nc)
	return nc, nil
}

func (st *Stack) run(ctx context.Context, name string, f func(context.Context) error) {
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		if err := f(ctx); err != nil && ctx.Err() == nil {
			st.log.Error("stage stopped", "stage", name, "err", err)
			st.mu.Lock()
			st.errs = append(st.errs, fmt.Errorf("%s: %w", name, err))
			st.mu.Unlock()
		}
	}()
}

// Err returns the errors of stages that stopped on their own.
func (st *Stack) Err() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return errors.Join(st.errs...)
}

// HTTPURL is the inbox and dev API base URL.
func (st *Stack) HTTPURL() string { return "http://" + st.httpLn.Addr().String() }

// BrokerURL is the MQTT broker's URL (tcp://host:port).
func (st *Stack) BrokerURL() string { return st.broker.Addr() }

// NATSURL is the embedded NATS server's URL.
func (st *Stack) NATSURL() string { return st.nats.URL() }

// Chat is the DingTalk/Feishu stand-in.
func (st *Stack) Chat() *chatsim.Server { return st.chat }

// Broker is the embedded EMQX-like MQTT broker.
func (st *Stack) Broker() *emqxsim.Broker { return st.broker }

// Archiving reports whether the archiver runs.
func (st *Stack) Archiving() bool { return st.cfg.ClickHouseAddr != "" }

// Close stops every stage, then the broker, NATS and the HTTP server.
func (st *Stack) Close() error {
	if st.cancel != nil {
		st.cancel()
	}
	st.wg.Wait()
	for _, nc := range st.conns {
		nc.Close()
	}
	if st.broker != nil {
		_ = st.broker.Close()
	}
	if st.http != nil {
		_ = st.http.Close()
	} else if st.httpLn != nil {
		_ = st.httpLn.Close()
	}
	if st.nats != nil {
		st.nats.Shutdown()
		st.nats.WaitForShutdown()
	}
	if st.tel != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = st.tel.Shutdown(sctx)
		cancel()
	}
	if st.tmp != "" {
		_ = os.RemoveAll(st.tmp)
	}
	return st.Err()
}

func randomHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
