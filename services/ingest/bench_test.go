package ingest_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/services/ingest"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqxsim"
	"github.com/nats-io/nats.go"
)

// BenchmarkIngestThroughput measures MQTT message in → JetStream ack with
// one ingest replica and emqxsim on this machine, next to the raw JetStream
// rate of async publishes with Nats-Msg-Id of the same events, measured in
// the same run (ratio = ingest / raw):
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

// window bounds the messages published and not yet received by ingest.
const window = 4000

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
	cfg.MaxInFlight = 1024
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
	start := time.Now()
	var last paho.Token
	for i := range b.N {
		// Stay within the broker's per-subscriber queue (mochi drops
		// beyond 8192 pending, as EMQX drops beyond max_mqueue_len): a
		// publisher far ahead would measure the broker's drops, not ingest.
		for i%500 == 0 && int64(i)-svc.Stats().Received > window {
			time.Sleep(100 * time.Microsecond)
		}
		id := "bench-" + strconv.Itoa(i)
		at := strconv.Itoa(1718000000000 + i)
		if viaPaho {
			last = pub.Publish("fleetwatch/presence/"+id, 1, false, `{"clientid":"`+id+`","username":"undefined",`+
				`"peername":"10.0.0.1:50312","proto_name":"MQTT","proto_ver":5,"keepalive":60,"connected_at":`+at+
				`,"event":"client.connected","timestamp":`+at+`,"node":"emqx@bench","conn_props":{}}`)
			continue
		}
		err := broker.Publish("$SYS/brokers/emqx@bench/clients/"+id+"/connected", []byte(`{"clientid":"`+id+
			`","username":"undefined","ipaddress":"10.0.0.1","sockport":1883,"protocol":"mqtt","proto_name":"MQTT",`+
			`"proto_ver":5,"connected_at":`+at+`,"ts":`+at+`,"keepalive":60,"clean_start":true,"expiry_interval":0}`), 1)
		if err != nil {
			b.Fatal(err)
		}
	}
	if last != nil && (!last.WaitTimeout(time.Minute) || last.Error() != nil) {
		b.Fatalf("publisher: %v", last.Error())
	}
	deadline := time.Now().Add(2 * time.Minute)
	for svc.Stats().Published < base+int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("stored %d of %d within 2 min: %+v", svc.Stats().Published-base, b.N, svc.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	ingestRate := float64(b.N) / time.Since(start).Seconds()
	b.StopTimer()

	rawRate := rawPublishRate(b, nc, b.N)
	b.ReportMetric(ingestRate, "events/s")
	b.ReportMetric(rawRate, "raw_js_msgs/s")
	b.ReportMetric(ingestRate/rawRate, "ratio")
}

// rawPublishRate publishes n presence events asynchronously with
// Nats-Msg-Id and waits for every ack.
func rawPublishRate(b *testing.B, nc *nats.Conn, n int) float64 {
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
	start := time.Now()
	for _, m := range msgs {
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("raw publishes not acknowledged within 2 min")
	}
	return float64(n) / time.Since(start).Seconds()
}
