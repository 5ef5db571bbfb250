package ratelimit

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

var t0 = time.Unix(1700000000, 0)

func TestLogPauseAndWait(t *testing.T) {
	ws := []Window{{Count: 2, Per: time.Minute}}
	var l Log
	l.Add(ws, t0)
	if w := l.Wait(ws, t0); w != 0 {
		t.Fatalf("wait %s", w)
	}
	l.Pause(t0.Add(10*time.Minute), "blocked")
	l.Pause(t0.Add(time.Minute), "shorter pause loses")
	if w := l.Wait(ws, t0.Add(time.Second)); w != 10*time.Minute-time.Second || l.PauseReason != "blocked" {
		t.Fatalf("wait %s reason %q", w, l.PauseReason)
	}
	l.Prune(ws, t0.Add(10*time.Minute))
	if l.PausedUntil != 0 || l.PauseReason != "" || len(l.Sends) != 0 {
		t.Fatalf("after prune %+v", l)
	}
}

func TestLogSettleKeepsAscending(t *testing.T) {
	ws := []Window{{Count: 5, Per: time.Minute}}
	var l Log
	for i := range 3 {
		l.Add(ws, t0.Add(time.Duration(i)*time.Second))
	}
	l.Settle(t0, t0.Add(1500*time.Millisecond))
	want := []int64{t0.Add(time.Second).UnixNano(), t0.Add(1500 * time.Millisecond).UnixNano(), t0.Add(2 * time.Second).UnixNano()}
	if !slices.Equal(l.Sends, want) {
		t.Fatalf("sends %v, want %v", l.Sends, want)
	}
	l.Settle(t0.Add(2*time.Second), t0.Add(time.Second)) // never earlier
	if !slices.Equal(l.Sends, want) {
		t.Fatalf("sends %v after an earlier settle", l.Sends)
	}
}

func TestLogAddKeepsAscending(t *testing.T) {
	ws := []Window{{Count: 5, Per: time.Minute}}
	var l Log
	l.Add(ws, t0.Add(time.Second))
	at := l.Add(ws, t0) // another replica's clock is behind
	if l.Sends[0] != l.Sends[1] || !at.Equal(t0.Add(time.Second)) {
		t.Fatalf("sends %v, recorded at %s", l.Sends, at)
	}
	// Settling the time Add returned moves that send; settling the
	// caller's now would find nothing and leave the send counted from
	// before its request ended, opening the window early.
	l.Settle(at, t0.Add(3*time.Second))
	if want := []int64{t0.Add(time.Second).UnixNano(), t0.Add(3 * time.Second).UnixNano()}; !slices.Equal(l.Sends, want) {
		t.Fatalf("sends %v after settle, want %v", l.Sends, want)
	}
}

func TestDrainsWithin(t *testing.T) {
	feishu := []Window{{Count: 4, Per: time.Second}, {Count: 95, Per: time.Minute}}
	dingtalk := []Window{{Count: 18, Per: time.Minute}}
	slack := []Window{{Count: 1, Per: time.Second}}
	tests := []struct {
		name string
		ws   []Window
		sent int
		n    int
		d    time.Duration
		want bool
	}{
		{"feishu 4 now", feishu, 0, 4, 0, true},
		{"feishu 5 needs a second", feishu, 0, 5, 999 * time.Millisecond, false},
		{"feishu 8 within 1s", feishu, 0, 8, time.Second, true},
		{"feishu 12 within 2s", feishu, 0, 12, 2 * time.Second, true},
		{"feishu 13 within 2s", feishu, 0, 13, 2 * time.Second, false},
		{"dingtalk 18 now", dingtalk, 0, 18, 0, true},
		{"dingtalk 19 within 2s", dingtalk, 0, 19, 2 * time.Second, false},
		{"dingtalk 5 after 14", dingtalk, 14, 5, 2 * time.Second, false},
		{"dingtalk 4 after 14", dingtalk, 14, 4, 0, true},
		{"slack 3 within 2s", slack, 0, 3, 2 * time.Second, true},
		{"slack 4 within 2s", slack, 0, 4, 2 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l Log
			for range tt.sent {
				l.Add(tt.ws, t0)
			}
			if got := l.DrainsWithin(tt.ws, t0, tt.n, tt.d); got != tt.want {
				t.Fatalf("DrainsWithin(%d, %s) = %v", tt.n, tt.d, got)
			}
		})
	}
	var l Log
	l.Pause(t0.Add(time.Minute), "x")
	if l.DrainsWithin(slack, t0, 1, 2*time.Second) {
		t.Fatal("a paused log drains")
	}
}

