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
// Sources without connected_at carry a version (PresenceEvent.ConnVersion).
// An AWS IoT versionNumber, monotonic, keys the connection instead of
// connected_at: connections are ordered by version, then node name, whatever
// the brokers' clocks say; a connect with the current version is a
// duplicate; against a connection without a version, broker times order
// them. A Sparkplug bdSeq (Source "sparkplug_b", ConnVersion bdSeq+1) rides
// along the NBIRTH's connected_at, which orders births: an NDEATH is of the
// current session when its bdSeq is the last birth's, of a newer one (a
// gap) when it is newer in 8-bit serial number arithmetic (RFC 1982), else
// stale; after a death whose birth was not seen, births are ordered by
// bdSeq.
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
//
// Around that core (one file each): flap suppression (flap.go: an RFC 2439
// decaying penalty per device, one device_flapping alert, offline alerts
// held until it calms down), node health (node.go: Node inputs, one
// node_silent alert per node, the timers of its devices held while it is
// silent), mass-outage correlation (correlate.go: per topology group
// counters, one group_outage alert, member alerts folded into inhibited
// copies of their groups), silences (silences.go: Silences inputs, matched
// notifications decided with Silenced, silences that expire when what they
// matched recovered) and snapshots (snapshot.go: the whole state in a
// versioned binary format, restored exactly).
//
// Memory: a device is 56 bytes without pointers in one slice (the garbage
// collector never scans it; the connection version and the 48-bit flap time
// fit in what was padding), its id's bytes in an arena, and an 8-byte
// entry in an open-addressing index (index.go); timers are 24 bytes in a
// 4-ary heap.
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
	// Flap is the flap suppression of the default routes (when Routes is
	// nil; a routing tree sets its own); nil turns it off.
	Flap *route.FlapConfig
	// Labeler labels devices; nil gives them only the implicit labels
	// (device_id, node and reason).
	Labeler *labels.Labeler
	// Correlation folds mass outages into group_outage alerts; zero: off.
	Correlation Correlation
	// NodeSeverity is the severity of node_silent alerts (default warning).
	NodeSeverity events.Severity
	// IDScope is mixed into every notification id when not empty, so that
	// trackers that each own a share of the devices (the evaluator's lease
	// partitions) never derive the same id for different notifications.
	// Empty: the ids are events.ContentID of the notification alone.
	IDScope string
}

// Input is what Apply consumes: an Event, a Tick, a Silences or a Node.
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
	// Active is every known silence; the tracker compiles its own copy and
	// checks each one's time range itself, against the time of each
	// decision. Invalid ones are ignored (Stats.SilencesInvalid).
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
	// with Alert.ID as Nats-Msg-Id. Silenced and inhibited alerts are
	// published too (recorded), and not delivered by the notifier.
	Alert events.AlertEvent
	// New, Resolved and Firing count the devices of the notification that
	// are newly firing, recovered since the group's last notification, and
	// firing (new and still firing), uncapped: "12 new offline, 3 recovered,
	// 140 still down" is New=12, Resolved=3, Firing-New=140. The alert
	// carries them as NewTotal, ResolvedTotal and FiringTotal.
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
	// tick noticed them (or while they were held).
	Unalerted uint64
	// Fired and Resolved count outages that were alerted and recovered.
	Fired    uint64
	Resolved uint64
	// Rejected counts alerts that events.NewAlertEvent refused (a bug).
	Rejected uint64
	// Notifications counts the notifications decided (one per receiver).
	Notifications uint64
	// Silenced and Inhibited count the notifications among them decided
	// silenced or inhibited (recorded, not delivered).
	Silenced  uint64
	Inhibited uint64
	// Escalated counts devices that reached an escalation tier.
	Escalated uint64
	// Flapping counts flapping episodes begun; Calmed those that ended.
	Flapping uint64
	Calmed   uint64
	// Held counts timers held because the device's node was silent.
	Held uint64
	// Correlated counts mass outages detected (a topology group crossing
	// its threshold); Folded the device alerts folded into one.
	Correlated uint64
	Folded     uint64
	// NodesSilent counts node_silent episodes; NodeEvents every node event
	// applied.
	NodesSilent uint64
	NodeEvents  uint64
	// SilencesInvalid counts silences of Silences inputs that did not
	// compile.
	SilencesInvalid uint64
	// Ticks is every tick applied.
	Ticks uint64
}

