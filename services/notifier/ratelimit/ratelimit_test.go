package ratelimit

import (
	"testing"
	"time"
)

func TestLimiterRollingMinute(t *testing.T) {
	l, err := New(Window{Count: 3, Per: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1700000000, 0)
	for i := range 3 {
		if w := l.Reserve(t0.Add(time.Duration(i) * time.Second)); w != 0 {
			t.Fatalf("send %d: wait %s, want 0", i, w)
		}
	}
	if w := l.Reserve(t0.Add(10 * time.Second)); w != 50*time.Second {
		t.Fatalf("4th send wait = %s, want 50s", w)
	}
	// A refused send is not recorded: at t0+60s the first send left the window.
	if w := l.Reserve(t0.Add(60 * time.Second)); w != 0 {
		t.Fatalf("send at +60s: wait %s, want 0", w)
	}
	if w := l.Reserve(t0.Add(60 * time.Second)); w != time.Second {
		t.Fatalf("next send at +60s: wait %s, want 1s", w)
	}
}

func TestLimiterTwoWindows(t *testing.T) {
	l, err := New(Window{Count: 2, Per: time.Second}, Window{Count: 4, Per: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1700000000, 0)
	steps := []struct {
		at   time.Duration
		want time.Duration
	}{
		{0, 0},
		{100 * time.Millisecond, 0},
		{200 * time.Millisecond, 800 * time.Millisecond},
		{time.Second, 0},
		{1100 * time.Millisecond, 0},
		{3 * time.Second, 57 * time.Second}, // the minute window is full
		{60 * time.Second, 0},
	}
	for i, s := range steps {
		if got := l.Reserve(t0.Add(s.at)); got != s.want {
			t.Fatalf("step %d at +%s: wait %s, want %s", i, s.at, got, s.want)
		}
	}
}

func TestLimiterNeverExceedsWindow(t *testing.T) {
	w := Window{Count: 20, Per: time.Minute}
	l, err := New(w)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1700000000, 0)
	var sent []time.Time
	for ms := 0; ms < 5*60*1000; ms += 250 {
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		if l.Reserve(now) == 0 {
			sent = append(sent, now)
		}
	}
	for i := range sent {
		n := 0
		for j := i; j < len(sent) && sent[j].Sub(sent[i]) < time.Minute; j++ {
			n++
		}
		if n > w.Count {
			t.Fatalf("%d sends in the minute from %s", n, sent[i])
		}
	}
	if len(sent) != 100 {
		t.Fatalf("sent %d in 5 minutes, want 100", len(sent))
	}
}

func TestWindowValidate(t *testing.T) {
	if _, err := New(Window{Count: 0, Per: time.Second}); err == nil || err.Error() != "window[0].count is 0: allow at least 1 send per window" {
		t.Fatalf("err = %v", err)
	}
	if _, err := New(Window{Count: 1}); err == nil || err.Error() != "window[0].per is 0s: use a positive duration such as 1m" {
		t.Fatalf("err = %v", err)
	}
}
