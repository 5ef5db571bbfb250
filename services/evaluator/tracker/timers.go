package tracker

// timerKind says what a timer is for.
type timerKind uint8

const (
	timerGrace    timerKind = iota // an outage's grace ends: fire it
	timerEscalate                  // an alerting outage reaches its next escalation tier
	timerCalm                      // a flapping device's penalty may be below the reuse limit
)

// timer is a deadline of one device. Timers are never removed when what
// they wait for ends early: Tick skips the ones that no longer match their
// device's state (lazy deletion), so ending an outage costs nothing.
type timer struct {
	due   int64  // when it is due (ms)
	since int64  // grace and escalation: the outage it belongs to
	slot  uint32 // the device
	kind  timerKind
}

// before orders timers by due time, then device slot, kind and outage, so
// that timers due together fire in an order independent of their insertion
// order (slots are given in order of first appearance, so a replay of the
// same inputs gives the same order).
func (a timer) before(b timer) bool {
	if a.due != b.due {
		return a.due < b.due
	}
	if a.slot != b.slot {
		return a.slot < b.slot
	}
	if a.kind != b.kind {
		return a.kind < b.kind
	}
	return a.since < b.since
}

// timerHeap is a binary min-heap of timers, 24 bytes per timer.
type timerHeap = minHeap[timer]
