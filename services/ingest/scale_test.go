package ingest_test

import (
	"fmt"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
)

// TestTwoReplicasShareTheLoad: two ingest replicas in one shared
// subscription group against one broker; N devices connect and disconnect.
// Every device event is stored exactly once (counted by Nats-Msg-Id in
// PRESENCE), and both replicas took part.
func TestTwoReplicasShareTheLoad(t *testing.T) {
	const devices = 40
	e := newEnv(t)
	cfg := e.config()
	cfg.MQTT.SharedGroup = "fleetwatch-ingest"
	cfgA, cfgB := cfg, cfg
	cfgA.MQTT.ClientID, cfgB.MQTT.ClientID = "fleetwatch-ingest-a", "fleetwatch-ingest-b"
	a, _ := e.start(cfgA)
	b, _ := e.start(cfgB)

	for i := range devices {
		e.clock.Set(1718000000000 + int64(i)*10)
		d := e.device(fmt.Sprintf("scale-%02d", i), nil)
		e.clock.Set(1718000000000 + int64(i)*10 + 5)
		d.Disconnect(50)
	}

	seen := map[string]int{}   // Nats-Msg-Id → copies
	byKey := map[string]bool{} // device/kind
	r := e.readPresence()
	e.eventually("every device event stored", func() error {
		err := r.drain("scale-", func(m jetstream.Msg, ev events.PresenceEvent) {
			seen[m.Headers().Get(events.HeaderMsgID)]++
			byKey[ev.DeviceID+"/"+string(ev.Kind)] = true
		})
		if err != nil {
			return err
		}
		if len(byKey) != 2*devices {
			return fmt.Errorf("%d of %d device events stored", len(byKey), 2*devices)
		}
		return nil
	})
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s stored %d times", id, n)
		}
	}
	if len(seen) != 2*devices {
		t.Errorf("%d distinct ids for %d events", len(seen), 2*devices)
	}
	sa, sb := a.Stats(), b.Stats()
	if sa.Received == 0 || sb.Received == 0 {
		t.Errorf("the load was not shared: replica a %+v, replica b %+v", sa, sb)
	}
	if sa.DeadLettered+sb.DeadLettered != 0 {
		t.Errorf("dead letters: a %+v, b %+v", sa, sb)
	}
	t.Logf("replica a: %+v; replica b: %+v", sa, sb)
}
