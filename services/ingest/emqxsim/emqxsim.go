// Package emqxsim is an embedded, in-process MQTT broker that behaves like an
// EMQX v5 node towards fleetwatch's ingest: for every connect and disconnect
// of its own clients it publishes EMQX-v5-format $SYS presence messages
// ($SYS/brokers/<node>/clients/<clientid>/connected|disconnected), and it
// publishes $SYS/brokers/<node>/uptime and …/datetime as a heartbeat.
//
// It is built on github.com/mochi-mqtt/server/v2 and is meant for the
// development stack, the device simulator and tests. It has no
// authentication: every client may connect, publish and subscribe. Like EMQX
// (and MQTT 3.1.1 §4.7.2), a subscription whose filter starts with a wildcard
// ("#", "+/…") does not receive topics starting with "$".
//
// Differences from a real EMQX v5 node, on purpose or by limitation:
//   - $SYS messages are published with QoS 1 by default (Config.SysQoS) so
//     that a persistent subscriber that was briefly offline still gets them;
//     real EMQX v5 publishes them with QoS 0.
//   - expiry_interval of an MQTT 3.x client with clean_start=false is EMQX's
//     default session expiry (2 h, 7200000 ms).
//   - a client id containing "+" or "#" gets no $SYS message (mochi refuses
//     such topic names); the failure is logged.
package emqxsim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Defaults of Config.
const (
	DefaultListen            = "127.0.0.1:0"
	DefaultNode              = "emqx@127.0.0.1"
	DefaultHeartbeatInterval = 30 * time.Second // EMQX's sys_heartbeat_interval
	DefaultSysQoS            = 1
	DefaultMaxInflight       = 8192 // mochi's own default
)

// Version is the EMQX version the broker claims in $SYS/brokers/<node>/version.
const Version = "5.8.9"

// v3SessionExpiryMS is EMQX's default mqtt.session_expiry_interval (2 h),
// reported as expiry_interval for MQTT 3.x clients with clean_start=false.
const v3SessionExpiryMS = 2 * 60 * 60 * 1000

// Errors returned by the broker.
var (
	// ErrNotStarted is returned by calls that need a running broker.
	ErrNotStarted = errors.New("emqxsim: broker not started")
	// ErrClientNotConnected is returned by Kick for an unknown client id.
	ErrClientNotConnected = errors.New("emqxsim: client not connected")
)

// Config configures a Broker. The zero value is usable.
type Config struct {
	// Listen is the TCP address to listen on (default 127.0.0.1:0, a random
	// port; see Broker.Addr).
	Listen string
	// Node is the EMQX node name used in $SYS topics (default emqx@127.0.0.1).
	Node string
	// HeartbeatInterval is how often $SYS/brokers/<node>/uptime and
	// …/datetime are published (default 30 s; negative turns it off).
	HeartbeatInterval time.Duration
	// SysQoS is the QoS of $SYS publishes (nil: DefaultSysQoS, 1). Real EMQX
	// v5 uses QoS 0: set it with QoS(0) to reproduce its loss behaviour.
	SysQoS *byte
	// Logger receives the broker's logs (nil: discarded). mochi's own logs
	// are passed on from level Error up.
	Logger *slog.Logger
	// Now is the broker's clock for connected_at, disconnected_at and ts
	// (nil: time.Now).
	Now func() time.Time
	// TLS, when set, makes the listener TLS-only (Addr is then ssl://…).
	TLS *tls.Config
	// MaxInflight is the most QoS 1 and 2 deliveries one session holds
	// unacknowledged, connected or not (default 8192, at most 65535, the
	// packet ids there are). Past it the broker drops deliveries to that
	// session and counts them in Stats.InflightDropped, as EMQX drops past
	// max_mqueue_len. A publisher that must lose nothing keeps
	// Broker.Unacked of its subscribers below it.
	MaxInflight int
}

// QoS returns a pointer to q, for Config.SysQoS.
func QoS(q byte) *byte { return &q }

