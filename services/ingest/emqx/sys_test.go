package emqx_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqx"
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
		t.Fatalf("%s: %v", name, err)
	}
	return f
}

func mustEvent(t *testing.T, e events.PresenceEvent) events.PresenceEvent {
	t.Helper()
	e, err := events.NewPresenceEvent(e)
	if err != nil {
		t.Fatalf("expected event is invalid: %v", err)
	}
	return e
}

// TestFixtures: every $SYS fixture of contracts/emqx.md parses to exactly
// this event.
func TestFixtures(t *testing.T) {
	for _, tc := range []struct {
		file string
		want events.PresenceEvent
	}{
		{"v5_sys_connected.json", events.PresenceEvent{
			DeviceID: "dev-42", Kind: events.KindConnected, Node: "emqx@10.0.0.11",
			BrokerTSMS: 1718000000123, ConnectedAtMS: 1718000000123, IP: "203.0.113.7", Username: "alice",
			Protocol: "mqtt", ProtoVer: 5, KeepaliveS: 60, Source: emqx.SourceSysV5, ReceivedAtMS: 1718000999000,
		}},
		{"v5_sys_disconnected.json", events.PresenceEvent{
			DeviceID: "dev-42", Kind: events.KindDisconnected, Reason: events.ReasonKeepaliveTimeout,
			RawReason: "keepalive_timeout", Node: "emqx@10.0.0.11",
			BrokerTSMS: 1718000300411, ConnectedAtMS: 1718000000123, IP: "203.0.113.7", Username: "alice",
			Protocol: "mqtt", ProtoVer: 5, Source: emqx.SourceSysV5, ReceivedAtMS: 1718000999000,
		}},
		{"v4_sys_connected.json", events.PresenceEvent{
			DeviceID: "dev-42", Kind: events.KindConnected, Node: "emqx@10.0.0.11",
			BrokerTSMS: 1718000000123, ConnectedAtMS: 1718000000123, IP: "203.0.113.7", Username: "alice",
			Protocol: "mqtt", ProtoVer: 4, KeepaliveS: 60, Source: emqx.SourceSysV4, ReceivedAtMS: 1718000999000,
		}},
		{"v4_sys_disconnected.json", events.PresenceEvent{
			DeviceID: "dev-42", Kind: events.KindDisconnected, Reason: events.ReasonClosed, RawReason: "tcp_closed",
			Node: "emqx@10.0.0.11", BrokerTSMS: 1718000300412, ConnectedAtMS: 1718000000123,
			IP: "203.0.113.7", Username: "alice", Protocol: "mqtt", ProtoVer: 4,
			Source: emqx.SourceSysV4, ReceivedAtMS: 1718000999000,
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f := readFixture(t, tc.file)
			got, err := emqx.ParseSys(f.Topic, f.Payload, received)
			if err != nil {
				t.Fatalf("ParseSys: %v", err)
			}
			if want := mustEvent(t, tc.want); got != want {
				t.Fatalf("got\n %+v\nwant\n %+v", got, want)
			}
			if err := got.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

// TestFixturesMatchShared checks that testdata/ holds the shared fixtures
// unchanged (they are copied so that the module's tests stand alone).
func TestFixturesMatchShared(t *testing.T) {
	dir := os.Getenv("FLEETWATCH_SHARED_DIR")
	if dir == "" {
		dir = "../../../../shared"
	}
	dir = filepath.Join(dir, "fixtures", "emqx")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("shared fixtures not found at %s (set FLEETWATCH_SHARED_DIR): %v", dir, err)
	}
	local, err := filepath.Glob("testdata/*.json")
	if err != nil || len(local) == 0 {
		t.Fatalf("no local fixtures: %v", err)
	}
	for _, l := range local {
		want, err := os.ReadFile(filepath.Join(dir, filepath.Base(l)))
		if err != nil {
			t.Errorf("%s: %v", l, err)
			continue
		}
		got, _ := os.ReadFile(l)
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the shared fixture: copy it again", l)
		}
	}
}

const v5Topic = "$SYS/brokers/emqx@n1/clients/d1/disconnected"

// payload builds a JSON object from a base and overrides; a nil override
// value deletes the key, rawJSON values are inserted verbatim.
type rawJSON string

func payload(t *testing.T, base map[string]any, over map[string]any) []byte {
	t.Helper()
	m := map[string]any{}
	for k, v := range base {
		m[k] = v
	}
	for k, v := range over {
		if v == nil {
			delete(m, k)
			continue
		}
		if r, ok := v.(rawJSON); ok {
			m[k] = json.RawMessage(r)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var v5Disc = map[string]any{
	"clientid": "d1", "username": "bob", "ipaddress": "10.1.2.3", "sockport": 1883,
	"protocol": "mqtt", "proto_name": "MQTT", "proto_ver": 5,
	"connected_at": 1718000000000, "ts": 1718000000600, "reason": "normal", "disconnected_at": 1718000000500,
}

// TestFields covers units, absent values, fallbacks and reasons.
func TestFields(t *testing.T) {
	base := events.PresenceEvent{
		DeviceID: "d1", Kind: events.KindDisconnected, Reason: events.ReasonNormal, RawReason: "normal",
		Node: "emqx@n1", BrokerTSMS: 1718000000500, ConnectedAtMS: 1718000000000, IP: "10.1.2.3",
		Username: "bob", Protocol: "mqtt", ProtoVer: 5, Source: emqx.SourceSysV5, ReceivedAtMS: 1718000999000,
	}
	for _, tc := range []struct {
		name  string
		topic string
		over  map[string]any
		edit  func(*events.PresenceEvent)
	}{
		{name: "as is"},
		{name: "seconds are scaled to ms", over: map[string]any{"connected_at": 1718000000, "disconnected_at": 1718000001},
			edit: func(e *events.PresenceEvent) { e.ConnectedAtMS, e.BrokerTSMS = 1718000000000, 1718000001000 }},
		{name: "integral float", over: map[string]any{"disconnected_at": rawJSON("1.7180000005e12")}},
		{name: "ts fallback", over: map[string]any{"disconnected_at": nil},
			edit: func(e *events.PresenceEvent) { e.BrokerTSMS = 1718000000600 }},
		{name: "null disconnected_at falls back to ts", over: map[string]any{"disconnected_at": rawJSON("null")},
			edit: func(e *events.PresenceEvent) { e.BrokerTSMS = 1718000000600 }},
		{name: "no connected_at (v4 before 4.3.6)", over: map[string]any{"connected_at": nil, "protocol": nil},
			edit: func(e *events.PresenceEvent) { e.ConnectedAtMS, e.Source = 0, emqx.SourceSysV4 }},
		{name: "username undefined", over: map[string]any{"username": "undefined"},
			edit: func(e *events.PresenceEvent) { e.Username = "" }},
		{name: "username null", over: map[string]any{"username": rawJSON("null")},
			edit: func(e *events.PresenceEvent) { e.Username = "" }},
		{name: "username empty", over: map[string]any{"username": ""},
			edit: func(e *events.PresenceEvent) { e.Username = "" }},
		{name: "username absent", over: map[string]any{"username": nil},
			edit: func(e *events.PresenceEvent) { e.Username = "" }},
		{name: "ipaddress undefined", over: map[string]any{"ipaddress": "undefined"},
			edit: func(e *events.PresenceEvent) { e.IP = "" }},
		{name: "clientid from payload, not topic", topic: "$SYS/brokers/emqx@n1/clients/a/b/c/disconnected",
			over: map[string]any{"clientid": "a/b/c"}, edit: func(e *events.PresenceEvent) { e.DeviceID = "a/b/c" }},
		{name: "unicode client id", over: map[string]any{"clientid": "温度计 .*>"},
			edit: func(e *events.PresenceEvent) { e.DeviceID = "温度计 .*>" }},
		{name: "literal undefined client id is an id", over: map[string]any{"clientid": "undefined"},
			edit: func(e *events.PresenceEvent) { e.DeviceID = "undefined" }},
		{name: "takenover", over: map[string]any{"reason": "takenover"},
			edit: func(e *events.PresenceEvent) { e.Reason, e.RawReason = events.ReasonTakenOver, "takenover" }},
		{name: "v4 takeovered", over: map[string]any{"reason": "takeovered", "protocol": nil},
			edit: func(e *events.PresenceEvent) {
				e.Reason, e.RawReason, e.Source = events.ReasonTakenOver, "takeovered", emqx.SourceSysV4
			}},
		{name: "discarded", over: map[string]any{"reason": "discarded"},
			edit: func(e *events.PresenceEvent) { e.Reason, e.RawReason = events.ReasonDiscarded, "discarded" }},
		{name: "keepalive_timeout", over: map[string]any{"reason": "keepalive_timeout"},
			edit: func(e *events.PresenceEvent) {
				e.Reason, e.RawReason = events.ReasonKeepaliveTimeout, "keepalive_timeout"
			}},
		{name: "kicked", over: map[string]any{"reason": "kicked"},
			edit: func(e *events.PresenceEvent) { e.Reason, e.RawReason = events.ReasonKicked, "kicked" }},
		{name: "ssl_closed", over: map[string]any{"reason": "ssl_closed"},
			edit: func(e *events.PresenceEvent) { e.Reason, e.RawReason = events.ReasonClosed, "ssl_closed" }},
		{name: "socket error", over: map[string]any{"reason": "econnreset"},
			edit: func(e *events.PresenceEvent) { e.Reason, e.RawReason = events.ReasonSocketError, "econnreset" }},
		{name: "use_another_server", over: map[string]any{"reason": "use_another_server"},
			edit: func(e *events.PresenceEvent) {
				e.Reason, e.RawReason = events.ReasonServerShutdown, "use_another_server"
			}},
		{name: "unknown reason kept raw", over: map[string]any{"reason": "{shutdown,weird}"},
			edit: func(e *events.PresenceEvent) { e.Reason, e.RawReason = events.ReasonOther, "{shutdown,weird}" }},
		{name: "keepalive", over: map[string]any{"keepalive": 120},
			edit: func(e *events.PresenceEvent) { e.KeepaliveS = 120 }},
		{name: "gateway topic without protocol", topic: "$SYS/brokers/emqx@n1/gateway/mqttsn/clients/d1/disconnected",
			over: map[string]any{"protocol": nil, "proto_ver": "1.2", "proto_name": "MQTT-SN"},
			edit: func(e *events.PresenceEvent) { e.Protocol, e.ProtoVer = "mqttsn", 0 }},
		{name: "gateway protocol from payload", topic: "$SYS/brokers/emqx@n1/gateway/coap/clients/d1/disconnected",
			over: map[string]any{"protocol": "coap", "proto_ver": "1"},
			edit: func(e *events.PresenceEvent) { e.Protocol, e.ProtoVer = "coap", 1 }},
		{name: "v4 non-MQTT proto_name", over: map[string]any{"protocol": nil, "proto_name": "MQTT-SN"},
			edit: func(e *events.PresenceEvent) { e.Protocol, e.Source = "mqtt-sn", emqx.SourceSysV4 }},
		{name: "unknown fields ignored", over: map[string]any{"client_attrs": map[string]any{"a": 1}, "disconn_props": []int{1}}},
		{name: "leading whitespace", over: map[string]any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := tc.topic
			if topic == "" {
				topic = v5Topic
			}
			p := payload(t, v5Disc, tc.over)
			if tc.name == "leading whitespace" {
				p = append([]byte(" \n\t"), p...)
			}
			want := base
			if tc.edit != nil {
				tc.edit(&want)
			}
			got, err := emqx.ParseSys(topic, p, received)
			if err != nil {
				t.Fatalf("ParseSys(%s): %v", p, err)
			}
			if want := mustEvent(t, want); got != want {
				t.Fatalf("got\n %+v\nwant\n %+v", got, want)
			}
		})
	}
}

func TestConnectedTimes(t *testing.T) {
	conn := map[string]any{"clientid": "d1", "protocol": "mqtt", "connected_at": 1718000000000, "ts": 1718000000100}
	topic := "$SYS/brokers/emqx@n1/clients/d1/connected"
	got, err := emqx.ParseSys(topic, payload(t, conn, nil), received)
	if err != nil || got.BrokerTSMS != 1718000000000 || got.ConnectedAtMS != 1718000000000 || got.Reason != "" {
		t.Fatalf("got %+v, %v", got, err)
	}
	got, err = emqx.ParseSys(topic, payload(t, conn, map[string]any{"connected_at": nil}), received)
	if err != nil || got.BrokerTSMS != 1718000000100 || got.ConnectedAtMS != 0 {
		t.Fatalf("ts fallback: got %+v, %v", got, err)
	}
	got, err = emqx.ParseSys(topic, payload(t, conn, map[string]any{"reason": "ignored"}), received)
	if err != nil || got.Reason != "" || got.RawReason != "" {
		t.Fatalf("reason on connected: got %+v, %v", got, err)
	}
}

func TestRejects(t *testing.T) {
	big := `{"clientid":"d1","pad":"` + strings.Repeat("x", emqx.MaxPayloadSize) + `"}`
	for _, tc := range []struct {
		name     string
		topic    string
		payload  string
		over     map[string]any
		sentinel error
		want     string
	}{
		{name: "not $SYS", topic: "devices/d1/connected", sentinel: emqx.ErrTopic,
			want: `not an emqx $SYS presence topic: "devices/d1/connected" does not start with $SYS/brokers/<node>/clients/`},
		{name: "unknown event", topic: "$SYS/brokers/n/clients/d1/exploded", sentinel: emqx.ErrTopic,
			want: `not an emqx $SYS presence topic: "$SYS/brokers/n/clients/d1/exploded": unknown event "exploded" (want connected or disconnected)`},
		{name: "uptime", topic: "$SYS/brokers/n/uptime", sentinel: emqx.ErrTopic},
		{name: "not clients", topic: "$SYS/brokers/n/stats/d1/connected", sentinel: emqx.ErrTopic},
		{name: "empty node", topic: "$SYS/brokers//clients/d1/connected", sentinel: emqx.ErrTopic},
		{name: "short gateway", topic: "$SYS/brokers/n/gateway/coap/clients/connected", sentinel: emqx.ErrTopic},
		{name: "invalid JSON", payload: `{"clientid":`, sentinel: emqx.ErrPayload,
			want: "invalid emqx $SYS presence payload: invalid JSON: unexpected end of JSON input"},
		{name: "garbage", payload: "not json", sentinel: emqx.ErrPayload,
			want: "invalid emqx $SYS presence payload: not a JSON object"},
		{name: "empty", payload: " ", sentinel: emqx.ErrPayload},
		{name: "null", payload: "null", sentinel: emqx.ErrPayload},
		{name: "array", payload: "[1]", sentinel: emqx.ErrPayload},
		{name: "trailing garbage", payload: `{"clientid":"d1"} x`, sentinel: emqx.ErrPayload},
		{name: "too large", payload: big, sentinel: emqx.ErrPayload,
			want: "invalid emqx $SYS presence payload: payload is 65562 bytes, limit 65536"},
		{name: "missing clientid", over: map[string]any{"clientid": nil}, sentinel: emqx.ErrPayload,
			want: "invalid emqx $SYS presence payload: clientid is missing"},
		{name: "null clientid", over: map[string]any{"clientid": rawJSON("null")}, sentinel: emqx.ErrPayload,
			want: "invalid emqx $SYS presence payload: clientid is missing"},
		{name: "empty clientid", over: map[string]any{"clientid": ""}, sentinel: emqx.ErrPayload},
		{name: "numeric clientid", over: map[string]any{"clientid": 42}, sentinel: emqx.ErrPayload,
			want: "invalid emqx $SYS presence payload: clientid is a number, want a string"},
		{name: "missing times", over: map[string]any{"disconnected_at": nil, "ts": nil}, sentinel: emqx.ErrPayload,
			want: "invalid emqx $SYS presence payload: disconnected_at and ts are both missing"},
		{name: "string time", over: map[string]any{"disconnected_at": "1718000000500"}, sentinel: emqx.ErrPayload,
			want: "invalid emqx $SYS presence payload: disconnected_at is a string, want an integer"},
		{name: "fractional time", over: map[string]any{"disconnected_at": 1718000000500.5}, sentinel: emqx.ErrPayload},
		{name: "negative time", over: map[string]any{"connected_at": -1}, sentinel: emqx.ErrPayload,
			want: "invalid emqx $SYS presence payload: connected_at -1 is not a positive epoch time"},
		{name: "zero time", over: map[string]any{"disconnected_at": 0}, sentinel: emqx.ErrPayload},
		{name: "far future", over: map[string]any{"ts": 100000000000000}, sentinel: emqx.ErrPayload,
			want: "invalid emqx $SYS presence payload: ts 100000000000000 is not an epoch time between 2000 and 5000 AD"},
		{name: "before 2000", over: map[string]any{"ts": 1}, sentinel: emqx.ErrPayload,
			want: "invalid emqx $SYS presence payload: ts 1000 is not an epoch time between 2000 and 5000 AD"},
		{name: "invalid ts with valid disconnected_at", over: map[string]any{"ts": "x"}, sentinel: emqx.ErrPayload},
		{name: "missing reason", over: map[string]any{"reason": nil}, sentinel: emqx.ErrPayload,
			want: "invalid emqx $SYS presence payload: reason is missing"},
		{name: "object reason", over: map[string]any{"reason": map[string]any{}}, sentinel: emqx.ErrPayload},
		{name: "bad keepalive", over: map[string]any{"keepalive": 70000}, sentinel: emqx.ErrPayload},
		{name: "bool keepalive", over: map[string]any{"keepalive": true}, sentinel: emqx.ErrPayload,
			want: "invalid emqx $SYS presence payload: keepalive is a boolean, want an integer"},
		{name: "bad proto_ver", over: map[string]any{"proto_ver": 300}, sentinel: emqx.ErrPayload},
		{name: "numeric username", over: map[string]any{"username": 1}, sentinel: emqx.ErrPayload},
		{name: "array protocol", over: map[string]any{"protocol": []int{}}, sentinel: emqx.ErrPayload},
		{name: "huge client id", over: map[string]any{"clientid": strings.Repeat("x", 65536)}, sentinel: emqx.ErrPayload},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic, p := tc.topic, []byte(tc.payload)
			if topic == "" {
				topic = v5Topic
			}
			if tc.payload == "" {
				p = payload(t, v5Disc, tc.over)
			}
			got, err := emqx.ParseSys(topic, p, received)
			if err == nil {
				t.Fatalf("ParseSys = %+v, want an error", got)
			}
			if !errors.Is(err, tc.sentinel) {
				t.Errorf("error %q does not wrap %v", err, tc.sentinel)
			}
			if tc.want != "" && err.Error() != tc.want {
				t.Errorf("error\n %q\nwant\n %q", err, tc.want)
			}
			if got != (events.PresenceEvent{}) {
				t.Errorf("rejected input returned %+v, want the zero event", got)
			}
		})
	}
}

func TestParseSysTopic(t *testing.T) {
	for _, tc := range []struct {
		topic string
		want  emqx.SysTopic
	}{
		{"$SYS/brokers/emqx@10.0.0.11/clients/dev-42/connected",
			emqx.SysTopic{Node: "emqx@10.0.0.11", ClientID: "dev-42", Kind: events.KindConnected}},
		{"$SYS/brokers/n/clients/a/b/disconnected",
			emqx.SysTopic{Node: "n", ClientID: "a/b", Kind: events.KindDisconnected}},
		{"$SYS/brokers/n/clients//connected",
			emqx.SysTopic{Node: "n", ClientID: "", Kind: events.KindConnected}},
		{"$SYS/brokers/n/gateway/mqttsn/clients/x/connected",
			emqx.SysTopic{Node: "n", Gateway: "mqttsn", ClientID: "x", Kind: events.KindConnected}},
	} {
		got, err := emqx.ParseSysTopic(tc.topic)
		if err != nil || got != tc.want {
			t.Errorf("ParseSysTopic(%q) = %+v, %v; want %+v", tc.topic, got, err, tc.want)
		}
	}
}

// FuzzParseSysTopic: ParseSysTopic reads every topic as a reading by
// levels (strings.Split) does.
func FuzzParseSysTopic(f *testing.F) {
	for _, topic := range []string{"$SYS/brokers/n/clients/d/connected", "$SYS/brokers/n/clients/a/b/disconnected",
		"$SYS/brokers/n/gateway/mqttsn/clients/x/connected", "$SYS/brokers/n/gateway//clients/x/connected",
		"$SYS/brokers//clients/d/connected", "$SYS/brokers/n/clients/d/subscribed", "$SYS/brokers/n/gateway/clients/connected",
		"$SYS/brokers/n/clients//connected", "$SYS/brokers/n/uptime", "$SYS/brokers/n/gateway/g/clients/x"} {
		f.Add(topic)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		got, err := emqx.ParseSysTopic(topic)
		want, wantErr := splitSysTopic(topic)
		if got != want || (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
			t.Fatalf("ParseSysTopic(%q) = %+v, %v; by levels %+v, %v", topic, got, err, want, wantErr)
		}
	})
}

// splitSysTopic is ParseSysTopic written with strings.Split, the
// reference of FuzzParseSysTopic.
func splitSysTopic(topic string) (emqx.SysTopic, error) {
	lv := strings.Split(topic, "/")
	if len(lv) < 6 || lv[0] != "$SYS" || lv[1] != "brokers" {
		return emqx.SysTopic{}, fmt.Errorf("%w: %q does not start with $SYS/brokers/<node>/clients/", emqx.ErrTopic, topic)
	}
	t := emqx.SysTopic{Node: lv[2]}
	rest := lv[3:]
	if rest[0] == "gateway" {
		if len(rest) < 5 || rest[1] == "" {
			return emqx.SysTopic{}, fmt.Errorf("%w: %q is not $SYS/brokers/<node>/gateway/<gateway>/clients/<clientid>/<event>", emqx.ErrTopic, topic)
		}
		t.Gateway = rest[1]
		rest = rest[2:]
	}
	if rest[0] != "clients" {
		return emqx.SysTopic{}, fmt.Errorf("%w: %q is not $SYS/brokers/<node>/clients/<clientid>/<event>", emqx.ErrTopic, topic)
	}
	if t.Node == "" {
		return emqx.SysTopic{}, fmt.Errorf("%w: %q has an empty node", emqx.ErrTopic, topic)
	}
	switch ev := rest[len(rest)-1]; ev {
	case string(events.KindConnected), string(events.KindDisconnected):
		t.Kind = events.Kind(ev)
	case "subscribed", "unsubscribed":
		return emqx.SysTopic{}, fmt.Errorf("%w: %q", emqx.ErrNotPresence, topic)
	default:
		return emqx.SysTopic{}, fmt.Errorf("%w: %q: unknown event %q (want connected or disconnected)", emqx.ErrTopic, topic, ev)
	}
	t.ClientID = strings.Join(rest[1:len(rest)-1], "/")
	return t, nil
}

// FuzzParseSys: no panics; an accepted input is a valid event, a rejected
// one returns the zero event and an error wrapping a sentinel.
func FuzzParseSys(f *testing.F) {
	for _, name := range []string{"v5_sys_connected.json", "v5_sys_disconnected.json", "v4_sys_connected.json", "v4_sys_disconnected.json"} {
		fx := readFixture(f, name)
		f.Add(fx.Topic, []byte(fx.Payload))
	}
	f.Add("$SYS/brokers/n/gateway/coap/clients/a/b/disconnected", []byte(`{"clientid":"a/b","reason":"x","ts":1718000000,"proto_ver":"1.2"}`))
	f.Add(v5Topic, []byte(`{"clientid":"d","reason":null,"ts":1e3}`))
	f.Add("$SYS/brokers/n/clients/d/connected", []byte("not json"))
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		ev, err := emqx.ParseSys(topic, payload, received)
		if err != nil {
			if ev != (events.PresenceEvent{}) {
				t.Fatalf("error %v with non-zero event %+v", err, ev)
			}
			if !errors.Is(err, emqx.ErrTopic) && !errors.Is(err, emqx.ErrPayload) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("accepted an invalid event %+v: %v", ev, err)
		}
		if ev.Source != emqx.SourceSysV5 && ev.Source != emqx.SourceSysV4 {
			t.Fatalf("source %q", ev.Source)
		}
		if ev.BrokerTSMS < 946684800000 || ev.ReceivedAtMS != received.UnixMilli() {
			t.Fatalf("times %+v", ev)
		}
	})
}

func TestParseSysIgnoresNonPresenceClientEvents(t *testing.T) {
	for _, topic := range []string{
		"$SYS/brokers/emqx@n1/clients/dev-1/subscribed",
		"$SYS/brokers/emqx@n1/clients/plant/7/dev-1/unsubscribed",
		"$SYS/brokers/emqx@n1/gateway/coap/clients/dev-1/subscribed",
	} {
		_, err := emqx.ParseSys(topic, []byte(`{"clientid":"dev-1"}`), time.UnixMilli(1718000000000))
		if !errors.Is(err, emqx.ErrNotPresence) {
			t.Errorf("%s: err = %v, want ErrNotPresence", topic, err)
		}
	}
	if _, err := emqx.ParseSys("$SYS/brokers/emqx@n1/clients/dev-1/exploded", []byte(`{}`), time.UnixMilli(1718000000000)); !errors.Is(err, emqx.ErrTopic) || errors.Is(err, emqx.ErrNotPresence) {
		t.Errorf("unknown client event: err = %v, want ErrTopic (dead-lettered)", err)
	}
}

// obj decodes a JSON object fixture into a map for payload().
func obj(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}
