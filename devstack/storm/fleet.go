package storm

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/fleetwatch/fleetwatch/devstack"
	"github.com/fleetwatch/fleetwatch/devstack/simulator"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
)

// fleet is the simulated devices and what the harness published for them.
type fleet struct {
	cfg Config
	st  *devstack.Stack
	js  jetstream.JetStream

	ids    []string
	site   []int
	connAt []int64 // current connection's connected_at
	last   []int64 // last broker timestamp used, so each device's are increasing
	node   []string

	// downAt is when a device dropped (event time; 0 while online), and
	// late the devices that stayed away at least the grace at least once:
	// an alert for them is right, not false.
	downAt []int64
	late   map[string]bool

	// paho are the real MQTT devices (reconnect storm only), and when
	// each was killed.
	paho   []*simulator.Device
	killed []time.Time

	node1, node2 string
	// heartbeats says whether node 2's heartbeat runs (node-silent), and
	// silentAt/backAt are ingest's times of node 2's silence and return.
	heartbeats       atomic.Bool
	silentAt, backAt int64
	// total is every message published; published those of the current
	// phase; base the PRESENCE count before it; stored the last count seen.
	total, published, base int
	stored                 uint64
	lastEvent              time.Time
	// alerts is the ALERTS stream and delivered the (alert id, receiver)
	// pairs delivered, once counted.
	alerts    []events.AlertEvent
	delivered map[string]bool
}

func newFleet(cfg Config, st *devstack.Stack, js jetstream.JetStream) *fleet {
	f := &fleet{cfg: cfg, st: st, js: js, node1: st.Broker().Node(), node2: "emqx@127.0.0.2",
		ids: make([]string, cfg.Devices), site: make([]int, cfg.Devices), connAt: make([]int64, cfg.Devices),
		last: make([]int64, cfg.Devices), node: make([]string, cfg.Devices), downAt: make([]int64, cfg.Devices), late: map[string]bool{}}
	for i := range f.ids {
		f.site[i] = i % cfg.Sites
		gw := (i / cfg.Sites) % cfg.GatewaysPerSite
		f.ids[i] = fmt.Sprintf("s%02d-gw%02d-d%06d", f.site[i], gw, i)
	}
	return f
}

// nth is device i's number within its site: scenarios pick "one device in
// k" by it, so that the picks spread over every site (device i's site is i
// modulo the sites).
func (f *fleet) nth(i int) int { return i / f.cfg.Sites }

// onNode2 says whether device i lives on node 2 in the node-silent
// scenario: one device in 10 of every site.
func (f *fleet) onNode2(i int) bool { return f.nth(i)%10 == 5 }

// siteOf is the site label of device i.
func (f *fleet) siteOf(i int) string { return fmt.Sprintf("s%02d", f.site[i]) }

