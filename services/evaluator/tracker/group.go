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
// resolved notification when its last device recovers.
type group struct {
	key       string
	route     *route.Route
	labels    map[string]string
	receivers []string
	severity  events.Severity
	// firing holds the alerting devices, by id (the tracker's map key).
	firing map[string]member
	// resolved holds notified devices that recovered since the last flush.
	resolved map[string]member
	start    int64  // episode start: min since at the first notification
	seq      uint32 // notifications sent in this episode
	notified bool   // a firing notification was sent in this episode
	last     int64  // time of the last notification
	next     int64  // scheduled flush (0: none)
}

// member is a device in a group.
type member struct {
	since, until int64
	node, reason uint32
	labels       labels.Set
	notified     bool // listed as firing in a notification
}

// groupTimer is a scheduled flush; stale ones (next changed, group gone)
// are skipped.
type groupTimer struct {
	due int64
	key string
}

func (a groupTimer) before(b groupTimer) bool {
	if a.due != b.due {
		return a.due < b.due
	}
	return a.key < b.key
}

// labelsOf returns the label lookup of a device: its label set plus the
// implicit labels.
func (t *Tracker) labelsOf(id string, d *device) func(string) string {
	return func(name string) string {
		switch name {
		case labels.DeviceID:
			return id
		case labels.Node:
			return t.nodes.name(d.node)
		case labels.Reason:
			return t.reasons.name(d.reason)
		}
		return t.table.Get(d.labels, name)
	}
}

// allLabels returns every label of a device, implicit ones included.
func (t *Tracker) allLabels(id string, d *device) map[string]string {
	m := t.table.Map(d.labels)
	if m == nil {
		m = make(map[string]string, 3)
	}
	m[labels.DeviceID] = id
	if n := t.nodes.name(d.node); n != "" {
		m[labels.Node] = n
	}
	if r := t.reasons.name(d.reason); r != "" {
		m[labels.Reason] = r
	}
	return m
}

// target is a group an alerting device belongs to: a route's group, or one
// of its escalation tiers (tier > 0).
type target struct {
	route  *route.Route
	tier   int // 0: the route's group; i: Escalations[i-1]
	key    string
	labels map[string]string
}

// targetKey is what routing and grouping depend on when they do not read
// the device id.
type targetKey struct {
	labels       labels.Set
	node, reason uint32
}

// maxTargetCache bounds the routing cache; it is cleared when full.
const maxTargetCache = 1 << 16

// targets returns the route groups of a device (tiers not included). The
// result must not be modified.
func (t *Tracker) targets(id string, d *device) []target {
	if t.routes.PerDevice {
		return t.computeTargets(id, d)
	}
	k := targetKey{labels: d.labels, node: d.node, reason: d.reason}
	if tg, ok := t.targetCache[k]; ok {
		return tg
	}
	if len(t.targetCache) >= maxTargetCache {
		clear(t.targetCache)
	}
	tg := t.computeTargets(id, d)
	t.targetCache[k] = tg
	return tg
}

func (t *Tracker) computeTargets(id string, d *device) []target {
	get := t.labelsOf(id, d)
	routes := t.routes.Match(get)
	out := make([]target, 0, len(routes))
	for _, r := range routes {
		var gl map[string]string
		if r.GroupByAll {
			gl = t.allLabels(id, d)
		} else {
			gl = r.GroupLabels(get, nil)
		}
		out = append(out, target{route: r, key: r.GroupKey(gl), labels: gl})
	}
	return out
}

// tierTarget is the group of escalation tier i (from 1) of a route group.
func tierTarget(base target, i int) target {
	base.tier = i
	base.key += "@" + strconv.Itoa(i) + ":" + base.route.Escalations[i-1].After.String()
	return base
}

