package tracker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
)

// Snapshots. MarshalSnapshot captures the whole state of a tracker — the
// devices (connection, outage, flap penalty, fold), the timers, the groups
// with what each already sent and when, the flapping groups, node health
// with the held timers, the topology groups with their correlation state,
// the silences with what they matched, and the counters — in a compact,
// versioned binary format. RestoreSnapshot loads it into a tracker created
// by New with the same config; applying the same inputs to both then gives
// byte-identical decisions.
//
// Format (version 2): the magic "FWTS", a version byte, then sections of
// varints and length-prefixed strings in a fixed order. Label sets are
// numbered by first use, so that the encoding does not depend on the label
// table's ids; maps are written sorted; heaps as their arrays (pop order
// is part of the state).

// snapshotMagic starts every snapshot.
const snapshotMagic = "FWTS"

// snapshotVersion is the format version written. Version 1 (still read)
// had no connection versions and kept flap times in whole seconds.
const snapshotVersion = 2

// ErrSnapshot is wrapped by every RestoreSnapshot error.
var ErrSnapshot = errors.New("invalid tracker snapshot")

// MarshalSnapshot encodes the tracker's state.
func (t *Tracker) MarshalSnapshot() ([]byte, error) {
	w := &snapWriter{sets: map[labels.Set]uint64{}}
	w.buf = make([]byte, 0, 64+len(t.devs)*40)
	w.buf = append(w.buf, snapshotMagic...)
	w.buf = append(w.buf, snapshotVersion)
	w.str(t.configDigest())

	// Label sets, numbered by first use: devices, then groups by key.
	keys := make([]string, 0, len(t.groups))
	for k := range t.groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i := range t.devs {
		w.useSet(t.devs[i].labels)
	}
	for _, k := range keys {
		g := t.groups[k]
		for _, ms := range []*memberSet{&g.firing, &g.resolved} {
			for _, e := range sortedMembers(ms) {
				w.useSet(e.m.labels)
			}
		}
	}
	w.uint(uint64(len(w.order)))
	for _, s := range w.order {
		ls := t.table.Labels(s)
		w.uint(uint64(len(ls)))
		for _, l := range ls {
			w.str(l.Name)
			w.str(l.Value)
		}
	}

	// Interned names.
	for _, in := range []*interner{&t.nodes, &t.reasons} {
		w.uint(uint64(len(in.names) - 1))
		for _, n := range in.names[1:] {
			w.str(n)
		}
	}

	// Devices, by slot.
	w.uint(uint64(len(t.devs)))
	prev := int64(0)
	for i := range t.devs {
		d := &t.devs[i]
		w.str(t.ids.get(d.id))
		w.uint(uint64(d.vkind) | uint64(d.seq)<<2)
		if d.vkind == verKey {
			// connAt is a version: since is the time.
			w.int(d.since - prev)
			prev = d.since
			w.int(d.connAt)
		} else {
			w.int(d.connAt - prev)
			prev = d.connAt
			w.int(d.since - d.connAt)
		}
		w.uint(uint64(d.node))
		w.uint(uint64(d.reason))
		w.uint(w.sets[d.labels])
		w.uint(uint64(d.penalty))
		if ft := d.flapTime(); ft == 0 {
			w.uint(0)
		} else {
			w.uint(1 + zigzag(ft-d.since))
		}
		w.uint(uint64(d.keepalive))
		w.uint(uint64(d.flapCount))
		w.uint(uint64(d.state) | uint64(d.flags)<<2 | uint64(d.fold)<<5)
	}

	// Timers, as the heap's array.
	w.uint(uint64(len(t.timers)))
	prev = 0
	for _, tm := range t.timers {
		w.int(tm.due - prev)
		prev = tm.due
		w.int(tm.due - tm.since)
		w.uint(uint64(tm.slot))
		w.uint(uint64(tm.kind))
	}

	// Groups, by key.
	w.uint(uint64(len(keys)))
	for _, k := range keys {
		g := t.groups[k]
		w.str(g.key)
		w.str(string(g.kind))
		w.uint(uint64(g.route.Index))
		w.uint(uint64(g.tier))
		w.strMap(g.labels)
		w.uint(uint64(len(g.receivers)))
		for _, r := range g.receivers {
			w.str(r)
		}
		w.str(string(g.severity))
		w.str(g.inhibitedBy)
		w.uint(uint64(g.topo))
		w.int(g.start)
		w.uint(uint64(g.seq))
		w.bool(g.notified)
		w.int(g.last)
		w.int(g.next)
		w.int(g.dropped)
		for _, ms := range []*memberSet{&g.firing, &g.resolved} {
			es := sortedMembers(ms)
			w.uint(uint64(len(es)))
			for _, e := range es {
				m := e.m
				w.uint(uint64(e.slot))
				w.int(m.since)
				w.int(m.until)
				w.uint(uint64(m.node))
				w.uint(uint64(m.reason))
				w.uint(w.sets[m.labels])
				w.uint(uint64(m.count))
				w.bool(m.notified)
			}
		}
	}
	w.uint(uint64(len(t.gtimers)))
	for _, gt := range t.gtimers {
		w.int(gt.due)
		w.str(gt.key)
	}

	// Flapping devices' groups, by slot.
	flapping := make([]uint32, 0, len(t.flapGroups))
	for slot := range t.flapGroups {
		flapping = append(flapping, slot)
	}
	slices.Sort(flapping)
	w.uint(uint64(len(flapping)))
	for _, slot := range flapping {
		w.uint(uint64(slot))
		w.uint(uint64(len(t.flapGroups[slot])))
		for _, k := range t.flapGroups[slot] {
			w.str(k)
		}
	}

	// Node health.
	w.uint(uint64(len(t.nodeInfo)))
	for _, ns := range t.nodeInfo {
		w.int(int64(ns.devices))
		w.bool(ns.silent)
		w.int(ns.since)
		w.uint(uint64(len(ns.held)))
		for _, tm := range ns.held {
			w.int(tm.due)
			w.int(tm.due - tm.since)
			w.uint(uint64(tm.slot))
			w.uint(uint64(tm.kind))
		}
	}

	// Topology groups, by id.
	w.uint(uint64(len(t.topo.groups)))
	for _, g := range t.topo.groups {
		w.uint(uint64(g.key))
		w.str(g.value)
		w.int(int64(g.known))
		w.int(int64(g.down))
		w.int(int64(g.recent))
		w.int(g.horizon)
		w.int(g.maxSince)
		w.bool(g.active)
		w.int(g.since)
		w.uint(uint64(len(g.queue)))
		for _, e := range g.queue {
			w.int(e.since)
			w.uint(uint64(e.slot))
		}
	}

	// Silences, by id.
	w.uint(uint64(len(t.silences)))
	for _, s := range t.silences {
		w.str(s.s.ID)
		w.uint(uint64(len(s.s.Matchers)))
		for _, m := range s.s.Matchers {
			w.str(m)
		}
		w.int(s.s.StartsAt.UnixNano())
		w.int(s.s.EndsAt.UnixNano())
		w.str(s.s.Comment)
		w.str(s.s.CreatedBy)
		w.bool(s.s.ExpireWhenResolved)
		w.bool(s.matched)
		w.bool(s.expired)
		pending := make([]uint32, 0, len(s.pending))
		for slot := range s.pending {
			pending = append(pending, slot)
		}
		slices.Sort(pending)
		w.uint(uint64(len(pending)))
		for _, slot := range pending {
			w.uint(uint64(slot))
		}
		aggs := make([]string, 0, len(s.aggs))
		for k := range s.aggs {
			aggs = append(aggs, k)
		}
		slices.Sort(aggs)
		w.uint(uint64(len(aggs)))
		for _, k := range aggs {
			w.str(k)
		}
	}

	// Counters.
	st := reflect.ValueOf(t.stats)
	w.uint(uint64(st.NumField()))
	for i := range st.NumField() {
		w.uint(st.Field(i).Uint())
	}
	return w.buf, nil
}

