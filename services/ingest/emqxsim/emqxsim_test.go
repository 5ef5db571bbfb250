package emqxsim_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqxsim"
)

const (
	connectedFilter    = "$SYS/brokers/+/clients/+/connected"
	disconnectedFilter = "$SYS/brokers/+/clients/+/disconnected"
	wait               = 10 * time.Second
)

// clock is a settable fake clock.
type clock struct{ ms atomic.Int64 }

func newClock(ms int64) *clock {
	c := &clock{}
	c.ms.Store(ms)
	return c
}

func (c *clock) Now() time.Time  { return time.UnixMilli(c.ms.Load()) }
func (c *clock) Set(ms int64)    { c.ms.Store(ms) }
func (c *clock) Advance(d int64) { c.ms.Add(d) }

func startBroker(t *testing.T, cfg emqxsim.Config) *emqxsim.Broker {
	t.Helper()
	b, err := emqxsim.New(cfg)
	if err != nil {
		t.Fatalf("emqxsim.New: %v", err)
	}
	if err := b.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

type message struct {
	topic   string
	payload string
	qos     byte
}

// subscribe connects a paho client that subscribes to filters at QoS 1 and
// returns what it receives, in order.
func subscribe(t *testing.T, addr, id string, clean bool, filters ...string) (paho.Client, chan message) {
	t.Helper()
	ch := make(chan message, 100)
	opts := paho.NewClientOptions().AddBroker(addr).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		ch <- message{topic: m.Topic(), payload: string(m.Payload()), qos: m.Qos()}
	})
	c := paho.NewClient(opts)
	waitToken(t, c.Connect(), "subscriber connect")
	if len(filters) > 0 {
		subs := map[string]byte{}
		for _, f := range filters {
			subs[f] = 1
		}
		waitToken(t, c.SubscribeMultiple(subs, nil), "subscribe")
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, ch
}

func waitToken(t *testing.T, tok paho.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(wait) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// device connects a paho client as a device (no auto-reconnect).
func device(t *testing.T, addr, id string, configure func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(addr).SetClientID(id).SetAutoReconnect(false).
		SetKeepAlive(30 * time.Second)
	if configure != nil {
		configure(opts)
	}
	c := paho.NewClient(opts)
	waitToken(t, c.Connect(), "device "+id+" connect")
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(0)
		}
	})
	return c
}

func next(t *testing.T, ch chan message) message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(wait):
		t.Fatal("no message within 10s")
	}
	return message{}
}

