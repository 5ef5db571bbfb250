package awsiot_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/awsiot"
)

var received = time.UnixMilli(1718000999000)

type fixture struct {
	Topic   string          `json:"topic"`
	Payload json.RawMessage `json:"payload"`
}

func readFixture(t testing.TB, name string) fixture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func mustEvent(t *testing.T, e events.PresenceEvent) events.PresenceEvent {
	t.Helper()
	e, err := events.NewPresenceEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestFixtures(t *testing.T) {
	for file, want := range map[string]events.PresenceEvent{
		"aws_iot_connected.json": {DeviceID: "dev-42", Kind: events.KindConnected, Node: "aws-iot",
			BrokerTSMS: 1718000000180, ConnVersion: 8, IP: "203.0.113.7", Protocol: "mqtt",
			Source: awsiot.Source, ReceivedAtMS: 1718000999000},
		"aws_iot_disconnected.json": {DeviceID: "dev-42", Kind: events.KindDisconnected,
			Reason: events.ReasonKeepaliveTimeout, RawReason: "MQTT_KEEP_ALIVE_TIMEOUT", Node: "aws-iot",
			BrokerTSMS: 1718000300450, ConnVersion: 8, Protocol: "mqtt", Source: awsiot.Source, ReceivedAtMS: 1718000999000},
	} {
		f := readFixture(t, file)
		got, err := awsiot.Parse(f.Topic, f.Payload, "aws-iot", received)
		if want := mustEvent(t, want); err != nil || got != want {
			t.Errorf("%s: got %+v, %v\nwant %+v", file, got, err, want)
		}
	}
}

func TestFixturesMatchShared(t *testing.T) {
	dir := os.Getenv("FLEETWATCH_SHARED_DIR")
	if dir == "" {
		dir = "../../../../shared"
	}
	for _, name := range []string{"aws_iot_connected.json", "aws_iot_disconnected.json"} {
		want, err := os.ReadFile(filepath.Join(dir, "fixtures", "emqx", name))
		if err != nil {
			t.Skipf("shared fixtures not found in %s (set FLEETWATCH_SHARED_DIR): %v", dir, err)
		}
		got, _ := os.ReadFile(filepath.Join("testdata", name))
		if string(got) != string(want) {
			t.Errorf("testdata/%s differs from the shared fixture: copy it again", name)
		}
	}
}

const discTopic = "$aws/events/presence/disconnected/dev-1"

func TestReasons(t *testing.T) {
	for _, tc := range []struct {
		payload string
		reason  events.Reason
		raw     string
	}{
		{`"disconnectReason":"CONNECTION_LOST"`, events.ReasonClosed, "CONNECTION_LOST"},
		{`"disconnectReason":"DUPLICATE_CLIENTID"`, events.ReasonDiscarded, "DUPLICATE_CLIENTID"},
		{`"disconnectReason":"CLIENT_INITIATED_DISCONNECT","clientInitiatedDisconnect":true`, events.ReasonNormal, "CLIENT_INITIATED_DISCONNECT"},
		{`"disconnectReason":"SERVER_INITIATED_DISCONNECT"`, events.ReasonOther, "SERVER_INITIATED_DISCONNECT"},
		{`"clientInitiatedDisconnect":true`, events.ReasonNormal, ""},
		{`"clientInitiatedDisconnect":false`, events.ReasonOther, ""},
	} {
		p := `{"clientId":"dev/1 ü","timestamp":1718000000000,"eventType":"disconnected","versionNumber":0,` + tc.payload + `}`
		got, err := awsiot.Parse(discTopic, []byte(p), "aws", received)
		if err != nil || got.Reason != tc.reason || got.RawReason != tc.raw || got.DeviceID != "dev/1 ü" {
			t.Errorf("%s: got %+v, %v; want reason %s raw %q", tc.payload, got, err, tc.reason, tc.raw)
		}
	}
}

func TestRejects(t *testing.T) {
	for _, tc := range []struct {
		topic, payload string
		sentinel       error
		want           string
	}{
		{"devices/x", `{}`, awsiot.ErrTopic, `not an aws iot presence topic: "devices/x" is not $aws/events/presence/<connected|disconnected>/<clientId>`},
		{"$aws/events/presence/exploded/x", `{}`, awsiot.ErrTopic, `not an aws iot presence topic: "$aws/events/presence/exploded/x": unknown event "exploded" (want connected or disconnected)`},
		{discTopic, `nope`, awsiot.ErrPayload, "invalid aws iot lifecycle event: not a JSON object"},
		{discTopic, `{"clientId":"d","timestamp":1718000000000,"eventType":"connected"}`, awsiot.ErrPayload,
			`invalid aws iot lifecycle event: eventType "connected" does not match the topic's "disconnected"`},
		{discTopic, `{"timestamp":1718000000000,"eventType":"disconnected"}`, awsiot.ErrPayload, "invalid aws iot lifecycle event: clientId is missing"},
		{discTopic, `{"clientId":"d","eventType":"disconnected"}`, awsiot.ErrPayload, "invalid aws iot lifecycle event: timestamp is missing"},
		{discTopic, `{"clientId":"d","timestamp":1718000000000,"eventType":"disconnected","versionNumber":-1}`, awsiot.ErrPayload,
			"invalid aws iot lifecycle event: versionNumber -1 is out of range (0 to 2^63-2)"},
		{discTopic, `{"clientId":"d","timestamp":1718000000000,"eventType":"disconnected","clientInitiatedDisconnect":"yes"}`, awsiot.ErrPayload,
			"invalid aws iot lifecycle event: clientInitiatedDisconnect is a string, want a boolean"},
	} {
		got, err := awsiot.Parse(tc.topic, []byte(tc.payload), "aws", received)
		if !errors.Is(err, tc.sentinel) || err.Error() != tc.want || got != (events.PresenceEvent{}) {
			t.Errorf("Parse(%s, %s) = %+v, %v\nwant %s", tc.topic, tc.payload, got, err, tc.want)
		}
	}
}

// FuzzParse: no panics; accepted inputs are valid; rejections are explained.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"aws_iot_connected.json", "aws_iot_disconnected.json"} {
		fx := readFixture(f, name)
		f.Add(fx.Topic, []byte(fx.Payload))
	}
	f.Add(discTopic, []byte(`{"clientId":"d","timestamp":1718000000,"eventType":"disconnected","clientInitiatedDisconnect":true}`))
	f.Fuzz(func(t *testing.T, topic string, p []byte) {
		ev, err := awsiot.Parse(topic, p, "aws", received)
		if err != nil {
			if ev != (events.PresenceEvent{}) || !(errors.Is(err, awsiot.ErrTopic) || errors.Is(err, awsiot.ErrPayload)) {
				t.Fatalf("%+v, %v", ev, err)
			}
			return
		}
		if err := ev.Validate(); err != nil || ev.Source != awsiot.Source || ev.ConnVersion < 0 {
			t.Fatalf("accepted %+v: %v", ev, err)
		}
	})
}
