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

// mqttOnly has broker deliver n $SYS-like messages (on a topic ingest does
// not subscribe to) to a paho subscriber tuned like ingest's — persistent
// session, QoS 1, manual PUBACK in receive order, buffered reads, no
// session store — that only acknowledges them. It returns msgs/s and the
// process CPU µs per message: the broker → MQTT client part of ingest's
// path, with nothing of ingest's own work.
func mqttOnly(ctx context.Context, broker *emqxsim.Broker, n int) (float64, float64, error) {
	var got atomic.Int64
	opts := ingest.TuneClient(paho.NewClientOptions().AddBroker(broker.Addr()).SetClientID("bench-mqtt-only").
		SetCleanSession(false).SetAutoAckDisabled(true).SetOrderMatters(true).SetAutoReconnect(false)).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { m.Ack(); got.Add(1) })
	sub := paho.NewClient(opts)
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return 0, 0, fmt.Errorf("subscriber connect: %v", tok.Error())
	}
	defer sub.Disconnect(0)
	if tok := sub.Subscribe("bench/mqtt-only/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return 0, 0, fmt.Errorf("subscribe: %v", tok.Error())
	}
	base := time.Now().UnixMilli()
	topics := make([]string, n)
	payloads := make([][]byte, n)
	for i := range n {
		id := "bench-dev-" + strconv.Itoa(i)
		topics[i] = "bench/mqtt-only/" + id + "/connected"
		payloads[i] = sysConnected(id, base+int64(i))
	}
	t0, cpu := time.Now(), startCPU()
	for i := range n {
		for i%256 == 0 && int64(i)-got.Load() >= window-256 {
			time.Sleep(100 * time.Microsecond)
		}
		if err := broker.Publish(topics[i], payloads[i], 1); err != nil {
			return 0, 0, err
		}
	}
	if err := waitFor(ctx, 3*time.Minute, "broker → paho subscriber", func() (bool, error) { return got.Load() >= int64(n), nil }); err != nil {
		return 0, 0, fmt.Errorf("%w (received %d of %d)", err, got.Load(), n)
	}
	return rate(n, time.Since(t0)), cpu.perOp(n), nil
}