// configDigest names what a snapshot's state depends on in the config: the
// routes and the topology keys.
func (t *Tracker) configDigest() string {
	var b strings.Builder
	for _, r := range t.routes.All {
		b.WriteString(r.ID)
		b.WriteByte(',')
	}
	b.WriteByte('|')
	b.WriteString(strings.Join(t.topo.keys, ","))
	return b.String()
}

// RestoreSnapshot loads a snapshot into t, which must be new (no input
// applied) and created with the same config as the tracker that wrote it.
func (t *Tracker) RestoreSnapshot(b []byte) error {
	if len(t.devs) != 0 || len(t.groups) != 0 || len(t.timers) != 0 || len(t.nodeInfo) != 0 || len(t.silences) != 0 {
		return fmt.Errorf("%w: restore into a tracker that has state: create it with New", ErrSnapshot)
	}
	if !strings.HasPrefix(string(b), snapshotMagic) || len(b) < len(snapshotMagic)+1 {
		return fmt.Errorf("%w: no %q header", ErrSnapshot, snapshotMagic)
	}
	version := b[len(snapshotMagic)]
	if version < 1 || version > snapshotVersion {
		return fmt.Errorf("%w: version %d, this build reads 1 to %d", ErrSnapshot, version, snapshotVersion)
	}
	r := &snapReader{b: b[len(snapshotMagic)+1:]}
	if digest := r.str(); r.err == nil && digest != t.configDigest() {
		return fmt.Errorf("%w: written with other routes or topology keys (%q, here %q)", ErrSnapshot, digest, t.configDigest())
	}
	if err := t.restore(r, version); err != nil {
		*t = *t.emptyCopy()
		return err
	}
	return nil
}

