package tracker

import (
	"slices"
	"strconv"
	"strings"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
)

// A group gathers the alerting devices that one route sends to the same
// group key (the route's group_by label values), Alertmanager's way: a
// device that fires joins the groups of the routes it matches; a group
// notifies its receivers group_wait after its first device, then at most
// every group_interval when devices join or recover, and every
// repeat_interval when nothing changed. One notification lists the new, the
// recovered and the still-firing devices. A group's episode ends with a
// resolved notification when its last device recovers (or is dropped: the
// devices of a group_outage that ended, which get their own alerts).
//
// Groups are of one kind: device_offline (a route's group, or one of its
// escalation tiers, or the inhibited copy of either for the devices folded
// into a group_outage), device_flapping, or group_outage.
type group struct {
	key       string // the groups map key, also the AlertEvent's GroupKey
	fp        string // t.fingerprint(kind, key)
	kind      events.AlertKind
	route     *route.Route
	tier      int // escalation tier (0: the route's group)
	labels    map[string]string
	receivers []string
	severity  events.Severity
	// inhibitedBy is, for an inhibited copy, the fingerprint of the
	// group_outage that covers its devices.
	inhibitedBy string
	// topo is, for a group_outage, 1 + its topology group.
	topo uint32
	// firing holds the alerting devices, by slot.
	firing memberSet
	// resolved holds notified devices that recovered since the last flush.
	resolved memberSet
	start    int64  // episode start: min since at the first notification
	seq      uint32 // notifications sent in this episode
	notified bool   // a firing notification was sent in this episode
	last     int64  // time of the last notification
	next     int64  // scheduled flush (0: none)
	dropped  int64  // the last time a device was dropped (not recovered)
}

// member is a device in a group.
type member struct {
	since, until int64
	node, reason uint32
	labels       labels.Set
	count        uint16 // device_flapping: the device's disconnect count
	notified     bool   // listed as firing in a notification
}

// groupTimer is a scheduled flush; stale ones (next changed, group gone)
// are skipped. g is the group it was scheduled for, so that a due timer
// needs no map lookup: groups are reused from a free list, so it counts
// only while g still has the key (a freed group's key is "").
type groupTimer struct {
	due int64
	key string
	g   *group
}

func (a groupTimer) before(b groupTimer) bool {
	if a.due != b.due {
		return a.due < b.due
	}
	return a.key < b.key
}

// groupHeap is a binary min-heap of group timers.
type groupHeap = minHeap[groupTimer]

// targetKind says which alert of a device is being routed.
type targetKind uint8

const (
	kindOffline targetKind = iota
	kindFlap
)

func (k targetKind) alertKind() events.AlertKind {
	if k == kindFlap {
		return events.AlertDeviceFlapping
	}
	return events.AlertDeviceOffline
}

// labelsOf returns the label lookup of a device's alert of kind k: its label
// set plus the implicit labels.
func (t *Tracker) labelsOf(slot uint32, d *device, k targetKind) func(string) string {
	return t.labelsRead(slot, d, k, nil)
}

// The implicit labels that vary between a device's outages, as flags: a
// routing that read neither gives the same targets for any node and
// reason.
const (
	readNode uint8 = 1 << iota
	readReason
)

// labelsRead is labelsOf that also records in *reads (when not nil) the
// node and reason labels looked up.
func (t *Tracker) labelsRead(slot uint32, d *device, k targetKind, reads *uint8) func(string) string {
	return func(name string) string {
		switch name {
		case labels.DeviceID:
			return t.ids.get(t.devs[slot].id)
		case labels.Node:
			if reads != nil {
				*reads |= readNode
			}
			return t.nodes.name(d.node)
		case labels.Reason:
			if reads != nil {
				*reads |= readReason
			}
			return t.reasons.name(d.reason)
		case labels.AlertName:
			return string(k.alertKind())
		}
		return t.table.Get(d.labels, name)
	}
}

// allLabels returns every label of a device, implicit ones (but alertname)
// included.
func (t *Tracker) allLabels(d *device) map[string]string {
	m := t.table.Map(d.labels)
	if m == nil {
		m = make(map[string]string, 3)
	}
	m[labels.DeviceID] = t.ids.get(d.id)
	if n := t.nodes.name(d.node); n != "" {
		m[labels.Node] = n
	}
	if r := t.reasons.name(d.reason); r != "" {
		m[labels.Reason] = r
	}
	return m
}

