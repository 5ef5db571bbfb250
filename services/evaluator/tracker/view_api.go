package tracker

// This file holds what the evaluator service needs from a Tracker beyond
// Apply: read-only views for the HTTP API, the next due timer for the
// backtest's simulated clock, and two owner-side changes that are not
// presence inputs: Relabel (a device's inventory labels changed) and
// Reconfigure (SIGHUP: new routes and label rules). Like everything else
// here they must be called by the tracker's single owner.

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
)

// Status is a device's presence status as the API reports it.
type Status string

// Statuses.
const (
	// StatusOnline: the current connection is open (or was handed over to a
	// newer one).
	StatusOnline Status = "online"
	// StatusPending: offline, its grace period running.
	StatusPending Status = "pending"
	// StatusOffline: offline past its grace period.
	StatusOffline Status = "offline"
	// StatusUnknown: last seen on a broker node that went silent. Node
	// health is not applied yet, so no device has it for now.
	StatusUnknown Status = "unknown"
)

// Statuses lists every Status, in the order the API reports counts.
var Statuses = []Status{StatusOnline, StatusPending, StatusOffline, StatusUnknown}

// Status returns the device's presence status.
func (s DeviceState) Status() Status {
	switch {
	case s.Online:
		return StatusOnline
	case s.Pending:
		return StatusPending
	}
	return StatusOffline
}

// DeviceView is a read-only view of one device, valid only during the
// EachDevice callback that receives it.
type DeviceView struct {
	t  *Tracker
	id string
	d  device
}

// ID is the device id.
func (v *DeviceView) ID() string { return v.id }

// State returns the device's state.
func (v *DeviceView) State() DeviceState { return v.t.view(v.id, v.d) }

// Status returns the device's presence status without building its state.
func (v *DeviceView) Status() Status {
	switch {
	case v.d.state != stateOffline:
		return StatusOnline
	case v.d.flags&flagPending != 0:
		return StatusPending
	}
	return StatusOffline
}

// Alerting reports whether a firing alert was decided for the current
// outage and not resolved yet.
func (v *DeviceView) Alerting() bool { return v.d.flags&flagAlerting != 0 }

// Label returns one label of the device, implicit ones included ("" when
// absent).
func (v *DeviceView) Label(name string) string {
	switch name {
	case labels.DeviceID:
		return v.id
	case labels.Node:
		return v.t.nodes.name(v.d.node)
	case labels.Reason:
		return v.t.reasons.name(v.d.reason)
	}
	return v.t.table.Get(v.d.labels, name)
}

// Labels returns every label of the device as a new map.
func (v *DeviceView) Labels() map[string]string { return v.t.allLabels(v.id, &v.d) }

// EachDevice calls fn for every device, in no particular order, until fn
// returns false. fn must not call the tracker.
func (t *Tracker) EachDevice(fn func(v *DeviceView) bool) {
	v := &DeviceView{t: t}
	for id, d := range t.devices {
		v.id, v.d = id, d
		if !fn(v) {
			return
		}
	}
}

// GroupState is the read-only view of one open alert group.
type GroupState struct {
	// Key is the group key (route, group labels and escalation tier).
	Key string
	// Labels are the group_by labels.
	Labels map[string]string
	// Receivers and Severity are the group's (its tier's, for an
	// escalation group).
	Receivers []string
	Severity  events.Severity
	// Firing and Resolved count the alerting devices and those that
	// recovered since the last notification.
	Firing, Resolved int
	// Notified says a firing notification went out in this episode; Seq
	// counts the notifications of the episode.
	Notified bool
	Seq      uint32
	// StartsAtMS is the episode start; LastMS the last notification; NextMS
	// the next scheduled flush (0: none).
	StartsAtMS, LastMS, NextMS int64
	// Devices are the ids of up to the requested number of firing devices,
	// sorted.
	Devices []string
}

// GroupStates returns every open group, sorted by key, each listing up to
// maxDevices firing device ids.
func (t *Tracker) GroupStates(maxDevices int) []GroupState {
	keys := slices.Sorted(maps.Keys(t.groups))
	out := make([]GroupState, 0, len(keys))
	for _, k := range keys {
		g := t.groups[k]
		ids := slices.Sorted(maps.Keys(g.firing))
		if len(ids) > maxDevices {
			ids = ids[:max(maxDevices, 0)]
		}
		out = append(out, GroupState{
			Key: g.key, Labels: maps.Clone(g.labels), Receivers: slices.Clone(g.receivers), Severity: g.severity,
			Firing: len(g.firing), Resolved: len(g.resolved), Notified: g.notified, Seq: g.seq,
			StartsAtMS: g.start, LastMS: g.last, NextMS: g.next, Devices: ids,
		})
	}
	return out
}

