package ingest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest"
	"github.com/fleetwatch/fleetwatch/services/ingest/awsiot"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqx"
	"github.com/fleetwatch/fleetwatch/services/ingest/lastwill"
	"github.com/fleetwatch/fleetwatch/services/ingest/sparkplug"
	"google.golang.org/protobuf/encoding/protowire"
)

type fixture struct {
	Topic   string          `json:"topic"`
	Payload json.RawMessage `json:"payload"`
}

func readFixture(t *testing.T, path string) fixture {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var fx fixture
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	return fx
}

// fixtureEvent is the event of a shared fixture as stored by the service.
func fixtureEvent(t *testing.T, e events.PresenceEvent) events.PresenceEvent {
	t.Helper()
	e.ReceivedAtMS = receivedMS
	e, err := events.NewPresenceEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

var (
	v5Connected = events.PresenceEvent{DeviceID: "dev-42", Kind: events.KindConnected, Node: "emqx@10.0.0.11",
		BrokerTSMS: 1718000000123, ConnectedAtMS: 1718000000123, IP: "203.0.113.7", Username: "alice",
		Protocol: "mqtt", ProtoVer: 5, KeepaliveS: 60}
	v4Disconnected = events.PresenceEvent{DeviceID: "dev-42", Kind: events.KindDisconnected,
		Reason: events.ReasonClosed, RawReason: "tcp_closed", Node: "emqx@10.0.0.11", BrokerTSMS: 1718000300412,
		ConnectedAtMS: 1718000000123, Username: "alice", Source: emqx.SourceWebhookV4}
)

func TestRuleSource(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Sys.Enabled = false
	cfg.Rule.Enabled = true
	svc, _ := e.start(cfg)
	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("dev-42", events.DefaultPartitions))
	dlq := e.subscribe(events.StreamDeadLetter, events.DeadLetterSubject(ingest.Stage, ingest.SourceEMQXRule))

	fx := readFixture(t, "emqx/testdata/v5_events_client_connected.json")
	if err := e.broker.Publish("fleetwatch/presence/dev-42", fx.Payload, 1); err != nil {
		t.Fatal(err)
	}
	want := v5Connected
	want.Source = emqx.SourceRuleV5
	if got := sub.nextEvent(); got != fixtureEvent(t, want) {
		t.Fatalf("got %+v\nwant %+v", got, fixtureEvent(t, want))
	}

	// A republish action left with its default payload ${payload}.
	if err := e.broker.Publish("fleetwatch/presence/dev-42", []byte("undefined"), 1); err != nil {
		t.Fatal(err)
	}
	m := dlq.next()
	if got, want := m.Headers().Get(events.HeaderReason), "invalid emqx rule event: "+emqx.UndefinedPayloadHint; got != want || string(m.Data()) != "undefined" {
		t.Fatalf("dead letter %q reason %q\nwant reason %q", m.Data(), got, want)
	}
	if !strings.Contains(m.Headers().Get(events.HeaderReason), "${.}") {
		t.Error("the reason does not tell the user to use ${.}")
	}
	// $SYS is off: its topics are not subscribed.
	e.device("dev-9", nil)
	// A rule forwarding client.connack is ignored, not dead-lettered.
	if err := e.broker.Publish("fleetwatch/presence/x", []byte(`{"event":"client.connack","clientid":"x","node":"n"}`), 1); err != nil {
		t.Fatal(err)
	}
	e.waitStats(svc, ingest.Stats{Received: 3, Published: 1, DeadLettered: 1, Ignored: 1})
}

func TestAWSIoTSource(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.AWSIoT.Enabled = true
	cfg.AWSIoT.Node = "aws-eu-west-1"
	svc, _ := e.start(cfg)
	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("dev-42", events.DefaultPartitions))
	for _, f := range []string{"aws_iot_connected.json", "aws_iot_disconnected.json"} {
		fx := readFixture(t, "awsiot/testdata/"+f)
		if err := e.broker.Publish(fx.Topic, fx.Payload, 1); err != nil {
			t.Fatal(err)
		}
	}
	got := []events.PresenceEvent{sub.nextEvent(), sub.nextEvent()}
	if got[0].Kind != events.KindConnected {
		got[0], got[1] = got[1], got[0]
	}
	want := []events.PresenceEvent{
		fixtureEvent(t, events.PresenceEvent{DeviceID: "dev-42", Kind: events.KindConnected, Node: "aws-eu-west-1",
			BrokerTSMS: 1718000000180, ConnVersion: 8, IP: "203.0.113.7", Protocol: "mqtt", Source: awsiot.Source}),
		fixtureEvent(t, events.PresenceEvent{DeviceID: "dev-42", Kind: events.KindDisconnected,
			Reason: events.ReasonKeepaliveTimeout, RawReason: "MQTT_KEEP_ALIVE_TIMEOUT", Node: "aws-eu-west-1",
			BrokerTSMS: 1718000300450, ConnVersion: 8, Protocol: "mqtt", Source: awsiot.Source}),
	}
	if got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	e.waitStats(svc, ingest.Stats{Received: 2, Published: 2})
}

