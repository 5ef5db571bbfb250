// Package tracker is the evaluator's pure presence state machine: it keeps the
// connection state of every device, decides when an outage has outlasted its
// grace period, and groups the alerting devices into Alertmanager-style
// notifications (see group.go): per route of a route.Tree and per value of
// its group_by labels, with group_wait, group_interval, repeat_interval and
// escalation tiers.
//
// It does no I/O, reads no clock and starts no goroutine: time comes in as
// Tick inputs and as the broker timestamps inside presence events. The same
// sequence of inputs always yields the same decisions, byte for byte. A
// Tracker is not safe for concurrent use; its owner serialises Apply calls.
//
// Ordering follows contracts/emqx.md: a connection is keyed by (node,
// connected_at); connections are ordered by connected_at, then node name; a
// disconnect of any connection other than the current one is stale; a connect
// while online supersedes; a takenover/discarded disconnect never means
// offline; duplicates are no-ops. A disconnect without connected_at (old
// EMQX) is stale when it comes from another node than the current
// connection's or predates its start. A disconnect of a newer connection whose
// connect was never seen (a gap) counts as that connection opening and
// ending. Delivered in any order that keeps each node's order, and with any
// duplication, the events of one history converge to the same state (see the
// property tests).
//
// A real disconnect starts an outage and queues a timer (a binary min-heap,
// lazily skipping timers of outages that already ended) due at the
// disconnect's broker time + the device's grace (the shortest of its
// routes', possibly derived from its keepalive). A tick at or after that
// time fires the device: it joins the groups of its routes, which notify
// their receivers when due (at once with the default routes); a reconnect
// makes it leave them, and a group whose last device recovered sends a
// resolved notification with the outage as StartsAtMS..EndsAtMS. A
// reconnect within the grace period is a counted blip. CreatedAtMS is the
// tick's Now for notifications flushed by a tick, and the reconnect's
// ReceivedAtMS (else its broker time) for those flushed at once by an
// event, so that a replay derives byte-identical notifications.
package tracker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
)

// Config sets the alerting rules of a Tracker.
type Config struct {
	// Grace is how long a device must stay offline before it is alerted.
	Grace time.Duration
	// Receivers get one AlertEvent each per decision, in this order, when
	// Routes is nil.
	Receivers []string
	// Severity of the device_offline alerts.
	Severity events.Severity
	// Routes is the routing tree; nil routes every alert to Receivers in
	// per-device groups (group_by [device_id]) without waits or repeats: one
	// firing and one resolved notification per outage and receiver.
	Routes *route.Tree
	// Labeler labels devices; nil gives them only the implicit labels
	// (device_id, node, reason).
	Labeler *labels.Labeler
}

// Input is what Apply consumes: an Event or a Tick.
type Input interface{ isInput() }

// Event applies one presence event. It holds a pointer, so passing it as an
// Input does not allocate.
type Event struct {
	*events.PresenceEvent
}

// Tick advances the tracker's clock: every outage whose grace has passed by
// Now fires.
type Tick struct {
	// Now is the evaluator's clock.
	Now time.Time
}

// Silences replaces the set of silences in force (from the KV bucket or
// config). Alerts whose device labels match an active silence are decided
// and recorded with Silenced set, but not delivered.
type Silences struct {
	// Now is the evaluator's clock when the set was read.
	Now time.Time
	// Active is every known silence, compiled; the tracker checks each
	// one's time range itself.
	Active []silence.Silence
}

// Node applies a broker node health change from the NODES stream: while a
// node is silent, the devices last connected to it are unknown, reported
// once per node rather than device by device.
type Node struct {
	*events.NodeEvent
}

func (Event) isInput()    {}
func (Tick) isInput()     {}
func (Silences) isInput() {}
func (Node) isInput()     {}

// Decision is something the tracker decided and its owner must publish.
type Decision struct {
	// Alert is the notification to publish on events.AlertSubject(Alert.Receiver)
	// with Alert.ID as Nats-Msg-Id.
	Alert events.AlertEvent
	// New, Resolved and Firing count the devices of the notification that
	// are newly firing, recovered since the group's last notification, and
	// firing (new and still firing), uncapped: "12 new offline, 3 recovered,
	// 140 still down" is New=12, Resolved=3, Firing-New=140.
	New, Resolved, Firing int
}

