package backtest_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/backtest"
)

// TestReadJSONLKeepsOrderAcrossDecoders: a history of many chunks (decoded
// by parallel goroutines), with empty and invalid lines in several of them,
// is delivered in line order, and the first error names the first bad line.
func TestReadJSONLKeepsOrderAcrossDecoders(t *testing.T) {
	var buf bytes.Buffer
	if err := backtest.Generate(&buf, backtest.GenOptions{Devices: 500, Events: 30_000, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var want []events.PresenceEvent
	var in []string
	bad := map[int]bool{9_000: true, 9_001: true, 17_500: true, 29_999: true}
	for i, l := range lines {
		switch {
		case bad[i]:
			in = append(in, `{"v":1,"device_id":`)
		case i%5_000 == 7:
			in = append(in, "")
		}
		in = append(in, l)
		var e events.PresenceEvent
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		e.ID = ""
		want = append(want, e)
	}
	var got []events.PresenceEvent
	res, err := backtest.ReadJSONL(strings.NewReader(strings.Join(in, "\n")), func(es []events.PresenceEvent) {
		// The events, strings included, are valid only during the call:
		// cloned (any string still pointing into a chunk read into again
		// would differ below).
		for _, e := range es {
			e.DeviceID, e.Node, e.IP, e.Username, e.Source = strings.Clone(e.DeviceID), strings.Clone(e.Node),
				strings.Clone(e.IP), strings.Clone(e.Username), strings.Clone(e.Source)
			e.Kind, e.Reason, e.RawReason, e.Protocol = events.Kind(strings.Clone(string(e.Kind))),
				events.Reason(strings.Clone(string(e.Reason))), strings.Clone(e.RawReason), strings.Clone(e.Protocol)
			got = append(got, e)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Lines != len(in) || res.Skipped != len(bad) {
		t.Fatalf("%d lines, %d skipped; want %d, %d", res.Lines, res.Skipped, len(in), len(bad))
	}
	// Line 9,000 (from 0) is preceded by two empty lines and is line 9,003.
	if !strings.HasPrefix(res.FirstError, "line 9003: invalid presence event JSON") {
		t.Fatalf("first error %q", res.FirstError)
	}
	for i := range got {
		got[i].ID = ""
	}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("event %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}
