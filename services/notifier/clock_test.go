package notifier

import (
	"context"
	"sync"
	"time"
)

// testClock runs scale times faster than the wall clock and can jump
// ahead. Its Sleep polls it, so a jump wakes sleepers at once.
type testClock struct {
	mu     sync.Mutex
	base   time.Time // the clock's time at start
	start  time.Time // the wall time at start
	scale  float64
	offset time.Duration
}

func newTestClock(scale float64) *testClock {
	now := time.Now()
	return &testClock{base: now, start: now, scale: scale}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base.Add(time.Duration(float64(time.Since(c.start))*c.scale) + c.offset)
}

// Advance jumps the clock forward by d.
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// Sleep waits until the clock passed d or ctx ended.
func (c *testClock) Sleep(ctx context.Context, d time.Duration) bool {
	until := c.Now().Add(d)
	for {
		left := until.Sub(c.Now())
		if left <= 0 {
			return true
		}
		t := time.NewTimer(min(time.Duration(float64(left)/c.scale), 2*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}
