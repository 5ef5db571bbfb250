package tracker

import (
	"math"
	"math/bits"

	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
)

// Flap suppression, after BGP route flap damping (RFC 2439): every real
// disconnect adds route.Flap.Penalty to the device's penalty, which halves
// every half-life. Above the suppress limit the device is flapping: it joins
// the device_flapping groups of its routes (one alert, with its recent
// disconnect count) and its own offline alerts are held. When the penalty
// has decayed below the reuse limit, a calm timer ends the flapping episode
// (a resolved device_flapping notification) and reports the device's real
// state: still offline past its grace, it fires its offline alert then.
//
// A device stores the penalty at its last update and the time of that update
// in ms (4 + 6 bytes: 48 bits of ms never overflow), so that a penalty
// decays evenly whatever the half-life (a whole-second clock made a 1 s
// half-life decay by up to twice as much between some disconnects as
// between others). The decay is computed when needed, in integer
// arithmetic, so that every platform decides alike.

// decaySteps is the resolution of the decay table: a half-life is cut into
// 1024 steps (an error below 0.07 %, always towards slower decay).
const decaySteps = 1024

// decayRoot is 2^(-1/1024) in Q63 fixed point.
const decayRoot uint64 = 0x7fe9d3a8e07bf085

// decayTable[i] is 2^(-i/1024) in Q63, by repeated integer multiplication:
// the same bits on every platform.
var decayTable = makeDecayTable()

func makeDecayTable() [decaySteps]uint64 {
	var t [decaySteps]uint64
	t[0] = 1 << 63
	for i := 1; i < decaySteps; i++ {
		t[i] = mulQ63(t[i-1], decayRoot)
	}
	return t
}

func mulQ63(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi<<1 | lo>>63
}

// decay returns penalty p after dt ms with a half-life of hl ms.
func decay(p uint32, dt, hl int64) uint32 {
	if dt <= 0 || p == 0 {
		return p
	}
	n := dt / hl
	if n >= 32 {
		return 0
	}
	p >>= uint(n)
	frac := (dt % hl) * decaySteps / hl
	return uint32(mulQ63(uint64(p), decayTable[frac]))
}

// calmAfter returns the shortest dt (ms) after which penalty p has decayed
// below reuse.
func calmAfter(p, reuse uint32, hl int64) int64 {
	lo, hi := int64(0), 33*hl
	for lo < hi {
		mid := lo + (hi-lo)/2
		if decay(p, mid, hl) < reuse {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// flapSettings returns the flap suppression of a device: its first route's
// (nil: off).
func (t *Tracker) flapSettings(slot uint32, d *device) *route.Flap {
	if t.routes.UniformFlap {
		return t.routes.Root.Flap
	}
	rs := t.routes.Match(t.labelsOf(slot, d, kindOffline))
	if len(rs) == 0 {
		return nil
	}
	return rs[0].Flap
}

// maxFlapTime is the latest flap update time a device stores: 48 bits of
// ms (the year 10889).
const maxFlapTime = 1<<48 - 1

// flapTime returns the time (ms) of the last update of d's flap penalty.
func (d *device) flapTime() int64 {
	return int64(d.flapHi)<<32 | int64(d.flapLo)
}

// setFlapTime stores ms, clamped to 0..maxFlapTime, as the time of the last
// update of d's flap penalty.
func (d *device) setFlapTime(ms int64) {
	ms = min(max(ms, 0), maxFlapTime)
	d.flapLo, d.flapHi = uint32(ms), uint16(ms>>32)
}

// flap adds a real disconnect (at d.since) to the device's penalty and
// starts a flapping episode when it crosses the suppress limit.
func (t *Tracker) flap(slot uint32, d *device, now int64) {
	f := t.flapSettings(slot, d)
	if f == nil {
		return
	}
	at, last, hl := d.since, d.flapTime(), f.HalfLife.Milliseconds()
	var p uint64
	if at >= last {
		cur := decay(d.penalty, at-last, hl)
		if cur < f.Reuse && d.flags&flagFlapping == 0 {
			d.flapCount = 0 // a new episode of disconnects
		}
		p = uint64(cur) + uint64(f.Penalty)
		d.setFlapTime(at)
	} else {
		// A late disconnect: its penalty has decayed since.
		p = uint64(d.penalty) + uint64(decay(f.Penalty, last-at, hl))
	}
	d.penalty = uint32(min(p, uint64(f.MaxPenalty)))
	if d.flapCount < math.MaxUint16 {
		d.flapCount++
	}
	if d.flags&flagFlapping == 0 && d.penalty >= f.Suppress {
		d.flags |= flagFlapping
		t.stats.Flapping++
		t.joinFlap(slot, d, now)
		t.timers.push(timer{due: t.calmDue(d, f), slot: slot, kind: timerCalm})
	}
}

// calmDue is when a flapping device's penalty falls below the reuse limit.
func (t *Tracker) calmDue(d *device, f *route.Flap) int64 {
	return satAdd(d.flapTime(), calmAfter(d.penalty, f.Reuse, f.HalfLife.Milliseconds()))
}

// calmTimer handles a calm timer of a flapping device: it calms the device
// when its penalty is below the reuse limit by now, else queues the timer
// again for when it will be (the penalty grew since).
func (t *Tracker) calmTimer(slot uint32, d *device, now int64) {
	if d.flags&flagFlapping == 0 {
		return
	}
	f := t.flapSettings(slot, d)
	if f != nil {
		if due := t.calmDue(d, f); due > now {
			t.timers.push(timer{due: due, slot: slot, kind: timerCalm})
			return
		}
	}
	t.calm(slot, d, now)
}

// calm ends a flapping episode: resolved device_flapping, then the device's
// real state.
func (t *Tracker) calm(slot uint32, d *device, now int64) {
	d.flags &^= flagFlapping
	t.stats.Calmed++
	t.leaveFlap(slot, d, now, now)
	if d.state != stateOffline || d.flags&flagPending == 0 {
		return
	}
	due := satAdd(d.since, t.grace(slot, d))
	if due > now {
		t.timers.push(timer{due: due, since: d.since, slot: slot, kind: timerGrace})
		return
	}
	t.runTimer(timer{due: due, since: d.since, slot: slot, kind: timerGrace}, now)
}

// joinFlap adds a device that started flapping to its device_flapping
// groups, and remembers them (the device's labels may change before it
// calms down).
func (t *Tracker) joinFlap(slot uint32, d *device, now int64) {
	tgs := t.targets(slot, d, kindFlap)
	keys := make([]string, 0, len(tgs))
	for _, tg := range tgs {
		g := t.group(tg, true)
		t.joinGroup(g, slot, d, now, false)
		keys = append(keys, g.key)
	}
	t.flapGroups[slot] = keys
}

// leaveFlap removes a device that calmed down from its device_flapping
// groups.
func (t *Tracker) leaveFlap(slot uint32, d *device, until, now int64) {
	for _, k := range t.flapGroups[slot] {
		if g := t.groups[k]; g != nil {
			if m, ok := g.firing.get(slot); ok {
				m.count = d.flapCount
				g.firing.put(slot, m)
			}
			t.leaveGroup(g, slot, until, now)
		}
	}
	delete(t.flapGroups, slot)
}
