package notifier

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/services/notifier/ratelimit"
)

// TestSendLoopWaitsForTheMomentItDecidedOn checks that the sender's wait
// for the budget is a deadline computed from the clock reading its
// decision was based on. The clock moves on (here it jumps) while the
// budget is read; a wait measured from a later reading would end that much
// too late, and after a test clock's jump it would not end in time at all.
func TestSendLoopWaitsForTheMomentItDecidedOn(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	ws := []ratelimit.Window{{Count: 1, Per: time.Minute}}
	budget := ratelimit.NewMemory()
	if at, w, err := budget.Reserve(t.Context(), "ops", ws, t0); err != nil || w != 0 || !at.Equal(t0) {
		t.Fatalf("reserve: at %s wait %s err %v", at, w, err)
	}
	var (
		mu    sync.Mutex
		reads int
		until []time.Time
	)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s := &Service{
		cfg: DefaultConfig(), log: slog.New(slog.DiscardHandler), budget: budget,
		now: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			reads++
			if reads == 1 {
				return t0.Add(time.Second)
			}
			return t0.Add(2 * time.Minute) // jumped after the first reading
		},
		sleepUntil: func(_ context.Context, t time.Time) bool {
			mu.Lock()
			defer mu.Unlock()
			until = append(until, t)
			cancel() // one wait is all this test looks at
			return false
		},
	}
	r := newReceiver("ops", nil, ws, s.cfg.Digest)
	r.push(&pending{alert: numbered("ops", 1)})
	s.sendLoop(ctx, ctx, r)
	mu.Lock()
	defer mu.Unlock()
	if want := t0.Add(time.Minute); len(until) != 1 || !until[0].Equal(want) {
		t.Fatalf("slept until %v, want [%s]", until, want)
	}
}
