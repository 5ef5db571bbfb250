package escalate

import (
	"reflect"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

const t0 = 1714528800000

func firing(created int64) events.AlertEvent {
	a, err := events.NewAlertEvent(events.AlertEvent{
		Fingerprint: "fp", Receiver: "ops", Status: events.StatusFiring, Kind: events.AlertGroupOutage, Severity: events.SeverityCritical,
		GroupLabels: map[string]string{"site": "sh-01"}, DevicesTotal: 40, StartsAtMS: t0, CreatedAtMS: created,
		Devices: []events.AlertDevice{{DeviceID: "dev-1", Status: events.StatusFiring, SinceMS: t0}},
	})
	if err != nil {
		panic(err)
	}
	return a
}

func resolved() events.AlertEvent {
	a := firing(t0 + 3_600_000)
	a.Status, a.EndsAtMS, a.ID = events.StatusResolved, t0+3_600_000, ""
	a, err := events.NewAlertEvent(a)
	if err != nil {
		panic(err)
	}
	return a
}

var chain = []Step{{After: 30 * time.Minute, Receiver: "oncall"}, {After: time.Hour, Receiver: "managers"}}

func TestChainLifecycle(t *testing.T) {
	a := firing(t0 + 30_000)
	r, changed := Observe(nil, a)
	if !changed || r.Source != "ops" || r.Alert.ID != a.ID || r.Done {
		t.Fatalf("new record %+v", r)
	}
	// The same notification again (a redelivery) and an older one change nothing.
	if _, changed := Observe(&r, a); changed {
		t.Fatal("a redelivery changed the record")
	}
	older := firing(t0 + 10_000)
	if _, changed := Observe(&r, older); changed {
		t.Fatal("an older notification changed the record")
	}
	step, due, ok := r.Next(chain)
	if !ok || step != chain[0] || !due.Equal(time.UnixMilli(t0).Add(30*time.Minute)) {
		t.Fatalf("Next = %+v %s %t", step, due, ok)
	}
	// A newer notification (more devices) is what copies are made of.
	newer := firing(t0 + 60_000)
	newer.DevicesTotal, newer.ID = 55, "newer"
	r, changed = Observe(&r, newer)
	if !changed || r.Alert.DevicesTotal != 55 {
		t.Fatalf("update %+v", r)
	}
	c := r.FiringCopy(step, t0+1_800_000)
	if c.Alert.Receiver != "oncall" || c.Alert.ID != CopyID("oncall", "ops", "fp", events.StatusFiring, t0) || c.Alert.DevicesTotal != 55 ||
		c.Alert.CreatedAtMS != t0+1_800_000 || c.From != "ops" || c.After != 30*time.Minute || c.Alert.Validate() != nil {
		t.Fatalf("firing copy %+v", c)
	}
	if c2 := r.FiringCopy(step, t0+1_900_000); c2.Alert.ID != c.Alert.ID {
		t.Fatal("the copy's id depends on when it was made")
	}
	r.Sent = append(r.Sent, Sent{Receiver: "oncall", AfterMS: (30 * time.Minute).Milliseconds()})
	if step, due, ok := r.Next(chain); !ok || step != chain[1] || !due.Equal(time.UnixMilli(t0).Add(time.Hour)) {
		t.Fatalf("second step %+v %s %t", step, due, ok)
	}

	res := resolved()
	r, changed = Observe(&r, res)
	if !changed || !r.Finishing() || r.Done {
		t.Fatalf("resolved record %+v", r)
	}
	if _, _, ok := r.Next(chain); ok {
		t.Fatal("a resolved chain has a next step")
	}
	cs := r.ResolvedCopies()
	if len(cs) != 1 || cs[0].Alert.Receiver != "oncall" || cs[0].Alert.Status != events.StatusResolved ||
		cs[0].Alert.ID != CopyID("oncall", "ops", "fp", events.StatusResolved, t0) || cs[0].Alert.EndsAtMS != res.EndsAtMS ||
		cs[0].After != 30*time.Minute || cs[0].Alert.Validate() != nil {
		t.Fatalf("resolved copies %+v", cs)
	}
	// A firing notification redelivered after the resolved one changes nothing.
	if _, changed := Observe(&r, firing(t0+90_000)); changed {
		t.Fatal("a late firing notification reopened the chain")
	}
}

func TestResolvedBeforeAnyStep(t *testing.T) {
	r, _ := Observe(nil, firing(t0))
	r, changed := Observe(&r, resolved())
	if !changed || !r.Done || r.Finishing() || len(r.ResolvedCopies()) != 0 {
		t.Fatalf("record %+v", r)
	}
	// Resolved with no record at all leaves a tombstone.
	tomb, changed := Observe(nil, resolved())
	if !changed || !tomb.Done || tomb.Alert != nil {
		t.Fatalf("tombstone %+v", tomb)
	}
	if _, changed := Observe(&tomb, firing(t0)); changed {
		t.Fatal("a firing notification after the tombstone started a chain")
	}
	if _, _, ok := tomb.Next(chain); ok {
		t.Fatal("a tombstone has a next step")
	}
}

func TestSilencePausesTheChain(t *testing.T) {
	r, _ := Observe(nil, firing(t0))
	silenced := firing(t0 + 1000)
	silenced.Silenced, silenced.SilenceIDs, silenced.ID = true, []string{"maint"}, "silenced"
	r, _ = Observe(&r, silenced)
	if _, _, ok := r.Next(chain); ok || !r.Paused() {
		t.Fatal("a silenced alert escalates")
	}
	inhibited := firing(t0 + 2000)
	inhibited.Inhibited, inhibited.ID = true, "inhibited"
	if r2, _ := Observe(&r, inhibited); !r2.Paused() {
		t.Fatal("an inhibited alert escalates")
	}
	back := firing(t0 + 3000)
	back.ID = "back"
	r, _ = Observe(&r, back)
	if _, _, ok := r.Next(chain); !ok {
		t.Fatal("the chain stays paused after the silence ended")
	}
	// A copy is never silenced.
	r.Alert.Silenced = true
	if c := r.FiringCopy(chain[0], t0); c.Alert.Silenced || c.Alert.SilenceIDs != nil {
		t.Fatalf("copy %+v", c.Alert)
	}
}

func TestKeys(t *testing.T) {
	a := firing(t0)
	if KeyOf(a) != Key("ops", "fp", t0) || Key("ops", "fp", t0) == Key("ops", "fp", t0+1) || Key("ops", "fp", t0) == Key("oncall", "fp", t0) {
		t.Fatal("keys do not separate episodes and receivers")
	}
	if k := Key("接收者 .*>", "fp", t0); len(k) != 34 || k[:2] != "e_" {
		t.Fatalf("key %q is not a KV key", k)
	}
	if !reflect.DeepEqual(Record{}.ResolvedCopies(), []Copy(nil)) {
		t.Fatal("copies without a resolved notification")
	}
}