// heartbeat publishes node's $SYS/brokers/<node>/uptime (its uptime in
// ms, as EMQX) every interval while f.heartbeats is set, until ctx ends:
// the broker's own node has emqxsim's heartbeat, the harness's second node
// this one.
func (f *fleet) heartbeat(ctx context.Context, node string, interval time.Duration) {
	f.heartbeats.Store(true)
	start := time.Now()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if f.heartbeats.Load() {
			uptime := strconv.FormatInt(time.Since(start).Milliseconds(), 10)
			_ = f.st.Broker().Publish("$SYS/brokers/"+node+"/uptime", []byte(uptime), 1)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ts is device i's next broker timestamp: the wall clock, strictly after
// its previous one (event ids include it).
func (f *fleet) ts(i int) int64 {
	now := time.Now()
	ms := max(now.UnixMilli(), f.last[i]+1)
	f.last[i] = ms
	f.lastEvent = time.UnixMilli(ms)
	return ms
}

// sysPayload is EMQX v5's $SYS connected/disconnected message (the fields
// emqxsim's presence hook publishes).
type sysPayload struct {
	ClientID       string `json:"clientid"`
	Username       string `json:"username"`
	IPAddress      string `json:"ipaddress"`
	SockPort       int    `json:"sockport"`
	Protocol       string `json:"protocol"`
	ProtoName      string `json:"proto_name"`
	ProtoVer       int    `json:"proto_ver"`
	ConnectedAt    int64  `json:"connected_at"`
	TS             int64  `json:"ts"`
	Keepalive      int    `json:"keepalive,omitempty"`
	CleanStart     *bool  `json:"clean_start,omitempty"`
	ExpiryInterval *int64 `json:"expiry_interval,omitempty"`
	Reason         string `json:"reason,omitempty"`
	DisconnectedAt int64  `json:"disconnected_at,omitempty"`
}

func (f *fleet) payload(i int) sysPayload {
	return sysPayload{ClientID: f.ids[i], Username: "storm", IPAddress: fmt.Sprintf("10.%d.%d.%d", f.site[i], (i/250)%250, i%250+1),
		SockPort: 1883, Protocol: "mqtt", ProtoName: "MQTT", ProtoVer: 5}
}

// connect publishes device i's connected on node.
func (f *fleet) connect(ctx context.Context, i int, node string) error {
	p := f.payload(i)
	clean, expiry := true, int64(0)
	p.ConnectedAt = f.ts(i)
	p.TS, p.Keepalive, p.CleanStart, p.ExpiryInterval = p.ConnectedAt, 60, &clean, &expiry
	f.connAt[i], f.node[i] = p.ConnectedAt, node
	if f.downAt[i] > 0 && p.ConnectedAt-f.downAt[i] >= f.cfg.Grace.Milliseconds() {
		f.late[f.ids[i]] = true
	}
	f.downAt[i] = 0
	return f.publish(ctx, node, f.ids[i], "connected", p)
}

// disconnect publishes the end of device i's connection (node, connAt).
func (f *fleet) disconnect(ctx context.Context, i int, node string, connAt int64, reason string) error {
	p := f.payload(i)
	p.ConnectedAt, p.Reason = connAt, reason
	p.DisconnectedAt = f.ts(i)
	p.TS = p.DisconnectedAt
	if reason != string(events.ReasonTakenOver) && reason != string(events.ReasonDiscarded) {
		f.downAt[i] = p.DisconnectedAt
	}
	return f.publish(ctx, node, f.ids[i], "disconnected", p)
}

// publish sends one $SYS message through the broker, keeping fewer than
// cfg.Window messages unacknowledged by ingest at the broker: that is what
// a broker's per-session inflight limit bounds (mochi 8192, EMQX's
// max_inflight and max_mqueue_len), and past it a broker drops messages.
func (f *fleet) publish(ctx context.Context, node, id, event string, p sysPayload) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if f.total%windowStep == 0 {
		if err := f.waitWindow(ctx); err != nil {
			return err
		}
	}
	if err := f.st.Broker().Publish("$SYS/brokers/"+node+"/clients/"+id+"/"+event, b, 1); err != nil {
		return err
	}
	f.total++
	f.published++
	return nil
}

// windowStep is how many messages publish sends between two looks at the
// broker's count.
const windowStep = 64

// waitWindow waits until the broker holds few enough messages
// unacknowledged by ingest for the next windowStep.
func (f *fleet) waitWindow(ctx context.Context) error {
	limit := max(f.cfg.Window-windowStep, 0)
	unacked := f.st.Broker().Unacked(devstack.IngestClientID)
	progressAt, progress := time.Now(), unacked
	for unacked > limit {
		if unacked != progress {
			progressAt, progress = time.Now(), unacked
		} else if time.Since(progressAt) > 30*time.Second {
			return fmt.Errorf("ingest stuck: the broker held %d messages unacknowledged by ingest for 30s, after %d published (look at DEADLETTER and the ingest's log)", unacked, f.total)
		}
		if err := sleep(ctx, 200*time.Microsecond); err != nil {
			return err
		}
		unacked = f.st.Broker().Unacked(devstack.IngestClientID)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitFor polls cond every 10 ms until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not done within %s", what, timeout)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitStored waits until PRESENCE holds n messages.
func (f *fleet) waitStored(ctx context.Context, n int, timeout time.Duration) error {
	return waitFor(ctx, timeout, fmt.Sprintf("PRESENCE holding %d events", n), func() (bool, error) {
		var err error
		f.stored, err = streamCount(ctx, f.js, events.StreamPresence)
		return f.stored >= uint64(n), err
	})
}

// allAcked returns a condition: every stage has acked all of its streams.
func (f *fleet) allAcked(ctx context.Context) func() (bool, error) {
	type pair struct{ stream, durable string }
	pairs := []pair{{events.StreamPresence, events.ConsumerEvaluator}, {events.StreamAlerts, events.ConsumerNotifier}}
	if f.st.Archiving() {
		pairs = append(pairs, pair{events.StreamPresence, events.ConsumerArchiverPresence},
			pair{events.StreamAlerts, events.ConsumerArchiverAlerts}, pair{events.StreamDeliveries, events.ConsumerArchiverDeliveries})
	}
	return func() (bool, error) {
		for _, p := range pairs {
			ok, err := acked(ctx, f.js, p.stream, p.durable)
			if err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	}
}

// waitAcked waits until every stage has acked all of its streams.
func (f *fleet) waitAcked(ctx context.Context, timeout time.Duration) error {
	return waitFor(ctx, timeout, "every stage acking its streams", f.allAcked(ctx))
}

// settle waits until the wall clock passes until, every event is stored,
// and every stage has acked its streams twice in a row a few ticks apart
// (a tick may fire alerts without any input).
func (f *fleet) settle(ctx context.Context, timeout time.Duration, until time.Time) error {
	if err := f.waitStored(ctx, f.total, timeout); err != nil {
		return err
	}
	if err := sleep(ctx, time.Until(until)); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		if err := waitFor(ctx, time.Until(deadline), "every stage acking its streams", f.allAcked(ctx)); err != nil {
			return err
		}
		var before [2]uint64
		for k, s := range []string{events.StreamAlerts, events.StreamDeliveries} {
			n, err := streamCount(ctx, f.js, s)
			if err != nil {
				return err
			}
			before[k] = n
		}
		if err := sleep(ctx, 3*f.cfg.Tick); err != nil {
			return err
		}
		ok, err := f.allAcked(ctx)()
		if err != nil {
			return err
		}
		same := true
		for k, s := range []string{events.StreamAlerts, events.StreamDeliveries} {
			n, err := streamCount(ctx, f.js, s)
			if err != nil {
				return err
			}
			same = same && n == before[k]
		}
		if ok && same {
			return nil
		}
	}
}
