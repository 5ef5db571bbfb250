package lastwill_test

import (
	"errors"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/lastwill"
)

var received = time.UnixMilli(1718000999000)

func parser(t testing.TB, edit func(*lastwill.Config)) *lastwill.Parser {
	t.Helper()
	c := lastwill.DefaultConfig()
	c.Enabled = true
	if edit != nil {
		edit(&c)
	}
	p, err := lastwill.New(c, "mosquitto:1883")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustEvent(t *testing.T, e events.PresenceEvent) events.PresenceEvent {
	t.Helper()
	e, err := events.NewPresenceEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestParse(t *testing.T) {
	jsonCfg := func(c *lastwill.Config) {
		c.Pattern = "site/+/{device}/state/#"
		c.StateField, c.TimestampField = "status", "ts"
		c.Online, c.Offline = []string{"UP", "true"}, []string{"down", "lost", "false"}
		c.Node = "hivemq-1"
	}
	online := events.PresenceEvent{DeviceID: "dev-1", Kind: events.KindConnected, Node: "mosquitto:1883",
		BrokerTSMS: received.UnixMilli(), Source: lastwill.Source, ReceivedAtMS: received.UnixMilli()}
	offline := online
	offline.Kind, offline.Reason, offline.RawReason = events.KindDisconnected, events.ReasonOther, "offline"
	for _, tc := range []struct {
		name     string
		cfg      func(*lastwill.Config)
		topic    string
		payload  string
		retained bool
		want     events.PresenceEvent
		edit     func(*events.PresenceEvent)
	}{
		{name: "online", topic: "devices/dev-1/status", payload: "online", want: online},
		{name: "offline (the will)", topic: "devices/dev-1/status", payload: "offline", want: offline},
		{name: "case and space", topic: "devices/dev-1/status", payload: " ONLINE\n", want: online},
		{name: "unicode device", topic: "devices/温度 *>/status", payload: "online", want: online,
			edit: func(e *events.PresenceEvent) { e.DeviceID = "温度 *>" }},
		{name: "JSON with ms timestamp", cfg: jsonCfg, topic: "site/a/dev-1/state", payload: `{"status":"up","ts":1718000000000}`,
			want: online, edit: func(e *events.PresenceEvent) {
				e.Node, e.BrokerTSMS, e.ConnectedAtMS = "hivemq-1", 1718000000000, 1718000000000
			}},
		{name: "JSON with seconds, retained", cfg: jsonCfg, topic: "site/a/dev-1/state/x", retained: true,
			payload: `{"status":"lost","ts":1718000000}`, want: offline, edit: func(e *events.PresenceEvent) {
				e.Node, e.BrokerTSMS, e.RawReason = "hivemq-1", 1718000000000, "lost"
			}},
		{name: "JSON bool and RFC 3339", cfg: jsonCfg, topic: "site/a/dev-1/state", payload: `{"status":false,"ts":"2024-06-10T06:13:20.5Z"}`,
			want: offline, edit: func(e *events.PresenceEvent) {
				e.Node, e.BrokerTSMS, e.RawReason = "hivemq-1", 1718000000500, "false"
			}},
		{name: "JSON without timestamp uses receive time", cfg: jsonCfg, topic: "site/a/dev-1/state", payload: `{"status":"up"}`,
			want: online, edit: func(e *events.PresenceEvent) { e.Node = "hivemq-1" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if tc.edit != nil {
				tc.edit(&want)
			}
			got, err := parser(t, tc.cfg).Parse(tc.topic, []byte(tc.payload), tc.retained, received)
			if want := mustEvent(t, want); err != nil || got != want {
				t.Fatalf("got %+v, %v\nwant %+v", got, err, want)
			}
		})
	}
}

func TestRejects(t *testing.T) {
	jsonCfg := func(c *lastwill.Config) { c.StateField, c.TimestampField = "s", "t" }
	for _, tc := range []struct {
		name, topic, payload string
		retained             bool
		cfg                  func(*lastwill.Config)
		sentinel             error
		want                 string
	}{
		{"other topic", "devices/d/other", "online", false, nil, lastwill.ErrTopic,
			`topic does not match the last-will status pattern: "devices/d/other" does not match devices/{device}/status`},
		{"empty device", "devices//status", "online", false, nil, lastwill.ErrTopic, ""},
		{"device with slash", "devices/a/b/status", "online", false, nil, lastwill.ErrTopic, ""},
		{"cleared retained", "devices/d/status", "", true, nil, lastwill.ErrNotPresence,
			"last-will status that is not a presence change: empty payload (a retained status cleared)"},
		{"retained without time", "devices/d/status", "online", true, nil, lastwill.ErrNotPresence,
			`last-will status that is not a presence change: retained status "online" without a timestamp, replayed on subscribe (set timestamp_field to use it)`},
		{"unknown value", "devices/d/status", "sleeping", false, nil, lastwill.ErrPayload,
			`invalid last-will status payload: status "sleeping" is neither online ["online"] nor offline ["offline"]`},
		{"not JSON", "devices/d/status", "online", false, jsonCfg, lastwill.ErrPayload,
			"invalid last-will status payload: not a JSON object (state_field/timestamp_field are set)"},
		{"missing state", "devices/d/status", `{"t":1718000000000}`, false, jsonCfg, lastwill.ErrPayload,
			"invalid last-will status payload: s is missing"},
		{"bad time", "devices/d/status", `{"s":"online","t":"yesterday"}`, false, jsonCfg, lastwill.ErrPayload,
			`invalid last-will status payload: t "yesterday" is neither epoch ms/s nor an RFC 3339 time`},
		{"old time", "devices/d/status", `{"s":"online","t":5}`, false, jsonCfg, lastwill.ErrPayload,
			"invalid last-will status payload: t 5000 is not an epoch time between 2000 and 5000 AD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parser(t, tc.cfg).Parse(tc.topic, []byte(tc.payload), tc.retained, received)
			if !errors.Is(err, tc.sentinel) || got != (events.PresenceEvent{}) {
				t.Fatalf("got %+v, %v; want %v", got, err, tc.sentinel)
			}
			if tc.want != "" && err.Error() != tc.want {
				t.Errorf("error\n %q\nwant\n %q", err, tc.want)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		edit func(*lastwill.Config)
		want string
	}{
		{func(c *lastwill.Config) { c.Pattern = "" }, `x.pattern "" is empty: use e.g. devices/{device}/status`},
		{func(c *lastwill.Config) { c.Pattern = "devices/+/status" }, `x.pattern "devices/+/status" has no {device} level: mark the level that holds the device id, e.g. devices/{device}/status`},
		{func(c *lastwill.Config) { c.Pattern = "{device}/{device}" }, `x.pattern "{device}/{device}" has {device} twice: mark one level`},
		{func(c *lastwill.Config) { c.Pattern = "a/#/{device}" }, `x.pattern "a/#/{device}" has a wildcard that is not a whole level ('#' only last)`},
		{func(c *lastwill.Config) { c.Pattern = "a/{id}/{device}" }, `x.pattern "a/{id}/{device}" has a level with braces other than {device}`},
		{func(c *lastwill.Config) { c.Offline = nil }, "x.online and x.offline must both list payload values, e.g. [online] and [offline]"},
		{func(c *lastwill.Config) { c.Offline = []string{" "} }, "x.offline has an empty value: an empty payload clears a retained status"},
		{func(c *lastwill.Config) { c.Offline = []string{"Online"} }, `x: "Online" is both an online and an offline value`},
		{func(c *lastwill.Config) { c.StateField, c.TimestampField = "a", "a" }, `x.state_field and timestamp_field are both "a": use two fields`},
	} {
		c := lastwill.DefaultConfig()
		tc.edit(&c)
		if err := c.Validate("x"); err == nil || err.Error() != tc.want {
			t.Errorf("Validate = %v\nwant %s", err, tc.want)
		}
	}
	if err := lastwill.DefaultConfig().Validate("x"); err != nil {
		t.Errorf("DefaultConfig invalid: %v", err)
	}
	if got := lastwill.DefaultConfig().Filter(); got != "devices/+/status" {
		t.Errorf("Filter = %q", got)
	}
}

// FuzzParse: no panics; accepted inputs are valid events; rejections wrap
// a sentinel.
func FuzzParse(f *testing.F) {
	f.Add("devices/d/status", []byte("online"), false)
	f.Add("devices/d/status", []byte("offline"), true)
	f.Add("site/x/d/state", []byte(`{"status":"up","ts":1718000000000}`), true)
	f.Add("site/x/d/state/y", []byte(`{"status":true,"ts":"2024-06-10T06:13:20Z"}`), false)
	plain := parser(f, nil)
	structured := parser(f, func(c *lastwill.Config) {
		c.Pattern, c.StateField, c.TimestampField = "site/+/{device}/state/#", "status", "ts"
		c.Online, c.Offline = []string{"up", "true"}, []string{"down", "false"}
	})
	f.Fuzz(func(t *testing.T, topic string, payload []byte, retained bool) {
		for _, p := range []*lastwill.Parser{plain, structured} {
			ev, err := p.Parse(topic, payload, retained, received)
			if err != nil {
				if ev != (events.PresenceEvent{}) || !(errors.Is(err, lastwill.ErrTopic) || errors.Is(err, lastwill.ErrPayload) || errors.Is(err, lastwill.ErrNotPresence)) {
					t.Fatalf("%+v, %v", ev, err)
				}
				continue
			}
			if err := ev.Validate(); err != nil || ev.Source != lastwill.Source {
				t.Fatalf("accepted %+v: %v", ev, err)
			}
		}
	})
}
