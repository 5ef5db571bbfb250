package tracker

// This file holds what the evaluator service needs from a Tracker beyond
// Apply: read-only views for the HTTP API (devices with their status, groups,
// silences in force), the next due timer for the backtest's simulated clock,
// what a restart from a snapshot checks (AlertingIDs, LabelsCurrent), and
// two owner-side changes that are not presence inputs: Relabel (a device's
// inventory labels changed) and Reconfigure (SIGHUP: new routes, label
// rules, flap suppression and correlation). Like everything else here they
// must be called by the tracker's single owner.

import (
	"maps"
	"math"
	"slices"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
)

// Status is a device's presence status as the API reports it.
type Status string

// Statuses.
const (
	// StatusOnline: the current connection is open (or was handed over to a
	// newer one).
	StatusOnline Status = "online"
	// StatusPending: offline, its offline alert not fired: its grace period
	// is running, or the alert is held (flapping).
	StatusPending Status = "pending"
	// StatusOffline: offline, its offline alert fired.
	StatusOffline Status = "offline"
	// StatusUnknown: the broker node of its current (or last) connection is
	// silent, so its true state is unknown; the state it had is kept
	// (DeviceState.Online, Pending).
	StatusUnknown Status = "unknown"
)

// Statuses lists every Status, in the order the API reports counts.
var Statuses = []Status{StatusOnline, StatusPending, StatusOffline, StatusUnknown}

// Status returns the device's presence status. A device on a silent node is
// unknown whatever its last known state.
func (s DeviceState) Status() Status {
	switch {
	case s.Unknown:
		return StatusUnknown
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
	t *Tracker
	d *device
}

// ID is the device id.
func (v *DeviceView) ID() string { return v.t.ids.get(v.d.id) }

// State returns the device's state.
func (v *DeviceView) State() DeviceState { return v.t.view(v.d) }

// Status returns the device's presence status without building its state.
func (v *DeviceView) Status() Status {
	switch {
	case v.t.silent(v.d.node):
		return StatusUnknown
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
		return v.ID()
	case labels.Node:
		return v.t.nodes.name(v.d.node)
	case labels.Reason:
		return v.t.reasons.name(v.d.reason)
	}
	return v.t.table.Get(v.d.labels, name)
}

// Labels returns every label of the device as a new map.
func (v *DeviceView) Labels() map[string]string { return v.t.allLabels(v.d) }

// EachDevice calls fn for every device, in the order they were first seen,
// until fn returns false. fn must not call the tracker.
func (t *Tracker) EachDevice(fn func(v *DeviceView) bool) {
	v := &DeviceView{t: t}
	for i := range t.devs {
		v.d = &t.devs[i]
		if !fn(v) {
			return
		}
	}
}

// GroupState is the read-only view of one open alert group.
type GroupState struct {
	// Key is the group key (route, group labels and escalation tier).
	Key string
	// Kind is the kind of the group's alerts.
	Kind events.AlertKind
	// Labels are the group_by labels.
	Labels map[string]string
	// Receivers and Severity are the group's (its tier's, for an
	// escalation group).
	Receivers []string
	Severity  events.Severity
	// Tier is the escalation tier (0: the route's own group).
	Tier int
	// InhibitedBy is, for the inhibited copy of a group whose devices are
	// folded into a group_outage, that group_outage's fingerprint.
	InhibitedBy string
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
		ids := make([]string, 0, g.firing.len())
		for slot := range g.firing.all {
			ids = append(ids, t.ids.get(t.devs[slot].id))
		}
		slices.Sort(ids)
		if len(ids) > maxDevices {
			ids = ids[:max(maxDevices, 0)]
		}
		out = append(out, GroupState{
			Key: g.key, Kind: g.kind, Labels: maps.Clone(g.labels), Receivers: slices.Clone(g.receivers), Severity: g.severity,
			Tier: g.tier, InhibitedBy: g.inhibitedBy, Firing: g.firing.len(), Resolved: g.resolved.len(), Notified: g.notified,
			Seq: g.seq, StartsAtMS: g.start, LastMS: g.last, NextMS: g.next, Devices: ids,
		})
	}
	return out
}