func (c Config) withDefaults() (Config, error) {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Node == "" {
		c.Node = DefaultNode
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.SysQoS == nil {
		c.SysQoS = QoS(DefaultSysQoS)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	switch {
	case c.MaxInflight < 1 || c.MaxInflight > 65535:
		return c, fmt.Errorf("emqxsim: max inflight is %d: use 1 to 65535 (default %d)", c.MaxInflight, DefaultMaxInflight)
	case *c.SysQoS > 2:
		return c, fmt.Errorf("emqxsim: sys qos is %d: use 0, 1 or 2", *c.SysQoS)
	case containsAny(c.Node, "/+#"):
		return c, fmt.Errorf("emqxsim: node %q contains '/', '+' or '#': use a name like emqx@127.0.0.1", c.Node)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return c, fmt.Errorf("emqxsim: listen %q: use host:port, e.g. 127.0.0.1:1883", c.Listen)
	}
	return c, nil
}

// Broker is an embedded MQTT broker publishing EMQX-v5 $SYS presence events.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	srv     *mqtt.Server
	started time.Time

	mu   sync.Mutex       // guards live and orders presence publishes
	live map[string]*conn // established connections by client id

	stateMu sync.Mutex
	addr    string
	running bool
	stop    context.CancelFunc
	done    chan struct{}
}

// New builds a broker; Start makes it listen.
func New(cfg Config) (*Broker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &Broker{
		cfg:  cfg,
		log:  cfg.Logger.With("component", "emqxsim", "node", cfg.Node),
		live: make(map[string]*conn),
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumInflight = uint16(cfg.MaxInflight)
	// The outbound queue holds what is not yet written, QoS 0 included;
	// every QoS 1 delivery in it is also in flight. Sized at least as
	// MaxInflight, it never drops a delivery the session accepted: a
	// subscriber that reads slowly (TCP pushing back) loses nothing while
	// its session is below MaxInflight.
	caps.MaximumClientWritesPending = int32(max(cfg.MaxInflight, DefaultMaxInflight))
	b.srv = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true,
		Logger:       slog.New(minLevel{cfg.Logger.Handler(), slog.LevelError}).With("component", "mochi"),
		// mochi's own $SYS/broker/... statistics are not EMQX's; publish
		// them rarely (they cost a stop-the-world ReadMemStats).
		SysTopicResendInterval: 3600,
	})
	if err := b.srv.AddHook(&hook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("emqxsim: add hook: %w", err)
	}
	return b, nil
}

// Start listens on Config.Listen and starts the heartbeat. It returns once
// the broker accepts connections.
func (b *Broker) Start() error {
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	if b.running {
		return errors.New("emqxsim: broker already started")
	}
	ln, err := net.Listen("tcp", b.cfg.Listen)
	if err != nil {
		return fmt.Errorf("emqxsim: listen on %s: %w", b.cfg.Listen, err)
	}
	if b.cfg.TLS != nil {
		ln = tls.NewListener(ln, b.cfg.TLS)
	}
	if err := b.srv.AddListener(listeners.NewNet("emqxsim", ln)); err != nil {
		_ = ln.Close()
		return fmt.Errorf("emqxsim: add listener: %w", err)
	}
	if err := b.srv.Serve(); err != nil {
		_ = ln.Close()
		return fmt.Errorf("emqxsim: serve: %w", err)
	}
	b.addr = ln.Addr().String()
	b.started = b.cfg.Now()
	b.running = true
	ctx, cancel := context.WithCancel(context.Background())
	b.stop = cancel
	b.done = make(chan struct{})
	b.publishStatic()
	go b.heartbeat(ctx)
	b.log.Info("emqxsim broker listening", "addr", b.addr)
	return nil
}

// Addr is the broker's URL for MQTT clients, e.g. tcp://127.0.0.1:41883,
// or ssl://… with Config.TLS ("" before Start).
func (b *Broker) Addr() string {
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	if b.addr == "" {
		return ""
	}
	if b.cfg.TLS != nil {
		return "ssl://" + b.addr
	}
	return "tcp://" + b.addr
}

// Node is the EMQX node name used in $SYS topics.
func (b *Broker) Node() string { return b.cfg.Node }

// Close disconnects every client (each gets a disconnected event with reason
// server_shutting_down, delivered as far as the subscribers are still
// there), stops the heartbeat and the listener. It is safe to call twice.
func (b *Broker) Close() error {
	b.stateMu.Lock()
	if !b.running {
		b.stateMu.Unlock()
		return nil
	}
	b.running = false
	b.stop()
	done := b.done
	b.stateMu.Unlock()
	<-done
	return b.srv.Close()
}

