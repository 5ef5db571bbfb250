package natstest_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
)

func TestStart(t *testing.T) {
	s := natstest.Start(t)
	if !strings.HasPrefix(s.URL(), "nats://127.0.0.1:") || strings.HasSuffix(s.URL(), ":4222") {
		t.Fatalf("URL %q: want a random loopback port", s.URL())
	}
	if _, err := os.Stat(s.StoreDir()); err != nil {
		t.Fatalf("store dir: %v", err)
	}
	nc, js := s.Connect(t)
	if !nc.IsConnected() {
		t.Fatal("not connected")
	}
	if _, err := js.AccountInfo(t.Context()); err != nil {
		t.Fatalf("JetStream is not enabled: %v", err)
	}
	// Reservations are bookkeeping: the test server accepts far more than
	// the machine has, so the default topology fits in memory storage.
	cfg := s.JetStreamConfig()
	if cfg == nil || cfg.MaxMemory < 1<<40 || cfg.MaxStore < 1<<40 {
		t.Fatalf("JetStream limits %+v: want at least 1 TiB memory and store", cfg)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	natstest.Eventually(t, 5*time.Second, func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("condition polled %d times, want 3", n)
	}
}

// fakeTB records Fatalf and ends the goroutine, as testing.T does.
type fakeTB struct {
	testing.TB
	msg string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestEventuallyTimesOut(t *testing.T) {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		natstest.Eventually(f, 30*time.Millisecond, func() bool { return false })
	}()
	<-done
	if f.msg != "condition not met within 30ms" {
		t.Fatalf("Fatalf message %q", f.msg)
	}
}
