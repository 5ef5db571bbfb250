package notifier

import (
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/ratelimit"
)

// TestReplicasShareTheBudget runs two notifier replicas on one durable
// consumer, each configured with DingTalk's whole limit (20 per minute).
// Alone, each would believe it may send 20 a minute; together they would
// trip the robot's 10-minute block. Sharing the send log in NATS KV keeps
// the pair at 20: the robot never answers 410100 and every device is
// reported.
func TestReplicasShareTheBudget(t *testing.T) {
	const n = 400
	h := newHarnessScaled(t, 20)
	cfg := h.config()
	cfg.Receivers[0].DingTalk.AtMobiles = nil
	cfg.Receivers[0].RateLimit = []ratelimit.Window{{Count: chatsim.DingTalkPerMinute, Per: time.Minute}}
	// Small digest spacing so both replicas keep competing for slots.
	cfg.Digest.Interval = time.Second
	cfg.Digest.Reserve = 0
	var sent [2]atomic.Int64
	for i := range sent {
		client := &http.Client{Transport: countingTransport{&sent[i], http.DefaultTransport}}
		h.runDeps(cfg, Deps{Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})), HTTPClient: client})
	}

	var seq uint64
	for i := range n {
		// A trickle, so both replicas hold alerts and send.
		seq = h.publish(deviceAlert("ops-dt", fmt.Sprintf("dev-%04d", i), events.StatusFiring, h.clock.Now(), time.Time{}, h.clock.Now()), "")
		if i%20 == 19 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	h.settled(seq)
	if rj := h.sim.Rejections(); len(rj) != 0 {
		t.Fatalf("%d rejections, first %+v", len(rj), rj[0])
	}
	msgs := h.sim.MessagesTo("dt")
	c := cover(t, msgs)
	if got := len(c.firing) + c.digestFire; got != n {
		t.Fatalf("%d devices reported, want %d", got, n)
	}
	if m := maxInWindow(msgs, time.Minute); m > chatsim.DingTalkPerMinute {
		t.Fatalf("%d messages in a minute", m)
	}
	t.Logf("%d messages (%d single, %d digests), at most %d in a minute; replicas sent %d and %d",
		len(msgs), c.singles, c.digests, maxInWindow(msgs, time.Minute), sent[0].Load(), sent[1].Load())
	if sent[0].Load() == 0 || sent[1].Load() == 0 {
		t.Fatalf("one replica sent nothing (%d, %d): the test did not exercise sharing", sent[0].Load(), sent[1].Load())
	}
}

// countingTransport counts the requests sent through it.
type countingTransport struct {
	n    *atomic.Int64
	next http.RoundTripper
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}