// Publish publishes a message as the broker itself (like EMQX's internal
// publisher): any topic, including $SYS, no ACL. Tests use it to inject
// presence payloads, garbage included.
func (b *Broker) Publish(topic string, payload []byte, qos byte) error {
	if qos > 2 {
		return fmt.Errorf("emqxsim: qos %d: use 0, 1 or 2", qos)
	}
	if !b.isRunning() {
		return ErrNotStarted
	}
	if err := b.srv.Publish(topic, payload, false, qos); err != nil {
		return fmt.Errorf("emqxsim: publish to %q: %w", topic, err)
	}
	return nil
}

// ConnectedClients is the number of established client connections.
func (b *Broker) ConnectedClients() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.live)
}

// IsConnected reports whether a client with this id is connected.
func (b *Broker) IsConnected(clientID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.live[clientID]
	return ok
}

// Stats are the broker's delivery counters since it started.
type Stats struct {
	// Inflight is the number of QoS 1 and 2 deliveries, over all sessions,
	// waiting for the subscriber's acknowledgement.
	Inflight int64
	// InflightDropped counts QoS 1 and 2 deliveries dropped because a
	// session already held MaxInflight unacknowledged ones (or ran out of
	// packet ids): EMQX drops past max_mqueue_len likewise.
	InflightDropped int64
	// MessagesDropped counts deliveries dropped because a client's
	// outbound queue (MaxInflight packets) was full.
	MessagesDropped int64
}

// Stats returns the broker's delivery counters.
func (b *Broker) Stats() Stats {
	info := b.srv.Info.Clone()
	return Stats{Inflight: info.Inflight, InflightDropped: info.InflightDropped, MessagesDropped: info.MessagesDropped}
}

// Unacked is the number of QoS 1 and 2 deliveries the session of clientID
// holds unacknowledged (0 when the broker has no such session). It is what
// MaxInflight bounds: a publisher that keeps it below MaxInflight loses
// nothing, however late the subscriber's PUBACKs reach the broker.
func (b *Broker) Unacked(clientID string) int {
	cl, ok := b.srv.Clients.Get(clientID)
	if !ok {
		return 0
	}
	return cl.State.Inflight.Len()
}

// Kick disconnects a client like EMQX's kick-out API; its disconnected
// event has reason "kicked".
func (b *Broker) Kick(clientID string) error {
	b.mu.Lock()
	c, ok := b.live[clientID]
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %q", ErrClientNotConnected, clientID)
	}
	_ = b.srv.DisconnectClient(c.client, errAdministrativeAction)
	return nil
}

func (b *Broker) isRunning() bool {
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	return b.running
}

// sysTopic returns $SYS/brokers/<node>/<suffix>.
func (b *Broker) sysTopic(suffix string) string {
	return "$SYS/brokers/" + b.cfg.Node + "/" + suffix
}

// publishStatic publishes the retained node description, as EMQX does.
func (b *Broker) publishStatic() {
	for _, m := range []struct{ topic, payload string }{
		{"$SYS/brokers", b.cfg.Node},
		{b.sysTopic("version"), Version},
		{b.sysTopic("sysdescr"), "EMQX (emqxsim, an embedded simulator)"},
	} {
		if err := b.srv.Publish(m.topic, []byte(m.payload), true, *b.cfg.SysQoS); err != nil {
			b.log.Warn("emqxsim: publish node description", "topic", m.topic, "err", err)
		}
	}
}

// heartbeat publishes uptime (ms) and datetime every HeartbeatInterval.
func (b *Broker) heartbeat(ctx context.Context) {
	defer close(b.done)
	if b.cfg.HeartbeatInterval < 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(b.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		b.publishHeartbeat()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// publishHeartbeat publishes $SYS/brokers/<node>/uptime (milliseconds since
// start, as EMQX v5) and …/datetime (RFC 3339).
func (b *Broker) publishHeartbeat() {
	now := b.cfg.Now()
	qos := *b.cfg.SysQoS
	uptime := strconv.FormatInt(now.Sub(b.started).Milliseconds(), 10)
	if err := b.srv.Publish(b.sysTopic("uptime"), []byte(uptime), false, qos); err != nil {
		b.log.Warn("emqxsim: publish uptime", "err", err)
	}
	if err := b.srv.Publish(b.sysTopic("datetime"), []byte(now.UTC().Format(time.RFC3339)), false, qos); err != nil {
		b.log.Warn("emqxsim: publish datetime", "err", err)
	}
}

func containsAny(s, chars string) bool {
	for i := 0; i < len(s); i++ {
		for j := 0; j < len(chars); j++ {
			if s[i] == chars[j] {
				return true
			}
		}
	}
	return false
}

// minLevel drops records below min; it keeps mochi's chatty logs out.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}