// group returns the group of a target, creating it when create is set.
func (t *Tracker) group(tg target, create bool) *group {
	g := t.groups[tg.key]
	if g != nil || !create {
		return g
	}
	g = &group{key: tg.key, route: tg.route, labels: tg.labels, firing: map[string]member{}, resolved: map[string]member{},
		receivers: tg.route.Receivers, severity: events.Severity(tg.route.Severity)}
	if tg.tier > 0 {
		tier := tg.route.Escalations[tg.tier-1]
		g.receivers, g.severity = tier.Receivers, events.Severity(tier.Severity)
	}
	t.groups[tg.key] = g
	return g
}

// join adds an alerting device to its route groups and schedules their
// flush. A device marked notified (recovery) counts as already announced.
func (t *Tracker) join(id string, d *device, now int64, notified bool) {
	for _, tg := range t.targets(id, d) {
		t.joinGroup(t.group(tg, true), id, d, now, notified)
	}
}

func (t *Tracker) joinGroup(g *group, id string, d *device, now int64, notified bool) {
	m := member{since: d.since, node: d.node, reason: d.reason, labels: d.labels, notified: notified}
	delete(g.resolved, id)
	g.firing[id] = m
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
func (t *Tracker) escalate(id string, d *device, now int64) {
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
			g := t.group(tierTarget(tg, i+1), true)
			if _, in := g.firing[id]; !in {
				t.stats.Escalated++
				t.joinGroup(g, id, d, now, false)
			}
		}
	}
	if next != 0 {
		t.timers.push(timer{due: next, since: -d.since, device: id})
	}
}

// leave records that an alerting device recovered at until.
func (t *Tracker) leave(id string, d *device, until, now int64) {
	for _, tg := range t.targets(id, d) {
		t.leaveGroup(t.group(tg, false), id, until, now)
		for i := range tg.route.Escalations {
			t.leaveGroup(t.group(tierTarget(tg, i+1), false), id, until, now)
		}
	}
}

func (t *Tracker) leaveGroup(g *group, id string, until, now int64) {
	if g == nil {
		return
	}
	m, ok := g.firing[id]
	if !ok {
		return
	}
	delete(g.firing, id)
	if !m.notified {
		// Never announced: nothing to take back.
		if len(g.firing) == 0 && len(g.resolved) == 0 && !g.notified {
			delete(t.groups, g.key)
		}
		return
	}
	m.until = until
	g.resolved[id] = m
	t.schedule(g, now)
}

