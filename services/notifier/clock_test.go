package notifier

import (
	"context"
	"sync"
	"testing"
	"time"
)

// testClock runs scale times faster than the wall clock and can jump
// ahead. SleepUntil sleeps to a deadline on it, and every jump wakes the
// sleepers, so a jump is never lost whether it comes before, during or
// after the call.
type testClock struct {
	mu     sync.Mutex
	base   time.Time // the clock's time at start
	start  time.Time // the wall time at start
	scale  float64
	offset time.Duration
	// jumped is closed (and replaced) by every Advance.
	jumped chan struct{}
}

func newTestClock(scale float64) *testClock {
	now := time.Now()
	return &testClock{base: now, start: now, scale: scale, jumped: make(chan struct{})}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nowLocked()
}

func (c *testClock) nowLocked() time.Time {
	return c.base.Add(time.Duration(float64(time.Since(c.start))*c.scale) + c.offset)
}

// Advance jumps the clock forward by d and wakes the sleepers.
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
	close(c.jumped)
	c.jumped = make(chan struct{})
}

// SleepUntil waits until the clock reads t or ctx ends; it reports whether
// t was reached.
func (c *testClock) SleepUntil(ctx context.Context, t time.Time) bool {
	for {
		c.mu.Lock()
		left, jumped := t.Sub(c.nowLocked()), c.jumped
		c.mu.Unlock()
		if left <= 0 {
			return ctx.Err() == nil
		}
		// The wall time for left on this clock; rounding up keeps the
		// loop from spinning on a sliver.
		timer := time.NewTimer(time.Duration(float64(left)/c.scale) + time.Microsecond)
		select {
		case <-ctx.Done():
			timer.Stop()
			return false
		case <-jumped:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// TestTestClockJumps checks the harness clock itself: a jump wakes a
// sleeper whose deadline it passes, whether it comes during the sleep or
// before the call, and leaves one with a later deadline asleep.
func TestTestClockJumps(t *testing.T) {
	c := newTestClock(1)
	start := c.Now()
	woke := make(chan bool, 1)
	go func() { woke <- c.SleepUntil(t.Context(), start.Add(time.Hour)) }()
	later, cancelLater := context.WithCancel(t.Context())
	laterWoke := make(chan bool, 1)
	go func() { laterWoke <- c.SleepUntil(later, start.Add(3*time.Hour)) }()
	c.Advance(time.Hour)
	select {
	case ok := <-woke:
		if !ok {
			t.Fatal("SleepUntil reported a cancelled context")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the jump did not wake the sleeper")
	}
	// Called after the jump with a deadline from before it: no wait.
	if !c.SleepUntil(t.Context(), start.Add(30*time.Minute)) {
		t.Fatal("SleepUntil for a past deadline reported a cancelled context")
	}
	select {
	case <-laterWoke:
		t.Fatal("a sleeper with a later deadline woke")
	default:
	}
	cancelLater()
	if <-laterWoke {
		t.Fatal("a cancelled sleeper reported its deadline reached")
	}
}