// emptyCopy returns t's configuration with no state.
func (t *Tracker) emptyCopy() *Tracker {
	return &Tracker{
		routes: t.routes, labeler: t.labeler, table: t.table, nodeSeverity: t.nodeSeverity,
		index: newDeviceIndex(), groups: map[string]*group{}, flapGroups: map[uint32][]string{},
		targetCache: map[targetKey][]target{}, nodes: newInterner(), reasons: newInterner(),
		topo: topology{on: t.topo.on, keys: t.topo.keys, nodeKey: t.topo.nodeKey, window: t.topo.window,
			minDevices: t.topo.minDevices, ratioPPM: t.topo.ratioPPM, severity: t.topo.severity,
			index: map[topoRef]uint32{}, cache: map[string][]target{}},
	}
}

func (t *Tracker) restore(r *snapReader, version byte) error {
	sets := make([]labels.Set, r.count(1))
	for i := range sets {
		ls := make([]labels.Label, r.count(2))
		for j := range ls {
			ls[j] = labels.Label{Name: r.str(), Value: r.str()}
		}
		sets[i] = t.table.Intern(ls)
	}
	set := func() labels.Set {
		i := r.uint()
		if i >= uint64(len(sets)) {
			r.fail("label set %d of %d", i, len(sets))
			return 0
		}
		return sets[i]
	}
	for _, in := range []*interner{&t.nodes, &t.reasons} {
		for range r.count(1) {
			in.intern(r.str())
		}
	}
	n := r.count(10)
	t.devs = make([]device, 0, n)
	prev := int64(0)
	t.index.reserve(n)
	for range n {
		id := r.view()
		if len(id) > maxIDLen {
			r.fail("device id of %d bytes", len(id))
			break
		}
		d := device{id: t.ids.store(id)}
		if version >= 2 {
			v := r.uint()
			d.vkind, d.seq = verKind(v&3), uint8(v>>2)
			if d.vkind > verSeq || v>>10 != 0 || (d.seq != 0 && d.vkind != verSeq) {
				r.fail("device %q connection version %d", id, v)
			}
		}
		if d.vkind == verKey {
			d.since = prev + r.int()
			prev = d.since
			d.connAt = r.int()
		} else {
			d.connAt = prev + r.int()
			prev = d.connAt
			d.since = d.connAt + r.int()
		}
		d.node = r.ref(len(t.nodes.names))
		d.reason = r.ref(len(t.reasons.names))
		d.labels = set()
		d.penalty = r.u32()
		if version >= 2 {
			// The flap update time in ms, relative to since (0: never).
			if v := r.uint(); v != 0 {
				ft := d.since + unzigzag(v-1)
				if ft <= 0 || ft > maxFlapTime {
					r.fail("device %q flap time %d", id, ft)
				}
				d.setFlapTime(ft)
			}
		} else {
			d.setFlapTime(int64(r.u32()) * 1000) // whole seconds
		}
		d.keepalive = uint16(min(r.uint(), math.MaxUint16))
		d.flapCount = uint16(min(r.uint(), math.MaxUint16))
		bits := r.uint()
		d.state, d.flags, d.fold = connState(bits&3), flag(bits>>2&7), uint8(bits>>5)
		_, h, dup := t.index.lookup(t.devs, &t.ids, id)
		if dup || id == "" || d.state > stateOffline || int(d.fold) > len(t.topo.keys) {
			r.fail("device %q", id)
			break
		}
		t.index.insert(h, uint32(len(t.devs)))
		t.devs = append(t.devs, d)
	}
	slot := func() uint32 { return r.ref(len(t.devs)) }
	readTimer := func(due int64) timer {
		tm := timer{due: due}
		tm.since = due - r.int()
		tm.slot = slot()
		tm.kind = timerKind(r.uint())
		if tm.kind > timerCalm {
			r.fail("timer kind %d", tm.kind)
		}
		return tm
	}
	n = r.count(4)
	t.timers = make(timerHeap, 0, n)
	prev = 0
	for range n {
		prev += r.int()
		t.timers = append(t.timers, readTimer(prev))
	}
	for range r.count(16) {
		g := &group{}
		g.key = r.str()
		g.kind = events.AlertKind(r.str())
		ri := r.ref(len(t.routes.All))
		g.route = t.routes.All[ri]
		g.tier = int(r.ref(len(g.route.Escalations) + 1))
		g.labels = r.strMap()
		g.receivers = make([]string, r.count(1))
		for i := range g.receivers {
			g.receivers[i] = r.str()
		}
		g.severity = events.Severity(r.str())
		g.inhibitedBy = r.str()
		g.topo = r.u32()
		g.start = r.int()
		g.seq = r.u32()
		g.notified = r.bool()
		g.last = r.int()
		g.next = r.int()
		g.dropped = r.int()
		for _, ms := range []*memberSet{&g.firing, &g.resolved} {
			for range r.count(8) {
				s := slot()
				m := member{since: r.int(), until: r.int()}
				m.node = r.ref(len(t.nodes.names))
				m.reason = r.ref(len(t.reasons.names))
				m.labels = set()
				m.count = uint16(min(r.uint(), math.MaxUint16))
				m.notified = r.bool()
				if _, dup := ms.get(s); dup {
					r.fail("group %q lists slot %d twice", g.key, s)
				}
				ms.put(s, m)
			}
		}
		g.fp = t.fingerprint(g.kind, g.key)
		if _, dup := t.groups[g.key]; dup {
			r.fail("group %q", g.key)
		}
		t.groups[g.key] = g
	}
	n = r.count(2)
	t.gtimers = make(groupHeap, 0, n)
	for range n {
		gt := groupTimer{due: r.int(), key: r.str()}
		gt.g = t.groups[gt.key]
		t.gtimers = append(t.gtimers, gt)
	}
	for range r.count(2) {
		s := slot()
		keys := make([]string, r.count(1))
		for i := range keys {
			keys[i] = r.str()
		}
		t.flapGroups[s] = keys
	}
	t.nodeInfo = make([]nodeState, r.count(3))
	if len(t.nodeInfo) > len(t.nodes.names) {
		r.fail("%d node states for %d nodes", len(t.nodeInfo), len(t.nodes.names))
	}
	for i := range t.nodeInfo {
		ns := &t.nodeInfo[i]
		ns.devices = int32(r.int())
		ns.silent = r.bool()
		ns.since = r.int()
		for range r.count(4) {
			ns.held = append(ns.held, readTimer(r.int()))
		}
	}
	for range r.count(8) {
		g := &topoGroup{key: uint8(r.ref(len(t.topo.keys))), value: r.str()}
		g.known, g.down, g.recent = int32(r.int()), int32(r.int()), int32(r.int())
		g.horizon, g.maxSince = r.int(), r.int()
		g.active = r.bool()
		g.since = r.int()
		for range r.count(2) {
			g.queue = append(g.queue, recentOutage{since: r.int(), slot: slot()})
		}
		ref := topoRef{key: g.key, value: g.value}
		if _, dup := t.topo.index[ref]; dup {
			r.fail("topology group %q", g.value)
		}
		t.topo.groups = append(t.topo.groups, g)
		t.topo.index[ref] = uint32(len(t.topo.groups))
	}
	for _, g := range t.groups {
		if g.topo > uint32(len(t.topo.groups)) || (g.kind == events.AlertGroupOutage && g.topo == 0) {
			r.fail("group %q topology %d", g.key, g.topo)
		}
	}
	for range r.count(8) {
		s := silence.Silence{ID: r.str()}
		s.Matchers = make([]string, r.count(1))
		for i := range s.Matchers {
			s.Matchers[i] = r.str()
		}
		s.StartsAt, s.EndsAt = time.Unix(0, r.int()), time.Unix(0, r.int())
		s.Comment, s.CreatedBy = r.str(), r.str()
		s.ExpireWhenResolved = r.bool()
		if r.err == nil {
			if err := s.Compile(); err != nil {
				r.fail("silence %q: %v", s.ID, err)
			}
		}
		ss := newSilenceState(s)
		ss.matched, ss.expired = r.bool(), r.bool()
		if n := r.count(1); n > 0 {
			ss.pending = make(map[uint32]struct{}, n)
			for range n {
				ss.pending[slot()] = struct{}{}
			}
		}
		if n := r.count(1); n > 0 {
			ss.aggs = make(map[string]struct{}, n)
			for range n {
				ss.aggs[r.str()] = struct{}{}
			}
		}
		t.silences = append(t.silences, ss)
	}
	st := reflect.ValueOf(&t.stats).Elem()
	if n := r.uint(); n != uint64(st.NumField()) && r.err == nil {
		r.fail("%d counters, want %d", n, st.NumField())
	}
	for i := range st.NumField() {
		st.Field(i).SetUint(r.uint())
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d bytes after the end", len(r.b))
	}
	return r.err
}

