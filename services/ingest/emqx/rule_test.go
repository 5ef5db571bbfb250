package emqx_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqx"
)

// fixtureEvents are the events every EMQX fixture must parse to, exactly.
var fixtureEvents = map[string]events.PresenceEvent{
	"v5_events_client_connected.json": {
		DeviceID: "dev-42", Kind: events.KindConnected, Node: "emqx@10.0.0.11",
		BrokerTSMS: 1718000000123, ConnectedAtMS: 1718000000123, IP: "203.0.113.7", Username: "alice",
		Protocol: "mqtt", ProtoVer: 5, KeepaliveS: 60, Source: emqx.SourceRuleV5, ReceivedAtMS: 1718000999000,
	},
	"v5_events_client_disconnected.json": {
		DeviceID: "dev-42", Kind: events.KindDisconnected, Reason: events.ReasonKeepaliveTimeout,
		RawReason: "keepalive_timeout", Node: "emqx@10.0.0.11",
		BrokerTSMS: 1718000300411, ConnectedAtMS: 1718000000123, IP: "203.0.113.7", Username: "alice",
		Protocol: "mqtt", ProtoVer: 5, Source: emqx.SourceRuleV5, ReceivedAtMS: 1718000999000,
	},
	"v4_webhook_client_connected.json": {
		DeviceID: "dev-42", Kind: events.KindConnected, Node: "emqx@10.0.0.11",
		BrokerTSMS: 1718000000123, ConnectedAtMS: 1718000000123, IP: "203.0.113.7", Username: "alice",
		ProtoVer: 4, KeepaliveS: 60, Source: emqx.SourceWebhookV4, ReceivedAtMS: 1718000999000,
	},
	"v4_webhook_client_disconnected.json": {
		DeviceID: "dev-42", Kind: events.KindDisconnected, Reason: events.ReasonClosed, RawReason: "tcp_closed",
		Node: "emqx@10.0.0.11", BrokerTSMS: 1718000300412, ConnectedAtMS: 1718000000123, Username: "alice",
		Source: emqx.SourceWebhookV4, ReceivedAtMS: 1718000999000,
	},
}

// TestRuleAndWebhookFixtures: the $events fixtures parse to exactly their
// event through a republish (ParseRule) and an HTTP action (ParseWebhook);
// the v4 web hook fixtures through ParseWebhook.
func TestRuleAndWebhookFixtures(t *testing.T) {
	for file, want := range fixtureEvents {
		t.Run(file, func(t *testing.T) {
			f := readFixture(t, file)
			want := mustEvent(t, want)
			if strings.HasPrefix(file, "v5_events") {
				got, err := emqx.ParseRule(f.Payload, received)
				if err != nil || got != want {
					t.Fatalf("ParseRule = %+v, %v\nwant %+v", got, err, want)
				}
			}
			got, err := emqx.ParseWebhook(f.Payload, received)
			if err != nil || got != want {
				t.Fatalf("ParseWebhook = %+v, %v\nwant %+v", got, err, want)
			}
		})
	}
}

// TestSameEventSameID: one EMQX event seen through $SYS and through a rule
// or web hook gets one id (hence one Nats-Msg-Id, stored once). The pairs
// are the fixtures of the same version; the event differs only in source.
func TestSameEventSameID(t *testing.T) {
	for _, pair := range [][2]string{
		{"v5_sys_connected.json", "v5_events_client_connected.json"},
		{"v5_sys_disconnected.json", "v5_events_client_disconnected.json"},
		{"v4_sys_connected.json", "v4_webhook_client_connected.json"},
		{"v4_sys_disconnected.json", "v4_webhook_client_disconnected.json"},
	} {
		sys := readFixture(t, pair[0])
		a, err := emqx.ParseSys(sys.Topic, sys.Payload, received)
		if err != nil {
			t.Fatal(err)
		}
		other := readFixture(t, pair[1])
		b, err := emqx.ParseWebhook(other.Payload, received)
		if err != nil {
			t.Fatal(err)
		}
		if a.ID != b.ID {
			t.Errorf("%s id %s, %s id %s: want the same", pair[0], a.ID, pair[1], b.ID)
		}
	}
}