// target is a group an alert belongs to.
type target struct {
	route     *route.Route
	kind      events.AlertKind
	key       string
	fp        string // t.fingerprint(kind, key), when computed
	labels    map[string]string
	receivers []string
	severity  events.Severity
	// tier is the escalation tier (0: the route's group); tiers are the
	// keys of the route's escalation tier groups (of a tier 0 target).
	tier        int
	tiers       []string
	inhibitedBy string
	topo        uint32
	// g caches the target's group (see targetGroup).
	g *group
}

// targetKey is what routing and grouping depend on when they do not read
// the device id.
type targetKey struct {
	labels       labels.Set
	node, reason uint32
	kind         targetKind
}

// maxTargetCache bounds the routing cache; it is cleared when full.
const maxTargetCache = 1 << 16

// targets returns the route groups of a device's alert of kind k (tiers
// not included). The result must not be modified.
func (t *Tracker) targets(slot uint32, d *device, k targetKind) []target {
	if t.routes.PerDevice {
		return t.computeTargets(slot, d, k, nil)
	}
	ck := targetKey{labels: d.labels, node: d.node, reason: d.reason, kind: k}
	if tg, ok := t.targetCache[ck]; ok {
		return tg
	}
	if len(t.targetCache) >= maxTargetCache {
		clear(t.targetCache)
	}
	tg := t.computeTargets(slot, d, k, nil)
	t.targetCache[ck] = tg
	return tg
}

// computeTargets routes a device's alert of kind k. It records in *reads
// (when not nil) whether routing and grouping read the device's node and
// reason (readNode, readReason).
func (t *Tracker) computeTargets(slot uint32, d *device, k targetKind, reads *uint8) []target {
	get := t.labelsRead(slot, d, k, reads)
	routes := t.routes.Match(get)
	out := make([]target, 0, len(routes))
	for _, r := range routes {
		var gl map[string]string
		if r.GroupByAll {
			gl = t.allLabels(d)
			if reads != nil {
				*reads |= readNode | readReason
			}
		} else {
			gl = r.GroupLabels(get, nil)
		}
		key := r.GroupKey(gl)
		if k == kindFlap {
			key = string(events.AlertDeviceFlapping) + ":" + key
		}
		tg := target{route: r, kind: k.alertKind(), key: key, fp: t.fingerprint(k.alertKind(), key), labels: gl,
			receivers: r.Receivers, severity: events.Severity(r.Severity)}
		if k == kindOffline {
			tg.tiers = tierKeys(r, key)
		}
		out = append(out, tg)
	}
	return out
}

// tierKeys returns the keys of the escalation tier groups of a route group.
func tierKeys(r *route.Route, key string) []string {
	if len(r.Escalations) == 0 {
		return nil
	}
	out := make([]string, len(r.Escalations))
	for i, e := range r.Escalations {
		out[i] = key + "@" + strconv.Itoa(i+1) + ":" + e.After.String()
	}
	return out
}

// tierTarget is the group of escalation tier i (from 1) of a route group.
func tierTarget(base target, i int) target {
	tier := base.route.Escalations[i-1]
	base.key, base.tier, base.fp, base.g = base.tiers[i-1], i, "", nil
	base.receivers, base.severity = tier.Receivers, events.Severity(tier.Severity)
	base.tiers = nil
	return base
}

// offlineTargets returns the device_offline groups of a device: its route
// groups, or their inhibited copies when its alert is folded.
func (t *Tracker) offlineTargets(slot uint32, d *device) []target {
	var tgs []target
	if t.routes.PerDevice && d.flags&flagAlerting != 0 {
		// Routing reads the device id, so nothing is shared between
		// devices: keep an alerting device's targets until it leaves, and
		// after, while the cache has room, for its next outage.
		tgs = t.deviceTargets(slot, d)
	} else {
		tgs = t.targets(slot, d, kindOffline)
	}
	if d.fold == 0 {
		return tgs
	}
	og := t.topo.groupOf(t, d, int(d.fold-1))
	if og == nil {
		return tgs
	}
	return t.inhibitedTargets(tgs, og)
}