func sortedMembers(ms *memberSet) []memberEntry {
	out := make([]memberEntry, 0, ms.len())
	for s, m := range ms.all {
		out = append(out, memberEntry{s, m})
	}
	slices.SortFunc(out, func(a, b memberEntry) int { return cmpInt(int64(a.slot), int64(b.slot)) })
	return out
}

// snapWriter appends the encoding.
type snapWriter struct {
	buf   []byte
	sets  map[labels.Set]uint64
	order []labels.Set
}

func (w *snapWriter) useSet(s labels.Set) {
	if _, ok := w.sets[s]; !ok {
		w.sets[s] = uint64(len(w.order))
		w.order = append(w.order, s)
	}
}

// zigzag maps a signed value to an unsigned one as varints do.
func zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

func (w *snapWriter) uint(v uint64) { w.buf = binary.AppendUvarint(w.buf, v) }
func (w *snapWriter) int(v int64)   { w.buf = binary.AppendVarint(w.buf, v) }

func (w *snapWriter) bool(v bool) {
	if v {
		w.buf = append(w.buf, 1)
	} else {
		w.buf = append(w.buf, 0)
	}
}

func (w *snapWriter) str(s string) {
	w.uint(uint64(len(s)))
	w.buf = append(w.buf, s...)
}

func (w *snapWriter) strMap(m map[string]string) {
	if m == nil {
		w.uint(0)
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	w.uint(uint64(len(keys)) + 1)
	for _, k := range keys {
		w.str(k)
		w.str(m[k])
	}
}

// snapReader decodes; the first error sticks and later reads return zeros.
type snapReader struct {
	b   []byte
	err error
}

func (r *snapReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrSnapshot, fmt.Sprintf(format, args...))
	}
	r.b = nil
}