// TestSameEventDifferentIDWithoutConnectedAt documents the pairs the
// contract makes impossible: a disconnect without connected_at (v4 rule
// engine, $events before 5.8.6, v4 web hook before 4.4, v4 $SYS before
// 4.3.6) cannot get the id of the same disconnect with connected_at, because
// the id covers the connection (ConnectedAtMS) and the input does not say it.
func TestSameEventDifferentIDWithoutConnectedAt(t *testing.T) {
	sys := readFixture(t, "v5_sys_disconnected.json")
	a, err := emqx.ParseSys(sys.Topic, sys.Payload, received)
	if err != nil {
		t.Fatal(err)
	}
	p := payload(t, obj(t, readFixture(t, "v5_events_client_disconnected.json").Payload), map[string]any{"connected_at": nil})
	b, err := emqx.ParseRule(p, received)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == b.ID || b.ConnectedAtMS != 0 || a.BrokerTSMS != b.BrokerTSMS {
		t.Fatalf("$SYS %+v\n$events without connected_at %+v", a, b)
	}
}

var v5Conn = map[string]any{
	"clientid": "d1", "username": "bob", "mountpoint": "undefined", "peername": "10.1.2.3:50312",
	"sockname": "10.0.0.11:1883", "proto_name": "MQTT", "proto_ver": 5, "keepalive": 60, "clean_start": true,
	"receive_maximum": 32, "expiry_interval": 0, "is_bridge": false, "conn_props": map[string]any{},
	"connected_at": 1718000000000, "client_attrs": map[string]any{}, "event": "client.connected",
	"timestamp": 1718000000002, "node": "emqx@n1", "metadata": map[string]any{"rule_id": "r"},
}

// v4Disc is a v4 rule-engine client.disconnected: no connected_at, no
// disconn_props.
var v4Disc = map[string]any{
	"reason": "takeovered", "clientid": "d1", "username": "undefined", "peername": "10.1.2.3:50312",
	"sockname": "10.0.0.11:1883", "proto_name": "MQTT", "proto_ver": 4, "disconnected_at": 1718000000500,
	"event": "client.disconnected", "timestamp": 1718000000501, "node": "emqx@n1", "metadata": map[string]any{"rule_id": "r"},
}