func port(t *testing.T, addr string) int {
	t.Helper()
	u, err := url.Parse(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fixtureKeys returns the payload keys of a shared EMQX fixture.
func fixtureKeys(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile("../emqx/testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Payload map[string]any `json:"payload"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range f.Payload {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func payloadKeys(t *testing.T, payload string) []string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		t.Fatalf("payload %q: %v", payload, err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestConnectAndCleanDisconnect(t *testing.T) {
	clk := newClock(1718000000123)
	b := startBroker(t, emqxsim.Config{Now: clk.Now})
	_, ch := subscribe(t, b.Addr(), "watcher", true, connectedFilter, disconnectedFilter)
	p := port(t, b.Addr())

	dev := device(t, b.Addr(), "dev-42", func(o *paho.ClientOptions) { o.SetUsername("alice") })
	got := next(t, ch)
	wantPayload := fmt.Sprintf(`{"clientid":"dev-42","username":"alice","ipaddress":"127.0.0.1","sockport":%d,`+
		`"protocol":"mqtt","proto_name":"MQTT","proto_ver":4,"connected_at":1718000000123,"ts":1718000000123,`+
		`"keepalive":30,"clean_start":true,"expiry_interval":0}`, p)
	if want := (message{"$SYS/brokers/emqx@127.0.0.1/clients/dev-42/connected", wantPayload, 1}); got != want {
		t.Fatalf("connected:\n got %+v\nwant %+v", got, want)
	}
	if got, want := payloadKeys(t, got.payload), fixtureKeys(t, "v5_sys_connected.json"); !slices.Equal(got, want) {
		t.Errorf("connected keys %v, want the fixture's %v", got, want)
	}
	if n := b.ConnectedClients(); n != 2 {
		t.Errorf("ConnectedClients = %d, want 2 (watcher and dev-42)", n)
	}
	if !b.IsConnected("dev-42") {
		t.Error("IsConnected(dev-42) = false")
	}

	clk.Set(1718000300412)
	dev.Disconnect(250) // quiesce 0 may skip the DISCONNECT packet
	got = next(t, ch)
	wantPayload = fmt.Sprintf(`{"clientid":"dev-42","username":"alice","ipaddress":"127.0.0.1","sockport":%d,`+
		`"protocol":"mqtt","proto_name":"MQTT","proto_ver":4,"connected_at":1718000000123,"ts":1718000300412,`+
		`"reason":"normal","disconnected_at":1718000300412}`, p)
	if want := (message{"$SYS/brokers/emqx@127.0.0.1/clients/dev-42/disconnected", wantPayload, 1}); got != want {
		t.Fatalf("disconnected:\n got %+v\nwant %+v", got, want)
	}
	if got, want := payloadKeys(t, got.payload), fixtureKeys(t, "v5_sys_disconnected.json"); !slices.Equal(got, want) {
		t.Errorf("disconnected keys %v, want the fixture's %v", got, want)
	}
	if b.IsConnected("dev-42") {
		t.Error("IsConnected(dev-42) = true after disconnect")
	}
}

func TestAnonymousPersistentClient(t *testing.T) {
	clk := newClock(1718000000000)
	b := startBroker(t, emqxsim.Config{Node: "emqx@10.0.0.11", Now: clk.Now})
	_, ch := subscribe(t, b.Addr(), "watcher", true, "$SYS/brokers/+/clients/#")
	device(t, b.Addr(), "dev/with/slashes", func(o *paho.ClientOptions) { o.SetCleanSession(false) })
	got := next(t, ch)
	if want := "$SYS/brokers/emqx@10.0.0.11/clients/dev/with/slashes/connected"; got.topic != want {
		t.Errorf("topic %q, want %q", got.topic, want)
	}
	var p map[string]any
	if err := json.Unmarshal([]byte(got.payload), &p); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"clientid": "dev/with/slashes", "username": "undefined",
		"clean_start": false, "expiry_interval": float64(7200000)} {
		if p[k] != want {
			t.Errorf("%s = %v, want %v", k, p[k], want)
		}
	}
}

// TestAbruptClose closes a device's socket without DISCONNECT.
func TestAbruptClose(t *testing.T) {
	b := startBroker(t, emqxsim.Config{})
	_, ch := subscribe(t, b.Addr(), "watcher", true, connectedFilter, disconnectedFilter)
	var sock net.Conn
	device(t, b.Addr(), "dev-1", func(o *paho.ClientOptions) {
		o.SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			c, err := net.Dial("tcp", u.Host)
			sock = c
			return c, err
		})
	})
	next(t, ch) // connected
	_ = sock.Close()
	got := next(t, ch)
	if !strings.HasSuffix(got.topic, "/clients/dev-1/disconnected") || reason(t, got) != "tcp_closed" {
		t.Fatalf("got %+v, want dev-1 disconnected with reason tcp_closed", got)
	}
}

func reason(t *testing.T, m message) string {
	t.Helper()
	var p struct {
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(m.payload), &p); err != nil {
		t.Fatal(err)
	}
	return p.Reason
}

func connectedAt(t *testing.T, m message) int64 {
	t.Helper()
	var p struct {
		ConnectedAt int64 `json:"connected_at"`
	}
	if err := json.Unmarshal([]byte(m.payload), &p); err != nil {
		t.Fatal(err)
	}
	return p.ConnectedAt
}