// TestLastWillSource: a device's birth message and its Will, through the
// real broker; a retained status replayed on subscribe is not stored again.
func TestLastWillSource(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Sys.Enabled = false
	cfg.LastWill.Enabled = true
	svc, stop := e.start(cfg)
	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("lw-1", events.DefaultPartitions))

	var sock io.Closer
	dev := e.device("lw-1", func(o *paho.ClientOptions) {
		o.SetWill("devices/lw-1/status", "offline", 1, true)
		o.SetCustomOpenConnectionFn(rawConn(&sock))
	})
	if tok := dev.Publish("devices/lw-1/status", 1, true, "online"); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish birth: %v", tok.Error())
	}
	base := events.PresenceEvent{DeviceID: "lw-1", Node: strings.TrimPrefix(e.broker.Addr(), "tcp://"),
		BrokerTSMS: receivedMS, Source: lastwill.Source}
	want := base
	want.Kind = events.KindConnected
	if got := sub.nextEvent(); got != fixtureEvent(t, want) {
		t.Fatalf("birth: got %+v\nwant %+v", got, fixtureEvent(t, want))
	}
	_ = sock.Close() // the broker publishes the Will
	want = base
	want.Kind, want.Reason, want.RawReason = events.KindDisconnected, events.ReasonOther, "offline"
	if got := sub.nextEvent(); got != fixtureEvent(t, want) {
		t.Fatalf("will: got %+v\nwant %+v", got, fixtureEvent(t, want))
	}
	e.waitStats(svc, ingest.Stats{Received: 2, Published: 2})
	stop()

	// A clean-session restart subscribes again and gets the retained Will.
	cfg.MQTT.ClientID = "fleetwatch-ingest-other"
	svc2, _ := e.start(cfg)
	e.waitStats(svc2, ingest.Stats{Received: 1, Ignored: 1})
}

// TestSeveralSourcesAtOnce: $SYS, rule events, AWS IoT and last-will
// statuses on one connection plus the webhook, each routed to its parser.
func TestSeveralSourcesAtOnce(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Rule.Enabled, cfg.AWSIoT.Enabled, cfg.LastWill.Enabled, cfg.Webhook.Enabled = true, true, true, true
	cfg.Webhook.Listen = "127.0.0.1:0"
	svc, _ := e.start(cfg)
	sources := map[string]string{}
	for _, p := range []struct{ topic, payload string }{
		{"$SYS/brokers/n1/clients/s-1/connected", `{"clientid":"s-1","protocol":"mqtt","connected_at":1718000000000}`},
		{"fleetwatch/presence/r-1", `{"event":"client.connected","clientid":"r-1","node":"n1","connected_at":1718000000000}`},
		{"$aws/events/presence/connected/a-1", `{"clientId":"a-1","eventType":"connected","timestamp":1718000000000,"versionNumber":1}`},
		{"devices/l-1/status", "online"},
	} {
		if err := e.broker.Publish(p.topic, []byte(p.payload), 1); err != nil {
			t.Fatal(err)
		}
	}
	resp := post(t, "http://"+svc.WebhookAddr()+"/emqx/webhook", "", `{"action":"client_connected","clientid":"w-1","node":"n1","connected_at":1718000000000}`)
	if resp.status != http.StatusOK {
		t.Fatalf("webhook: %d %s", resp.status, resp.body)
	}
	for id, source := range map[string]string{"s-1": emqx.SourceSysV5, "r-1": emqx.SourceRuleV4, "a-1": awsiot.Source,
		"l-1": lastwill.Source, "w-1": emqx.SourceWebhookV4} {
		ev := e.subscribe(events.StreamPresence, events.PresenceSubject(id, events.DefaultPartitions)).nextEvent()
		sources[id] = ev.Source
		if ev.Source != source {
			t.Errorf("%s: source %q, want %q", id, ev.Source, source)
		}
	}
	e.waitStats(svc, ingest.Stats{Received: 5, Published: 5})
}

type response struct {
	status int
	body   string
}

func post(t *testing.T, url, token, body string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, strings.TrimSpace(string(b))}
}

