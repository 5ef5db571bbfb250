package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
	"github.com/fleetwatch/fleetwatch/services/ingest"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqxsim"
	"github.com/nats-io/nats.go"
)

// BenchmarkIngestThroughput measures MQTT message in → JetStream ack with
// one ingest replica and emqxsim on this machine, next to two references
// measured in the same run on the same machine:
//
//   - raw: JetStream async publishes with Nats-Msg-Id of as many presence
//     events (ratio = ingest / raw);
//   - mqtt_only (sys_broker): the broker delivering as many $SYS messages
//     to a paho subscriber tuned like ingest's (persistent session, QoS 1,
//     PUBACK in receive order) that does nothing else.
//
// Every rate comes with the CPU time the whole process (broker, ingest or
// subscriber, NATS server) spent per message, which holds on a machine
// shared with other work where rates do not, and cores = CPU per message ×
// rate (about 2 on an idle 2-core machine: no serialisation point, the work
// is CPU-bound). ceiling_events/s = NumCPU / (mqtt_only CPU + raw CPU) is
// what any ingest could reach here with the broker and NATS in the same
// process, before it parses or encodes anything.
//
//   - rule_paho: a paho publisher sends b.N distinct rule-engine
//     client.connected events (QoS 1) to the rule source's topic;
//   - sys_broker: the broker itself publishes b.N distinct v5 $SYS
//     connected messages (QoS 1), as EMQX does (clients may not publish
//     to $SYS).
//
// The clock stops when ingest has stored them all.
//
//	go test -run '^$' -bench IngestThroughput -benchtime 20000x .
func BenchmarkIngestThroughput(b *testing.B) {
	b.Run("rule_paho", func(b *testing.B) { benchIngest(b, true) })
	b.Run("sys_broker", func(b *testing.B) { benchIngest(b, false) })
}

// window bounds the QoS 1 deliveries the broker holds unacknowledged for
// the subscriber (emqxsim's Broker.Unacked), below the broker's per-session
// limit (emqxsim.DefaultMaxInflight): past it the broker drops deliveries,
// as EMQX drops past max_mqueue_len, and a publisher far ahead would
// measure the broker's drops, not ingest. Counting what the subscriber
// received does not bound it: its PUBACKs reach the broker later, by
// thousands on a busy machine.
const window = 4000

