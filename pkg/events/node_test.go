package events_test

import (
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

func TestNewNodeEvent(t *testing.T) {
	ok := events.NodeEvent{Node: "emqx@10.0.0.11", Status: events.NodeSilent, LastSeenMS: 1718000000000, AtMS: 1718000045000, Source: "emqx_sys_heartbeat"}
	e, err := events.NewNodeEvent(ok)
	if err != nil {
		t.Fatal(err)
	}
	if e.V != 1 || len(e.ID) != 32 || e.Validate() != nil {
		t.Fatalf("got %+v", e)
	}
	if e.Subject() != "nodes.v1.emqx%4010%2E0%2E0%2E11" {
		t.Errorf("subject %q", e.Subject())
	}
	back := ok
	back.Status = events.NodeBack
	if b, _ := events.NewNodeEvent(back); b.ID == e.ID {
		t.Error("silent and back share an id")
	}
	later := ok
	later.AtMS += 1000
	if l, _ := events.NewNodeEvent(later); l.ID != e.ID {
		t.Error("the decision time changed the id: two ingest replicas deciding a second apart would store the event twice")
	}
	for _, tc := range []struct {
		mut  func(*events.NodeEvent)
		want string
	}{
		{func(e *events.NodeEvent) { e.Node = "" }, "node is empty"},
		{func(e *events.NodeEvent) { e.Status = "down" }, `status "down" is neither silent nor back`},
		{func(e *events.NodeEvent) { e.LastSeenMS = 0 }, "last_seen_ms 0"},
		{func(e *events.NodeEvent) { e.AtMS = -1 }, "at_ms -1"},
		{func(e *events.NodeEvent) { e.Source = "" }, "source is empty"},
	} {
		bad := ok
		tc.mut(&bad)
		if _, err := events.NewNodeEvent(bad); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
	}
	marked := ok
	marked.Mark = "86400123"
	m1, _ := events.NewNodeEvent(marked)
	marked.LastSeenMS += 250 // another replica heard the same heartbeat a little later
	if m2, _ := events.NewNodeEvent(marked); m1.ID != m2.ID {
		t.Error("with a mark, replicas' receive times must not change the id")
	}
	tampered := e
	tampered.LastSeenMS++
	if err := tampered.Validate(); err == nil || !strings.Contains(err.Error(), "does not match the event content") {
		t.Errorf("tampered id: err = %v", err)
	}
}