// TestKeepaliveTimeout connects with keepalive 1 s over a raw socket and
// then stays silent: the broker gives up after 1.5 × keepalive.
func TestKeepaliveTimeout(t *testing.T) {
	b := startBroker(t, emqxsim.Config{})
	_, ch := subscribe(t, b.Addr(), "watcher", true, disconnectedFilter)
	c, err := net.Dial("tcp", strings.TrimPrefix(b.Addr(), "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := "silent"
	connect := []byte{0x10, byte(12 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 1, 0, byte(len(id))}
	if _, err := c.Write(append(connect, id...)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	if _, err := c.Read(ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("connack % x, %v", ack, err)
	}
	got := next(t, ch)
	if !strings.HasSuffix(got.topic, "/clients/silent/disconnected") || reason(t, got) != "keepalive_timeout" {
		t.Fatalf("got %+v, want silent disconnected with reason keepalive_timeout", got)
	}
}

// TestTakeover: a second connection with the same client id reports the
// first one's disconnect (takenover, or discarded with clean start) before
// its own connect, like EMQX ≥ 5.0.5.
func TestTakeover(t *testing.T) {
	for _, tc := range []struct {
		clean  bool
		reason string
	}{{false, "takenover"}, {true, "discarded"}} {
		t.Run(tc.reason, func(t *testing.T) {
			clk := newClock(1718000000000)
			b := startBroker(t, emqxsim.Config{Now: clk.Now})
			_, ch := subscribe(t, b.Addr(), "watcher", true, connectedFilter, disconnectedFilter)
			device(t, b.Addr(), "dev-7", func(o *paho.ClientOptions) { o.SetCleanSession(false) })
			first := next(t, ch)
			clk.Advance(1000)
			device(t, b.Addr(), "dev-7", func(o *paho.ClientOptions) { o.SetCleanSession(tc.clean) })
			gotDisc, gotConn := next(t, ch), next(t, ch)
			if !strings.HasSuffix(gotDisc.topic, "/disconnected") || reason(t, gotDisc) != tc.reason {
				t.Fatalf("first message after takeover %+v, want disconnected with reason %s", gotDisc, tc.reason)
			}
			if connectedAt(t, gotDisc) != connectedAt(t, first) || connectedAt(t, first) != 1718000000000 {
				t.Errorf("disconnected connected_at %d, want the old connection's %d", connectedAt(t, gotDisc), connectedAt(t, first))
			}
			if !strings.HasSuffix(gotConn.topic, "/connected") || connectedAt(t, gotConn) != 1718000001000 {
				t.Fatalf("second message %+v, want connected at 1718000001000", gotConn)
			}
			if n := b.ConnectedClients(); n != 2 {
				t.Errorf("ConnectedClients = %d, want 2", n)
			}
		})
	}
}

func TestKick(t *testing.T) {
	b := startBroker(t, emqxsim.Config{})
	_, ch := subscribe(t, b.Addr(), "watcher", true, disconnectedFilter)
	device(t, b.Addr(), "dev-9", nil)
	if err := b.Kick("dev-9"); err != nil {
		t.Fatal(err)
	}
	if got := next(t, ch); reason(t, got) != "kicked" {
		t.Fatalf("got %+v, want reason kicked", got)
	}
	if err := b.Kick("nobody"); err == nil {
		t.Error("Kick(nobody) = nil, want an error")
	}
}

// TestWildcardDoesNotMatchSys: "#" must not receive $SYS (mochi would).
func TestWildcardDoesNotMatchSys(t *testing.T) {
	b := startBroker(t, emqxsim.Config{HeartbeatInterval: 5 * time.Millisecond})
	_, ch := subscribe(t, b.Addr(), "watcher", true, "#", "+/+/+/+/+/connected")
	device(t, b.Addr(), "dev-1", nil)
	if err := b.Publish("marker/1", []byte("x"), 1); err != nil {
		t.Fatal(err)
	}
	if got := next(t, ch); got.topic != "marker/1" {
		t.Fatalf("got %+v, want only marker/1", got)
	}
}

func TestSharedSubscription(t *testing.T) {
	b := startBroker(t, emqxsim.Config{})
	_, ch := subscribe(t, b.Addr(), "watcher", true, "$share/fleetwatch/"+connectedFilter)
	device(t, b.Addr(), "dev-1", nil)
	if got := next(t, ch); got.topic != "$SYS/brokers/emqx@127.0.0.1/clients/dev-1/connected" {
		t.Fatalf("got %+v", got)
	}
}

func TestSysQoS(t *testing.T) {
	b := startBroker(t, emqxsim.Config{SysQoS: emqxsim.QoS(0)})
	_, ch := subscribe(t, b.Addr(), "watcher", true, connectedFilter)
	device(t, b.Addr(), "dev-1", nil)
	if got := next(t, ch); got.qos != 0 {
		t.Fatalf("qos %d, want 0", got.qos)
	}
}

// TestPersistentSubscriberCatchesUp: with QoS 1 (the default), events
// published while a persistent-session subscriber is away reach it later.
func TestPersistentSubscriberCatchesUp(t *testing.T) {
	b := startBroker(t, emqxsim.Config{})
	sub, _ := subscribe(t, b.Addr(), "ingest", false, connectedFilter)
	sub.Disconnect(0)
	device(t, b.Addr(), "dev-1", nil)
	_, ch := subscribe(t, b.Addr(), "ingest", false)
	if got := next(t, ch); got.topic != "$SYS/brokers/emqx@127.0.0.1/clients/dev-1/connected" {
		t.Fatalf("got %+v, want the missed connected", got)
	}
}

func TestHeartbeat(t *testing.T) {
	clk := newClock(1718000000000)
	b := startBroker(t, emqxsim.Config{HeartbeatInterval: 10 * time.Millisecond, Now: clk.Now})
	_, ch := subscribe(t, b.Addr(), "watcher", true, "$SYS/brokers/+/uptime")
	clk.Advance(1500)
	for {
		got := next(t, ch)
		if got.topic != "$SYS/brokers/emqx@127.0.0.1/uptime" {
			t.Fatalf("topic %q", got.topic)
		}
		if got.payload == "1500" {
			return
		}
		if _, err := strconv.ParseInt(got.payload, 10, 64); err != nil {
			t.Fatalf("uptime %q is not a number of milliseconds", got.payload)
		}
	}
}

func TestPublishAndClose(t *testing.T) {
	b, err := emqxsim.New(emqxsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish("a", nil, 0); err == nil {
		t.Error("Publish before Start = nil, want an error")
	}
	if b.Addr() != "" {
		t.Errorf("Addr before Start = %q", b.Addr())
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish("a", nil, 3); err == nil {
		t.Error("Publish with qos 3 = nil, want an error")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  emqxsim.Config
		want string
	}{
		{emqxsim.Config{SysQoS: emqxsim.QoS(3)}, "emqxsim: sys qos is 3: use 0, 1 or 2"},
		{emqxsim.Config{Node: "a/b"}, `emqxsim: node "a/b" contains '/', '+' or '#': use a name like emqx@127.0.0.1`},
		{emqxsim.Config{Listen: "1883"}, `emqxsim: listen "1883": use host:port, e.g. 127.0.0.1:1883`},
		{emqxsim.Config{MaxInflight: 70000}, "emqxsim: max inflight is 70000: use 1 to 65535 (default 8192)"},
		{emqxsim.Config{MaxInflight: -1}, "emqxsim: max inflight is -1: use 1 to 65535 (default 8192)"},
	} {
		if _, err := emqxsim.New(tc.cfg); err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestMaxInflightDropsAndCounts: a session holds at most MaxInflight
// unacknowledged QoS 1 deliveries; the broker drops the ones past it and
// counts them, as EMQX drops past max_mqueue_len. Acknowledging frees the
// session for new deliveries.
func TestMaxInflightDropsAndCounts(t *testing.T) {
	const limit, extra = 5, 3
	b := startBroker(t, emqxsim.Config{MaxInflight: limit, HeartbeatInterval: -1})
	got := make(chan paho.Message, limit+extra)
	opts := paho.NewClientOptions().AddBroker(b.Addr()).SetClientID("slow").SetCleanSession(false).
		SetAutoReconnect(false).SetAutoAckDisabled(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- m })
	c := paho.NewClient(opts)
	waitToken(t, c.Connect(), "connect")
	t.Cleanup(func() { c.Disconnect(0) })
	waitToken(t, c.Subscribe("slow/#", 1, nil), "subscribe")

	for i := range limit + extra {
		if err := b.Publish("slow/"+strconv.Itoa(i), nil, 1); err != nil {
			t.Fatal(err)
		}
	}
	var held []paho.Message
	for range limit {
		select {
		case m := <-got:
			held = append(held, m)
		case <-time.After(wait):
			t.Fatalf("received %d of %d deliveries", len(held), limit)
		}
	}
	if n := b.Unacked("slow"); n != limit {
		t.Fatalf("Unacked = %d, want %d", n, limit)
	}
	if st := b.Stats(); st.InflightDropped != extra || st.MessagesDropped != 0 || st.Inflight != limit {
		t.Fatalf("Stats = %+v, want %d in flight, %d dropped at the in-flight limit", st, limit, extra)
	}
	for i, m := range held {
		if want := "slow/" + strconv.Itoa(i); m.Topic() != want {
			t.Fatalf("delivery %d is %s, want %s", i, m.Topic(), want)
		}
		m.Ack()
	}
	deadline := time.Now().Add(wait)
	for b.Unacked("slow") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Unacked = %d after every PUBACK, want 0", b.Unacked("slow"))
		}
		time.Sleep(time.Millisecond)
	}
	if err := b.Publish("slow/after", nil, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Topic() != "slow/after" {
			t.Fatalf("got %s, want slow/after (a dropped delivery came late)", m.Topic())
		}
	case <-time.After(wait):
		t.Fatal("no delivery after the session was acknowledged")
	}
	if n := b.Unacked("nobody"); n != 0 {
		t.Fatalf("Unacked of an unknown client = %d, want 0", n)
	}
}