// Stats counts what the tracker did since it was created.
type Stats struct {
	// Events is every presence event applied, whatever its outcome.
	Events uint64
	// Invalid events lacked a device id, node, kind or broker time.
	Invalid uint64
	// Stale events belonged to an older connection than the current one.
	Stale uint64
	// Duplicates repeated what the tracker already knew.
	Duplicates uint64
	// Supersedes are connects that replaced an open connection.
	Supersedes uint64
	// Handovers are takenover/discarded disconnects of the current connection.
	Handovers uint64
	// Outages are real disconnects of the current connection.
	Outages uint64
	// Blips are outages that ended within the grace period.
	Blips uint64
	// Unalerted are outages longer than the grace period that ended before a
	// tick noticed them.
	Unalerted uint64
	// Fired and Resolved count outages that were alerted and recovered.
	Fired    uint64
	Resolved uint64
	// Rejected counts alerts that events.NewAlertEvent refused (a bug).
	Rejected uint64
	// Notifications counts the group notifications decided (one per
	// receiver).
	Notifications uint64
	// Escalated counts devices that reached an escalation tier.
	Escalated uint64
	// Ticks is every tick applied.
	Ticks uint64
}

// DeviceState is the exported view of one device.
type DeviceState struct {
	// DeviceID is the MQTT client id.
	DeviceID string
	// Online is false while the device is in an outage.
	Online bool
	// Node and ConnectedAtMS key the device's current (or last) connection.
	Node          string
	ConnectedAtMS int64
	// SinceMS is the start of the current connection while online, the
	// disconnect time while offline (broker time).
	SinceMS int64
	// Reason is the disconnect reason of the current outage (empty while online).
	Reason events.Reason
	// HandedOver says the current connection ended by a session takeover and
	// its successor has not been seen yet (the device counts as online).
	HandedOver bool
	// Pending says the device is offline and its grace period is running.
	Pending bool
	// Alerting says a firing alert was decided and not resolved yet.
	Alerting bool
}

type connState uint8

const (
	stateOnline     connState = iota // the current connection is open
	stateHandedOver                  // it ended by a takeover; a newer one exists
	stateOffline                     // it ended for real
)

type flag uint8

const (
	flagPending  flag = 1 << iota // offline, grace running
	flagAlerting                  // offline, firing decided
)

// device is the per-device state: 32 bytes, plus the map's key.
type device struct {
	connAt int64      // connected_at of the current connection (0: unknown)
	since  int64      // online: connAt; offline: disconnect broker time
	node   uint32     // interned node of the current connection
	reason uint32     // interned reason of the current outage (0: none)
	labels labels.Set // interned labels (implicit ones aside)
	// keepalive of the current connection in seconds (0: unknown).
	keepalive uint16
	state     connState
	flags     flag
}

// Tracker holds the state of every device. Create it with New.
type Tracker struct {
	routes  *route.Tree
	labeler *labels.Labeler
	table   *labels.Table

	devices map[string]device
	timers  timerHeap
	groups  map[string]*group
	gtimers groupHeap
	// targetCache memoizes targets when they do not depend on the device id.
	targetCache map[targetKey][]target
	nodes       interner
	reasons     interner
	stats       Stats
}

// ErrConfig is wrapped by every configuration error of New.
var ErrConfig = errors.New("invalid tracker config")