// NextDue returns the earliest time (ms) at which a tick may decide
// something: the first queued grace, escalation or group timer. Timers
// are deleted lazily, so a tick at that time may decide nothing; it still
// moves NextDue forward. ok is false when no timer is queued.
func (t *Tracker) NextDue() (ms int64, ok bool) {
	switch {
	case len(t.timers) > 0 && len(t.gtimers) > 0:
		return min(t.timers[0].due, t.gtimers[0].due), true
	case len(t.timers) > 0:
		return t.timers[0].due, true
	case len(t.gtimers) > 0:
		return t.gtimers[0].due, true
	}
	return 0, false
}

// Relabel recomputes the labels of a known device after its inventory
// labels changed from staleInventory (what the inventory held for it
// before; see labels.Labeler.Recompute). It does nothing and returns false
// while the device is alerting, because its alert groups were chosen by its
// current labels: the owner retries once it recovered. It returns true when
// the device is unknown (its labels are computed when it is first seen) or
// was relabelled.
func (t *Tracker) Relabel(id string, staleInventory labels.Set) bool {
	d, ok := t.devices[id]
	if !ok {
		return true
	}
	if d.flags&flagAlerting != 0 {
		return false
	}
	if nl := t.labeler.Recompute(d.labels, id, staleInventory); nl != d.labels {
		d.labels = nl
		t.devices[id] = d
	}
	return true
}

// Reconfigure replaces the routing tree and the labeler (cfg as for New;
// cfg.Labeler must intern into this tracker's table) while keeping every
// device's presence state. now is the owner's clock. It returns the
// notifications it had to send first:
//
//   - A group that already notified and has news (devices joined or
//     recovered since) is flushed at now under the old routes, so that no
//     recovery is lost; then every group is dropped.
//   - With relabel set (the label rules or the inventory changed), every
//     device's labels are recomputed without its connection: client-id
//     rules and inventory now, username and IP-derived labels kept as they
//     were until its next connection.
//   - Every alerting device joins the groups of its new routes: as already
//     announced if an old group had announced it (no second "new offline"
//     message; the new group resolves it when it recovers), else as new
//     (announced after the new route's group_wait). It rejoins the
//     escalation tiers it reached, as announced.
//   - An outage still in its grace period fires at the earlier of its old
//     and its new grace.
//
// On error nothing changed.
func (t *Tracker) Reconfigure(cfg Config, now time.Time, relabel bool) ([]Decision, error) {
	nt, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if nt.table != t.table {
		return nil, errTableChanged
	}
	nowMS := now.UnixMilli()
	var out []Decision
	announced := make(map[string]bool)
	for _, k := range slices.Sorted(maps.Keys(t.groups)) {
		g := t.groups[k]
		if g.notified && g.hasNews() {
			out = t.flush(out, g, nowMS)
		}
		for id, m := range g.firing {
			if m.notified {
				announced[id] = true
			}
		}
	}
	// The grace timers queued for pending outages, under the old routes.
	queued := make(map[string]int64)
	for id, d := range t.devices {
		if d.state == stateOffline && d.flags&flagPending != 0 {
			queued[id] = satAdd(d.since, t.grace(id, &d))
		}
	}
	clear(t.groups)
	t.gtimers = t.gtimers[:0]
	clear(t.targetCache)
	t.routes, t.labeler = nt.routes, nt.labeler

	var alerting []string
	for id, d := range t.devices {
		if relabel {
			d.labels = t.labeler.Recompute(d.labels, id, 0)
			t.devices[id] = d
		}
		switch {
		case d.state != stateOffline:
		case d.flags&flagAlerting != 0:
			alerting = append(alerting, id)
		case d.flags&flagPending != 0:
			if due := satAdd(d.since, t.grace(id, &d)); due < queued[id] {
				t.timers.push(timer{due: due, since: d.since, device: id})
			}
		}
	}
	slices.SortFunc(alerting, strings.Compare)
	for _, id := range alerting {
		d := t.devices[id]
		t.join(id, &d, nowMS, announced[id])
		t.rejoinTiers(id, &d, nowMS)
	}
	return t.flushDue(out, nowMS), nil
}

// rejoinTiers joins, as announced, the escalation tiers an alerting device
// has reached by now, and queues the check of its next tier.
func (t *Tracker) rejoinTiers(id string, d *device, now int64) {
	if !t.routes.Escalates {
		return
	}
	next := int64(0)
	for _, tg := range t.targets(id, d) {
		for i, e := range tg.route.Escalations {
			due := satAdd(d.since, e.After.Milliseconds())
			if due > now {
				if next == 0 || due < next {
					next = due
				}
				break
			}
			t.joinGroup(t.group(tierTarget(tg, i+1), true), id, d, now, true)
		}
	}
	if next != 0 {
		t.timers.push(timer{due: next, since: -d.since, device: id})
	}
}

type tableChangedError struct{}

func (tableChangedError) Error() string {
	return "invalid tracker config: the new labeler must intern into the tracker's label table"
}

func (tableChangedError) Unwrap() error { return ErrConfig }

var errTableChanged error = tableChangedError{}
