package tracker

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
)

// Correlation folds a mass outage into one alert. Devices are grouped by
// each topology key (a label: site, gateway, node, a /24 subnet label, …);
// when, within Window, at least MinDevices devices of one topology group go
// offline (and are still offline), or at least MinRatio of the group's known
// devices, the group is in a mass outage: the devices of the group whose
// grace ends while it lasts are folded into one group_outage alert (group
// labels {key: value}, DevicesTotal = the devices folded in, KnownTotal =
// the devices of the group), routed like any alert (alertname
// group_outage). Their own device_offline alerts are still decided, in
// inhibited copies of their groups (Inhibited, InhibitedBy = the
// group_outage's fingerprint): recorded, not delivered.
//
// The mass outage ends when the devices of the group still offline no
// longer meet the threshold: the group_outage resolves and the devices still
// down get their own, delivered alerts if they stay down for their grace
// from then (a site coming back over a few seconds does not page device by
// device as its count falls under the threshold). Devices that fired before the mass
// outage was detected keep their own alerts: a grace period longer than the
// time the first MinDevices devices of a failing switch take to drop keeps
// every device of it from paging individually.
type Correlation struct {
	// Keys are the topology label names, in priority order: a device in
	// mass outages of several keys is folded into the first.
	Keys []string `yaml:"keys"`
	// Window is the span in which the devices must have gone offline.
	Window time.Duration `yaml:"window"`
	// MinDevices is K: this many devices of one group offline within the
	// window make a mass outage (0: only MinRatio).
	MinDevices int `yaml:"min_devices"`
	// MinRatio is X as a fraction (0.3 = 30 %) of the group's known devices
	// (0: only MinDevices). It needs at least two devices offline.
	MinRatio float64 `yaml:"min_ratio"`
	// Severity of the group_outage alerts (default critical).
	Severity events.Severity `yaml:"severity"`
}

// maxTopoKeys bounds the topology keys.
const maxTopoKeys = 8

// Validate checks the settings; errors name the field under prefix (e.g.
// "evaluator.correlation") and say how to fix it.
func (c Correlation) Validate(prefix string) error {
	if len(c.Keys) == 0 {
		if c.Window != 0 || c.MinDevices != 0 || c.MinRatio != 0 || c.Severity != "" {
			return fmt.Errorf("%s.keys is empty but other settings are set: name the topology labels, e.g. [site, gateway]", prefix)
		}
		return nil
	}
	if len(c.Keys) > maxTopoKeys {
		return fmt.Errorf("%s.keys lists %d labels: use at most %d", prefix, len(c.Keys), maxTopoKeys)
	}
	for i, k := range c.Keys {
		switch {
		case !labels.ValidName(k):
			return fmt.Errorf("%s.keys[%d] %q is not a label name: use letters, digits and _, not starting with a digit", prefix, i, k)
		case k == labels.DeviceID || k == labels.Reason || k == labels.AlertName:
			return fmt.Errorf("%s.keys[%d] %q is not a topology label: use a label shared by devices, e.g. site, gateway or node", prefix, i, k)
		case slices.Contains(c.Keys[:i], k):
			return fmt.Errorf("%s.keys[%d] %q is listed twice: remove the duplicate", prefix, i, k)
		}
	}
	switch {
	case c.Window <= 0:
		return fmt.Errorf("%s.window is %s: use a positive duration, e.g. 2m", prefix, c.Window)
	case c.MinDevices < 0 || c.MinDevices == 1:
		return fmt.Errorf("%s.min_devices is %d: use at least 2 (one device is not a mass outage), or 0 to use min_ratio alone", prefix, c.MinDevices)
	case math.IsNaN(c.MinRatio) || c.MinRatio < 0 || c.MinRatio > 1:
		return fmt.Errorf("%s.min_ratio is %g: use a fraction from 0 to 1, e.g. 0.3 for 30 %%", prefix, c.MinRatio)
	case c.MinDevices == 0 && c.MinRatio == 0:
		return fmt.Errorf("%s: set min_devices, min_ratio or both, e.g. min_devices: 20", prefix)
	case c.Severity != "" && !validSeverity(c.Severity):
		return fmt.Errorf("%s.severity is %q: use info, warning or critical", prefix, c.Severity)
	}
	return nil
}

// topology is the compiled correlation and the state of every topology
// group. Membership counters are O(1) per device and event.
type topology struct {
	on         bool
	keys       []string
	nodeKey    int // index of the node key (-1: none)
	window     int64
	minDevices int32
	ratioPPM   int64
	severity   events.Severity

	groups []*topoGroup        // by id-1
	index  map[topoRef]uint32  // → id
	bySet  []uint32            // label set → [computed, id per key], stride len(keys)+1
	byNode []uint32            // node → id of its group of the node key
	ids    [maxTopoKeys]uint32 // scratch
	cache  map[string][]target // inhibited targets, by outage suffix + route group keys
}

