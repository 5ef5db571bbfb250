package ingest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqx"
)

// encodedFields are the PresenceEvent JSON names appendEvent writes, in
// order. When pkg/events adds a field, TestAppendEventKnowsEveryField fails:
// add the field to appendEvent and here.
var encodedFields = []string{"v", "id", "device_id", "kind", "reason,omitempty", "raw_reason,omitempty", "node",
	"broker_ts_ms", "connected_at_ms,omitempty", "conn_version,omitempty", "ip,omitempty", "username,omitempty",
	"protocol,omitempty", "proto_ver,omitempty", "keepalive_s,omitempty", "source", "received_at_ms"}

func TestAppendEventKnowsEveryField(t *testing.T) {
	typ := reflect.TypeFor[events.PresenceEvent]()
	var tags []string
	for i := range typ.NumField() {
		tags = append(tags, typ.Field(i).Tag.Get("json"))
	}
	if !reflect.DeepEqual(tags, encodedFields) {
		t.Fatalf("PresenceEvent's JSON fields are\n%q\nappendEvent writes\n%q\nupdate appendEvent and encodedFields", tags, encodedFields)
	}
}

func checkEncoding(t *testing.T, ev events.PresenceEvent) {
	t.Helper()
	want, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if got := appendEvent(nil, &ev); string(got) != string(want) {
		t.Fatalf("appendEvent:\n got %s\nwant %s", got, want)
	}
}

func TestAppendEventMatchesMarshal(t *testing.T) {
	checkEncoding(t, events.PresenceEvent{})
	checkEncoding(t, events.PresenceEvent{V: 1, ID: "abc", DeviceID: "dev <1> & \"two\"\\\x00\x1f\x7f\u2028\u2029é\xff日本",
		Kind: events.KindDisconnected, Reason: events.ReasonOther, RawReason: "{shutdown,\tx}\n\r\b\f", Node: "emqx@10.0.0.1",
		BrokerTSMS: 1718000000000, ConnectedAtMS: -1, ConnVersion: 255, IP: "2001:db8::1", Username: "u",
		Protocol: "mqtt", ProtoVer: 5, KeepaliveS: 60, Source: "s", ReceivedAtMS: 1})
	// Every event the fixtures produce.
	files, _ := filepath.Glob("emqx/testdata/*.json")
	n := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var fx struct {
			Topic   string          `json:"topic"`
			Payload json.RawMessage `json:"payload"`
		}
		if json.Unmarshal(raw, &fx) != nil {
			continue
		}
		var ev events.PresenceEvent
		switch {
		case strings.HasPrefix(fx.Topic, "$SYS/"):
			ev, err = emqx.ParseSys(fx.Topic, fx.Payload, time.UnixMilli(1718000000000))
		default:
			ev, err = emqx.ParseWebhook(fx.Payload, time.UnixMilli(1718000000000))
		}
		if err == nil {
			checkEncoding(t, ev)
			n++
		}
	}
	if n == 0 {
		t.Fatal("no fixture produced an event")
	}
}

func FuzzAppendEvent(f *testing.F) {
	f.Add("dev-1", "normal", "emqx@n", "10.0.0.1", "<u&>", int64(1718000000000), int64(7), 5)
	f.Add("\xff\u2028", "", "", "", "", int64(0), int64(-1), 0)
	f.Fuzz(func(t *testing.T, device, reason, node, ip, user string, ts, ver int64, pv int) {
		checkEncoding(t, events.PresenceEvent{V: 1, ID: device + node, DeviceID: device, Kind: events.Kind(reason),
			Reason: events.Reason(reason), RawReason: reason, Node: node, BrokerTSMS: ts, ConnectedAtMS: ts / 3,
			ConnVersion: ver, IP: ip, Username: user, Protocol: user, ProtoVer: pv, KeepaliveS: pv / 2, Source: ip, ReceivedAtMS: -ts})
	})
}
