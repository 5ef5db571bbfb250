package backtest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// decodeBoth decodes line with the fast decoder (Full) and encoding/json and
// reports a disagreement.
func decodeBoth(t *testing.T, line []byte) (events.PresenceEvent, error) {
	t.Helper()
	d := NewDecoder()
	d.Full = true
	var fast events.PresenceEvent
	ferr := d.Decode(line, &fast)
	var std events.PresenceEvent
	serr := json.Unmarshal(line, &std)
	if (ferr == nil) != (serr == nil) {
		t.Fatalf("%q: fast decoder error %v, encoding/json error %v", line, ferr, serr)
	}
	if ferr == nil && !reflect.DeepEqual(fast, std) {
		t.Fatalf("%q:\nfast %+v\njson %+v", line, fast, std)
	}
	return fast, ferr
}

func TestDecoderMatchesEncodingJSON(t *testing.T) {
	for _, line := range []string{
		`{"v":1,"id":"x","device_id":"d1","kind":"connected","node":"n1","broker_ts_ms":1700000000000,"connected_at_ms":1700000000000,"keepalive_s":60,"source":"s","received_at_ms":5}`,
		` { "device_id" : "a.b*c>d é 设备" , "kind":"disconnected","reason":"closed","raw_reason":"tcp_closed","node":"n","broker_ts_ms":1} `,
		`{"device_id":"esc\"aped\\\u00e9\ud83d\ude00","node":"n\/1"}`,
		`{"device_id":"bad \ud800 surrogate"}`,
		"{\"device_id\":\"invalid utf8 \xff\"}",
		`{"DEVICE_ID":"folded","Broker_TS_MS":7}`,
		`{"device_id":"a","device_id":"b"}`,
		`{"device_id":null,"broker_ts_ms":null}`,
		`{"extra":{"nested":[1,2.5e3,{"x":null}],"t":true},"device_id":"d"}`,
		`{"broker_ts_ms":-9223372036854775808}`,
		`{}`,
		// errors
		`{"broker_ts_ms":9223372036854775808}`,
		`{"broker_ts_ms":1.5}`,
		`{"broker_ts_ms":1e3}`,
		`{"broker_ts_ms":"1"}`,
		`{"device_id":1}`,
		`{"broker_ts_ms":01}`,
		`{"device_id":"d"} x`,
		`{"device_id":"d",}`,
		`{"device_id":"a` + "\n" + `b"}`,
		`{"device_id":"\x"}`,
		`[1]`,
		``,
		`{"extra":[1,]}`,
		`{"extra":tru}`,
		`{"extra":-}`,
		`{"extra":1.}`,
	} {
		decodeBoth(t, []byte(line))
	}
}

func TestDecoderGolden(t *testing.T) {
	files, err := filepath.Glob("../../../pkg/events/testdata/v1/presence_*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("golden presence fixtures: %v %v", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		e, err := decodeBoth(t, b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
}

// FuzzDecoder checks that the fast decoder accepts exactly what
// encoding/json accepts and yields the same event.
func FuzzDecoder(f *testing.F) {
	f.Add([]byte(`{"v":1,"id":"x","device_id":"d1","kind":"connected","node":"n1","broker_ts_ms":1700000000000}`))
	f.Add([]byte(`{"device_id":"esc\"aped\u00e9","extra":[{"a":1e5}],"REASON":"closed"}`))
	f.Add([]byte(`{"keepalive_s":-0,"proto_ver":null}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		decodeBoth(t, line)
	})
}