// deviceTargets are the cached targets of one device (per-device routing).
type deviceTargets struct {
	// key is what they were computed from, besides the device id; reads
	// says which of its node and reason they depend on (readNode,
	// readReason): the others may differ.
	key   targetKey
	reads uint8
	// live says the device is alerting: they hold until it leaves (or
	// drops out of) its groups, whatever its state says.
	live bool
	// used says the entry holds a device's targets (else it is free);
	// slot is the device's.
	used bool
	slot uint32
	tgs  []target
}

// slotTargets holds the deviceTargets of devices by slot: an index from
// slot to an entry of a pool, grown to the highest slot cached (4 bytes a
// device up to it), instead of a map (a hash and a cache miss or two per
// lookup, four lookups per outage alerted).
type slotTargets struct {
	index []uint32 // by slot: 1 + the index of its entry in pool, 0: none
	pool  []deviceTargets
	free  []uint32 // free entries of pool
	// live counts the entries of alerting devices.
	live int
}

// len is the number of entries.
func (c *slotTargets) len() int { return len(c.pool) - len(c.free) }

// get returns the entry of slot, nil if none.
func (c *slotTargets) get(slot uint32) *deviceTargets {
	if int(slot) < len(c.index) {
		if i := c.index[slot]; i != 0 {
			return &c.pool[i-1]
		}
	}
	return nil
}

// add returns a new entry for slot (which has none).
func (c *slotTargets) add(slot uint32) *deviceTargets {
	if int(slot) >= len(c.index) {
		c.index = slices.Grow(c.index, int(slot)+1-len(c.index))
		c.index = c.index[:cap(c.index)]
	}
	var i uint32
	if n := len(c.free); n > 0 {
		i = c.free[n-1]
		c.free = c.free[:n-1]
	} else {
		c.pool = append(c.pool, deviceTargets{})
		i = uint32(len(c.pool))
	}
	c.index[slot] = i
	e := &c.pool[i-1]
	e.used, e.slot = true, slot
	return e
}

// prune forgets the entries of devices that are not alerting.
func (c *slotTargets) prune() {
	for i := range c.pool {
		if e := &c.pool[i]; e.used && !e.live {
			c.index[e.slot] = 0
			*e = deviceTargets{}
			c.free = append(c.free, uint32(i+1))
		}
	}
}

// reset forgets every entry.
func (c *slotTargets) reset() {
	clear(c.index)
	clear(c.pool)
	c.pool, c.free, c.live = c.pool[:0], c.free[:0], 0
}

// maxAlertTargets bounds the cached targets of devices that are not
// alerting any more (those of alerting devices are always kept).
const maxAlertTargets = 1 << 15

// deviceTargets returns the targets of an alerting device's
// device_offline alert, from the cache when they were computed before from
// the same labels, node and reason (computeTargets is a function of those
// and the device id), or from the same labels when routing read neither
// node nor reason.
func (t *Tracker) deviceTargets(slot uint32, d *device) []target {
	ck := targetKey{labels: d.labels, node: d.node, reason: d.reason, kind: kindOffline}
	c := &t.alertTargets
	e := c.get(slot)
	if e != nil && e.live {
		return e.tgs
	}
	if e == nil || !e.fits(ck) {
		var reads uint8
		tgs := t.computeTargets(slot, d, kindOffline, &reads)
		if e == nil {
			if c.len() >= max(maxAlertTargets, 2*c.live) {
				c.prune()
			}
			e = c.add(slot)
		}
		e.key, e.reads, e.tgs = ck, reads, tgs
	}
	e.live = true
	c.live++
	return e.tgs
}

// fits reports whether the targets hold for a device with key k.
func (e *deviceTargets) fits(k targetKey) bool {
	return e.key.labels == k.labels && e.key.kind == k.kind &&
		(e.reads&readNode == 0 || e.key.node == k.node) && (e.reads&readReason == 0 || e.key.reason == k.reason)
}

// releaseTargets ends the hold of a device's cached targets (it left its
// groups).
func (t *Tracker) releaseTargets(slot uint32) {
	if e := t.alertTargets.get(slot); e != nil && e.live {
		e.live = false
		t.alertTargets.live--
	}
}