// AlertingIDs returns the ids of the notifications Alerting would return
// (at any time: ids do not depend on it), without deciding anything. A
// restart from a snapshot uses it to recognise the first notifications the
// snapshot's state had published.
func (t *Tracker) AlertingIDs() []string {
	var out []string
	for _, g := range t.groups {
		if !g.notified || g.seq != 1 {
			continue
		}
		start := int64(0)
		for _, m := range g.firing.all {
			if m.notified && (start == 0 || m.since < start) {
				start = m.since
			}
		}
		for _, rc := range g.receivers {
			out = append(out, t.notificationID(rc, g.fp, events.StatusFiring, start, 0, 1))
		}
	}
	slices.Sort(out)
	return out
}

// LabelsCurrent reports whether every device's labels are what the labeler
// computes for it now (without its connection; see
// labels.Labeler.Recompute). They are not after a restore from a snapshot
// written under other label rules or another inventory: Reconfigure with
// relabel set fixes that.
func (t *Tracker) LabelsCurrent() bool {
	for i := range t.devs {
		d := &t.devs[i]
		if t.labeler.Recompute(d.labels, t.ids.get(d.id), 0) != d.labels {
			return false
		}
	}
	return true
}

// SilenceIDs returns the ids of the silences in force (the last Silences
// input's valid ones), sorted.
func (t *Tracker) SilenceIDs() []string {
	out := make([]string, 0, len(t.silences))
	for _, s := range t.silences {
		out = append(out, s.s.ID)
	}
	return out
}

// NextDue returns the earliest time (ms) at which a tick may decide
// something: the first queued grace, escalation, calm or group timer.
// Timers are deleted lazily, so a tick at that time may decide nothing; it
// still moves NextDue forward. Timers held on a silent node are not
// queued: they run when the node is back (a Node input). ok is false when
// no timer is queued.
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
// while the device is offline (pending or alerting), because its alert
// groups, grace timer and mass-outage counters were chosen by its current
// labels: the owner retries once it is back. It returns true when the
// device is unknown (its labels are computed when it is first seen) or was
// relabelled; the device then moves between topology groups (correlation).
func (t *Tracker) Relabel(id string, staleInventory labels.Set) bool {
	slot, _, ok := t.index.lookup(t.devs, &t.ids, id)
	if !ok {
		return true
	}
	d := &t.devs[slot]
	if d.state == stateOffline {
		return false
	}
	nl := t.labeler.Recompute(d.labels, id, staleInventory)
	if nl == d.labels {
		return true
	}
	t.topoJoin(d, -1)
	d.labels = nl
	t.topoJoin(d, 1)
	return true
}