func TestHeadroom(t *testing.T) {
	ws := []Window{{Count: 4, Per: time.Second}, {Count: 95, Per: time.Minute}}
	var l Log
	for i := range 10 {
		l.Add(ws, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	now := t0.Add(2 * time.Second)
	if got := l.Headroom(ws, now, 1, 2*time.Second); got != 95-10-1 {
		t.Fatalf("headroom %d", got)
	}
	if got := l.Headroom(ws, t0.Add(61*time.Second), 0, 2*time.Second); got != 95 {
		t.Fatalf("headroom after the minute %d", got)
	}
	if got := l.Headroom([]Window{{Count: 1, Per: time.Second}}, now, 3, 2*time.Second); got < 1<<29 {
		t.Fatalf("headroom without budget windows %d", got)
	}
}

func newKV(t *testing.T) jetstream.KeyValue {
	t.Helper()
	_, js := natstest.Start(t).Connect(t)
	kv, err := js.CreateOrUpdateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "budget", History: 1, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestStoreContract runs the same checks against every Store.
func TestStoreContract(t *testing.T) {
	stores := map[string]func(t *testing.T) (Store, Store){
		"memory": func(*testing.T) (Store, Store) { m := NewMemory(); return m, m },
		"kv":     func(t *testing.T) (Store, Store) { kv := newKV(t); return NewKV(kv), NewKV(kv) },
	}
	ws := []Window{{Count: 3, Per: time.Minute}}
	for name, mk := range stores {
		t.Run(name, func(t *testing.T) {
			a, b := mk(t)
			ctx := t.Context()
			for i, s := range []Store{a, b, a} {
				if _, w, err := s.Reserve(ctx, "ops", ws, t0.Add(time.Duration(i)*time.Second)); w != 0 || err != nil {
					t.Fatalf("send %d: wait %s err %v", i, w, err)
				}
			}
			if _, w, err := b.Reserve(ctx, "ops", ws, t0.Add(10*time.Second)); w != 50*time.Second || err != nil {
				t.Fatalf("4th send: wait %s err %v", w, err)
			}
			if _, w, _ := a.Reserve(ctx, "other", ws, t0); w != 0 {
				t.Fatalf("another key waits %s", w)
			}
			if err := b.Pause(ctx, "other", t0.Add(10*time.Minute), "blocked"); err != nil {
				t.Fatal(err)
			}
			if _, w, _ := a.Reserve(ctx, "other", ws, t0.Add(time.Minute)); w != 9*time.Minute {
				t.Fatalf("paused key waits %s", w)
			}
			l, err := a.Load(ctx, "other", ws, t0.Add(time.Minute))
			if err != nil || l.PauseReason != "blocked" || len(l.Sends) != 0 || l.PausedUntil != t0.Add(10*time.Minute).UnixNano() {
				t.Fatalf("load %+v %v", l, err)
			}
			if at, w, _ := a.Reserve(ctx, "ops", ws, t0.Add(60*time.Second)); w != 0 || !at.Equal(t0.Add(60*time.Second)) {
				t.Fatalf("after the window: wait %s, recorded at %s", w, at)
			}
			// The request reserved at +60s ended at +65s: the window is
			// measured from there.
			if err := b.Settle(ctx, "ops", t0.Add(60*time.Second), t0.Add(65*time.Second)); err != nil {
				t.Fatal(err)
			}
			if err := b.Settle(ctx, "ops", t0.Add(7*time.Second), t0.Add(8*time.Second)); err != nil {
				t.Fatal("settling an unknown send:", err)
			}
			l, err = a.Load(ctx, "ops", ws, t0.Add(61500*time.Millisecond))
			if err != nil || len(l.Sends) != 2 || l.Sends[1] != t0.Add(65*time.Second).UnixNano() {
				t.Fatalf("after settle %+v %v", l, err)
			}
			// A replica whose now is behind the latest send (read before
			// b settled at +65s) gets its send recorded at +65s, and
			// settling that time finds it: the window runs from +70s.
			at, w, err := a.Reserve(ctx, "ops", ws, t0.Add(62*time.Second))
			if err != nil || w != 0 || !at.Equal(t0.Add(65*time.Second)) {
				t.Fatalf("reserve behind the log: at %s wait %s err %v", at, w, err)
			}
			if err := a.Settle(ctx, "ops", at, t0.Add(70*time.Second)); err != nil {
				t.Fatal(err)
			}
			l, err = b.Load(ctx, "ops", ws, t0.Add(66*time.Second))
			want := []int64{t0.Add(65 * time.Second).UnixNano(), t0.Add(70 * time.Second).UnixNano()}
			if err != nil || !slices.Equal(l.Sends, want) {
				t.Fatalf("after settling the later send %v %v, want %v", l.Sends, err, want)
			}
		})
	}
}

// TestKVSharedBudgetUnderContention has two replicas' stores race for one
// receiver's slots: exactly Count sends are granted.
func TestKVSharedBudgetUnderContention(t *testing.T) {
	kv := newKV(t)
	ws := []Window{{Count: 20, Per: time.Minute}}
	var granted atomic.Int64
	var wg sync.WaitGroup
	for r := range 2 {
		s := NewKV(kv)
		for range 8 {
			wg.Go(func() {
				for range 10 {
					_, w, err := s.Reserve(context.Background(), "ops", ws, t0.Add(time.Duration(r)*time.Millisecond))
					if err != nil {
						t.Error(err)
						return
					}
					if w == 0 {
						granted.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	if n := granted.Load(); n != 20 {
		t.Fatalf("granted %d sends, want 20", n)
	}
}
