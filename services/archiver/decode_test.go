package archiver

import (
	"bytes"
	"encoding/json"
	"fmt"
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
			_, err = decode[events.PresenceEvent](nil, b)
		case len(name) > 5 && name[:5] == "alert":
			_, err = decode[events.AlertEvent](nil, b)
		case len(name) > 8 && name[:8] == "delivery":
			_, err = decode[events.DeliveryEvent](nil, b)
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
		_, err := decode[events.PresenceEvent](nil, tt.in)
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: decode = %v\nwant %s", tt.name, err, tt.want)
		}
	}
	// Unknown fields are allowed inside v1 (optional fields may be added).
	if _, err := decode[events.PresenceEvent](nil, withField("future_field", 1)); err != nil {
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
	borrowing := &events.PresenceDecoder{Borrow: true} // as the pipeline decodes
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decode[events.PresenceEvent](nil, b)
		if err == nil {
			if e.Validate() != nil {
				t.Fatal("decoded presence event does not validate")
			}
			_ = presence.Add(e)
		}
		// The pipeline's borrowing decoder gives the same event and error.
		in := bytes.Clone(b)
		be, berr := decode[events.PresenceEvent](borrowing, in)
		if fmt.Sprint(berr) != fmt.Sprint(err) || be != e {
			t.Fatalf("borrowing decoder: %+v, %v; want %+v, %v", be, berr, e, err)
		}
		if e, err := decode[events.AlertEvent](nil, b); err == nil {
			_ = alerts.Add(e)
		}
		if e, err := decode[events.DeliveryEvent](nil, b); err == nil {
			_ = deliveries.Add(e)
		}
		if presence.Len() > 1000 {
			presence.Reset()
			alerts.Reset()
			deliveries.Reset()
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
			if _, err := decode[events.PresenceEvent](nil, data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var e events.PresenceEvent
			err := json.Unmarshal(data, &e)
			if err == nil {
				err = e.Validate()
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
