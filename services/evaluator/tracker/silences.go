package tracker

import (
	"slices"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
)

// Silences. A notification is silenced when, at the time it is decided (the
// tick's or the event's time), every device it lists — firing, new or
// recovered — matches at least one active silence (its labels, implicit ones
// and alertname included); a group_outage or node_silent notification, when
// its group labels (with alertname) match one. It is still decided, with
// Silenced and the matching silences' ids (sorted), and recorded; the
// notifier does not deliver it.
//
// A silence with ExpireWhenResolved remembers the offline devices (and the
// group_outage / node_silent alerts) it matched; once every one of them has
// recovered, it stops applying (but to the recoveries it announces) and
// ExpiredSilences reports it, so that the service deletes it.
type silenceState struct {
	s          silence.Silence
	start, end int64 // the silence's range, ms
	// pending are the offline devices it matched still down; aggs the
	// aggregate alerts (group keys) it matched still firing.
	pending map[uint32]struct{}
	aggs    map[string]struct{}
	matched bool // it matched something to wait for
	expired bool // all it matched recovered
}

// setSilences replaces the set. A silence whose id and content are those of
// one already in force keeps its state.
func (t *Tracker) setSilences(in []silence.Silence) {
	old := make(map[string]*silenceState, len(t.silences))
	for _, s := range t.silences {
		old[s.s.ID] = s
	}
	byID := make(map[string]silence.Silence, len(in))
	for _, s := range in {
		byID[s.ID] = s // the last of an id wins
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	next := make([]*silenceState, 0, len(ids))
	for _, id := range ids {
		s := byID[id]
		s.Matchers = slices.Clone(s.Matchers)
		if err := s.Compile(); err != nil {
			t.stats.SilencesInvalid++
			continue
		}
		if o := old[id]; o != nil && sameSilence(o.s, s) {
			next = append(next, o)
			continue
		}
		next = append(next, newSilenceState(s))
	}
	t.silences = next
}

func newSilenceState(s silence.Silence) *silenceState {
	return &silenceState{s: s, start: s.StartsAt.UnixMilli(), end: s.EndsAt.UnixMilli()}
}

func sameSilence(a, b silence.Silence) bool {
	return a.ID == b.ID && slices.Equal(a.Matchers, b.Matchers) && a.StartsAt.Equal(b.StartsAt) && a.EndsAt.Equal(b.EndsAt) &&
		a.ExpireWhenResolved == b.ExpireWhenResolved && a.Comment == b.Comment && a.CreatedBy == b.CreatedBy
}

// active reports whether the silence applies at now (ms). An expired
// silence still covers the recoveries (so that a device whose alert it
// muted does not announce its recovery), nothing else.
func (s *silenceState) active(now int64, recovery bool) bool {
	return (!s.expired || recovery) && s.start <= now && now < s.end
}

// ExpiredSilences returns the ids of the silences with ExpireWhenResolved
// whose matched devices and alerts have all recovered, sorted. They no
// longer apply; the owner deletes them from the store (the next Silences
// input then leaves them out).
func (t *Tracker) ExpiredSilences() []string {
	var out []string
	for _, s := range t.silences {
		if s.expired {
			out = append(out, s.s.ID)
		}
	}
	return out
}

// memberLabels is the label lookup of a listed device.
type memberLabels struct {
	t    *Tracker
	slot uint32
	m    member
	kind events.AlertKind
}

func (ml *memberLabels) get(name string) string {
	switch name {
	case labels.DeviceID:
		return ml.t.ids.get(ml.t.devs[ml.slot].id)
	case labels.Node:
		return ml.t.nodes.name(ml.m.node)
	case labels.Reason:
		return ml.t.reasons.name(ml.m.reason)
	case labels.AlertName:
		return string(ml.kind)
	}
	return ml.t.table.Get(ml.m.labels, name)
}

// silenceGroup decides whether a group notification is silenced, and
// records what expiring silences matched.
func (t *Tracker) silenceGroup(g *group, fresh, still, recovered []entry, now int64) (bool, []string) {
	if g.kind == events.AlertGroupOutage {
		status := events.StatusFiring
		if g.firing.len() == 0 {
			status = events.StatusResolved
		}
		return t.silenceAggregate(g.key, g.labels, g.kind, status, now)
	}
	var act []*silenceState
	for _, s := range t.silences {
		if s.active(now, true) {
			act = append(act, s)
		}
	}
	if len(act) == 0 {
		return false, nil
	}
	all := len(fresh)+len(still)+len(recovered) > 0
	hit := make([]bool, len(act))
	ml := memberLabels{t: t, kind: g.kind}
	for pi, part := range [3][]entry{fresh, still, recovered} {
		for _, e := range part {
			ml.slot, ml.m = e.slot, e.m
			any := false
			for i, s := range act {
				if (s.expired && pi < 2) || !s.s.Matches(ml.get) {
					continue
				}
				any, hit[i] = true, true
				if s.s.ExpireWhenResolved && pi < 2 && g.kind == events.AlertDeviceOffline && t.devs[e.slot].state == stateOffline {
					if s.pending == nil {
						s.pending = map[uint32]struct{}{}
					}
					s.pending[e.slot] = struct{}{}
					s.matched = true
				}
			}
			if !any {
				all = false
			}
		}
	}
	if !all {
		return false, nil
	}
	var ids []string
	for i, s := range act {
		if hit[i] {
			ids = append(ids, s.s.ID)
		}
	}
	return true, ids
}

// silenceAggregate decides whether a group_outage or node_silent
// notification is silenced, by its group labels.
func (t *Tracker) silenceAggregate(key string, gl map[string]string, kind events.AlertKind, status events.AlertStatus, now int64) (bool, []string) {
	get := func(name string) string {
		if name == labels.AlertName {
			return string(kind)
		}
		return gl[name]
	}
	var ids []string
	for _, s := range t.silences {
		if !s.active(now, status == events.StatusResolved) || !s.s.Matches(get) {
			continue
		}
		ids = append(ids, s.s.ID)
		if !s.s.ExpireWhenResolved {
			continue
		}
		if status == events.StatusFiring {
			if s.aggs == nil {
				s.aggs = map[string]struct{}{}
			}
			s.aggs[key] = struct{}{}
			s.matched = true
		}
	}
	if status == events.StatusResolved {
		for _, s := range t.silences {
			if _, ok := s.aggs[key]; ok {
				delete(s.aggs, key)
				s.checkExpired()
			}
		}
	}
	return len(ids) > 0, ids
}

// silenceRecovered records that a device is back online.
func (t *Tracker) silenceRecovered(slot uint32) {
	for _, s := range t.silences {
		if _, ok := s.pending[slot]; ok {
			delete(s.pending, slot)
			s.checkExpired()
		}
	}
}

func (s *silenceState) checkExpired() {
	if s.matched && len(s.pending) == 0 && len(s.aggs) == 0 {
		s.expired = true
	}
}
