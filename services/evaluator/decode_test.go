package evaluator

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

func validPresence(t testing.TB) events.PresenceEvent {
	t.Helper()
	e, err := events.NewPresenceEvent(events.PresenceEvent{DeviceID: "dev.1*> ü", Kind: events.KindDisconnected,
		Reason: events.ReasonKeepaliveTimeout, RawReason: "keepalive_timeout", Node: "emqx@10.0.0.1",
		BrokerTSMS: 1_700_000_010_000, ConnectedAtMS: 1_700_000_000_000, Source: "emqx_sys_v5", ReceivedAtMS: 1_700_000_010_005})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestDecodePresence(t *testing.T) {
	e := validPresence(t)
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	subject := events.PresenceSubject(e.DeviceID, 64)
	got, err := decodePresence(subject, data, 64)
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("decodePresence = %+v, %v", got, err)
	}
	withExtra := strings.Replace(string(data), `{"v":1,`, `{"v":1,"added_in_v1_1":true,`, 1)
	if _, err := decodePresence(subject, []byte(withExtra), 64); err != nil {
		t.Fatalf("an unknown (optional, newer) field was rejected: %v", err)
	}

	tampered := e
	tampered.BrokerTSMS++
	bad, _ := json.Marshal(tampered)
	tests := []struct {
		name       string
		subject    string
		data       string
		partitions int
		want       string
	}{
		{"not json", subject, "nope", 64, "decode presence event: invalid character 'o' in literal null (expecting 'u')"},
		{"trailing data", subject, string(data) + "x", 64, "decode presence event: invalid character 'x' after top-level value"},
		{"wrong type", subject, `{"v":"1"}`, 64, "decode presence event: json: cannot unmarshal string into Go struct field PresenceEvent.v of type int"},
		{"id mismatch", subject, string(bad), 64, "invalid event: id \"" + e.ID + "\" does not match the event content"},
		{"other partition count", subject, string(data), 8, "subject \"" + subject + "\" does not match device_id \"dev.1*> ü\": want \"" +
			events.PresenceSubject(e.DeviceID, 8) + "\" (evaluator.partitions is 8 and must equal the ingest's)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodePresence(tc.subject, []byte(tc.data), tc.partitions)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzDecodePresence feeds arbitrary payloads to the evaluator's parser,
// seeded with a valid event and the EMQX fixtures (which are not presence
// events and must be rejected).
func FuzzDecodePresence(f *testing.F) {
	e := validPresence(f)
	data, _ := json.Marshal(e)
	f.Add(data)
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`null`))
	fixtures, _ := filepath.Glob("../../../shared/fixtures/emqx/*.json")
	more, _ := filepath.Glob("../../pkg/events/testdata/v1/presence*.json")
	for _, p := range append(fixtures, more...) {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var probe events.PresenceEvent
		subject := "presence.v1.0.x"
		if json.Unmarshal(data, &probe) == nil && probe.DeviceID != "" {
			subject = events.PresenceSubject(probe.DeviceID, 64)
		}
		got, err := decodePresence(subject, data, 64)
		if err != nil {
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("accepted an invalid event: %v", err)
		}
		if got.Subject(64) != subject {
			t.Fatalf("accepted event %+v on subject %q", got, subject)
		}
		again, _ := json.Marshal(got)
		back, err := decodePresence(subject, again, 64)
		if err != nil || !reflect.DeepEqual(back, got) {
			t.Fatalf("round trip: %+v, %v", back, err)
		}
	})
}

// TestGoldenPresenceDecodes checks the evaluator against pkg/events' golden
// v1 presence files: every one must decode on its device's subject.
func TestGoldenPresenceDecodes(t *testing.T) {
	paths, err := filepath.Glob("../../pkg/events/testdata/v1/presence*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no golden presence files in pkg/events/testdata/v1")
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var probe events.PresenceEvent
			if err := json.Unmarshal(b, &probe); err != nil {
				t.Fatal(err)
			}
			if _, err := decodePresence(events.PresenceSubject(probe.DeviceID, 64), b, 64); err != nil {
				t.Fatal(err)
			}
		})
	}
}
