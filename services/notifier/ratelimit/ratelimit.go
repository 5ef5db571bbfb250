// Package ratelimit keeps a sender under a remote service's rolling-window
// limits ("20 per minute", "5 per second and 100 per minute"). It records the
// time of each send and allows a new one only when every window has room, so
// unlike a token bucket it never lets a burst exceed a window's count.
//
// Log is the pure core (send times plus a pause for a remote block). The
// Limiter applies it in one process; a Store keeps one Log per receiver,
// either in memory (Memory) or in a NATS KV bucket updated by
// compare-and-set (KV), which makes a receiver's budget hold across every
// notifier replica.
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

// Limiter enforces a set of windows in one process. It is safe for
// concurrent use.
type Limiter struct {
	mu      sync.Mutex
	windows []Window
	log     Log
}

// New returns a limiter enforcing every window; with none it allows all.
func New(windows ...Window) (*Limiter, error) {
	if err := ValidateWindows(windows); err != nil {
		return nil, err
	}
	return &Limiter{windows: append([]Window(nil), windows...)}, nil
}

// ValidateWindows checks each window, naming it window[i] in errors.
func ValidateWindows(windows []Window) error {
	for i, w := range windows {
		if err := w.Validate(fmt.Sprintf("window[%d]", i)); err != nil {
			return err
		}
	}
	return nil
}

// Windows returns the windows the limiter enforces.
func (l *Limiter) Windows() []Window { return append([]Window(nil), l.windows...) }

// Reserve records a send at now and returns 0 when every window has room;
// otherwise it records nothing and returns how long to wait before a send
// would be allowed.
func (l *Limiter) Reserve(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log.Prune(l.windows, now)
	if wait := l.log.Wait(l.windows, now); wait > 0 {
		return wait
	}
	l.log.Add(l.windows, now)
	return 0
}
