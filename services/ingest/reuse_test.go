package ingest_test

import (
	"fmt"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
)

// TestReusedItemsStoreTheirOwnEvent: with max_in_flight 4 the pipeline
// reuses its items (their header maps and data buffers) dozens of times;
// every one of n distinct $SYS messages is still stored exactly once, with
// its own id as Nats-Msg-Id, its own data on its own subject, and a trace
// context of its own.
func TestReusedItemsStoreTheirOwnEvent(t *testing.T) {
	const n = 300
	e := newEnv(t)
	cfg := e.config()
	cfg.MaxInFlight = 4
	svc, _ := e.start(cfg)
	for i := range n {
		topic, payload := sysMessage("$SYS/brokers/emqx@reuse", i)
		if err := e.broker.Publish(topic, payload, 1); err != nil {
			t.Fatal(err)
		}
	}

	ids := map[string]int{}      // Nats-Msg-Id → copies
	traces := map[string]bool{}  // traceparent values
	devices := map[string]bool{} // device ids stored
	r := e.readPresence()
	e.eventually("every message stored", func() error {
		err := r.drain("bench-", func(m jetstream.Msg, ev events.PresenceEvent) {
			if id := m.Headers().Get(events.HeaderMsgID); id != ev.ID {
				t.Errorf("event %s (%s) stored with Nats-Msg-Id %q", ev.ID, ev.DeviceID, id)
			}
			if want := ev.Subject(cfg.Partitions); m.Subject() != want {
				t.Errorf("event of %s stored on %s, want %s", ev.DeviceID, m.Subject(), want)
			}
			var i int64
			if _, err := fmt.Sscanf(ev.DeviceID, "bench-%d", &i); err != nil || ev.ConnectedAtMS != 1718000000000+i {
				t.Errorf("event of %s stored with connected_at %d: another message's data", ev.DeviceID, ev.ConnectedAtMS)
			}
			if tp := m.Headers().Get("traceparent"); tp == "" || traces[tp] {
				t.Errorf("event of %s has trace context %q, empty or another event's", ev.DeviceID, tp)
			} else {
				traces[tp] = true
			}
			ids[ev.ID]++
			devices[ev.DeviceID] = true
		})
		if err != nil {
			return err
		}
		if len(devices) != n {
			return fmt.Errorf("%d of %d events stored", len(devices), n)
		}
		return nil
	})
	for id, copies := range ids {
		if copies != 1 {
			t.Errorf("event %s stored %d times", id, copies)
		}
	}
	if len(ids) != n {
		t.Errorf("%d distinct ids for %d events", len(ids), n)
	}
	if st := svc.Stats(); st.DeadLettered != 0 || st.PublishErrors != 0 {
		t.Errorf("stats %+v: want no dead letters, no publish errors", st)
	}
}