func TestRuleFields(t *testing.T) {
	conn := events.PresenceEvent{
		DeviceID: "d1", Kind: events.KindConnected, Node: "emqx@n1", BrokerTSMS: 1718000000000,
		ConnectedAtMS: 1718000000000, IP: "10.1.2.3", Username: "bob", Protocol: "mqtt", ProtoVer: 5,
		KeepaliveS: 60, Source: emqx.SourceRuleV5, ReceivedAtMS: 1718000999000,
	}
	disc := events.PresenceEvent{
		DeviceID: "d1", Kind: events.KindDisconnected, Reason: events.ReasonTakenOver, RawReason: "takeovered",
		Node: "emqx@n1", BrokerTSMS: 1718000000500, IP: "10.1.2.3", Protocol: "mqtt", ProtoVer: 4,
		Source: emqx.SourceRuleV4, ReceivedAtMS: 1718000999000,
	}
	for _, tc := range []struct {
		name string
		base map[string]any
		over map[string]any
		want events.PresenceEvent
		edit func(*events.PresenceEvent)
	}{
		{name: "v5 connected", base: v5Conn, want: conn},
		{name: "v4 disconnected (no connected_at)", base: v4Disc, want: disc},
		{name: "IPv6 peername without brackets", base: v5Conn, over: map[string]any{"peername": "2001:db8::7:50312"}, want: conn,
			edit: func(e *events.PresenceEvent) { e.IP = "2001:db8::7" }},
		{name: "IPv6 peername with brackets", base: v5Conn, over: map[string]any{"peername": "[::1]:1883"}, want: conn,
			edit: func(e *events.PresenceEvent) { e.IP = "::1" }},
		{name: "IPv4-mapped IPv6", base: v5Conn, over: map[string]any{"peername": "::ffff:10.1.2.3:1883"}, want: conn,
			edit: func(e *events.PresenceEvent) { e.IP = "::ffff:10.1.2.3" }},
		{name: "peername undefined", base: v5Conn, over: map[string]any{"peername": "undefined"}, want: conn,
			edit: func(e *events.PresenceEvent) { e.IP = "" }},
		{name: "peername without port kept whole", base: v5Conn, over: map[string]any{"peername": "host"}, want: conn,
			edit: func(e *events.PresenceEvent) { e.IP = "host" }},
		{name: "v4 connected in seconds (4.0.x)", base: v5Conn,
			over: map[string]any{"connected_at": 1718000000, "conn_props": nil, "client_attrs": nil, "receive_maximum": nil},
			want: conn, edit: func(e *events.PresenceEvent) { e.Source = emqx.SourceRuleV4 }},
		{name: "timestamp fallback", base: v5Conn, over: map[string]any{"connected_at": nil}, want: conn,
			edit: func(e *events.PresenceEvent) { e.BrokerTSMS, e.ConnectedAtMS = 1718000000002, 0 }},
		{name: "username null", base: v5Conn, over: map[string]any{"username": rawJSON("null")}, want: conn,
			edit: func(e *events.PresenceEvent) { e.Username = "" }},
		{name: "username empty", base: v5Conn, over: map[string]any{"username": ""}, want: conn,
			edit: func(e *events.PresenceEvent) { e.Username = "" }},
		{name: "client id with slash and unicode", base: v5Conn, over: map[string]any{"clientid": "plant/7/温度 *>"}, want: conn,
			edit: func(e *events.PresenceEvent) { e.DeviceID = "plant/7/温度 *>" }},
		{name: "gateway proto_name", base: v5Conn, over: map[string]any{"proto_name": "MQTT-SN", "proto_ver": "1.2"}, want: conn,
			edit: func(e *events.PresenceEvent) { e.Protocol, e.ProtoVer = "mqtt-sn", 0 }},
		{name: "v5 disconnected with connected_at (5.8.6+)", base: v4Disc,
			over: map[string]any{"connected_at": 1718000000000, "disconn_props": map[string]any{}, "reason": "takenover"},
			want: disc, edit: func(e *events.PresenceEvent) {
				e.ConnectedAtMS, e.Source, e.RawReason = 1718000000000, emqx.SourceRuleV5, "takenover"
			}},
		{name: "disconnected timestamp fallback", base: v4Disc, over: map[string]any{"disconnected_at": nil}, want: disc,
			edit: func(e *events.PresenceEvent) { e.BrokerTSMS = 1718000000501 }},
		{name: "tuple reason", base: v4Disc, over: map[string]any{"reason": "{shutdown,tcp_closed}"}, want: disc,
			edit: func(e *events.PresenceEvent) { e.Reason, e.RawReason = events.ReasonClosed, "{shutdown,tcp_closed}" }},
		{name: "unknown reason kept raw", base: v4Disc, over: map[string]any{"reason": "frobnicated"}, want: disc,
			edit: func(e *events.PresenceEvent) { e.Reason, e.RawReason = events.ReasonOther, "frobnicated" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if tc.edit != nil {
				tc.edit(&want)
			}
			got, err := emqx.ParseRule(payload(t, tc.base, tc.over), received)
			if err != nil {
				t.Fatalf("ParseRule: %v", err)
			}
			if want := mustEvent(t, want); got != want {
				t.Fatalf("got\n %+v\nwant\n %+v", got, want)
			}
		})
	}
}

var v4Hook = map[string]any{
	"action": "client_disconnected", "node": "emqx@n1", "clientid": "d1", "username": nil, // JSON null
	"reason": "keepalive_timeout", "connected_at": 1718000000000, "disconnected_at": 1718000000500,
}

