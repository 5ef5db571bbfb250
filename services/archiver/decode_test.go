package archiver

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/archiver/sink"
)

func goldenFiles(t testing.TB) map[string][]byte {
	t.Helper()
	dir := filepath.Join("..", "..", "pkg", "events", "testdata", "v1")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func TestDecodeGoldenFiles(t *testing.T) {
	for name, b := range goldenFiles(t) {
		var err error
		switch {
		case len(name) > 8 && name[:8] == "presence":
			_, err = decode[events.PresenceEvent](b)
		case len(name) > 5 && name[:5] == "alert":
			_, err = decode[events.AlertEvent](b)
		case len(name) > 8 && name[:8] == "delivery":
			_, err = decode[events.DeliveryEvent](b)
		default:
			continue // another event type (e.g. node status): not archived
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	var valid map[string]any
	if err := json.Unmarshal(goldenFiles(t)["presence_connected.json"], &valid); err != nil {
		t.Fatal(err)
	}
	withField := func(k string, v any) []byte {
		m := map[string]any{}
		for kk, vv := range valid {
			m[kk] = vv
		}
		m[k] = v
		b, _ := json.Marshal(m)
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"not json", []byte("{not json"), "decode json: invalid character 'n' looking for beginning of object key string"},
		{"trailing data", append(withField("v", 1), []byte(" {}")...), "decode json: invalid character '{' after top-level value"},
		{"null", []byte("null"), "invalid event: v is 0, want 1"},
		{"wrong type", withField("broker_ts_ms", "soon"), "decode json: json: cannot unmarshal string into Go struct field PresenceEvent.broker_ts_ms of type int64"},
		{"bad kind", withField("kind", "bogus"), `invalid event: kind "bogus" is neither connected nor disconnected`},
		{"tampered id", withField("node", "emqx@elsewhere"), `invalid event: id "` + valid["id"].(string) + `" does not match the event content`},
	}
	for _, tt := range tests {
		_, err := decode[events.PresenceEvent](tt.in)
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: decode = %v\nwant %s", tt.name, err, tt.want)
		}
	}
	// Unknown fields are allowed inside v1 (optional fields may be added).
	if _, err := decode[events.PresenceEvent](withField("future_field", 1)); err != nil {
		t.Errorf("unknown field rejected: %v", err)
	}
}

// FuzzDecode checks that any payload either decodes into an event that
// validates and converts to a row, or is rejected with an error: never a
// panic.
func FuzzDecode(f *testing.F) {
	for _, b := range goldenFiles(f) {
		f.Add(b)
	}
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`null`))
	presence, alerts, deliveries := sink.NewPresenceRows(), sink.NewAlertRows(), sink.NewDeliveryRows()
	f.Fuzz(func(t *testing.T, b []byte) {
		if e, err := decode[events.PresenceEvent](b); err == nil {
			if e.Validate() != nil {
				t.Fatal("decoded presence event does not validate")
			}
			_ = presence.Add(e)
		}
		if e, err := decode[events.AlertEvent](b); err == nil {
			_ = alerts.Add(e)
		}
		if e, err := decode[events.DeliveryEvent](b); err == nil {
			_ = deliveries.Add(e)
		}
		if presence.Len() > 1000 {
			presence.Reset()
			alerts.Reset()
			deliveries.Reset()
		}
	})
}

// jsonPresence is the reference: what encoding/json makes of data.
func jsonPresence(data []byte) (events.PresenceEvent, error) {
	var e events.PresenceEvent
	err := json.Unmarshal(data, &e)
	return e, err
}

