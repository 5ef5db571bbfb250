package ingest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqx"
)

// TestFixtureEventsWireJSON checks the JSON ingest publishes
// (events.AppendPresence, see eventMsg) for every event the EMQX fixtures
// produce: json.Marshal's bytes, which events.DecodePresence reads back.
// pkg/events tests and fuzzes the codec itself.
func TestFixtureEventsWireJSON(t *testing.T) {
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
		if err != nil {
			continue
		}
		want, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		got := events.AppendPresence(nil, &ev)
		if string(got) != string(want) {
			t.Fatalf("%s: AppendPresence:\n got %s\nwant %s", f, got, want)
		}
		var back events.PresenceEvent
		if err := events.DecodePresence(got, &back); err != nil || back != ev {
			t.Fatalf("%s: DecodePresence: %+v, %v\nwant %+v", f, back, err, ev)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no fixture produced an event")
	}
}
