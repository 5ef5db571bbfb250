package ingest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest"
	"github.com/fleetwatch/fleetwatch/services/ingest/nodewatch"
	"github.com/nats-io/nats.go/jetstream"
)

// nodeRecorder is a NodePublisher that keeps what it is given.
type nodeRecorder struct {
	mu      sync.Mutex
	changes []nodewatch.Change
}

func (r *nodeRecorder) PublishNode(_ context.Context, c nodewatch.Change) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
	return nil
}

func (r *nodeRecorder) get() []nodewatch.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.changes)
}

// TestNodeHealth: a node heard through its uptime heartbeat that falls
// silent past the threshold is reported once; its next heartbeat reports it
// back. Service time is a fake clock; heartbeats are injected.
func TestNodeHealth(t *testing.T) {
	e := newEnv(t)
	now := &clock{}
	now.Set(1718000000000)
	rec := &nodeRecorder{}
	e.deps = func(d *ingest.Deps) { d.Now, d.NodePublisher = now.Now, rec }
	cfg := e.config()
	cfg.Health.Enabled = true
	cfg.Health.SilentAfter = time.Minute
	cfg.Health.CheckInterval = 10 * time.Millisecond
	svc, _ := e.start(cfg)

	if err := e.broker.Publish("$SYS/brokers/emqx@a/uptime", []byte("1000"), 1); err != nil {
		t.Fatal(err)
	}
	// Any event also counts as a sign of life of its node.
	if err := e.broker.Publish("$SYS/brokers/emqx@b/clients/d/connected", []byte(`{"clientid":"d","protocol":"mqtt","connected_at":1718000000000}`), 1); err != nil {
		t.Fatal(err)
	}
	e.eventually("both nodes known", func() error {
		if n := svc.Nodes(); len(n) != 2 || n[0].Node != "emqx@a" || n[1].Node != "emqx@b" {
			return fmt.Errorf("nodes %+v", n)
		}
		return nil
	})
	if s := svc.Stats(); s.Heartbeats != 1 || s.Received != 1 {
		t.Fatalf("stats %+v: the heartbeat is counted apart from the inputs", s)
	}
	start := now.Now()
	now.Set(start.Add(time.Minute).UnixMilli())
	e.eventually("silent reported", func() error {
		if len(rec.get()) != 2 {
			return fmt.Errorf("changes %+v", rec.get())
		}
		return nil
	})
	got := rec.get()
	slices.SortFunc(got, func(a, b nodewatch.Change) int { return cmpString(a.Node, b.Node) })
	want := []nodewatch.Change{
		{Node: "emqx@a", Kind: nodewatch.KindSilent, At: now.Now(), LastHeard: start, Mark: "1000"},
		{Node: "emqx@b", Kind: nodewatch.KindSilent, At: now.Now(), LastHeard: start},
	}
	if !changesEqual(got, want) {
		t.Fatalf("changes %+v\nwant %+v", got, want)
	}
	silentAt := now.Now()
	now.Set(silentAt.Add(time.Second).UnixMilli())
	if err := e.broker.Publish("$SYS/brokers/emqx@a/uptime", []byte("61000"), 1); err != nil {
		t.Fatal(err)
	}
	e.eventually("back reported", func() error {
		if len(rec.get()) != 3 {
			return fmt.Errorf("changes %+v", rec.get())
		}
		return nil
	})
	wantBack := nodewatch.Change{Node: "emqx@a", Kind: nodewatch.KindBack, At: now.Now(), LastHeard: start, Mark: "61000"}
	if got := rec.get()[2]; !changesEqual([]nodewatch.Change{got}, []nodewatch.Change{wantBack}) {
		t.Fatalf("back %+v\nwant %+v", got, wantBack)
	}
	if got := counter(t, e.metrics, "fleetwatch_ingest_node_changes", ""); got != 3 {
		t.Errorf("fleetwatch_ingest_node_changes = %d, want 3", got)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func changesEqual(a, b []nodewatch.Change) bool {
	return slices.EqualFunc(a, b, func(x, y nodewatch.Change) bool {
		return x.Node == y.Node && x.Kind == y.Kind && x.At.Equal(y.At) && x.LastHeard.Equal(y.LastHeard) && x.Mark == y.Mark
	})
}

// TestNodeEventsAreStored checks the default NodePublisher: a silent node
// becomes a NodeEvent in the NODES stream, with an id derived from the
// heartbeat mark, so replicas that saw the same heartbeat store it once.
func TestNodeEventsAreStored(t *testing.T) {
	e := newEnv(t)
	now := &clock{}
	now.Set(1718000000000)
	e.deps = func(d *ingest.Deps) { d.Now = now.Now }
	cfg := e.config()
	cfg.Health.Enabled = true
	cfg.Health.SilentAfter = time.Minute
	cfg.Health.CheckInterval = 10 * time.Millisecond
	e.start(cfg)

	if err := e.broker.Publish("$SYS/brokers/emqx@a/uptime", []byte("1000"), 1); err != nil {
		t.Fatal(err)
	}
	var msg *jetstream.RawStreamMsg
	e.eventually("heartbeat heard, then silence stored", func() error {
		now.Set(now.Now().Add(time.Minute).UnixMilli())
		m, err := e.js.Stream(t.Context(), events.StreamNodes)
		if err != nil {
			return err
		}
		msg, err = m.GetLastMsgForSubject(t.Context(), events.NodeSubject("emqx@a"))
		return err
	})
	var ev events.NodeEvent
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if err := ev.Validate(); err != nil {
		t.Fatal(err)
	}
	if ev.Node != "emqx@a" || ev.Status != events.NodeSilent || ev.Mark != "1000" || ev.Source != "emqx_sys_heartbeat" {
		t.Fatalf("stored %+v", ev)
	}
	if got := msg.Header.Get(events.HeaderMsgID); got != ev.ID {
		t.Fatalf("Nats-Msg-Id %q, want the event id %q", got, ev.ID)
	}
}

// knownNodeRecords reads the known-nodes bucket: node → silent.
func knownNodeRecords(t *testing.T, js jetstream.JetStream) (map[string]bool, error) {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), ingest.DefaultNodesBucket)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(t.Context())
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for key := range lister.Keys() {
		e, err := kv.Get(t.Context(), key)
		if err != nil {
			return nil, err
		}
		var rec struct {
			Node   string `json:"node"`
			Silent bool   `json:"silent"`
		}
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, err
		}
		out[rec.Node] = rec.Silent
	}
	return out, nil
}