// DeviceState is the exported view of one device.
type DeviceState struct {
	// DeviceID is the MQTT client id.
	DeviceID string
	// Online is false while the device is in an outage.
	Online bool
	// Node and ConnectedAtMS, or ConnVersion, key the device's current (or
	// last) connection. ConnectedAtMS is 0 for a connection keyed by its
	// version alone (AWS IoT versionNumber); ConnVersion is 0 for one
	// without a version, and bdSeq+1 for a Sparkplug connection.
	Node          string
	ConnectedAtMS int64
	ConnVersion   int64
	// SinceMS is the start of the current connection while online, the
	// disconnect time while offline (broker time).
	SinceMS int64
	// Reason is the disconnect reason of the current outage (empty while online).
	Reason events.Reason
	// HandedOver says the current connection ended by a session takeover and
	// its successor has not been seen yet (the device counts as online).
	HandedOver bool
	// Pending says the device is offline and its offline alert has not
	// fired: its grace period is running, or the alert is held (flapping,
	// silent node).
	Pending bool
	// Alerting says a firing alert was decided and not resolved yet.
	Alerting bool
	// Unknown says the device's node is silent: its true state is unknown
	// (the state above is the last one known).
	Unknown bool
	// Flapping says the device is in a flapping episode; FlapCount is its
	// recent disconnect count (kept after the episode until the next one).
	Flapping  bool
	FlapCount int
	// Inhibited says its alert is folded into a group_outage.
	Inhibited bool
}

type connState uint8

const (
	stateOnline     connState = iota // the current connection is open
	stateHandedOver                  // it ended by a takeover; a newer one exists
	stateOffline                     // it ended for real
)

type flag uint8

const (
	flagPending  flag = 1 << iota // offline, not fired (grace running or held)
	flagAlerting                  // offline, firing decided
	flagFlapping                  // in a flapping episode
)

// device is the per-device state: 56 bytes without pointers in the device
// slice, plus its id's bytes in the arena and its index entry.
type device struct {
	id     idRef      // the device id, in the arena
	connAt int64      // connected_at of the current connection (0: unknown)
	since  int64      // online: connAt; offline: disconnect broker time
	node   uint32     // interned node of the current connection
	reason uint32     // interned reason of the current outage (0: none)
	labels labels.Set // interned labels (implicit ones aside)
	// penalty is the flap penalty at the time of its last update, in ms:
	// flapHi<<32 | flapLo (48 bits; see flapTime).
	penalty uint32
	flapLo  uint32
	// keepalive of the current connection in seconds (0: unknown).
	keepalive uint16
	// flapCount counts the disconnects of the current flapping episode (or
	// since the penalty was last below the reuse limit).
	flapCount uint16
	flapHi    uint16
	state     connState
	flags     flag
	// fold is 1 + the index of the topology key whose group_outage the
	// device's alert is folded into (0: none).
	fold uint8
	// vkind says whether the current connection carries a version, and
	// where: in connAt (verKey) or in seq (verSeq).
	vkind verKind
	// seq is the Sparkplug bdSeq (ConnVersion-1) of the current connection
	// when vkind is verSeq.
	seq uint8
}

