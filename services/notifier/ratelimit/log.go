package ratelimit

import (
	"time"
)

// Log is the send history of one receiver, the pure core shared by the
// in-process Limiter and the Stores: the times of recent sends and a pause
// (a remote block) that holds every send until it ends. Times are Unix
// nanoseconds so a Log survives a JSON round trip exactly.
type Log struct {
	// Sends are the recent send times, ascending.
	Sends []int64 `json:"s,omitempty"`
	// PausedUntil holds sends until this time (0: no pause).
	PausedUntil int64 `json:"p,omitempty"`
	// PauseReason says why, for logs and delivery events.
	PauseReason string `json:"r,omitempty"`
}

// limits are the derived bounds of a window set.
func limits(ws []Window) (keep int, span time.Duration) {
	for _, w := range ws {
		keep = max(keep, w.Count)
		span = max(span, w.Per)
	}
	return keep, span
}

// Prune forgets the sends no window can see any more.
func (l *Log) Prune(ws []Window, now time.Time) {
	keep, span := limits(ws)
	n := now.UnixNano()
	drop := 0
	for drop < len(l.Sends) && (len(l.Sends)-drop > keep || l.Sends[drop]+int64(span) <= n) {
		drop++
	}
	if drop > 0 {
		l.Sends = append(l.Sends[:0], l.Sends[drop:]...)
	}
	if l.PausedUntil != 0 && l.PausedUntil <= n {
		l.PausedUntil, l.PauseReason = 0, ""
	}
}

// waitAt is how long after at one more send fits every window, for sends
// ascending and all at or before at.
func waitAt(ws []Window, sends []int64, at int64) int64 {
	var wait int64
	for _, w := range ws {
		if len(sends) < w.Count {
			continue
		}
		// The w.Count-th most recent send: while it is inside the window,
		// the window is full.
		if d := sends[len(sends)-w.Count] + int64(w.Per) - at; d > wait {
			wait = d
		}
	}
	return wait
}

// Wait is how long until one more send is allowed: the pause, then every
// window must have room. 0 means now.
func (l *Log) Wait(ws []Window, now time.Time) time.Duration {
	n := now.UnixNano()
	if l.PausedUntil > n {
		return time.Duration(l.PausedUntil - n)
	}
	return time.Duration(waitAt(ws, l.Sends, n))
}

// Add records a send at now (the caller checked Wait), prunes, and returns
// the time recorded: now, or the latest send when that is later, which
// keeps the log ascending. Settle needs the time recorded, not now.
func (l *Log) Add(ws []Window, now time.Time) time.Time {
	n := now.UnixNano()
	if k := len(l.Sends); k > 0 && l.Sends[k-1] > n {
		// Another replica's clock ran ahead, or it settled a send after
		// the caller read now.
		n = l.Sends[k-1]
	}
	l.Sends = append(l.Sends, n)
	l.Prune(ws, now)
	return time.Unix(0, n)
}

// Settle moves the send recorded at reserved (the time Add returned) to
// done, when the request finished. The remote counted it at some time in between, so a window
// measured from done can never open before the remote's does, whatever
// the request's latency. A send no longer in the log is ignored.
func (l *Log) Settle(reserved, done time.Time) {
	r, d := reserved.UnixNano(), done.UnixNano()
	if d <= r {
		return
	}
	for i := len(l.Sends) - 1; i >= 0; i-- {
		if l.Sends[i] != r {
			continue
		}
		l.Sends[i] = d
		for j := i; j+1 < len(l.Sends) && l.Sends[j] > l.Sends[j+1]; j++ {
			l.Sends[j], l.Sends[j+1] = l.Sends[j+1], l.Sends[j]
		}
		return
	}
}

// Pause holds sends until until, unless a longer pause is already set.
func (l *Log) Pause(until time.Time, why string) {
	if u := until.UnixNano(); u > l.PausedUntil {
		l.PausedUntil, l.PauseReason = u, why
	}
}

// Last is the time of the latest send (zero when none is remembered).
func (l *Log) Last() time.Time {
	if len(l.Sends) == 0 {
		return time.Time{}
	}
	return time.Unix(0, l.Sends[len(l.Sends)-1])
}

// DrainsWithin reports whether n more sends, each made as soon as the
// windows allow, would all be made within d from now (a pause counts).
func (l *Log) DrainsWithin(ws []Window, now time.Time, n int, d time.Duration) bool {
	at := now.UnixNano()
	if l.PausedUntil > at {
		at = l.PausedUntil
	}
	limit := now.UnixNano() + int64(d)
	sends := append([]int64(nil), l.Sends...)
	for i := 0; i < n; i++ {
		at += waitAt(ws, sends, at)
		if at > limit {
			return false
		}
		sends = append(sends, at)
	}
	return true
}

// Headroom is the least room left, after n more sends, in the windows
// longer than minPer (the budget windows; shorter ones only delay): Count
// minus the sends inside the window now minus n. With no such window it
// is n's complement to a large number, never negative for small n.
func (l *Log) Headroom(ws []Window, now time.Time, n int, minPer time.Duration) int {
	room := 1 << 30
	at := now.UnixNano()
	for _, w := range ws {
		if w.Per <= minPer {
			continue
		}
		used := 0
		for i := len(l.Sends) - 1; i >= 0 && l.Sends[i]+int64(w.Per) > at; i-- {
			used++
		}
		room = min(room, w.Count-used)
	}
	return room - n
}