// group returns the group of a target, creating it when create is set.
func (t *Tracker) group(tg target, create bool) *group {
	g := t.groups[tg.key]
	if g != nil || !create {
		return g
	}
	if n := len(t.free); n > 0 {
		g = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		g = &group{}
	}
	if tg.fp == "" {
		tg.fp = t.fingerprint(tg.kind, tg.key)
	}
	g.key, g.fp, g.kind, g.route, g.tier, g.labels = tg.key, tg.fp, tg.kind, tg.route, tg.tier, tg.labels
	g.receivers, g.severity, g.inhibitedBy, g.topo = tg.receivers, tg.severity, tg.inhibitedBy, tg.topo
	t.groups[tg.key] = g
	return g
}

// maxFreeGroups bounds the emptied groups kept for reuse. With per-device
// groups (the default), a storm of alerts opens and closes one group per
// device: keeping them spares an allocation of a group and of its member
// lists per outage alerted. The first freeGroupMaps of them keep their
// member maps.
const (
	maxFreeGroups = 1 << 16
	freeGroupMaps = 1024
)

// targetGroup is group for a target of a cached list (offlineTargets): the
// group found or created is remembered in it, and used again while it has
// the target's key. A group has its key exactly while it is in t.groups
// (deleteGroup clears it; Reconfigure, which swaps the map, drops every
// cached target), so that spares a map lookup per join and leave.
func (t *Tracker) targetGroup(tg *target, create bool) *group {
	if g := tg.g; g != nil && g.key == tg.key {
		return g
	}
	g := t.group(*tg, create)
	tg.g = g
	return g
}

// deleteGroup ends a group and keeps it for reuse.
func (t *Tracker) deleteGroup(g *group) {
	delete(t.groups, g.key)
	g.firing.reset()
	g.resolved.reset()
	*g = group{firing: g.firing, resolved: g.resolved}
	if len(t.free) < maxFreeGroups {
		if len(t.free) >= freeGroupMaps {
			// Past the first ones, the member maps (groups of more
			// than smallSet devices) are not kept.
			g.firing.m, g.resolved.m = nil, nil
		}
		t.free = append(t.free, g)
	}
}

// join adds an alerting device to its device_offline groups (and, folded,
// to its group_outage) and schedules their flush. A device marked notified
// (recovery) counts as already announced.
func (t *Tracker) join(slot uint32, d *device, now int64, notified bool) {
	tgs := t.offlineTargets(slot, d)
	for i := range tgs {
		t.joinGroup(t.targetGroup(&tgs[i], true), slot, d, now, notified)
	}
	if d.fold != 0 {
		if og := t.topo.groupOf(t, d, int(d.fold-1)); og != nil {
			for _, tg := range t.outageTargets(og) {
				t.joinGroup(t.group(tg, true), slot, d, now, notified)
			}
		}
	}
}

func (t *Tracker) joinGroup(g *group, slot uint32, d *device, now int64, notified bool) {
	m := member{since: d.since, node: d.node, reason: d.reason, labels: d.labels, count: d.flapCount, notified: notified}
	g.resolved.del(slot)
	g.firing.put(slot, m)
	if notified {
		if !g.notified {
			g.notified, g.start, g.seq, g.last = true, d.since, 1, now
		}
		g.start = min(g.start, d.since)
		return
	}
	t.schedule(g, now)
}

// escalate joins the escalation tiers a firing device has reached by now,
// and queues a timer for the next one.
func (t *Tracker) escalate(slot uint32, d *device, now int64) {
	next := int64(0)
	for _, tg := range t.offlineTargets(slot, d) {
		for i, e := range tg.route.Escalations {
			due := satAdd(d.since, e.After.Milliseconds())
			if due > now {
				if next == 0 || due < next {
					next = due
				}
				break
			}
			g := t.group(tierTarget(tg, i+1), true)
			if _, in := g.firing.get(slot); !in {
				t.stats.Escalated++
				t.joinGroup(g, slot, d, now, false)
			}
		}
	}
	if next != 0 {
		t.timers.push(timer{due: next, since: d.since, slot: slot, kind: timerEscalate})
	}
}