func TestWebhookV4Fields(t *testing.T) {
	want := events.PresenceEvent{
		DeviceID: "d1", Kind: events.KindDisconnected, Reason: events.ReasonKeepaliveTimeout, RawReason: "keepalive_timeout",
		Node: "emqx@n1", BrokerTSMS: 1718000000500, ConnectedAtMS: 1718000000000,
		Source: emqx.SourceWebhookV4, ReceivedAtMS: 1718000999000,
	}
	for _, tc := range []struct {
		name string
		over map[string]any
		edit func(*events.PresenceEvent)
	}{
		{name: "username null is absent"},
		{name: "before 4.4: no connected_at", over: map[string]any{"connected_at": nil},
			edit: func(e *events.PresenceEvent) { e.ConnectedAtMS = 0 }},
		{name: "4.0.x seconds", over: map[string]any{"connected_at": 1718000000, "disconnected_at": 1718000001},
			edit: func(e *events.PresenceEvent) { e.ConnectedAtMS, e.BrokerTSMS = 1718000000000, 1718000001000 }},
		{name: "IPv6 ipaddress", over: map[string]any{"ipaddress": "2001:db8::1"},
			edit: func(e *events.PresenceEvent) { e.IP = "2001:db8::1" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := want
			if tc.edit != nil {
				tc.edit(&w)
			}
			got, err := emqx.ParseWebhook(payload(t, v4Hook, tc.over), received)
			if err != nil || got != mustEvent(t, w) {
				t.Fatalf("got %+v, %v\nwant %+v", got, err, w)
			}
		})
	}
}

func TestRuleAndWebhookRejects(t *testing.T) {
	for _, tc := range []struct {
		name     string
		parse    func([]byte) error
		payload  string
		base     map[string]any
		over     map[string]any
		sentinel error
		want     string
	}{
		{name: "republish ${payload}", parse: rule, payload: "undefined", sentinel: emqx.ErrRuleEvent,
			want: "invalid emqx rule event: " + emqx.UndefinedPayloadHint},
		{name: "http ${payload}", parse: hook, payload: " undefined\n", sentinel: emqx.ErrWebhook,
			want: "invalid emqx web hook body: " + emqx.UndefinedPayloadHint},
		{name: "not JSON", parse: rule, payload: "online", sentinel: emqx.ErrRuleEvent,
			want: "invalid emqx rule event: not a JSON object"},
		{name: "bad JSON", parse: hook, payload: `{"action":`, sentinel: emqx.ErrWebhook,
			want: "invalid emqx web hook body: invalid JSON: unexpected end of JSON input"},
		{name: "no event", parse: rule, base: v5Conn, over: map[string]any{"event": nil}, sentinel: emqx.ErrRuleEvent,
			want: `invalid emqx rule event: event is missing: the rule must SELECT * (or at least event, clientid, node and the times) FROM "$events/client_connected", "$events/client_disconnected"`},
		{name: "neither action nor event", parse: hook, base: v5Conn, over: map[string]any{"event": nil}, sentinel: emqx.ErrWebhook,
			want: `invalid emqx web hook body: neither "action" (v4 web_hook plugin) nor "event" (v5 HTTP action with the rule output as body) is set`},
		{name: "unknown event", parse: rule, base: v5Conn, over: map[string]any{"event": "client.exploded"}, sentinel: emqx.ErrRuleEvent,
			want: `invalid emqx rule event: event "client.exploded" is neither client.connected nor client.disconnected`},
		{name: "connack ignored", parse: rule, base: v5Conn, over: map[string]any{"event": "client.connack"}, sentinel: emqx.ErrNotPresence},
		{name: "message_publish ignored", parse: hook, base: v4Hook, over: map[string]any{"action": "message_publish"}, sentinel: emqx.ErrNotPresence},
		{name: "unknown action", parse: hook, base: v4Hook, over: map[string]any{"action": "x"}, sentinel: emqx.ErrWebhook,
			want: `invalid emqx web hook body: action "x" is neither client_connected nor client_disconnected`},
		{name: "no node", parse: rule, base: v5Conn, over: map[string]any{"node": nil}, sentinel: emqx.ErrRuleEvent,
			want: "invalid emqx rule event: node is missing"},
		{name: "no clientid", parse: hook, base: v4Hook, over: map[string]any{"clientid": ""}, sentinel: emqx.ErrWebhook,
			want: "invalid emqx web hook body: clientid is missing"},
		{name: "no times", parse: rule, base: v5Conn, over: map[string]any{"connected_at": nil, "timestamp": nil}, sentinel: emqx.ErrRuleEvent,
			want: "invalid emqx rule event: connected_at and timestamp are both missing"},
		{name: "webhook without disconnected_at", parse: hook, base: v4Hook, over: map[string]any{"disconnected_at": nil}, sentinel: emqx.ErrWebhook,
			want: "invalid emqx web hook body: disconnected_at is missing"},
		{name: "no reason", parse: rule, base: v4Disc, over: map[string]any{"reason": nil}, sentinel: emqx.ErrRuleEvent,
			want: "invalid emqx rule event: reason is missing"},
		{name: "string time", parse: rule, base: v4Disc, over: map[string]any{"disconnected_at": "1718000000500"}, sentinel: emqx.ErrRuleEvent,
			want: "invalid emqx rule event: disconnected_at is a string, want an integer"},
		{name: "numeric peername", parse: rule, base: v5Conn, over: map[string]any{"peername": 1}, sentinel: emqx.ErrRuleEvent,
			want: "invalid emqx rule event: peername is a number, want a string"},
		{name: "too large", parse: hook, payload: `{"p":"` + strings.Repeat("x", emqx.MaxPayloadSize) + `"}`, sentinel: emqx.ErrWebhook,
			want: "invalid emqx web hook body: payload is 65544 bytes, limit 65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := []byte(tc.payload)
			if tc.base != nil {
				p = payload(t, tc.base, tc.over)
			}
			err := tc.parse(p)
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("error %v does not wrap %v", err, tc.sentinel)
			}
			if tc.want != "" && err.Error() != tc.want {
				t.Errorf("error\n %q\nwant\n %q", err, tc.want)
			}
		})
	}
}

