package tracker

import "strings"

// timer is a pending grace deadline of one outage. Timers are never removed
// when an outage ends early: Tick skips the ones that no longer match their
// device's state (lazy deletion), so ending an outage costs nothing.
type timer struct {
	due    int64  // broker time of the disconnect + grace (ms)
	since  int64  // the outage it belongs to; negated: an escalation check
	device string // shares the device map's key
}

// before orders timers by due time, then device and outage, so that timers
// due together fire in an order independent of their insertion order.
func (a timer) before(b timer) bool {
	if a.due != b.due {
		return a.due < b.due
	}
	if c := strings.Compare(a.device, b.device); c != 0 {
		return c < 0
	}
	return a.since < b.since
}

// timerHeap is a binary min-heap of timers, 32 bytes per timer.
type timerHeap = minHeap[timer]