// topoRef names a topology group.
type topoRef struct {
	key   uint8
	value string
}

// topoGroup is the state of one topology group.
type topoGroup struct {
	key   uint8
	value string
	// known counts the devices of the group; down those offline; recent
	// those offline whose outage began after horizon.
	known, down, recent int32
	// horizon is the latest outage start seen minus the window; outages
	// starting at or before it no longer count as recent.
	horizon, maxSince int64
	// queue holds the outages counted in recent, oldest first (lazily
	// cleaned: entries of devices back online are skipped).
	queue minHeap[recentOutage]
	// active says the group is in a mass outage, since when.
	active bool
	since  int64

	targets []target // group_outage targets, computed once
	fp      string   // fingerprint of the first target (InhibitedBy)
	suffix  string   // key suffix of the inhibited copies
}

type recentOutage struct {
	since int64
	slot  uint32
}

func (a recentOutage) before(b recentOutage) bool {
	if a.since != b.since {
		return a.since < b.since
	}
	return a.slot < b.slot
}

func newTopology(c Correlation) topology {
	tp := topology{on: len(c.Keys) > 0, keys: slices.Clone(c.Keys), nodeKey: slices.Index(c.Keys, labels.Node),
		window: c.Window.Milliseconds(), minDevices: int32(c.MinDevices), ratioPPM: int64(math.Round(c.MinRatio * 1e6)),
		severity: c.Severity, index: map[topoRef]uint32{}, cache: map[string][]target{}}
	if tp.severity == "" {
		tp.severity = events.SeverityCritical
	}
	return tp
}

// meets reports whether n offline devices out of known reach the threshold.
func (tp *topology) meets(n, known int32) bool {
	if tp.minDevices > 0 && n >= tp.minDevices {
		return true
	}
	return tp.ratioPPM > 0 && n >= 2 && known > 0 && int64(n)*1_000_000 >= tp.ratioPPM*int64(known)
}

// lookup returns the id of a topology group, creating it.
func (tp *topology) lookup(key int, value string) uint32 {
	if value == "" {
		return 0
	}
	ref := topoRef{key: uint8(key), value: value}
	if id, ok := tp.index[ref]; ok {
		return id
	}
	ref.value = strings.Clone(value)
	tp.groups = append(tp.groups, &topoGroup{key: ref.key, value: ref.value, horizon: math.MinInt64})
	id := uint32(len(tp.groups))
	tp.index[ref] = id
	return id
}

// topoIDs returns the topology groups of a device, one per key (0: none).
// The result is valid until the next call.
func (t *Tracker) topoIDs(d *device) []uint32 { return t.topoIDsIn(&t.topo, d) }

// topoIDsIn is topoIDs against topology tp (Reconfigure builds a new one
// beside t.topo).
func (t *Tracker) topoIDsIn(tp *topology, d *device) []uint32 {
	n := len(tp.keys)
	base := int(d.labels) * (n + 1)
	if base+n >= len(tp.bySet) || tp.bySet[base] == 0 {
		for len(tp.bySet) <= base+n {
			tp.bySet = append(tp.bySet, 0)
		}
		tp.bySet[base] = 1
		for i, k := range tp.keys {
			if i != tp.nodeKey {
				tp.bySet[base+1+i] = tp.lookup(i, t.table.Get(d.labels, k))
			}
		}
	}
	ids := tp.ids[:n]
	copy(ids, tp.bySet[base+1:base+1+n])
	if tp.nodeKey >= 0 {
		for len(tp.byNode) <= int(d.node) {
			tp.byNode = append(tp.byNode, 0)
		}
		if tp.byNode[d.node] == 0 {
			tp.byNode[d.node] = tp.lookup(tp.nodeKey, t.nodes.name(d.node))
		}
		ids[tp.nodeKey] = tp.byNode[d.node]
	}
	return ids
}

// groupOf returns the device's topology group of key i (nil: none).
func (tp *topology) groupOf(t *Tracker, d *device, i int) *topoGroup {
	if !tp.on || i >= len(tp.keys) {
		return nil
	}
	id := t.topoIDsIn(tp, d)[i]
	if id == 0 {
		return nil
	}
	return tp.groups[id-1]
}

// topoJoin adds (delta 1) or removes (-1) an online device to or from the
// known counts of its topology groups.
func (t *Tracker) topoJoin(d *device, delta int32) {
	if !t.topo.on {
		return
	}
	for _, id := range t.topoIDs(d) {
		if id != 0 {
			t.topo.groups[id-1].known += delta
		}
	}
}

