// Package ratelimit keeps a sender under a remote service's rolling-window
// limits ("20 per minute", "5 per second and 100 per minute"). It records the
// time of each send and allows a new one only when every window has room, so
// unlike a token bucket it never lets a burst exceed a window's count.
package ratelimit

import (
	"fmt"
	"sync"
	"time"
)

// Window allows at most Count sends in any period of length Per.
type Window struct {
	// Count is the number of sends allowed per window.
	Count int `yaml:"count" json:"count"`
	// Per is the window length.
	Per time.Duration `yaml:"per" json:"per"`
}

// String renders the window as "18/1m0s".
func (w Window) String() string { return fmt.Sprintf("%d/%s", w.Count, w.Per) }

// Validate checks the window; field names it in errors.
func (w Window) Validate(field string) error {
	if w.Count < 1 {
		return fmt.Errorf("%s.count is %d: allow at least 1 send per window", field, w.Count)
	}
	if w.Per <= 0 {
		return fmt.Errorf("%s.per is %s: use a positive duration such as 1m", field, w.Per)
	}
	return nil
}

// Limiter enforces a set of windows. It is safe for concurrent use.
type Limiter struct {
	mu      sync.Mutex
	windows []Window
	keep    int           // the largest Count: older sends never matter
	span    time.Duration // the longest Per
	sends   []time.Time   // ascending
}

// New returns a limiter enforcing every window; with none it allows all.
func New(windows ...Window) (*Limiter, error) {
	l := &Limiter{windows: append([]Window(nil), windows...)}
	for i, w := range windows {
		if err := w.Validate(fmt.Sprintf("window[%d]", i)); err != nil {
			return nil, err
		}
		l.keep = max(l.keep, w.Count)
		l.span = max(l.span, w.Per)
	}
	return l, nil
}

// Windows returns the windows the limiter enforces.
func (l *Limiter) Windows() []Window { return append([]Window(nil), l.windows...) }

// Reserve records a send at now and returns 0 when every window has room;
// otherwise it records nothing and returns how long to wait before a send
// would be allowed.
func (l *Limiter) Reserve(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.prune(now)
	var wait time.Duration
	for _, w := range l.windows {
		if len(l.sends) < w.Count {
			continue
		}
		// The w.Count-th most recent send: while it is inside the window,
		// the window is full.
		s := l.sends[len(l.sends)-w.Count]
		if d := s.Add(w.Per).Sub(now); d > wait {
			wait = d
		}
	}
	if wait > 0 {
		return wait
	}
	l.sends = append(l.sends, now)
	return 0
}

func (l *Limiter) prune(now time.Time) {
	drop := 0
	for drop < len(l.sends) && (len(l.sends)-drop > l.keep || !l.sends[drop].Add(l.span).After(now)) {
		drop++
	}
	if drop > 0 {
		l.sends = append(l.sends[:0], l.sends[drop:]...)
	}
}