// Tracker holds the state of every device. Create it with New.
type Tracker struct {
	routes       *route.Tree
	labeler      *labels.Labeler
	table        *labels.Table
	nodeSeverity events.Severity
	idScope      string

	index   deviceIndex // device id → slot in devs
	ids     idArena     // the device ids' bytes
	devs    []device
	timers  timerHeap
	groups  map[string]*group
	gtimers groupHeap
	// flapGroups lists the device_flapping groups of each flapping device.
	flapGroups map[uint32][]string
	// alertTargets keeps the targets of alerting devices when routing
	// reads the device id, and those of some devices that alerted before
	// (a cache: not part of the state).
	alertTargets slotTargets
	// out is the decisions' slice Apply returns, reused.
	out []Decision
	// scratch holds notify's lists between calls; ids2 hashes ids.
	scratch [3][]entry
	ids2    idHasher
	// devSlab is the block deviceList carves notifications' device lists
	// from.
	devSlab []events.AlertDevice
	// free holds emptied groups for reuse.
	free []*group
	// targetCache memoizes targets when they do not depend on the device id.
	targetCache map[targetKey][]target
	nodes       interner
	nodeInfo    []nodeState // by interned node
	reasons     interner
	topo        topology
	silences    []*silenceState
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
	if !validSeverity(cfg.Severity) {
		return nil, fmt.Errorf("%w: severity %q is not info, warning or critical", ErrConfig, cfg.Severity)
	}
	if cfg.NodeSeverity == "" {
		cfg.NodeSeverity = events.SeverityWarning
	}
	if !validSeverity(cfg.NodeSeverity) {
		return nil, fmt.Errorf("%w: node severity %q is not info, warning or critical", ErrConfig, cfg.NodeSeverity)
	}
	if err := cfg.Correlation.Validate("correlation"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	t := &Tracker{
		routes:       cfg.Routes,
		labeler:      cfg.Labeler,
		nodeSeverity: cfg.NodeSeverity,
		idScope:      cfg.IDScope,
		index:        newDeviceIndex(),
		groups:       make(map[string]*group),
		flapGroups:   make(map[uint32][]string),
		targetCache:  make(map[targetKey][]target),
		nodes:        newInterner(),
		reasons:      newInterner(),
	}
	if t.routes == nil {
		tree, err := route.New(route.Config{}, route.Defaults{Receivers: cfg.Receivers, GroupBy: []string{labels.DeviceID},
			Grace: cfg.Grace, Severity: string(cfg.Severity), Flap: cfg.Flap}, "routes")
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		t.routes = tree
	}
	if t.labeler == nil {
		l, err := labels.NewLabeler(labels.Config{}, labels.NewTable(), nil)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		t.labeler = l
	}
	t.table = t.labeler.Table()
	t.topo = newTopology(cfg.Correlation)
	return t, nil
}

func validSeverity(s events.Severity) bool {
	return s == events.SeverityInfo || s == events.SeverityWarning || s == events.SeverityCritical
}

// Apply feeds one input to the tracker and returns what it decided, in a
// deterministic order. A nil Event or Node is ignored.
//
// The returned slice is reused by the next call to Apply: copy the
// decisions (or what they hold) that must outlive it. A busy tick decides
// hundreds of notifications, and a fresh slice for each was a large part of
// the tracker's allocations.
func (t *Tracker) Apply(in Input) []Decision {
	clear(t.out)
	t.out = t.out[:0]
	switch in := in.(type) {
	case Event:
		if in.PresenceEvent == nil {
			return nil
		}
		t.applyEvent(in.PresenceEvent)
		if len(t.gtimers) == 0 {
			return nil
		}
		return t.result(t.flushDue(t.out, createdAt(in.PresenceEvent)))
	case Tick:
		now := in.Now.UnixMilli()
		t.tick(now)
		return t.result(t.flushDue(t.out, now))
	case Silences:
		t.setSilences(in.Active)
		return nil
	case Node:
		if in.NodeEvent == nil {
			return nil
		}
		return t.result(t.applyNode(in.NodeEvent))
	}
	return nil
}

// result keeps the decisions' slice for reuse, and returns nil for none.
func (t *Tracker) result(out []Decision) []Decision {
	t.out = out
	if len(out) == 0 {
		return nil
	}
	return out
}

// DefaultRoutes is the routing tree used when Config.Routes is nil: every
// alert to receivers after grace, one group per device, no waits, no
// repeats, no flap suppression.
func DefaultRoutes(receivers []string, grace time.Duration, severity events.Severity) (*route.Tree, error) {
	return route.New(route.Config{}, route.Defaults{Receivers: receivers, GroupBy: []string{labels.DeviceID},
		Grace: grace, Severity: string(severity)}, "routes")
}

// Len is the number of devices tracked.
func (t *Tracker) Len() int { return len(t.devs) }

// PendingTimers is the number of timers queued, stale ones included.
func (t *Tracker) PendingTimers() int { return len(t.timers) }

// Stats returns the counters.
func (t *Tracker) Stats() Stats { return t.stats }

// Groups is the number of alert groups open.
func (t *Tracker) Groups() int { return len(t.groups) }

// Labels returns a device's labels, implicit ones included (nil when the
// device is unknown).
func (t *Tracker) Labels(id string) map[string]string {
	slot, _, ok := t.index.lookup(t.devs, &t.ids, id)
	if !ok {
		return nil
	}
	return t.allLabels(&t.devs[slot])
}

// Device returns the state of one device.
func (t *Tracker) Device(id string) (DeviceState, bool) {
	slot, _, ok := t.index.lookup(t.devs, &t.ids, id)
	if !ok {
		return DeviceState{}, false
	}
	return t.view(&t.devs[slot]), true
}

// Devices returns the state of every device, sorted by id.
func (t *Tracker) Devices() []DeviceState {
	out := make([]DeviceState, 0, len(t.devs))
	for i := range t.devs {
		out = append(out, t.view(&t.devs[i]))
	}
	slices.SortFunc(out, func(a, b DeviceState) int { return strings.Compare(a.DeviceID, b.DeviceID) })
	return out
}

func (t *Tracker) view(d *device) DeviceState {
	connAt, version := d.connAt, int64(0)
	switch d.vkind {
	case verKey:
		connAt, version = 0, d.connAt
	case verSeq:
		version = int64(d.seq) + 1
	}
	return DeviceState{
		DeviceID:      t.ids.get(d.id),
		Online:        d.state != stateOffline,
		Node:          t.nodes.name(d.node),
		ConnectedAtMS: connAt,
		ConnVersion:   version,
		SinceMS:       d.since,
		Reason:        events.Reason(t.reasons.name(d.reason)),
		HandedOver:    d.state == stateHandedOver,
		Pending:       d.flags&flagPending != 0,
		Alerting:      d.flags&flagAlerting != 0,
		Unknown:       t.silent(d.node),
		Flapping:      d.flags&flagFlapping != 0,
		FlapCount:     int(d.flapCount),
		Inhibited:     d.fold != 0,
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
// A snapshot (MarshalSnapshot) restores everything exactly instead.
func (t *Tracker) MarkAlerted(deviceID string, sent func(id string) bool) bool {
	slot, _, ok := t.index.lookup(t.devs, &t.ids, deviceID)
	if !ok {
		return false
	}
	d := &t.devs[slot]
	if d.state != stateOffline || d.flags&flagPending == 0 {
		return false
	}
	for _, tg := range t.targets(slot, d, kindOffline) {
		fp := t.fingerprint(tg.kind, tg.key)
		for _, rc := range tg.receivers {
			if sent(t.notificationID(rc, fp, events.StatusFiring, d.since, 0, 1)) {
				d.flags = d.flags&^flagPending | flagAlerting
				t.stats.Fired++
				t.join(slot, d, d.since, true)
				return true
			}
		}
	}
	return false
}

// Alerting returns, with CreatedAtMS = now, the first notification of the
// current episode of every group that announced its devices, sorted by group
// key, with the same ids as the first time. Recovery uses it to re-send the
// ones a crash kept from being published.
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
		g.firing = memberSet{}
		for slot, m := range saved.all {
			if m.notified {
				m.notified = false
				g.firing.put(slot, m)
			}
		}
		resolved := g.resolved
		g.resolved = memberSet{}
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

// verKind says whether a connection carries a version (PresenceEvent.
// ConnVersion) besides its start, and which kind.
type verKind uint8

const (
	// verNone: no version; connAt is the connection's start (connected_at,
	// else the broker time of its connect).
	verNone verKind = iota
	// verKey: connAt is the connection's ConnVersion, a monotonic number
	// that keys and orders the connections of a source without
	// connected_at (AWS IoT versionNumber); since holds the broker time of
	// its connect while it is open.
	verKey
	// verSeq: connAt is the connection's start, seq its Sparkplug bdSeq
	// (ConnVersion-1), an 8-bit serial number that pairs a death with its
	// birth.
	verSeq
)

// eventVersion returns the kind of version e carries (verNone for
// ConnVersion 0). A version-keyed event is one without connected_at from a
// source with monotonic versions; a Sparkplug event's bdSeq rides along its
// connected_at (NBIRTH) or alone (NDEATH).
func eventVersion(e *events.PresenceEvent) verKind {
	switch {
	case e.ConnVersion == 0:
		return verNone
	case e.Source == events.SourceSparkplug:
		return verSeq
	case e.ConnectedAtMS == 0:
		return verKey
	}
	return verNone // connected_at keys the connection
}

// bdSeq returns the Sparkplug bdSeq carried by a ConnVersion (bdSeq+1).
func bdSeq(v int64) uint8 { return uint8(v - 1) }

// seqNewer reports whether bdSeq a is newer than b in serial number
// arithmetic (RFC 1982, SERIAL_BITS 8): 0 < a-b < 128 modulo 256. Exactly
// 128 apart is undefined by the RFC and never newer.
func seqNewer(a, b uint8) bool {
	d := a - b
	return d != 0 && d < 128
}

// seqOrder compares the bdSeq s of an event from sameNode or not with the
// current connection's: 0 for the same connection, 1 for a newer one, -1
// for an older one (or one on another node with the same bdSeq).
func seqOrder(s, cur uint8, sameNode bool) int {
	switch {
	case s == cur && sameNode:
		return 0
	case seqNewer(s, cur):
		return 1
	}
	return -1
}

// start returns the start of d's current connection as far as the tracker
// knows it: connAt, or for a version-keyed connection since (its connect's
// broker time while it is open, its end once it ended). Connections without
// a common version are ordered by it.
func start(d *device) int64 {
	if d.vkind == verKey {
		return d.since
	}
	return d.connAt
}

func valid(e *events.PresenceEvent) bool {
	return e.DeviceID != "" && len(e.DeviceID) <= maxIDLen && e.Node != "" && e.BrokerTSMS > 0 && e.ConnectedAtMS >= 0 &&
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

func (t *Tracker) applyEvent(e *events.PresenceEvent) {
	t.stats.Events++
	if !valid(e) {
		t.stats.Invalid++
		return
	}
	slot, h, known := t.index.lookup(t.devs, &t.ids, e.DeviceID)
	if !known {
		t.addDevice(e, h)
		return
	}
	d := &t.devs[slot]
	now := createdAt(e)
	vk := verNone
	if e.ConnVersion != 0 {
		vk = eventVersion(e)
	}
	cur := t.key(d)
	if e.Kind == events.KindConnected {
		k := connKey{connAt: e.ConnectedAtMS, node: e.Node}
		if k.connAt == 0 {
			k.connAt = e.BrokerTSMS
		}
		var rel int
		switch {
		case vk == verKey && d.vkind == verKey:
			// Both carry a version: it orders them, whatever the clocks
			// of the brokers that stamped them say.
			rel = order(connKey{connAt: e.ConnVersion, node: e.Node}, connKey{connAt: d.connAt, node: cur.node})
		case vk == verSeq && d.vkind == verSeq && d.connAt == 0:
			// The current session's birth was not seen (its death was):
			// the bdSeq orders the births.
			rel = seqOrder(bdSeq(e.ConnVersion), d.seq, e.Node == cur.node)
		default:
			rel = order(k, cur)
		}
		switch rel {
		case 0:
			t.stats.Duplicates++
		case 1:
			t.connect(slot, d, e, vk, now)
		default:
			t.stats.Stale++
		}
		return
	}
	// Which connection the disconnect is of: the current one (0), a newer
	// one whose connect was not seen (1, a gap), or an older one (-1).
	rel := -1
	switch {
	case e.ConnectedAtMS != 0 && d.vkind == verKey && vk != verKey:
		// The current connection is keyed by its version, this one by its
		// connected_at: never the same connection (as below, the other way
		// round), newer unless it began before the current one. Once it
		// ended, its connected_at keys the device, so the same disconnect
		// again is a duplicate.
		if e.ConnectedAtMS >= cur.connAt {
			rel = 1
		}
	case e.ConnectedAtMS != 0:
		rel = order(connKey{connAt: e.ConnectedAtMS, node: e.Node}, cur)
	case vk == verNone:
		// No connected_at (old EMQX) nor version: a disconnect from another
		// node, or from before the current connection began, is not about
		// it.
		switch {
		case e.Node != cur.node || e.BrokerTSMS < cur.connAt:
			t.stats.Stale++
		case d.state != stateOnline:
			t.stats.Duplicates++
		default:
			t.end(slot, d, e, now)
		}
		return
	case vk == verKey && d.vkind == verKey:
		rel = order(connKey{connAt: e.ConnVersion, node: e.Node}, connKey{connAt: d.connAt, node: cur.node})
	case vk == verSeq && d.vkind == verSeq:
		// A death counts only if its bdSeq is the current birth's; one
		// newer in serial arithmetic is of a birth not seen.
		rel = seqOrder(bdSeq(e.ConnVersion), d.seq, e.Node == cur.node)
	case e.BrokerTSMS >= cur.connAt:
		// A version, but the current connection has none of its kind: the
		// disconnect is of another connection (a versioned connection never
		// pairs with one without), newer unless it predates the current
		// one's start.
		rel = 1
	}
	switch rel {
	case 0:
		if d.state != stateOnline {
			t.stats.Duplicates++
			return
		}
	case 1:
		// A newer connection whose connect we have not seen: it opened and
		// ended, in that order.
		t.connect(slot, d, e, vk, now)
	default:
		t.stats.Stale++
		return
	}
	t.end(slot, d, e, now)
}

// order compares connection keys: 1 when a is newer than b, 0 when equal,
// -1 when older.
func order(a, b connKey) int {
	switch {
	case a == b:
		return 0
	case a.newer(b):
		return 1
	}
	return -1
}

// opening returns the start, connAt and seq of the connection that e opens
// (a connect, or a disconnect of a connection whose connect was not seen),
// e carrying a version of kind vk. The start of a connection without
// connected_at is the event's broker time; its connAt, that time or its
// version (0 for a Sparkplug death: see connect).
func opening(e *events.PresenceEvent, vk verKind) (at, connAt int64, seq uint8) {
	at = e.ConnectedAtMS
	if at == 0 {
		at = e.BrokerTSMS
	}
	connAt = at
	switch vk {
	case verKey:
		connAt = e.ConnVersion
	case verSeq:
		seq = bdSeq(e.ConnVersion)
		if e.Kind == events.KindDisconnected {
			// A death whose birth was not seen: its start is unknown
			// (0), and births are ordered by bdSeq until the next one.
			connAt = e.ConnectedAtMS
		}
	}
	return at, connAt, seq
}

// addDevice tracks a device first seen in e (its id hashing to h):
// connected, or a connection that ended (its connect never seen).
func (t *Tracker) addDevice(e *events.PresenceEvent, h uint32) {
	id := t.ids.store(e.DeviceID)
	slot := uint32(len(t.devs))
	vk := verNone
	if e.ConnVersion != 0 {
		vk = eventVersion(e)
	}
	at, connAt, seq := opening(e, vk)
	if e.Kind == events.KindDisconnected && vk == verNone {
		// A disconnect without connected_at nor version: the start is unknown.
		at, connAt = e.ConnectedAtMS, e.ConnectedAtMS
	}
	t.devs = append(t.devs, device{id: id, connAt: connAt, since: at, node: t.nodes.intern(e.Node),
		state: stateOnline, labels: t.labeler.Labels(e), vkind: vk, seq: seq})
	t.index.insert(h, slot)
	d := &t.devs[slot]
	t.node(d.node).devices++
	t.topoJoin(d, 1)
	if e.Kind == events.KindConnected {
		d.keepalive = keepalive(e)
		return
	}
	t.end(slot, d, e, createdAt(e))
}

// key returns the connection key of d: connAt, or its start for a
// version-keyed connection (compared with one that is not).
func (t *Tracker) key(d *device) connKey {
	return connKey{connAt: start(d), node: t.nodes.name(d.node)}
}

// connect makes the connection opened by e (a connect, or a disconnect of a
// connection whose connect was not seen), carrying a version of kind vk, the
// current, open connection of d.
func (t *Tracker) connect(slot uint32, d *device, e *events.PresenceEvent, vk verKind, now int64) {
	at, connAt, seq := opening(e, vk)
	if d.state == stateOffline {
		t.recover(slot, d, at, now)
	} else {
		t.stats.Supersedes++
	}
	d.since = at
	d.connAt = connAt
	d.vkind, d.seq = vk, seq
	d.state = stateOnline
	oldNode, oldLabels := d.node, d.labels
	if t.nodes.name(d.node) != e.Node {
		d.node = t.nodes.intern(e.Node)
	}
	if e.Kind == events.KindConnected {
		d.labels = t.labeler.Relabel(d.labels, e)
		d.keepalive = keepalive(e)
	}
	if d.node != oldNode || d.labels != oldLabels {
		t.node(oldNode).devices--
		t.node(d.node).devices++
		if t.topo.on {
			nd := *d
			d.node, d.labels = oldNode, oldLabels
			t.topoJoin(d, -1)
			d.node, d.labels = nd.node, nd.labels
			t.topoJoin(d, 1)
		}
	}
}

// recover ends the outage of d: the device is back at connAt.
func (t *Tracker) recover(slot uint32, d *device, connAt, now int64) {
	until := max(connAt, d.since)
	switch {
	case d.flags&flagAlerting != 0:
		t.stats.Resolved++
		t.leave(slot, d, until, now)
	case connAt-d.since < t.grace(slot, d):
		t.stats.Blips++
	default:
		t.stats.Unalerted++
	}
	if t.topo.on {
		t.topoUp(slot, d, until, now)
	}
	if len(t.silences) > 0 {
		t.silenceRecovered(slot)
	}
	d.flags &^= flagPending | flagAlerting
	d.reason = 0
}

// end closes the current connection of d with disconnect e.
func (t *Tracker) end(slot uint32, d *device, e *events.PresenceEvent, now int64) {
	if e.Reason.IsSessionHandover() {
		t.stats.Handovers++
		d.state = stateHandedOver
		return
	}
	t.stats.Outages++
	d.state = stateOffline
	d.since = e.BrokerTSMS
	if t.reasons.name(d.reason) != string(e.Reason) {
		d.reason = t.reasons.intern(string(e.Reason))
	}
	d.flags = d.flags&flagFlapping | flagPending
	t.timers.push(timer{due: satAdd(d.since, t.grace(slot, d)), since: d.since, slot: slot, kind: timerGrace})
	if t.topo.on {
		t.topoDown(slot, d)
	}
	t.flap(slot, d, now)
}

func (t *Tracker) tick(now int64) {
	t.stats.Ticks++
	for len(t.timers) > 0 && t.timers[0].due <= now {
		t.runTimer(t.timers.pop(), now)
	}
}

// runTimer acts on a due timer, unless it is stale.
func (t *Tracker) runTimer(tm timer, now int64) {
	d := &t.devs[tm.slot]
	switch tm.kind {
	case timerGrace:
		if d.state != stateOffline || d.flags&flagPending == 0 || d.since != tm.since {
			return // the outage ended or was already alerted
		}
		if d.flags&flagFlapping != 0 {
			return // held: calm reports it
		}
		if t.silent(d.node) {
			t.hold(d.node, tm)
			return
		}
		t.fire(tm.slot, d, now)
	case timerEscalate:
		if d.state != stateOffline || d.flags&flagAlerting == 0 || d.since != tm.since {
			return
		}
		if t.silent(d.node) {
			t.hold(d.node, tm)
			return
		}
		t.escalate(tm.slot, d, now)
	case timerCalm:
		t.calmTimer(tm.slot, d, now)
	}
}

// fire alerts the outage of d: it joins its groups, or, inside a mass
// outage, the group_outage and the inhibited copies of its groups.
func (t *Tracker) fire(slot uint32, d *device, now int64) {
	d.flags = d.flags&^flagPending | flagAlerting
	t.stats.Fired++
	if t.topo.on {
		d.fold = t.foldKey(d)
		if d.fold != 0 {
			t.stats.Folded++
		}
	}
	t.join(slot, d, now, false)
	if t.routes.Escalates {
		t.escalate(slot, d, now)
	}
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