// topoDown counts a real outage of d (starting at d.since) in its topology
// groups and starts a mass outage where it crosses the threshold.
func (t *Tracker) topoDown(slot uint32, d *device) {
	tp := &t.topo
	for _, id := range t.topoIDs(d) {
		if id == 0 {
			continue
		}
		g := tp.groups[id-1]
		g.down++
		if d.since > g.horizon {
			g.queue.push(recentOutage{since: d.since, slot: slot})
			g.recent++
			if d.since > g.maxSince {
				g.maxSince = d.since
				if h := g.maxSince - tp.window; h > g.horizon {
					g.horizon = h
					t.expire(g)
				}
			}
		}
		if !g.active && tp.meets(g.recent, g.known) {
			g.active, g.since = true, d.since
			t.stats.Correlated++
		}
	}
}

// expire drops the outages that started at or before the horizon from the
// recent count.
func (t *Tracker) expire(g *topoGroup) {
	for len(g.queue) > 0 && g.queue[0].since <= g.horizon {
		e := g.queue.pop()
		if d := &t.devs[e.slot]; d.state == stateOffline && d.since == e.since {
			g.recent--
		}
	}
}

// topoUp counts the end of an outage of d in its topology groups and ends
// the mass outages that no longer meet the threshold.
func (t *Tracker) topoUp(slot uint32, d *device, until, now int64) {
	tp := &t.topo
	var ended []uint32
	for _, id := range t.topoIDs(d) {
		if id == 0 {
			continue
		}
		g := tp.groups[id-1]
		g.down--
		if d.since > g.horizon {
			g.recent--
		}
		if g.active && !tp.meets(g.down, g.known) {
			ended = append(ended, id)
		}
	}
	for _, id := range ended {
		t.endOutage(tp.groups[id-1], until, now)
	}
}

// foldKey returns 1 + the first topology key whose group of d is in a mass
// outage (0: none).
func (t *Tracker) foldKey(d *device) uint8 {
	for i, id := range t.topoIDs(d) {
		if id != 0 && t.topo.groups[id-1].active {
			return uint8(i + 1)
		}
	}
	return 0
}

// endOutage ends the mass outage of g at until: its group_outage resolves
// and the devices folded into it leave it. Those still down get their own
// alerts if they stay down for their grace from until: a site that comes
// back over a few seconds does not page device by device as the count
// falls under the threshold.
func (t *Tracker) endOutage(g *topoGroup, until, now int64) {
	g.active = false
	var slots []uint32
	for _, tg := range t.outageTargets(g) {
		if grp := t.groups[tg.key]; grp != nil {
			for s := range grp.firing.all {
				slots = append(slots, s)
			}
		}
	}
	slices.Sort(slots)
	slots = slices.Compact(slots)
	for _, s := range slots {
		d := &t.devs[s]
		if d.fold == 0 || t.topo.groupOf(t, d, int(d.fold-1)) != g {
			continue
		}
		t.leaveAll(s, d, until, now, true)
		d.flags = d.flags&^flagAlerting | flagPending
		t.timers.push(timer{due: satAdd(until, t.grace(s, d)), since: d.since, slot: s, kind: timerGrace})
	}
}

// outageTargets returns the group_outage groups of a topology group: one
// per route its alert matches (alertname group_outage, and its one label).
func (t *Tracker) outageTargets(g *topoGroup) []target {
	if g.targets != nil {
		return g.targets
	}
	name := t.topo.keys[g.key]
	gl := map[string]string{name: g.value}
	get := func(l string) string {
		switch l {
		case name:
			return g.value
		case labels.AlertName:
			return string(events.AlertGroupOutage)
		}
		return ""
	}
	id := t.topo.index[topoRef{key: g.key, value: g.value}]
	for _, r := range t.routes.Match(get) {
		key := string(events.AlertGroupOutage) + ":" + r.GroupKey(gl)
		g.targets = append(g.targets, target{route: r, kind: events.AlertGroupOutage, key: key, fp: t.fingerprint(events.AlertGroupOutage, key), labels: gl,
			receivers: r.Receivers, severity: t.topo.severity, topo: id})
	}
	g.fp = t.fingerprint(events.AlertGroupOutage, g.targets[0].key)
	g.suffix = "~" + string(events.AlertGroupOutage) + "{" + name + "=" + strconv.Quote(g.value) + "}"
	return g.targets
}

// inhibitedTargets returns the inhibited copies of a folded device's route
// groups.
func (t *Tracker) inhibitedTargets(tgs []target, og *topoGroup) []target {
	t.outageTargets(og)
	ck := og.suffix
	for _, tg := range tgs {
		ck += "\x00" + tg.key
	}
	if out, ok := t.topo.cache[ck]; ok {
		return out
	}
	out := make([]target, len(tgs))
	for i, tg := range tgs {
		tg.key += og.suffix
		tg.fp, tg.g = "", nil
		tg.tiers = tierKeys(tg.route, tg.key)
		tg.inhibitedBy = og.fp
		out[i] = tg
	}
	if len(t.topo.cache) >= maxTargetCache {
		clear(t.topo.cache)
	}
	t.topo.cache[ck] = out
	return out
}
