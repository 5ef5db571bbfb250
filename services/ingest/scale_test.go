package ingest_test

import (
	"encoding/json"
	"fmt"
	"strings"
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

	stream, err := e.js.Stream(t.Context(), events.StreamPresence)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}   // Nats-Msg-Id → copies
	byKey := map[string]bool{} // device/kind
	cons, err := stream.OrderedConsumer(t.Context(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	e.eventually("every device event stored", func() error {
		for {
			batch, err := cons.FetchNoWait(500)
			if err != nil {
				return err
			}
			n := 0
			for m := range batch.Messages() {
				n++
				var ev events.PresenceEvent
				if err := json.Unmarshal(m.Data(), &ev); err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(ev.DeviceID, "scale-") {
					continue // the replicas' own connections, reported by the broker too
				}
				seen[m.Headers().Get(events.HeaderMsgID)]++
				byKey[ev.DeviceID+"/"+string(ev.Kind)] = true
			}
			if n == 0 {
				break
			}
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