// graceMS returns a device's grace: the shortest of its routes'.
func (t *Tracker) grace(id string, d *device) int64 {
	ka := int(d.keepalive)
	if t.routes.UniformGrace {
		return max(1, t.routes.Root.GraceFor(ka).Milliseconds())
	}
	g := int64(0)
	for _, r := range t.routes.Match(t.labelsOf(id, d)) {
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
	t.gtimers.push(groupTimer{due: due, key: g.key})
}

// flushDue flushes every group whose flush is due at now, in (due, key)
// order.
func (t *Tracker) flushDue(out []Decision, now int64) []Decision {
	for len(t.gtimers) > 0 && t.gtimers[0].due <= now {
		tm := t.gtimers.pop()
		g := t.groups[tm.key]
		if g == nil || g.next != tm.due {
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
	case len(g.firing) == 0:
		if g.notified && len(g.resolved) > 0 {
			out = t.notify(out, g, events.StatusResolved, now)
		}
		delete(t.groups, g.key)
		return out
	case !g.hasNews() && (repeat == 0 || now < satAdd(g.last, repeat)):
		// Nothing new since the last notification: wait for the repeat.
	default:
		out = t.notify(out, g, events.StatusFiring, now)
	}
	if repeat > 0 && g.next == 0 {
		g.next = satAdd(g.last, repeat)
		t.gtimers.push(groupTimer{due: g.next, key: g.key})
	}
	return out
}

// hasNews reports whether devices joined or recovered since the last
// notification.
func (g *group) hasNews() bool {
	if len(g.resolved) > 0 {
		return true
	}
	for _, m := range g.firing {
		if !m.notified {
			return true
		}
	}
	return false
}

// notify appends one notification of g per receiver and marks what it
// announced.
func (t *Tracker) notify(out []Decision, g *group, status events.AlertStatus, now int64) []Decision {
	if !g.notified {
		g.start = 0
		for _, m := range g.firing {
			if g.start == 0 || m.since < g.start {
				g.start = m.since
			}
		}
		g.seq = 0
	}
	g.seq++
	type entry struct {
		id string
		m  member
		st events.AlertStatus
	}
	fresh := make([]entry, 0, len(g.firing))
	still := make([]entry, 0, len(g.firing))
	for id, m := range g.firing {
		if m.notified {
			still = append(still, entry{id, m, events.StatusFiring})
		} else {
			fresh = append(fresh, entry{id, m, events.StatusFiring})
		}
	}
	recovered := make([]entry, 0, len(g.resolved))
	ends := int64(0)
	for id, m := range g.resolved {
		recovered = append(recovered, entry{id, m, events.StatusResolved})
		ends = max(ends, m.until)
	}
	bySince := func(a, b entry) int {
		if a.m.since != b.m.since {
			return cmpInt(a.m.since, b.m.since)
		}
		return strings.Compare(a.id, b.id)
	}
	slices.SortFunc(fresh, bySince)
	slices.SortFunc(still, bySince)
	slices.SortFunc(recovered, func(a, b entry) int {
		if a.m.until != b.m.until {
			return cmpInt(a.m.until, b.m.until)
		}
		return strings.Compare(a.id, b.id)
	})
	total := len(fresh) + len(recovered) + len(still)
	list := make([]events.AlertDevice, 0, min(total, events.MaxAlertDevices))
	for _, part := range [][]entry{fresh, recovered, still} {
		for _, e := range part {
			if len(list) == events.MaxAlertDevices {
				break
			}
			ad := events.AlertDevice{
				DeviceID: e.id, Status: e.st, Node: t.nodes.name(e.m.node),
				Reason: events.Reason(t.reasons.name(e.m.reason)), SinceMS: e.m.since, Labels: t.table.Map(e.m.labels),
			}
			if e.st == events.StatusResolved {
				ad.UntilMS = e.m.until
			}
			list = append(list, ad)
		}
	}
	for _, e := range fresh {
		e.m.notified = true
		g.firing[e.id] = e.m
	}
	clear(g.resolved)
	g.notified, g.last = true, now

	fp := groupFingerprint(g.key)
	var endsAt int64
	if status == events.StatusResolved {
		endsAt = max(ends, g.start)
	}
	for _, r := range g.receivers {
		a, err := events.NewAlertEvent(events.AlertEvent{
			ID:           notificationID(r, fp, status, g.start, endsAt, g.seq),
			Fingerprint:  fp,
			Receiver:     r,
			Status:       status,
			Kind:         events.AlertDeviceOffline,
			Severity:     g.severity,
			GroupKey:     g.key,
			GroupLabels:  g.labels,
			Devices:      list,
			DevicesTotal: total,
			StartsAtMS:   g.start,
			EndsAtMS:     endsAt,
			CreatedAtMS:  now,
		})
		if err != nil {
			t.stats.Rejected++
			continue
		}
		t.stats.Notifications++
		out = append(out, Decision{Alert: a, New: len(fresh), Resolved: len(recovered), Firing: len(fresh) + len(still)})
	}
	return out
}

// groupFingerprint is the stable fingerprint of a group's notifications.
func groupFingerprint(key string) string {
	return events.ContentID(string(events.AlertDeviceOffline), key)
}

// notificationID is a notification's idempotency key: the group episode
// (fingerprint and start) and the notification's sequence number in it, so
// that repeats and updates get distinct ids and a replay derives the same.
func notificationID(receiver, fp string, status events.AlertStatus, start, end int64, seq uint32) string {
	return events.ContentID("alert.v1", receiver, fp, string(status),
		strconv.FormatInt(start, 10), strconv.FormatInt(end, 10), strconv.FormatUint(uint64(seq), 10))
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

// groupHeap is a binary min-heap of group timers.
type groupHeap = minHeap[groupTimer]