// leave records that an alerting device recovered at until.
func (t *Tracker) leave(slot uint32, d *device, until, now int64) {
	t.leaveAll(slot, d, until, now, false)
}

// leaveAll takes an alerting device out of every group it is in: as
// recovered at until, or dropped (its alert moves elsewhere).
func (t *Tracker) leaveAll(slot uint32, d *device, until, now int64, drop bool) {
	tgs := t.offlineTargets(slot, d)
	for i := range tgs {
		tg := &tgs[i]
		t.leaveOrDrop(t.targetGroup(tg, false), slot, until, now, drop)
		for i := range tg.tiers {
			t.leaveOrDrop(t.groups[tg.tiers[i]], slot, until, now, drop)
		}
	}
	if d.fold != 0 {
		if og := t.topo.groupOf(t, d, int(d.fold-1)); og != nil {
			for _, tg := range t.outageTargets(og) {
				t.leaveOrDrop(t.group(tg, false), slot, until, now, drop)
			}
		}
		d.fold = 0
	}
	if t.routes.PerDevice {
		t.releaseTargets(slot)
	}
}

func (t *Tracker) leaveOrDrop(g *group, slot uint32, until, now int64, drop bool) {
	if drop {
		t.dropGroup(g, slot, until, now)
	} else {
		t.leaveGroup(g, slot, until, now)
	}
}

func (t *Tracker) leaveGroup(g *group, slot uint32, until, now int64) {
	if g == nil {
		return
	}
	m, ok := g.firing.del(slot)
	if !ok {
		return
	}
	if !m.notified {
		// Never announced: nothing to take back.
		if g.firing.len() == 0 && g.resolved.len() == 0 && !g.notified {
			t.deleteGroup(g)
		}
		return
	}
	m.until = until
	g.resolved.put(slot, m)
	t.schedule(g, now)
}

// dropGroup takes a device out of a group, at until, without reporting it
// recovered.
func (t *Tracker) dropGroup(g *group, slot uint32, until, now int64) {
	if g == nil {
		return
	}
	if _, ok := g.firing.del(slot); !ok {
		return
	}
	if g.firing.len() == 0 && g.resolved.len() == 0 && !g.notified {
		t.deleteGroup(g)
		return
	}
	g.dropped = max(g.dropped, until)
	if g.firing.len() == 0 {
		t.schedule(g, now)
	}
}

// grace returns a device's grace (ms): the shortest of its routes'.
func (t *Tracker) grace(slot uint32, d *device) int64 {
	ka := int(d.keepalive)
	if t.routes.UniformGrace {
		return max(1, t.routes.Root.GraceFor(ka).Milliseconds())
	}
	g := int64(0)
	for _, r := range t.routes.Match(t.labelsOf(slot, d, kindOffline)) {
		if v := r.GraceFor(ka).Milliseconds(); g == 0 || v < g {
			g = v
		}
	}
	return max(1, g)
}

// schedule sets the group's next flush after a change at now.
func (t *Tracker) schedule(g *group, now int64) {
	due := satAdd(now, g.route.GroupWait.Milliseconds())
	if g.notified {
		due = max(now, satAdd(g.last, g.route.GroupInterval.Milliseconds()))
		if g.route.GroupInterval == 0 {
			due = now // report changes at once, even if now is before last
		}
	}
	if g.next != 0 && g.next <= due {
		return
	}
	g.next = due
	t.gtimers.push(groupTimer{due: due, key: g.key, g: g})
}

// flushDue flushes every group whose flush is due at now, in (due, key)
// order.
func (t *Tracker) flushDue(out []Decision, now int64) []Decision {
	for len(t.gtimers) > 0 && t.gtimers[0].due <= now {
		tm := t.gtimers.pop()
		g := tm.g
		if g == nil || g.key != tm.key || g.next != tm.due {
			continue
		}
		g.next = 0
		out = t.flush(out, g, now)
	}
	return out
}