// New returns an empty tracker.
func New(cfg Config) (*Tracker, error) {
	if cfg.Grace <= 0 {
		return nil, fmt.Errorf("%w: grace %s is not positive", ErrConfig, cfg.Grace)
	}
	if cfg.Routes == nil {
		if len(cfg.Receivers) == 0 {
			return nil, fmt.Errorf("%w: no receivers", ErrConfig)
		}
		for i, r := range cfg.Receivers {
			if r == "" {
				return nil, fmt.Errorf("%w: receivers[%d] is empty", ErrConfig, i)
			}
		}
	}
	switch cfg.Severity {
	case events.SeverityInfo, events.SeverityWarning, events.SeverityCritical:
	default:
		return nil, fmt.Errorf("%w: severity %q is not info, warning or critical", ErrConfig, cfg.Severity)
	}
	t := &Tracker{
		routes:      cfg.Routes,
		labeler:     cfg.Labeler,
		devices:     make(map[string]device),
		groups:      make(map[string]*group),
		targetCache: make(map[targetKey][]target),
		nodes:       newInterner(),
		reasons:     newInterner(),
	}
	if t.routes == nil {
		tree, err := DefaultRoutes(cfg.Receivers, cfg.Grace, cfg.Severity)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		t.routes = tree
	}
	if t.labeler == nil {
		l, err := labels.NewLabeler(labels.Config{}, labels.NewTable(), nil)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		t.labeler = l
	}
	t.table = t.labeler.Table()
	return t, nil
}

// Apply feeds one input to the tracker and returns what it decided, in a
// deterministic order. A nil Event is ignored.
func (t *Tracker) Apply(in Input) []Decision {
	switch in := in.(type) {
	case Event:
		if in.PresenceEvent == nil {
			return nil
		}
		out := t.applyEvent(in.PresenceEvent)
		if len(t.gtimers) > 0 {
			out = t.flushDue(out, createdAt(in.PresenceEvent))
		}
		return out
	case Tick:
		now := in.Now.UnixMilli()
		return t.flushDue(t.tick(now), now)
	}
	return nil
}

// DefaultRoutes is the routing tree used when Config.Routes is nil: every
// alert to receivers after grace, one group per device, no waits, no
// repeats.
func DefaultRoutes(receivers []string, grace time.Duration, severity events.Severity) (*route.Tree, error) {
	return route.New(route.Config{}, route.Defaults{Receivers: receivers, GroupBy: []string{labels.DeviceID},
		Grace: grace, Severity: string(severity)}, "routes")
}

// Len is the number of devices tracked.
func (t *Tracker) Len() int { return len(t.devices) }

// PendingTimers is the number of timers queued, stale ones included.
func (t *Tracker) PendingTimers() int { return len(t.timers) }

// Stats returns the counters.
func (t *Tracker) Stats() Stats { return t.stats }

// Groups is the number of alert groups open.
func (t *Tracker) Groups() int { return len(t.groups) }

// Labels returns a device's labels, implicit ones included (nil when the
// device is unknown).
func (t *Tracker) Labels(id string) map[string]string {
	d, ok := t.devices[id]
	if !ok {
		return nil
	}
	return t.allLabels(id, &d)
}

// Device returns the state of one device.
func (t *Tracker) Device(id string) (DeviceState, bool) {
	d, ok := t.devices[id]
	if !ok {
		return DeviceState{}, false
	}
	return t.view(id, d), true
}

// Devices returns the state of every device, sorted by id.
func (t *Tracker) Devices() []DeviceState {
	out := make([]DeviceState, 0, len(t.devices))
	for id, d := range t.devices {
		out = append(out, t.view(id, d))
	}
	slices.SortFunc(out, func(a, b DeviceState) int { return strings.Compare(a.DeviceID, b.DeviceID) })
	return out
}

func (t *Tracker) view(id string, d device) DeviceState {
	return DeviceState{
		DeviceID:      id,
		Online:        d.state != stateOffline,
		Node:          t.nodes.name(d.node),
		ConnectedAtMS: d.connAt,
		SinceMS:       d.since,
		Reason:        events.Reason(t.reasons.name(d.reason)),
		HandedOver:    d.state == stateHandedOver,
		Pending:       d.flags&flagPending != 0,
		Alerting:      d.flags&flagAlerting != 0,
	}
}

