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

// timerHeap is a binary min-heap of timers: O(log n) push and pop, 32 bytes
// per timer, no allocation beyond the slice's growth.
type timerHeap []timer

func (h *timerHeap) push(t timer) {
	*h = append(*h, t)
	s := *h
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !s[i].before(s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *timerHeap) pop() timer {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s[n] = timer{}
	s = s[:n]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && s[l].before(s[m]) {
			m = l
		}
		if r < n && s[r].before(s[m]) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}