func TestDecodePresenceTakesTheFastPathForWhatFleetwatchWrites(t *testing.T) {
	var inputs [][]byte
	for name, b := range goldenFiles(t) {
		if len(name) > 8 && name[:8] == "presence" {
			inputs = append(inputs, b)
		}
	}
	e, err := events.NewPresenceEvent(events.PresenceEvent{
		DeviceID: "capteur-é-\"7\"\n", Kind: events.KindDisconnected, Reason: events.ReasonOther,
		RawReason: "{shutdown,<0.123.0>}\t&", Node: "emqx@10.0.0.11", BrokerTSMS: 1718000300411,
		ConnectedAtMS: 1718000000123, ConnVersion: -3, IP: "2001:db8::1", Username: "ü/ser\\",
		Protocol: "mqtt", ProtoVer: 4, KeepaliveS: 65535, Source: "emqx_rule_v5", ReceivedAtMS: 1718000300419,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(e) // escapes <, >, &, ", \, control characters
	if err != nil {
		t.Fatal(err)
	}
	inputs = append(inputs, b,
		[]byte(" \t\r\n{ \"v\" : 1 , \"id\":\"x\\u00e9\\/\\b\\f\\r\" } \n"),
		[]byte(`{}`),
		[]byte(`{"v":1,"v":-0,"broker_ts_ms":-9223372036854775808,"received_at_ms":9223372036854775807}`),
	)
	for _, in := range inputs {
		want, err := jsonPresence(in)
		if err != nil {
			t.Fatalf("%s: encoding/json: %v", in, err)
		}
		var got events.PresenceEvent
		if !decodePresence(in, &got) {
			t.Errorf("%s: not decoded on the fast path", in)
			continue
		}
		if got != want {
			t.Errorf("%s:\nfast path %+v\nencoding/json %+v", in, got, want)
		}
	}
}

func TestDecodePresenceLeavesTheRestToEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`{"v":1,"Device_ID":"a"}`,    // encoding/json matches keys case-insensitively
		`{"v":1,"future_field":1}`,   // an unknown field, ignored by encoding/json
		`{"v":1,"node":null}`,        // null leaves the field unchanged
		`{"v":1.0}`,                  // a float into an int
		`{"v":1e0}`,                  // an exponent
		`{"v":01}`,                   // not JSON
		`{"v":-}`,                    // not JSON
		`{"v":9223372036854775808}`,  // out of range
		`{"v":"1"}`,                  // a string into an int
		`{"id":1}`,                   // a number into a string
		`{"id":"\ud83d\ude00"}`,      // a surrogate pair
		`{"id":"\ud83d"}`,            // a lone surrogate
		`{"id":"\x"}`,                // a bad escape
		"{\"id\":\"a\xffb\"}",        // invalid UTF-8
		"{\"id\":\"a\tb\"}",          // a raw control character
		"{\"id\":\"a\\n\xffb\"}",     // invalid UTF-8 after an escape
		`{"v":1}{}`,                  // trailing data
		`{"v":1,}`,                   // a trailing comma
		`{"v" 1}`,                    // no colon
		`{"v":1`,                     // truncated
		`{"id":"abc`,                 // truncated string
		`[]`, `null`, ``, `"v"`, `1`, // not an object
	} {
		var got events.PresenceEvent
		if decodePresence([]byte(in), &got) {
			t.Errorf("%s: decoded on the fast path as %+v, want the encoding/json fallback", in, got)
		}
		if got != (events.PresenceEvent{}) {
			t.Errorf("%s: fast path changed the event to %+v", in, got)
		}
	}
}

// FuzzDecodePresence checks the fast presence decoder against
// encoding/json: whatever it accepts, encoding/json accepts with the same
// result.
func FuzzDecodePresence(f *testing.F) {
	for name, b := range goldenFiles(f) {
		if len(name) > 8 && name[:8] == "presence" {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"v":1,"id":"a\u00e9\n","broker_ts_ms":-12,"proto_ver":0}`))
	f.Add([]byte(`{"v":1,"Node":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got events.PresenceEvent
		if !decodePresence(b, &got) {
			return
		}
		want, err := jsonPresence(b)
		if err != nil {
			t.Fatalf("fast path accepted what encoding/json rejects (%v): %q", err, b)
		}
		if got != want {
			t.Fatalf("%q:\nfast path %+v\nencoding/json %+v", b, got, want)
		}
	})
}

// BenchmarkDecodePresence compares decoding (and validating) a presence
// event on the fast path with encoding/json.
func BenchmarkDecodePresence(b *testing.B) {
	data := goldenFiles(b)["presence_disconnected.json"]
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decode[events.PresenceEvent](data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e, err := jsonPresence(data)
			if err == nil {
				err = e.Validate()
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