// flush sends the group's notification, if it has something to say.
func (t *Tracker) flush(out []Decision, g *group, now int64) []Decision {
	repeat := g.route.RepeatInterval.Milliseconds()
	switch {
	case g.firing.len() == 0:
		if g.notified {
			out = t.notify(out, g, events.StatusResolved, now)
		}
		t.deleteGroup(g)
		return out
	case !g.hasNews() && (repeat == 0 || now < satAdd(g.last, repeat)):
		// Nothing new since the last notification: wait for the repeat.
	default:
		out = t.notify(out, g, events.StatusFiring, now)
	}
	if repeat > 0 && g.next == 0 {
		g.next = satAdd(g.last, repeat)
		t.gtimers.push(groupTimer{due: g.next, key: g.key, g: g})
	}
	return out
}

// hasNews reports whether devices joined or recovered since the last
// notification.
func (g *group) hasNews() bool {
	if g.resolved.len() > 0 {
		return true
	}
	for _, m := range g.firing.all {
		if !m.notified {
			return true
		}
	}
	return false
}

// entry is a device listed in a notification.
type entry struct {
	slot uint32
	m    member
}

// notify appends one notification of g per receiver and marks what it
// announced.
func (t *Tracker) notify(out []Decision, g *group, status events.AlertStatus, now int64) []Decision {
	if !g.notified {
		g.start = 0
		for _, m := range g.firing.all {
			if g.start == 0 || m.since < g.start {
				g.start = m.since
			}
		}
		g.seq = 0
	}
	g.seq++
	fresh, still, recovered := t.scratch[0][:0], t.scratch[1][:0], t.scratch[2][:0]
	for slot, m := range g.firing.all {
		if m.notified {
			still = append(still, entry{slot, m})
		} else {
			fresh = append(fresh, entry{slot, m})
		}
	}
	ends := int64(0)
	for slot, m := range g.resolved.all {
		recovered = append(recovered, entry{slot, m})
		ends = max(ends, m.until)
	}
	bySince := func(a, b entry) int {
		if a.m.since != b.m.since {
			return cmpInt(a.m.since, b.m.since)
		}
		return strings.Compare(t.ids.get(t.devs[a.slot].id), t.ids.get(t.devs[b.slot].id))
	}
	byUntil := func(a, b entry) int {
		if a.m.until != b.m.until {
			return cmpInt(a.m.until, b.m.until)
		}
		return strings.Compare(t.ids.get(t.devs[a.slot].id), t.ids.get(t.devs[b.slot].id))
	}
	total := len(fresh) + len(recovered) + len(still)
	flaps := 0
	if g.kind == events.AlertDeviceFlapping {
		for _, part := range [3][]entry{fresh, recovered, still} {
			for _, e := range part {
				flaps += int(e.m.count)
			}
		}
	}
	// Only the listed devices need sorting: the first MaxAlertDevices of
	// new, recovered, still firing.
	room := events.MaxAlertDevices
	lf := smallest(fresh, room, bySince)
	room -= len(lf)
	lr := smallest(recovered, room, byUntil)
	room -= len(lr)
	ls := smallest(still, room, bySince)
	list := t.deviceList(len(lf) + len(lr) + len(ls))
	for pi, part := range [3][]entry{lf, lr, ls} {
		st := events.StatusFiring
		if pi == 1 {
			st = events.StatusResolved
		}
		for _, e := range part {
			ad := events.AlertDevice{
				DeviceID: t.ids.get(t.devs[e.slot].id), Status: st, Node: t.nodes.name(e.m.node),
				Reason: events.Reason(t.reasons.name(e.m.reason)), SinceMS: e.m.since, Labels: t.table.Map(e.m.labels),
			}
			if st == events.StatusResolved {
				ad.UntilMS = e.m.until
			}
			list = append(list, ad)
		}
	}
	silenced, silenceIDs := false, []string(nil)
	if len(t.silences) > 0 {
		silenced, silenceIDs = t.silenceGroup(g, fresh, still, recovered, now)
	}
	for _, e := range fresh {
		e.m.notified = true
		g.firing.put(e.slot, e.m)
	}
	t.scratch = [3][]entry{fresh, still, recovered}
	g.resolved.reset()
	g.notified, g.last = true, now

	var endsAt int64
	if status == events.StatusResolved {
		endsAt = max(ends, g.start, g.dropped)
	}
	a := events.AlertEvent{
		Fingerprint:   g.fp,
		Status:        status,
		Kind:          g.kind,
		Severity:      g.severity,
		GroupKey:      g.key,
		GroupLabels:   g.labels,
		Devices:       list,
		DevicesTotal:  total,
		StartsAtMS:    g.start,
		EndsAtMS:      endsAt,
		CreatedAtMS:   now,
		Silenced:      silenced,
		SilenceIDs:    silenceIDs,
		Inhibited:     g.inhibitedBy != "",
		InhibitedBy:   g.inhibitedBy,
		NewTotal:      len(fresh),
		ResolvedTotal: len(recovered),
		FiringTotal:   len(fresh) + len(still),
		Tier:          g.tier,
	}
	switch g.kind {
	case events.AlertDeviceFlapping:
		a.FlapCount = flaps
	case events.AlertGroupOutage:
		a.KnownTotal = int(t.topo.groups[g.topo-1].known)
	}
	return t.emit(out, &a, g.receivers, g.seq, len(fresh), len(recovered), len(fresh)+len(still))
}