func rule(p []byte) error {
	ev, err := emqx.ParseRule(p, received)
	if err == nil || ev != (events.PresenceEvent{}) {
		return errors.New("accepted")
	}
	return err
}

func hook(p []byte) error {
	ev, err := emqx.ParseWebhook(p, received)
	if err == nil || ev != (events.PresenceEvent{}) {
		return errors.New("accepted")
	}
	return err
}

func ruleSeeds(f *testing.F) {
	for _, name := range []string{"v5_events_client_connected.json", "v5_events_client_disconnected.json",
		"v4_webhook_client_connected.json", "v4_webhook_client_disconnected.json"} {
		f.Add([]byte(readFixture(f, name).Payload))
	}
	f.Add([]byte("undefined"))
	f.Add([]byte(`{"event":"client.disconnected","clientid":"a","node":"n","reason":"x","timestamp":1718000000,"peername":"::1:1"}`))
	f.Add([]byte(`{"action":"client_connected","clientid":"a","node":"n","connected_at":1e12,"username":null}`))
}

// FuzzParseRule: no panics; accepted inputs are valid events of a rule
// source; rejections wrap ErrRuleEvent or ErrNotPresence.
func FuzzParseRule(f *testing.F) {
	ruleSeeds(f)
	f.Fuzz(func(t *testing.T, p []byte) {
		ev, err := emqx.ParseRule(p, received)
		checkParsed(t, ev, err, []error{emqx.ErrRuleEvent, emqx.ErrNotPresence}, emqx.SourceRuleV4, emqx.SourceRuleV5)
	})
}

// FuzzParseWebhook: as FuzzParseRule, for web hook bodies.
func FuzzParseWebhook(f *testing.F) {
	ruleSeeds(f)
	f.Fuzz(func(t *testing.T, p []byte) {
		ev, err := emqx.ParseWebhook(p, received)
		checkParsed(t, ev, err, []error{emqx.ErrWebhook, emqx.ErrNotPresence}, emqx.SourceRuleV4, emqx.SourceRuleV5, emqx.SourceWebhookV4)
	})
}

func checkParsed(t *testing.T, ev events.PresenceEvent, err error, sentinels []error, sources ...string) {
	t.Helper()
	if err != nil {
		if ev != (events.PresenceEvent{}) {
			t.Fatalf("error %v with non-zero event %+v", err, ev)
		}
		for _, s := range sentinels {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("error %v wraps no sentinel", err)
	}
	if err := ev.Validate(); err != nil {
		t.Fatalf("accepted an invalid event %+v: %v", ev, err)
	}
	ok := false
	for _, s := range sources {
		ok = ok || ev.Source == s
	}
	if !ok || ev.BrokerTSMS < 946684800000 || ev.ReceivedAtMS != received.UnixMilli() {
		t.Fatalf("event %+v", ev)
	}
}