func (r *snapReader) uint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("truncated")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *snapReader) int() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("truncated")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *snapReader) u32() uint32 {
	v := r.uint()
	if v > math.MaxUint32 {
		r.fail("value %d out of range", v)
		return 0
	}
	return uint32(v)
}

// ref reads an index below n.
func (r *snapReader) ref(n int) uint32 {
	v := r.uint()
	if v >= uint64(n) {
		r.fail("index %d out of range %d", v, n)
		return 0
	}
	return uint32(v)
}

// count reads a length whose elements take at least min bytes each, so
// that a corrupt length cannot make the reader allocate more than the
// snapshot's size.
func (r *snapReader) count(min int) int {
	v := r.uint()
	if v > uint64(len(r.b)/min) {
		r.fail("count %d exceeds the %d bytes left", v, len(r.b))
		return 0
	}
	return int(v)
}

func (r *snapReader) bool() bool {
	v := r.uint()
	if v > 1 {
		r.fail("bool %d", v)
	}
	return v == 1
}

func (r *snapReader) str() string {
	n := r.count(1)
	if r.err != nil {
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// view returns a string that shares the snapshot's bytes: valid while
// they are, for a caller that copies it.
func (r *snapReader) view() string {
	n := r.count(1)
	if r.err != nil || n == 0 {
		return ""
	}
	s := unsafe.String(&r.b[0], n)
	r.b = r.b[n:]
	return s
}

func (r *snapReader) strMap() map[string]string {
	n := r.count(1)
	if n == 0 {
		return nil
	}
	m := make(map[string]string, n-1)
	for range n - 1 {
		k := r.str()
		m[k] = r.str()
	}
	return m
}