func TestWebhook(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Sys.Enabled = false
	cfg.Webhook.Enabled = true
	cfg.Webhook.Listen = "127.0.0.1:0"
	cfg.Webhook.TokenEnv = "FLEETWATCH_TEST_WEBHOOK_TOKEN"
	cfg.Webhook.MaxBodyBytes = 2048
	t.Setenv("FLEETWATCH_TEST_WEBHOOK_TOKEN", "s3cret-token")
	var logs bytes.Buffer
	svc, _ := e.startWith(cfg, &logs)
	url := "http://" + svc.WebhookAddr() + "/emqx/webhook"
	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("dev-42", events.DefaultPartitions))
	dlq := e.subscribe(events.StreamDeadLetter, events.DeadLetterSubject(ingest.Stage, ingest.SourceEMQXWebhook))

	v4 := readFixture(t, "emqx/testdata/v4_webhook_client_disconnected.json")
	got := post(t, url, "s3cret-token", string(v4.Payload))
	want := fixtureEvent(t, v4Disconnected)
	if got != (response{200, `{"id":"` + want.ID + `","outcome":"published"}`}) {
		t.Fatalf("v4 web hook: %+v", got)
	}
	if ev := sub.nextEvent(); ev != want {
		t.Fatalf("stored %+v\nwant %+v", ev, want)
	}
	// EMQX retries: the same body again is a duplicate, stored once.
	if got := post(t, url, "s3cret-token", string(v4.Payload)); got != (response{200, `{"id":"` + want.ID + `","outcome":"duplicate"}`}) {
		t.Fatalf("retry: %+v", got)
	}
	v5 := readFixture(t, "emqx/testdata/v5_events_client_connected.json")
	if got := post(t, url, "s3cret-token", string(v5.Payload)); got.status != 200 || !strings.Contains(got.body, `"published"`) {
		t.Fatalf("v5 HTTP action: %+v", got)
	}
	wantV5 := v5Connected
	wantV5.Source = emqx.SourceRuleV5
	if ev := sub.nextEvent(); ev != fixtureEvent(t, wantV5) {
		t.Fatalf("stored %+v", ev)
	}

	for _, tc := range []struct {
		name, token, body string
		want              response
	}{
		{"no token", "", string(v4.Payload), response{401, `{"error":"missing or wrong token in Authorization"}`}},
		{"wrong token", "s3cret-tokeX", string(v4.Payload), response{401, `{"error":"missing or wrong token in Authorization"}`}},
		{"other action", "s3cret-token", `{"action":"message_publish","clientid":"x"}`,
			response{200, `{"outcome":"ignored","reason":"emqx client event that is not presence: web hook action \"message_publish\""}`}},
		{"garbage", "s3cret-token", `not json`,
			response{400, `{"error":"invalid emqx web hook body: not a JSON object","outcome":"deadlettered"}`}},
		{"${payload}", "s3cret-token", `undefined`,
			response{400, `{"error":"invalid emqx web hook body: ` + strings.ReplaceAll(emqx.UndefinedPayloadHint, `"`, `\"`) + `","outcome":"deadlettered"}`}},
		{"too large", "s3cret-token", `{"pad":"` + strings.Repeat("x", 3000) + `"}`,
			response{413, `{"error":"invalid emqx web hook body: body exceeds ingest.webhook.max_body_bytes (2048); the first 2048 bytes are kept","outcome":"deadlettered"}`}},
	} {
		if got := post(t, url, tc.token, tc.body); got != tc.want {
			t.Errorf("%s: got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
	for _, want := range []string{"not json", "undefined", `{"pad":"` + strings.Repeat("x", 2048-8)} {
		if m := dlq.next(); string(m.Data()) != want || m.Headers().Get(events.HeaderTopic) != "/emqx/webhook" {
			t.Errorf("dead letter %.40q (topic %q), want %.40q", m.Data(), m.Headers().Get(events.HeaderTopic), want)
		}
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	e.waitStats(svc, ingest.Stats{Received: 7, Published: 2, Duplicates: 1, DeadLettered: 3, Ignored: 1})
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the token was logged:\n%s", logs.String())
	}
}

// TestWebhookAnswers503WithoutJetStream: EMQX gets an error (and retries)
// when the event could not be stored in time.
func TestWebhookAnswers503WithoutJetStream(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Sys.Enabled = false
	cfg.Webhook.Enabled = true
	cfg.Webhook.Listen = "127.0.0.1:0"
	cfg.Webhook.AckTimeout = 300 * time.Millisecond
	cfg.PublishTimeout = 100 * time.Millisecond
	svc, _ := e.start(cfg)
	if err := e.js.DeleteStream(t.Context(), events.StreamPresence); err != nil {
		t.Fatal(err)
	}
	v4 := readFixture(t, "emqx/testdata/v4_webhook_client_connected.json")
	if got := post(t, "http://"+svc.WebhookAddr()+"/emqx/webhook", "", string(v4.Payload)); got != (response{503, `{"error":"jetstream did not acknowledge within 300ms: retry"}`}) {
		t.Fatalf("got %+v", got)
	}
}

// TestSameEventViaSysAndWebhookStoredOnce: the $SYS message and the HTTP
// action body of one EMQX event get one Nats-Msg-Id: stored once.
func TestSameEventViaSysAndWebhookStoredOnce(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Webhook.Enabled = true
	cfg.Webhook.Listen = "127.0.0.1:0"
	svc, _ := e.start(cfg)
	for _, pair := range [][2]string{
		{"v5_sys_connected.json", "v5_events_client_connected.json"},
		{"v5_sys_disconnected.json", "v5_events_client_disconnected.json"},
		{"v4_sys_connected.json", "v4_webhook_client_connected.json"},
		{"v4_sys_disconnected.json", "v4_webhook_client_disconnected.json"},
	} {
		sys := readFixture(t, "emqx/testdata/"+pair[0])
		if err := e.broker.Publish(sys.Topic, sys.Payload, 1); err != nil {
			t.Fatal(err)
		}
		hook := readFixture(t, "emqx/testdata/"+pair[1])
		if got := post(t, "http://"+svc.WebhookAddr()+"/emqx/webhook", "", string(hook.Payload)); got.status != 200 {
			t.Fatalf("%s: %+v", pair[1], got)
		}
	}
	// Three distinct events: the v4 and v5 fixtures share the connect
	// (same node, client and connected_at), their disconnects differ by 1 ms.
	e.waitStats(svc, ingest.Stats{Received: 8, Published: 3, Duplicates: 5})
	stream, err := e.js.Stream(t.Context(), events.StreamPresence)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Fatalf("PRESENCE holds %d messages, want 3", info.State.Msgs)
	}
}

// sparkplugPayload is a Sparkplug B Payload with a timestamp (0: none) and
// the bdSeq metric (Int64, long_value), in protobuf wire format.
func sparkplugPayload(timestamp, bdSeq uint64) []byte {
	var m []byte
	m = protowire.AppendTag(m, 1, protowire.BytesType)
	m = protowire.AppendString(m, "bdSeq")
	m = protowire.AppendTag(m, 4, protowire.VarintType)
	m = protowire.AppendVarint(m, 4)
	m = protowire.AppendTag(m, 11, protowire.VarintType)
	m = protowire.AppendVarint(m, bdSeq)
	var p []byte
	if timestamp != 0 {
		p = protowire.AppendTag(p, 1, protowire.VarintType)
		p = protowire.AppendVarint(p, timestamp)
	}
	p = protowire.AppendTag(p, 2, protowire.BytesType)
	return protowire.AppendBytes(p, m)
}

// TestSparkplugSource: an edge node registers its NDEATH as the Will,
// publishes its NBIRTH, and loses its connection; the broker publishes the
// Will. Both are stored with the session's bdSeq as connection identity;
// the edge node's data messages are not subscribed.
func TestSparkplugSource(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Sys.Enabled = false
	cfg.Sparkplug.Enabled = true
	svc, _ := e.start(cfg)
	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("plant-1/line-4", events.DefaultPartitions))

	var sock io.Closer
	edge := e.device("line-4-edge", func(o *paho.ClientOptions) {
		o.SetBinaryWill("spBv1.0/plant-1/NDEATH/line-4", sparkplugPayload(1718000000050, 5), 1, false)
		o.SetCustomOpenConnectionFn(rawConn(&sock))
	})
	for _, m := range []struct {
		topic   string
		payload []byte
	}{
		{"spBv1.0/plant-1/NBIRTH/line-4", sparkplugPayload(1718000000100, 5)},
		{"spBv1.0/plant-1/NDATA/line-4", sparkplugPayload(1718000000200, 5)},
	} {
		if tok := edge.Publish(m.topic, 1, false, m.payload); !tok.WaitTimeout(wait) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", m.topic, tok.Error())
		}
	}
	base := events.PresenceEvent{DeviceID: "plant-1/line-4", Node: strings.TrimPrefix(e.broker.Addr(), "tcp://"),
		Protocol: "mqtt", ConnVersion: 6, Source: sparkplug.Source}
	want := base
	want.Kind, want.BrokerTSMS, want.ConnectedAtMS = events.KindConnected, 1718000000100, 1718000000100
	if got := sub.nextEvent(); got != fixtureEvent(t, want) {
		t.Fatalf("NBIRTH: got %+v\nwant %+v", got, fixtureEvent(t, want))
	}
	_ = sock.Close() // the broker publishes the Will: NDEATH
	want = base
	want.Kind, want.Reason, want.RawReason, want.BrokerTSMS = events.KindDisconnected, events.ReasonOther, "NDEATH", receivedMS
	if got := sub.nextEvent(); got != fixtureEvent(t, want) {
		t.Fatalf("NDEATH: got %+v\nwant %+v", got, fixtureEvent(t, want))
	}
	e.waitStats(svc, ingest.Stats{Received: 2, Published: 2})
}