// TestNodeAlreadyDownAtStart: the nodes a run heard are recorded; the next
// run reports the one it does not hear within silent_after of its start as
// silent, with the last heartbeat the first run heard, does not report
// again the one recorded silent, and reports that one back when heard.
func TestNodeAlreadyDownAtStart(t *testing.T) {
	e := newEnv(t)
	now := &clock{}
	t0 := time.UnixMilli(1718000000000)
	now.Set(t0.UnixMilli())
	rec := &nodeRecorder{}
	e.deps = func(d *ingest.Deps) { d.Now, d.NodePublisher = now.Now, rec }
	cfg := e.config()
	cfg.Health.Enabled = true
	cfg.Health.SilentAfter = time.Minute
	cfg.Health.CheckInterval = 10 * time.Millisecond
	svc, stop := e.start(cfg)
	// Only a and b matter: the broker's own node may be heard too, through
	// the $SYS events of ingest's own connection.
	isAB := func(node string) bool { return node == "emqx@a" || node == "emqx@b" }
	abNodes := func() []nodewatch.Status {
		return slices.DeleteFunc(svc.Nodes(), func(n nodewatch.Status) bool { return !isAB(n.Node) })
	}
	ab := func(changes []nodewatch.Change) []nodewatch.Change {
		return slices.DeleteFunc(changes, func(c nodewatch.Change) bool { return !isAB(c.Node) })
	}

	for node, mark := range map[string]string{"emqx@a": "1000", "emqx@b": "2000"} {
		if err := e.broker.Publish("$SYS/brokers/"+node+"/uptime", []byte(mark), 1); err != nil {
			t.Fatal(err)
		}
	}
	e.eventually("both nodes heard", func() error {
		if n := abNodes(); len(n) != 2 {
			return fmt.Errorf("nodes %+v", n)
		}
		return nil
	})
	// Recorded at t0, so that a's record is refreshed (with aLast) at
	// t0+61s, in the same pass that records b silent. Recorded only after
	// the clock moved to aLast, a's record would not be due then and would
	// keep its first heartbeat.
	e.eventually("both nodes recorded", func() error {
		got, err := knownNodeRecords(t, e.js)
		if err != nil {
			return err
		}
		maps.DeleteFunc(got, func(node string, _ bool) bool { return !isAB(node) })
		if want := map[string]bool{"emqx@a": false, "emqx@b": false}; !reflect.DeepEqual(got, want) {
			return fmt.Errorf("records %v, want %v", got, want)
		}
		return nil
	})
	aLast := t0.Add(30 * time.Second)
	now.Set(aLast.UnixMilli())
	if err := e.broker.Publish("$SYS/brokers/emqx@a/uptime", []byte("31000"), 1); err != nil {
		t.Fatal(err)
	}
	e.eventually("a heard again", func() error {
		if n := abNodes(); len(n) != 2 || !n[0].LastHeard.Equal(aLast) {
			return fmt.Errorf("nodes %+v", n)
		}
		return nil
	})
	now.Set(t0.Add(61 * time.Second).UnixMilli())
	e.eventually("b silent, both recorded", func() error {
		got, err := knownNodeRecords(t, e.js)
		if err != nil {
			return err
		}
		maps.DeleteFunc(got, func(node string, _ bool) bool { return !isAB(node) })
		if want := map[string]bool{"emqx@a": false, "emqx@b": true}; !reflect.DeepEqual(got, want) {
			return fmt.Errorf("records %v, want %v", got, want)
		}
		return nil
	})
	stop()
	if got := ab(rec.get()); len(got) != 1 || got[0].Node != "emqx@b" || got[0].Kind != nodewatch.KindSilent {
		t.Fatalf("first run's changes %+v, want emqx@b silent", got)
	}

	// The second run hears nothing at first.
	start := t0.Add(10 * time.Minute)
	now.Set(start.UnixMilli())
	rec2 := &nodeRecorder{}
	e.deps = func(d *ingest.Deps) { d.Now, d.NodePublisher = now.Now, rec2 }
	svc2, _ := e.start(cfg)
	e.eventually("recorded nodes known", func() error {
		var a, b *nodewatch.Status
		for _, n := range svc2.Nodes() {
			switch n.Node {
			case "emqx@a":
				a = &n
			case "emqx@b":
				b = &n
			}
		}
		if a == nil || b == nil || a.Silent || !b.Silent || !a.LastHeard.Equal(aLast) {
			return fmt.Errorf("nodes %+v", svc2.Nodes())
		}
		return nil
	})
	now.Set(start.Add(59 * time.Second).UnixMilli())
	time.Sleep(50 * time.Millisecond) // a few checks
	if got := ab(rec2.get()); len(got) != 0 {
		t.Fatalf("changes within silent_after of the start: %+v", got)
	}
	now.Set(start.Add(time.Minute).UnixMilli())
	e.eventually("a reported silent", func() error {
		if len(ab(rec2.get())) == 0 {
			return errors.New("nothing reported")
		}
		return nil
	})
	want := []nodewatch.Change{{Node: "emqx@a", Kind: nodewatch.KindSilent, At: now.Now(), LastHeard: aLast, Mark: "31000"}}
	if got := ab(rec2.get()); !changesEqual(got, want) {
		t.Fatalf("changes %+v\nwant %+v", got, want)
	}
	backAt := start.Add(2 * time.Minute)
	now.Set(backAt.UnixMilli())
	if err := e.broker.Publish("$SYS/brokers/emqx@b/uptime", []byte("999000"), 1); err != nil {
		t.Fatal(err)
	}
	e.eventually("b reported back", func() error {
		if len(ab(rec2.get())) != 2 {
			return fmt.Errorf("changes %+v", rec2.get())
		}
		return nil
	})
	wantBack := nodewatch.Change{Node: "emqx@b", Kind: nodewatch.KindBack, At: backAt, LastHeard: t0, Mark: "999000"}
	if got := ab(rec2.get())[1]; !changesEqual([]nodewatch.Change{got}, []nodewatch.Change{wantBack}) {
		t.Fatalf("back %+v\nwant %+v", got, wantBack)
	}
}