// Reconfigure replaces the routing tree, the labeler, the flap suppression
// of the default routes, the correlation and the node severity (cfg as for
// New; cfg.Labeler must intern into this tracker's table) while keeping
// every device's presence state, flap penalty and node health. now is the
// owner's clock. It returns the notifications it decided. With the same
// config (and relabel false) it changes nothing: every later decision is
// the one the tracker would have made without it.
//
//   - With relabel set (the label rules or the inventory changed), every
//     device's labels are recomputed without its connection: client-id
//     rules and inventory now, username and IP-derived labels kept as they
//     were until its next connection.
//   - With relabel set or other correlation settings, the correlation
//     counters of every topology group are recounted from the devices; a
//     group keeps its mass-outage state while its offline devices still
//     reach the (new) threshold (a new one starts at the next disconnect
//     that reaches it). A folded device whose mass outage ended, or whose
//     topology group changed, leaves it as when a mass outage ends: it gets
//     its own alert if it stays down for its grace from now.
//   - Every alerting device joins the groups of its new routes (their
//     inhibited copies and its group_outage while folded, and the
//     escalation tiers it reached by now), every flapping device its new
//     device_flapping groups. A group whose key is still in use keeps its
//     episode (what it announced, its sequence, its next flush); a device
//     it held that no longer belongs to it leaves it without a recovery
//     (its alert moved). A new group counts a device as already announced
//     if an old group of the same kind (and tier) had announced it: no
//     second "new offline" message, the new group resolves it when it
//     recovers. A device whose new route turns flap suppression off calms
//     down at once.
//   - An old group whose key is no longer used, if it already notified and
//     has news (devices joined or recovered since, or all left), is flushed
//     at now under the old routes, so that no recovery is lost; then it is
//     dropped.
//   - An outage still in its grace period fires at the earlier of its old
//     and its new grace.
//   - node_silent alerts of silent nodes resolve through the new routes when
//     the node is back.
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

	// The new labels and topology, beside the old ones.
	newLabels := make([]labels.Set, len(t.devs))
	for i := range t.devs {
		d := &t.devs[i]
		newLabels[i] = d.labels
		if relabel {
			newLabels[i] = nt.labeler.Recompute(d.labels, t.ids.get(d.id), 0)
		}
	}
	topo, recounted := t.nextTopology(cfg.Correlation, newLabels, relabel)

	// Folded devices whose mass outage does not go on leave it, under the
	// old routes.
	newFold := make(map[uint32]uint8)
	base := make(map[uint32]int64) // unfolded: the grace counts from now
	for i := range t.devs {
		d := &t.devs[i]
		if d.fold == 0 || d.state != stateOffline || d.flags&flagAlerting == 0 {
			continue
		}
		slot := uint32(i)
		f := d.fold
		if recounted {
			f = t.keepFold(&topo, d, newLabels[i])
		}
		if f != 0 {
			newFold[slot] = f
			continue
		}
		t.leaveAll(slot, d, nowMS, nowMS, true)
		d.flags = d.flags&^flagAlerting | flagPending
		base[slot] = nowMS
		t.timers.push(timer{due: satAdd(nowMS, t.grace(slot, d)), since: d.since, slot: slot, kind: timerGrace})
	}
	// The grace timers queued for pending outages, under the old routes.
	queued := make(map[uint32]int64)
	for i := range t.devs {
		d := &t.devs[i]
		if d.state == stateOffline && d.flags&flagPending != 0 {
			from, ok := base[uint32(i)]
			if !ok {
				from = d.since
			}
			queued[uint32(i)] = satAdd(from, t.grace(uint32(i), d))
		}
	}
	// What the aggregate alerts (group_outage, node_silent) that expiring
	// silences wait for are about: their keys change with the routes.
	aggOf := make(map[string]string)
	for _, g := range t.groups {
		if g.kind == events.AlertGroupOutage {
			og := t.topo.groups[g.topo-1]
			aggOf[g.key] = topoEntity(t.topo.keys[og.key], og.value)
		}
	}
	silentNodes := t.silentNodeIDs()
	for _, n := range silentNodes {
		for _, k := range t.nodeKeys(n) {
			aggOf[k] = nodeEntity(t.nodes.name(n))
		}
	}

	// The escalation and calm timers queued or held, so that only missing
	// ones are added.
	r := &rejoin{t: t, now: nowMS, prev: map[string]memberSet{}, keys: map[string]bool{}, queued: map[timerRef]int64{}}
	note := func(tm timer, due int64) {
		if tm.kind == timerGrace {
			return
		}
		k := timerRef{slot: tm.slot, since: tm.since, kind: tm.kind}
		if old, ok := r.queued[k]; !ok || due < old {
			r.queued[k] = due
		}
	}
	for _, tm := range t.timers {
		note(tm, tm.due)
	}
	for n := range t.nodeInfo {
		for _, tm := range t.nodeInfo[n].held {
			note(tm, math.MinInt64) // runs when the node is back
		}
	}
	// The escalation tiers each device is in.
	tiersIn := make(map[uint32]uint64)
	for _, g := range t.groups {
		if g.kind == events.AlertDeviceOffline && g.tier > 0 {
			for slot := range g.firing.all {
				tiersIn[slot] |= tierBit(g.tier)
			}
		}
	}

	// Swap.
	oldGroups, oldTopo := t.groups, t.topo
	t.groups = make(map[string]*group, len(oldGroups))
	t.gtimers = t.gtimers[:0]
	clear(t.targetCache)
	t.alertTargets.reset()
	clear(t.flapGroups)
	t.routes, t.labeler, t.nodeSeverity, t.idScope = nt.routes, nt.labeler, nt.nodeSeverity, nt.idScope
	if !recounted {
		// The same topology groups; what depends on the routes is
		// recomputed.
		for _, g := range topo.groups {
			g.targets, g.fp, g.suffix = nil, "", ""
		}
		topo.cache = map[string][]target{}
	}
	t.topo = topo
	for i := range t.devs {
		d := &t.devs[i]
		d.labels = newLabels[i]
		if d.fold != 0 {
			d.fold = newFold[uint32(i)]
		}
	}

	// The keys of the new groups. The old groups without a successor flush
	// what they have to say (under the old topology: a group_outage reports
	// its group's size), then what the old groups announced is noted.
	r.old, r.in = oldGroups, tiersIn
	r.each(func(tg target, _ uint32, _ *device, _ bool) { r.keys[tg.key] = true })
	// An old group whose devices all left, waiting to say so, keeps its
	// schedule if its route is still there.
	t.topo = oldTopo
	var kept []*group
	for _, k := range slices.Sorted(maps.Keys(oldGroups)) {
		g := oldGroups[k]
		if r.keys[k] {
			continue
		}
		if g.firing.len() == 0 {
			if nr, id, ok := t.successor(g, &topo); ok {
				g.route, g.topo = nr, id
				kept = append(kept, g)
				continue
			}
		}
		if g.notified && (g.hasNews() || g.firing.len() == 0) {
			out = t.flush(out, g, nowMS)
		}
	}
	t.topo = topo
	for _, g := range kept {
		delete(oldGroups, g.key)
		t.groups[g.key] = g
		if g.next != 0 {
			t.gtimers.push(groupTimer{due: g.next, key: g.key, g: g})
		}
	}
	r.ann = make(map[uint32]announced)
	for k, g := range oldGroups {
		if g.key != k {
			continue // flushed and deleted
		}
		for slot, m := range g.firing.all {
			a := r.ann[slot]
			a.note(g, m.notified)
			r.ann[slot] = a
		}
	}
	for k := range oldGroups {
		if !r.keys[k] {
			delete(oldGroups, k)
		}
	}

	// Rejoin.
	r.final = true
	r.each(r.join)
	r.settle()
	for i := range t.devs {
		d := &t.devs[i]
		if d.flags&flagFlapping == 0 {
			continue
		}
		slot := uint32(i)
		if f := t.flapSettings(slot, d); f != nil {
			r.push(timer{due: t.calmDue(d, f), slot: slot, kind: timerCalm})
		} else {
			t.calm(slot, d, nowMS)
		}
	}
	// Pending outages fire at the earlier of their old and new grace.
	for i := range t.devs {
		d := &t.devs[i]
		slot := uint32(i)
		old, ok := queued[slot]
		if !ok || d.state != stateOffline || d.flags&flagPending == 0 {
			continue
		}
		from, ok := base[slot]
		if !ok {
			from = d.since
		}
		if due := satAdd(from, t.grace(slot, d)); due < old {
			t.timers.push(timer{due: due, since: d.since, slot: slot, kind: timerGrace})
		}
	}

	// Expiring silences wait for the same aggregate alerts under their new
	// keys.
	if len(t.silences) > 0 {
		keysOf := make(map[string][]string)
		for _, g := range t.groups {
			if g.kind == events.AlertGroupOutage {
				og := t.topo.groups[g.topo-1]
				e := topoEntity(t.topo.keys[og.key], og.value)
				keysOf[e] = append(keysOf[e], g.key)
			}
		}
		for _, n := range silentNodes {
			e := nodeEntity(t.nodes.name(n))
			keysOf[e] = append(keysOf[e], t.nodeKeys(n)...)
		}
		for _, s := range t.silences {
			if len(s.aggs) == 0 {
				continue
			}
			next := make(map[string]struct{})
			for k := range s.aggs {
				for _, nk := range keysOf[aggOf[k]] {
					next[nk] = struct{}{}
				}
			}
			s.aggs = next
			s.checkExpired()
		}
	}
	return t.flushDue(out, nowMS), nil
}