// deviceList returns an empty list with room for n devices, carved from a
// shared block: one allocation for many notifications. Each list has its
// own capacity, so appending to one never writes into another.
func (t *Tracker) deviceList(n int) []events.AlertDevice {
	if n == 0 {
		return make([]events.AlertDevice, 0)
	}
	if n > cap(t.devSlab)-len(t.devSlab) {
		t.devSlab = make([]events.AlertDevice, 0, max(n, deviceSlab))
	}
	i := len(t.devSlab)
	t.devSlab = t.devSlab[:i+n]
	return t.devSlab[i : i : i+n]
}

// deviceSlab is the number of devices of a deviceList block.
const deviceSlab = 128

// emit appends the notification a once per receiver, as
// events.NewAlertEvent makes it (the tracker sets the ids): a is
// normalised and checked once, not copied per receiver and per check,
// since only the receiver and the id differ between receivers, and an id
// is never empty.
func (t *Tracker) emit(out []Decision, a *events.AlertEvent, receivers []string, seq uint32, fresh, recovered, firing int) []Decision {
	a.V = events.Version
	if a.DevicesTotal < len(a.Devices) {
		a.DevicesTotal = len(a.Devices)
	}
	if len(a.Devices) > events.MaxAlertDevices {
		a.Devices = a.Devices[:events.MaxAlertDevices]
	}
	a.Receiver, a.ID = "-", "-" // checked below, per receiver
	err := a.Validate()
	for _, r := range receivers {
		id := t.notificationID(r, a.Fingerprint, a.Status, a.StartsAtMS, a.EndsAtMS, seq)
		if err != nil || r == "" {
			t.stats.Rejected++
			continue
		}
		t.stats.Notifications++
		if a.Silenced {
			t.stats.Silenced++
		}
		if a.Inhibited {
			t.stats.Inhibited++
		}
		out = append(out, Decision{New: fresh, Resolved: recovered, Firing: firing})
		d := &out[len(out)-1].Alert
		*d = *a
		d.Receiver, d.ID = r, id
	}
	return out
}

// smallest returns the k smallest entries of es by cmp, sorted; it
// reorders es (keeping its elements). It costs about len(es) comparisons
// when k is much smaller than len(es).
func smallest(es []entry, k int, cmp func(a, b entry) int) []entry {
	if k <= 0 {
		return nil
	}
	if len(es) <= k {
		slices.SortFunc(es, cmp)
		return es
	}
	h := es[:k] // a max-heap of the k smallest so far
	for i := k/2 - 1; i >= 0; i-- {
		siftDown(h, i, cmp)
	}
	for i := k; i < len(es); i++ {
		if cmp(es[i], h[0]) < 0 {
			es[i], h[0] = h[0], es[i]
			siftDown(h, 0, cmp)
		}
	}
	slices.SortFunc(h, cmp)
	return h
}

// siftDown restores the max-heap property of h below i.
func siftDown(h []entry, i int, cmp func(a, b entry) int) {
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(h) && cmp(h[l], h[m]) > 0 {
			m = l
		}
		if r < len(h) && cmp(h[r], h[m]) > 0 {
			m = r
		}
		if m == i {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