// throttle waits, every 500 publishes, until the broker holds fewer than
// window-500 deliveries unacknowledged for clientID.
func throttle(b *testing.B, broker *emqxsim.Broker, clientID string, i int) {
	b.Helper()
	if i%500 != 0 {
		return
	}
	deadline := time.Now().Add(time.Minute)
	for broker.Unacked(clientID) >= window-500 {
		if time.Now().After(deadline) {
			b.Fatalf("the broker still holds %d deliveries unacknowledged for %s after 1 min (%+v)", broker.Unacked(clientID), clientID, broker.Stats())
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// sysMessage is the i-th benchmark $SYS connected message under prefix.
func sysMessage(prefix string, i int) (string, []byte) {
	id := "bench-" + strconv.Itoa(i)
	at := strconv.Itoa(1718000000000 + i)
	return prefix + "/clients/" + id + "/connected", []byte(`{"clientid":"` + id +
		`","username":"undefined","ipaddress":"10.0.0.1","sockport":1883,"protocol":"mqtt","proto_name":"MQTT",` +
		`"proto_ver":5,"connected_at":` + at + `,"ts":` + at + `,"keepalive":60,"clean_start":true,"expiry_interval":0}`)
}

func benchIngest(b *testing.B, viaPaho bool) {
	ns := natstest.Start(b)
	nc, js := ns.Connect(b)
	if err := events.EnsureStreams(b.Context(), js, events.DefaultTopology()); err != nil {
		b.Fatal(err)
	}
	broker, err := emqxsim.New(emqxsim.Config{HeartbeatInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	if err := broker.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = broker.Close() })
	// The publisher connects before ingest subscribes: its own connected
	// event reaches no one, so ingest stores only the benchmark's messages.
	pub := paho.NewClient(paho.NewClientOptions().AddBroker(broker.Addr()).SetClientID("bench-publisher").SetAutoReconnect(false))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("publisher connect: %v", tok.Error())
	}
	b.Cleanup(func() { pub.Disconnect(0) })

	cfg := ingest.DefaultConfig()
	cfg.MQTT.Broker = broker.Addr()
	cfg.MQTT.ClientID = "fleetwatch-ingest-bench"
	cfg.Rule.Enabled = true
	svc, err := ingest.New(cfg, ingest.Deps{NATS: nc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	for svc.Ready() != nil {
		time.Sleep(5 * time.Millisecond)
	}
	base := svc.Stats().Published

	b.ResetTimer()
	start, cpu0 := time.Now(), telemetry.ProcessCPU()
	var last paho.Token
	for i := range b.N {
		if viaPaho && i%500 == 0 && last != nil {
			// The broker took in what the publisher sent so far (it
			// PUBACKs a message just before delivering it): the
			// throttle below sees the deliveries it makes of it.
			if !last.WaitTimeout(time.Minute) || last.Error() != nil {
				b.Fatalf("publisher: %v", last.Error())
			}
		}
		throttle(b, broker, cfg.MQTT.ClientID, i)
		id := "bench-" + strconv.Itoa(i)
		at := strconv.Itoa(1718000000000 + i)
		if viaPaho {
			last = pub.Publish("fleetwatch/presence/"+id, 1, false, `{"clientid":"`+id+`","username":"undefined",`+
				`"peername":"10.0.0.1:50312","proto_name":"MQTT","proto_ver":5,"keepalive":60,"connected_at":`+at+
				`,"event":"client.connected","timestamp":`+at+`,"node":"emqx@bench","conn_props":{}}`)
			continue
		}
		topic, payload := sysMessage("$SYS/brokers/emqx@bench", i)
		if err := broker.Publish(topic, payload, 1); err != nil {
			b.Fatal(err)
		}
	}
	if last != nil && (!last.WaitTimeout(time.Minute) || last.Error() != nil) {
		b.Fatalf("publisher: %v", last.Error())
	}
	deadline := time.Now().Add(2 * time.Minute)
	for svc.Stats().Published < base+int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("stored %d of %d within 2 min: %+v; broker %+v", svc.Stats().Published-base, b.N, svc.Stats(), broker.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	ingestRate := float64(b.N) / time.Since(start).Seconds()
	ingestCPU := (telemetry.ProcessCPU() - cpu0).Seconds() * 1e6 / float64(b.N)
	b.StopTimer()

	rawRate, rawCPU := rawPublishRate(b, nc, b.N)
	b.ReportMetric(ingestRate, "events/s")
	b.ReportMetric(ingestCPU, "cpu_us/event")
	b.ReportMetric(float64(svc.Stats().PublishErrors), "publish_errors")
	b.ReportMetric(ingestCPU*ingestRate/1e6, "cores")
	b.ReportMetric(rawRate, "raw_js_msgs/s")
	b.ReportMetric(rawCPU, "raw_cpu_us/msg")
	b.ReportMetric(ingestRate/rawRate, "ratio")
	if !viaPaho {
		mqttRate, mqttCPU := mqttOnlyRate(b, broker, b.N)
		b.ReportMetric(mqttRate, "mqtt_only_msgs/s")
		b.ReportMetric(mqttCPU, "mqtt_only_cpu_us/msg")
		b.ReportMetric(float64(runtime.NumCPU())*1e6/(mqttCPU+rawCPU), "ceiling_events/s")
	}
}

// mqttOnlyRate has the broker deliver n $SYS messages (on a $SYS topic
// ingest does not subscribe to) to a paho subscriber tuned like ingest's
// that only acknowledges them (through paho's Ack); it returns msgs/s and
// CPU µs/msg.
func mqttOnlyRate(b *testing.B, broker *emqxsim.Broker, n int) (float64, float64) {
	b.Helper()
	var got atomic.Int64
	const clientID = "bench-mqtt-only"
	opts := ingest.TuneClient(paho.NewClientOptions().AddBroker(broker.Addr()).SetClientID(clientID).
		SetCleanSession(false).SetAutoAckDisabled(true).SetOrderMatters(true).SetAutoReconnect(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { m.Ack(); got.Add(1) }))
	sub := paho.NewClient(opts)
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("mqtt-only subscriber connect: %v", tok.Error())
	}
	defer sub.Disconnect(0)
	if tok := sub.Subscribe("$SYS/bench/mqtt-only/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("mqtt-only subscribe: %v", tok.Error())
	}
	start, cpu0 := time.Now(), telemetry.ProcessCPU()
	for i := range n {
		throttle(b, broker, clientID, i)
		topic, payload := sysMessage("$SYS/bench/mqtt-only", i)
		if err := broker.Publish(topic, payload, 1); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for got.Load() < int64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("mqtt-only subscriber got %d of %d within 2 min; broker %+v", got.Load(), n, broker.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	return float64(n) / time.Since(start).Seconds(), (telemetry.ProcessCPU() - cpu0).Seconds() * 1e6 / float64(n)
}

// rawPublishRate publishes n presence events asynchronously with
// Nats-Msg-Id and waits for every ack; it returns msgs/s and CPU µs/msg.
func rawPublishRate(b *testing.B, nc *nats.Conn, n int) (float64, float64) {
	b.Helper()
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	msgs := make([]*nats.Msg, n)
	for i := range n {
		ev, err := events.NewPresenceEvent(events.PresenceEvent{DeviceID: fmt.Sprintf("raw-%d", i), Kind: events.KindConnected,
			Node: "emqx@bench", BrokerTSMS: 1718000000000 + int64(i), ConnectedAtMS: 1718000000000 + int64(i),
			Source: "bench", ReceivedAtMS: 1718000000000})
		if err != nil {
			b.Fatal(err)
		}
		m := nats.NewMsg(ev.Subject(events.DefaultPartitions))
		m.Data = []byte(`{"v":1,"id":"` + ev.ID + `","device_id":"` + ev.DeviceID + `","kind":"connected","node":"emqx@bench",` +
			`"broker_ts_ms":1718000000000,"source":"bench","received_at_ms":1718000000000}`)
		m.Header.Set(events.HeaderMsgID, ev.ID)
		msgs[i] = m
	}
	start, cpu0 := time.Now(), telemetry.ProcessCPU()
	for _, m := range msgs {
		_, err := js.PublishMsgAsync(m)
		for errors.Is(err, nats.ErrTooManyStalledMsgs) { // a busy machine: wait on
			_, err = js.PublishMsgAsync(m)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("raw publishes not acknowledged within 2 min")
	}
	return float64(n) / time.Since(start).Seconds(), (telemetry.ProcessCPU() - cpu0).Seconds() * 1e6 / float64(n)
}
