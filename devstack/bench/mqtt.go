package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fleetwatch/fleetwatch/services/ingest"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqxsim"
)

// mqttOnly has broker deliver n $SYS messages (on a $SYS topic ingest does
// not subscribe to, so that the broker's $SYS delivery check counts as for
// ingest) to a paho subscriber tuned like ingest's — persistent session,
// QoS 1, manual PUBACK in receive order (through paho's Ack: ingest writes
// its PUBACKs itself, in batches), buffered reads, coalesced writes, no
// session store — that only acknowledges them. It returns msgs/s and the
// process CPU µs per message: the broker → MQTT client part of ingest's
// path, with nothing of ingest's own work.
func mqttOnly(ctx context.Context, broker *emqxsim.Broker, n int) (float64, float64, error) {
	var got atomic.Int64
	const clientID = "bench-mqtt-only"
	opts := ingest.TuneClient(paho.NewClientOptions().AddBroker(broker.Addr()).SetClientID(clientID).
		SetCleanSession(false).SetAutoAckDisabled(true).SetOrderMatters(true).SetAutoReconnect(false)).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { m.Ack(); got.Add(1) })
	sub := paho.NewClient(opts)
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return 0, 0, fmt.Errorf("subscriber connect: %v", tok.Error())
	}
	defer sub.Disconnect(0)
	if tok := sub.Subscribe("$SYS/bench/mqtt-only/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return 0, 0, fmt.Errorf("subscribe: %v", tok.Error())
	}
	base := time.Now().UnixMilli()
	topics := make([]string, n)
	payloads := make([][]byte, n)
	for i := range n {
		id := "bench-dev-" + strconv.Itoa(i)
		topics[i] = "$SYS/bench/mqtt-only/" + id + "/connected"
		payloads[i] = sysConnected(id, base+int64(i))
	}
	t0, cpu := time.Now(), startCPU()
	err := publishWindowed(ctx, broker, clientID, topics, payloads)
	if err == nil {
		err = waitFor(ctx, 3*time.Minute, "broker → paho subscriber", func() (bool, error) { return got.Load() >= int64(n), nil })
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w (received %d of %d; %s)", err, got.Load(), n, brokerState(broker, clientID))
	}
	return rate(n, time.Since(t0)), cpu.perOp(n), nil
}

// publishWindowed has broker publish each payload to its topic at QoS 1,
// keeping the deliveries it holds unacknowledged for the subscriber
// clientID below window, so that the broker drops none of them.
func publishWindowed(ctx context.Context, broker *emqxsim.Broker, clientID string, topics []string, payloads [][]byte) error {
	const batch = 256
	for i := range topics {
		if i%batch == 0 {
			if err := waitFor(ctx, time.Minute, "the subscriber's acknowledgements", func() (bool, error) {
				return broker.Unacked(clientID) < window-batch, nil
			}); err != nil {
				return err
			}
		}
		if err := broker.Publish(topics[i], payloads[i], 1); err != nil {
			return err
		}
	}
	return nil
}

// brokerState describes what the broker holds and dropped, for an error of
// a step that did not complete.
func brokerState(broker *emqxsim.Broker, clientID string) string {
	st := broker.Stats()
	return fmt.Sprintf("broker: %d unacknowledged for %s, dropped %d at a session's in-flight limit and %d at a full outbound queue",
		broker.Unacked(clientID), clientID, st.InflightDropped, st.MessagesDropped)
}