// rejoin puts the alerting and flapping devices into the groups of the new
// routes (Reconfigure).
type rejoin struct {
	t   *Tracker
	now int64
	// old holds the old groups whose key is in use again: each is adopted
	// by the first device that joins it; prev keeps its members then.
	old  map[string]*group
	prev map[string]memberSet
	keys map[string]bool
	ann  map[uint32]announced
	in   map[uint32]uint64 // the escalation tiers (tierBit) each device is in
	// final is set for the pass that joins (and queues timers).
	final bool
	// queued holds the earliest escalation and calm timer of each device
	// (math.MinInt64: held on a silent node).
	queued map[timerRef]int64
}

// timerRef is what an escalation or calm timer is about.
type timerRef struct {
	slot  uint32
	since int64
	kind  timerKind
}

// push queues an escalation or calm timer unless one as early is queued or
// held (it acts then, and queues the next one itself).
func (r *rejoin) push(tm timer) {
	k := timerRef{slot: tm.slot, since: tm.since, kind: tm.kind}
	if due, ok := r.queued[k]; ok && due <= tm.due {
		return
	}
	r.queued[k] = tm.due
	r.t.timers.push(tm)
}

// each calls fn for every group an alerting or flapping device belongs to
// under the new routes, in slot order, with whether an old group of its
// kind had announced the device.
func (r *rejoin) each(fn func(tg target, slot uint32, d *device, notified bool)) {
	t := r.t
	for i := range t.devs {
		d := &t.devs[i]
		if d.state != stateOffline || d.flags&flagAlerting == 0 {
			continue
		}
		slot := uint32(i)
		a := r.ann[slot]
		tgs := t.offlineTargets(slot, d)
		for _, tg := range tgs {
			fn(tg, slot, d, a.offline)
		}
		if d.fold != 0 {
			for _, tg := range t.outageTargets(t.topo.groupOf(t, d, int(d.fold-1))) {
				fn(tg, slot, d, a.outage)
			}
		}
		if !t.routes.Escalates {
			continue
		}
		next := int64(0)
		for _, tg := range tgs {
			for i, e := range tg.route.Escalations {
				due := satAdd(d.since, e.After.Milliseconds())
				if due > r.now || (t.silent(d.node) && r.in[slot]&tierBit(i+1) == 0) {
					// Not reached yet, or reached while the device's node
					// is silent: the timer is held until it is back.
					if next == 0 || due < next {
						next = due
					}
					break
				}
				fn(tierTarget(tg, i+1), slot, d, a.tiers&tierBit(i+1) != 0)
			}
		}
		if next != 0 && r.final {
			r.push(timer{due: next, since: d.since, slot: slot, kind: timerEscalate})
		}
	}
	for i := range t.devs {
		d := &t.devs[i]
		if d.flags&flagFlapping == 0 {
			continue
		}
		slot := uint32(i)
		tgs := t.targets(slot, d, kindFlap)
		if r.final {
			keys := make([]string, 0, len(tgs))
			for _, tg := range tgs {
				keys = append(keys, tg.key)
			}
			t.flapGroups[slot] = keys
		}
		for _, tg := range tgs {
			fn(tg, slot, d, r.ann[slot].flap)
		}
	}
}

