package tracker

import (
	"slices"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
)

// Node health. While a broker node is silent (ingest stopped hearing its
// heartbeat), the devices whose current or last connection is on it are
// unknown: their presence events may be lost. The tracker then
//
//   - sends one node_silent alert per node and route (group key by node,
//     DevicesTotal = KnownTotal = the devices on the node) instead of one
//     alert per device;
//   - holds the grace and escalation timers of those devices that fall due
//     (no device_offline alert while the node is silent);
//   - still applies every presence event: a disconnect received meanwhile
//     opens an outage as usual, and a device that reconnects to another
//     node is known again.
//
// When the node is back, the node_silent alert resolves and the held timers
// run at once: devices still offline past their grace fire. Devices whose
// state no event refreshed stay as they were, online: the node is back and
// did not report them gone, and a reconnect or disconnect will follow if
// they changed (reconciliation against the broker's API is the service's
// job, not the core's).
type nodeState struct {
	devices int32   // devices whose current (or last) connection is on the node
	silent  bool    // the node is silent
	since   int64   // silent: when it was last heard from
	held    []timer // timers held while silent, in the order they fell due
}

// node returns the state of an interned node, growing the table.
func (t *Tracker) node(n uint32) *nodeState {
	for int(n) >= len(t.nodeInfo) {
		t.nodeInfo = append(t.nodeInfo, nodeState{})
	}
	return &t.nodeInfo[n]
}

// silent reports whether a node is silent.
func (t *Tracker) silent(n uint32) bool {
	return int(n) < len(t.nodeInfo) && t.nodeInfo[n].silent
}

// hold keeps a due timer of a device on a silent node until it is back.
func (t *Tracker) hold(n uint32, tm timer) {
	ns := t.node(n)
	ns.held = append(ns.held, tm)
	t.stats.Held++
}

// SilentNodes returns the nodes that are silent, sorted.
func (t *Tracker) SilentNodes() []string {
	var out []string
	for n := 1; n < len(t.nodeInfo); n++ {
		if t.nodeInfo[n].silent {
			out = append(out, t.nodes.name(uint32(n)))
		}
	}
	slices.Sort(out)
	return out
}

func (t *Tracker) applyNode(e *events.NodeEvent) []Decision {
	t.stats.NodeEvents++
	if e.Node == "" || (e.Status != events.NodeSilent && e.Status != events.NodeBack) {
		return nil
	}
	now := e.AtMS
	if now <= 0 {
		now = e.LastSeenMS
	}
	n := t.nodes.intern(e.Node)
	ns := t.node(n)
	out := t.out
	switch e.Status {
	case events.NodeSilent:
		if ns.silent {
			return nil
		}
		ns.silent, ns.since = true, e.LastSeenMS
		if ns.since <= 0 {
			ns.since = now
		}
		t.stats.NodesSilent++
		out = t.nodeAlert(out, n, events.StatusFiring, now, 0)
	default:
		if !ns.silent {
			return nil
		}
		ns.silent = false
		out = t.nodeAlert(out, n, events.StatusResolved, now, max(e.LastSeenMS, ns.since))
		held := ns.held
		ns.held = nil
		for _, tm := range held {
			t.runTimer(tm, now)
		}
	}
	return t.flushDue(out, now)
}

// nodeAlert appends the node_silent notifications of node n.
func (t *Tracker) nodeAlert(out []Decision, n uint32, status events.AlertStatus, now, end int64) []Decision {
	name := t.nodes.name(n)
	ns := t.node(n)
	gl := map[string]string{labels.Node: name}
	get := func(l string) string {
		switch l {
		case labels.Node:
			return name
		case labels.AlertName:
			return string(events.AlertNodeSilent)
		}
		return ""
	}
	seq := uint32(1)
	if status == events.StatusResolved {
		seq = 2
	}
	for _, r := range t.routes.Match(get) {
		key := string(events.AlertNodeSilent) + ":" + r.GroupKey(gl)
		a := events.AlertEvent{
			Fingerprint:  t.fingerprint(events.AlertNodeSilent, key),
			Status:       status,
			Kind:         events.AlertNodeSilent,
			Severity:     t.nodeSeverity,
			GroupKey:     key,
			GroupLabels:  gl,
			Devices:      []events.AlertDevice{},
			DevicesTotal: int(ns.devices),
			KnownTotal:   int(ns.devices),
			StartsAtMS:   ns.since,
			EndsAtMS:     end,
			CreatedAtMS:  now,
		}
		if len(t.silences) > 0 {
			a.Silenced, a.SilenceIDs = t.silenceAggregate(key, gl, events.AlertNodeSilent, status, now)
		}
		out = t.emit(out, &a, r.Receivers, seq, 0, 0, 0)
	}
	return out
}