// MarkAlerted records that the current outage of a device was already
// alerted (before a restart) when sent reports the firing alert id of any
// receiver for it. It returns whether it marked the outage. Recovery calls it
// after each replayed event, so that replay neither re-fires an outage nor
// forgets to resolve it.
//
// It recognises the first firing notification of a group episode that the
// outage opened: exact for per-device groups (the default); in a group of
// several devices, a device that joined an open episode is not recognised,
// fires again after the restart and is announced once more (at least once).
func (t *Tracker) MarkAlerted(deviceID string, sent func(id string) bool) bool {
	d, ok := t.devices[deviceID]
	if !ok || d.state != stateOffline || d.flags&flagPending == 0 {
		return false
	}
	for _, tg := range t.targets(deviceID, &d) {
		fp := groupFingerprint(tg.key)
		for _, rc := range tg.route.Receivers {
			if sent(notificationID(rc, fp, events.StatusFiring, d.since, 0, 1)) {
				d.flags = flagAlerting
				t.devices[deviceID] = d
				t.stats.Fired++
				t.join(deviceID, &d, d.since, true)
				return true
			}
		}
	}
	return false
}

// Alerting returns the firing alerts of every device currently alerting,
// sorted by device id, with CreatedAtMS = now. Recovery uses it to re-send
// the ones a crash kept from being published.
//
// For each group that announced its devices, it returns the group's first
// notification of the episode again (same id), listing its announced
// devices.
func (t *Tracker) Alerting(now time.Time) []Decision {
	keys := make([]string, 0, len(t.groups))
	for k, g := range t.groups {
		if g.notified && g.seq == 1 {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var out []Decision
	for _, k := range keys {
		g := t.groups[k]
		// Re-announce: pretend the announced devices are new to this
		// (first) notification.
		saved := g.firing
		g.firing = make(map[string]member, len(saved))
		for id, m := range saved {
			if m.notified {
				m.notified = false
				g.firing[id] = m
			}
		}
		resolved := g.resolved
		g.resolved = map[string]member{}
		g.notified, g.seq = false, 0
		last := g.last
		out = t.notify(out, g, events.StatusFiring, now.UnixMilli())
		g.firing, g.resolved, g.last = saved, resolved, last
	}
	return out
}

// connKey identifies a connection of one device.
type connKey struct {
	connAt int64
	node   string
}

// newer orders connections: by connected_at, then by node name (a total,
// arrival-independent order).
func (a connKey) newer(b connKey) bool {
	if a.connAt != b.connAt {
		return a.connAt > b.connAt
	}
	return a.node > b.node
}

func valid(e *events.PresenceEvent) bool {
	return e.DeviceID != "" && e.Node != "" && e.BrokerTSMS > 0 && e.ConnectedAtMS >= 0 &&
		(e.Kind == events.KindConnected || e.Kind == events.KindDisconnected)
}

// createdAt is the time stamped on decisions caused by an event: when ingest
// received it, or its broker time. Both come from the input, so a replay
// derives the same decision.
func createdAt(e *events.PresenceEvent) int64 {
	if e.ReceivedAtMS > 0 {
		return e.ReceivedAtMS
	}
	return e.BrokerTSMS
}

func (t *Tracker) applyEvent(e *events.PresenceEvent) []Decision {
	t.stats.Events++
	if !valid(e) {
		t.stats.Invalid++
		return nil
	}
	d, known := t.devices[e.DeviceID]
	id := e.DeviceID
	if !known {
		id = strings.Clone(e.DeviceID)
	}
	var out []Decision
	if e.Kind == events.KindConnected {
		k := connKey{connAt: e.ConnectedAtMS, node: e.Node}
		if k.connAt == 0 {
			k.connAt = e.BrokerTSMS
		}
		switch {
		case !known:
			d = device{connAt: k.connAt, since: k.connAt, node: t.nodes.intern(k.node), state: stateOnline, labels: t.labeler.Labels(e),
				keepalive: keepalive(e)}
		case k == t.key(d):
			t.stats.Duplicates++
			return nil
		case !k.newer(t.key(d)):
			t.stats.Stale++
			return nil
		default:
			out = t.connect(out, id, &d, k, createdAt(e))
			d.labels = t.labeler.Relabel(d.labels, e)
			d.keepalive = keepalive(e)
		}
		t.devices[id] = d
		return out
	}

	if !known {
		// The first news of this device ends a connection we never saw open.
		d = device{connAt: e.ConnectedAtMS, since: e.ConnectedAtMS, node: t.nodes.intern(e.Node), state: stateOnline, labels: t.labeler.Labels(e)}
		t.end(id, &d, e)
		t.devices[id] = d
		return nil
	}
	cur := t.key(d)
	if e.ConnectedAtMS == 0 {
		// No connected_at (old EMQX): a disconnect from another node, or from
		// before the current connection began, is not about it.
		switch {
		case e.Node != cur.node || e.BrokerTSMS < cur.connAt:
			t.stats.Stale++
			return nil
		case d.state != stateOnline:
			t.stats.Duplicates++
			return nil
		}
		t.end(id, &d, e)
		t.devices[id] = d
		return nil
	}
	k := connKey{connAt: e.ConnectedAtMS, node: e.Node}
	switch {
	case k == cur:
		if d.state != stateOnline {
			t.stats.Duplicates++
			return nil
		}
	case k.newer(cur):
		// A newer connection whose connect we have not seen: it opened and
		// ended, in that order.
		out = t.connect(out, id, &d, k, createdAt(e))
	default:
		t.stats.Stale++
		return nil
	}
	t.end(id, &d, e)
	t.devices[id] = d
	return out
}

func (t *Tracker) key(d device) connKey {
	return connKey{connAt: d.connAt, node: t.nodes.name(d.node)}
}

// connect makes k the current, open connection of d.
func (t *Tracker) connect(out []Decision, id string, d *device, k connKey, created int64) []Decision {
	if d.state == stateOffline {
		switch {
		case d.flags&flagAlerting != 0:
			t.stats.Resolved++
			t.leave(id, d, max(k.connAt, d.since), created)
		case k.connAt-d.since < t.grace(id, d):
			t.stats.Blips++
		default:
			t.stats.Unalerted++
		}
		d.flags = 0
		d.reason = 0
		d.since = k.connAt
	} else {
		t.stats.Supersedes++
		d.since = k.connAt
	}
	d.connAt = k.connAt
	d.node = t.nodes.intern(k.node)
	d.state = stateOnline
	return out
}

// end closes the current connection of d with disconnect e.
func (t *Tracker) end(id string, d *device, e *events.PresenceEvent) {
	if e.Reason.IsSessionHandover() {
		t.stats.Handovers++
		d.state = stateHandedOver
		return
	}
	t.stats.Outages++
	d.state = stateOffline
	d.since = e.BrokerTSMS
	d.reason = t.reasons.intern(string(e.Reason))
	d.flags = flagPending
	t.timers.push(timer{due: satAdd(d.since, t.grace(id, d)), since: d.since, device: id})
}

func (t *Tracker) tick(now int64) []Decision {
	t.stats.Ticks++
	var out []Decision
	for len(t.timers) > 0 && t.timers[0].due <= now {
		tm := t.timers.pop()
		d, ok := t.devices[tm.device]
		if tm.since < 0 {
			// An escalation check of an alerting outage.
			if ok && d.state == stateOffline && d.flags&flagAlerting != 0 && d.since == -tm.since {
				t.escalate(tm.device, &d, now)
			}
			continue
		}
		if !ok || d.state != stateOffline || d.flags&flagPending == 0 || d.since != tm.since {
			continue // the outage ended or was already alerted
		}
		d.flags = flagAlerting
		t.devices[tm.device] = d
		t.stats.Fired++
		t.join(tm.device, &d, now, false)
		if t.routes.Escalates {
			t.escalate(tm.device, &d, now)
		}
	}
	return out
}

// keepalive returns the event's keepalive, clamped to 16 bits.
func keepalive(e *events.PresenceEvent) uint16 {
	return uint16(min(max(e.KeepaliveS, 0), 1<<16-1))
}

func satAdd(a, b int64) int64 {
	if s := a + b; s >= a {
		return s
	}
	return 1<<63 - 1
}