// join adds a device to the group of tg: with its old member record if the
// group is an adopted old one that held it, else as a device that joins
// (announced or new).
func (r *rejoin) join(tg target, slot uint32, d *device, notified bool) {
	t := r.t
	g := t.groups[tg.key]
	if g == nil {
		if og := r.old[tg.key]; og != nil {
			g = r.adopt(og, tg)
		} else {
			g = t.group(tg, true)
		}
	}
	if _, in := g.firing.get(slot); in {
		return
	}
	if p, ok := r.prev[g.key]; ok {
		if m, in := p.get(slot); in {
			m.labels = d.labels
			g.firing.put(slot, m)
			return
		}
	}
	if tg.tier > 0 && r.in[slot]&tierBit(tg.tier) == 0 {
		t.stats.Escalated++
	}
	t.joinGroup(g, slot, d, r.now, notified)
}

// adopt makes an old group the group of tg, keeping its episode and its
// schedule; its members join again.
func (r *rejoin) adopt(g *group, tg target) *group {
	t := r.t
	delete(r.old, g.key)
	r.prev[g.key] = g.firing
	g.firing = memberSet{}
	g.kind, g.route, g.tier, g.labels = tg.kind, tg.route, tg.tier, tg.labels
	g.receivers, g.severity, g.inhibitedBy, g.topo = tg.receivers, tg.severity, tg.inhibitedBy, tg.topo
	g.fp = t.fingerprint(g.kind, g.key)
	t.groups[g.key] = g
	if g.next != 0 {
		t.gtimers.push(groupTimer{due: g.next, key: g.key, g: g})
	}
	return g
}

// settle ends the rejoin: the devices an adopted group held that did not
// join it again are dropped from it (their alert moved), and every group
// that notified waits for its repeat.
func (r *rejoin) settle() {
	t := r.t
	for _, k := range slices.Sorted(maps.Keys(r.prev)) {
		g := t.groups[k]
		dropped := false
		p := r.prev[k]
		for slot := range p.all {
			if _, in := g.firing.get(slot); !in {
				dropped = true
			}
		}
		if !dropped {
			continue
		}
		g.dropped = max(g.dropped, r.now)
		switch {
		case g.firing.len() > 0:
		case !g.notified && g.resolved.len() == 0:
			t.deleteGroup(g)
		default:
			t.schedule(g, r.now)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(t.groups)) {
		g := t.groups[k]
		if rep := g.route.RepeatInterval.Milliseconds(); rep > 0 && g.notified && g.next == 0 {
			g.next = satAdd(g.last, rep)
			t.gtimers.push(groupTimer{due: g.next, key: g.key, g: g})
		}
	}
}

// successor returns, for an old group (under t.routes being the new ones,
// t.topo the old topology), the new route of the same id and its
// topology group in tp (group_outage); ok is false when either is gone.
func (t *Tracker) successor(g *group, tp *topology) (r *route.Route, topo uint32, ok bool) {
	for _, nr := range t.routes.All {
		if nr.ID == g.route.ID && g.tier <= len(nr.Escalations) {
			r = nr
		}
	}
	if r == nil {
		return nil, 0, false
	}
	if g.topo == 0 {
		return r, 0, true
	}
	og := t.topo.groups[g.topo-1]
	i := slices.Index(tp.keys, t.topo.keys[og.key])
	if i < 0 {
		return nil, 0, false
	}
	id, ok := tp.index[topoRef{key: uint8(i), value: og.value}]
	return r, id, ok
}

// announced is what the old groups had announced of one device.
type announced struct {
	offline, outage, flap bool
	// tiers are the escalation tiers (tierBit) it was announced in.
	tiers uint64
}

// tierBit is escalation tier i's bit (from 1; tiers beyond 64 share one).
func tierBit(i int) uint64 { return uint64(1) << min(i-1, 63) }

func (a *announced) note(g *group, notified bool) {
	switch {
	case g.kind == events.AlertDeviceFlapping:
		a.flap = a.flap || notified
	case g.kind == events.AlertGroupOutage:
		a.outage = a.outage || notified
	case g.tier == 0:
		a.offline = a.offline || notified
	case notified:
		a.tiers |= tierBit(g.tier)
	}
}

// nextTopology returns the topology of correlation c after a
// reconfiguration, and whether it was recounted: t's own (the same groups)
// when neither the labels nor the settings that count changed.
func (t *Tracker) nextTopology(c Correlation, ls []labels.Set, relabel bool) (topology, bool) {
	tp := newTopology(c)
	o := &t.topo
	if !relabel && tp.on == o.on && slices.Equal(tp.keys, o.keys) && tp.window == o.window && tp.minDevices == o.minDevices &&
		tp.ratioPPM == o.ratioPPM {
		same := t.topo
		same.severity = tp.severity
		return same, false
	}
	return t.recountTopology(c, ls), true
}

// topoEntity and nodeEntity name what an aggregate alert is about,
// independently of the routes and the topology keys' order.
func topoEntity(key, value string) string { return "topo\x00" + key + "\x00" + value }
func nodeEntity(node string) string       { return "node\x00" + node }

// recountTopology returns the topology of correlation c over the devices
// with labels ls (by slot): membership counted from the devices' state, and
// the mass-outage state of each group of t.topo with the same key and value
// kept while its offline devices still reach c's threshold (a mass outage
// starts only at a disconnect, as in topoDown). It does not change t.
func (t *Tracker) recountTopology(c Correlation, ls []labels.Set) topology {
	tp := newTopology(c)
	if !tp.on {
		return tp
	}
	old := make(map[string]*topoGroup, len(t.topo.groups))
	for _, g := range t.topo.groups {
		old[topoEntity(t.topo.keys[g.key], g.value)] = g
	}
	var offline []uint32
	for i := range t.devs {
		dc := t.devs[i]
		dc.labels = ls[i]
		for _, id := range t.topoIDsIn(&tp, &dc) {
			if id == 0 {
				continue
			}
			g := tp.groups[id-1]
			g.known++
			if dc.state == stateOffline {
				g.down++
			}
		}
		if dc.state == stateOffline {
			offline = append(offline, uint32(i))
		}
	}
	for _, g := range tp.groups {
		if og := old[topoEntity(tp.keys[g.key], g.value)]; og != nil {
			g.horizon, g.maxSince, g.active, g.since = og.horizon, og.maxSince, og.active, og.since
		}
	}
	// The recent outages, oldest first, counted as topoDown does.
	slices.SortFunc(offline, func(a, b uint32) int {
		if c := cmpInt(t.devs[a].since, t.devs[b].since); c != 0 {
			return c
		}
		return cmpInt(int64(a), int64(b))
	})
	for _, slot := range offline {
		dc := t.devs[slot]
		dc.labels = ls[slot]
		for _, id := range t.topoIDsIn(&tp, &dc) {
			if id == 0 {
				continue
			}
			g := tp.groups[id-1]
			if dc.since <= g.horizon {
				continue
			}
			g.queue.push(recentOutage{since: dc.since, slot: slot})
			g.recent++
			if dc.since > g.maxSince {
				g.maxSince = dc.since
				if h := g.maxSince - tp.window; h > g.horizon {
					g.horizon = h
					t.expire(g)
				}
			}
		}
	}
	for _, g := range tp.groups {
		if g.active && !tp.meets(g.down, g.known) {
			g.active = false
		}
	}
	return tp
}

// keepFold returns the fold of a folded device under topology tp with
// labels ls: 1 + the index of the key of its mass outage if that topology
// group is still its group and still in a mass outage, else 0.
func (t *Tracker) keepFold(tp *topology, d *device, ls labels.Set) uint8 {
	og := t.topo.groupOf(t, d, int(d.fold-1))
	if og == nil || !tp.on {
		return 0
	}
	i := slices.Index(tp.keys, t.topo.keys[og.key])
	if i < 0 {
		return 0
	}
	dc := *d
	dc.labels = ls
	ng := tp.groupOf(t, &dc, i)
	if ng == nil || ng.value != og.value || !ng.active {
		return 0
	}
	return uint8(i + 1)
}

// silentNodeIDs returns the interned ids of the silent nodes, in order.
func (t *Tracker) silentNodeIDs() []uint32 {
	var out []uint32
	for n := range t.nodeInfo {
		if t.nodeInfo[n].silent {
			out = append(out, uint32(n))
		}
	}
	return out
}

// nodeKeys returns the group keys of the node_silent alerts of node n under
// the current routes (as nodeAlert derives them).
func (t *Tracker) nodeKeys(n uint32) []string {
	name := t.nodes.name(n)
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
	var out []string
	for _, r := range t.routes.Match(get) {
		out = append(out, string(events.AlertNodeSilent)+":"+r.GroupKey(gl))
	}
	return out
}

type tableChangedError struct{}

func (tableChangedError) Error() string {
	return "invalid tracker config: the new labeler must intern into the tracker's label table"
}

func (tableChangedError) Unwrap() error { return ErrConfig }

var errTableChanged error = tableChangedError{}
