package labels

import (
	"reflect"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

func TestDynamicLayersAndRecompute(t *testing.T) {
	tb := NewTable()
	file, err := ParseInventoryCSV([]byte("device_id,site,owner\nd1,plant-7,ops\nd2,plant-8,\n"), "", tb)
	if err != nil {
		t.Fatal(err)
	}
	dyn := NewDynamic(tb, file)
	l, err := NewLabeler(Config{
		ClientID: []ClientIDRule{{Prefix: "d", Labels: map[string]string{"kind": "dev", "site": "from-id"}}},
		Subnets:  []SubnetRule{{CIDR: "10.0.0.0/8", Labels: map[string]string{"net": "lan"}}},
	}, tb, dyn.Inventory())
	if err != nil {
		t.Fatal(err)
	}
	e := events.PresenceEvent{DeviceID: "d1", IP: "10.1.2.3"}
	s := l.Labels(&e)
	if got := tb.Map(s); !reflect.DeepEqual(got, map[string]string{"kind": "dev", "site": "plant-7", "owner": "ops", "net": "lan"}) {
		t.Fatalf("labels %v", got)
	}
	// The KV layer overrides the file's site and adds criticality.
	old, err := dyn.Set("d1", map[string]string{"site": "plant-9", "criticality": "high"})
	if err != nil {
		t.Fatal(err)
	}
	s = l.Recompute(s, "d1", old)
	if got := tb.Map(s); !reflect.DeepEqual(got, map[string]string{"kind": "dev", "site": "plant-9", "owner": "ops", "criticality": "high", "net": "lan"}) {
		t.Fatalf("after KV set: %v", got)
	}
	// Deleting the KV entry restores the file's labels.
	old = dyn.Delete("d1")
	s = l.Recompute(s, "d1", old)
	if got := tb.Map(s); !reflect.DeepEqual(got, map[string]string{"kind": "dev", "site": "plant-7", "owner": "ops", "net": "lan"}) {
		t.Fatalf("after KV delete: %v", got)
	}
	// A new file: d2 leaves it (its site falls back to the client-id rule's), d3 joins.
	file2, err := ParseInventoryCSV([]byte("device_id,site\nd1,plant-7\nd3,plant-3\n"), "", tb)
	if err != nil {
		t.Fatal(err)
	}
	changed, stale := dyn.ReplaceFile(file2)
	if !reflect.DeepEqual(changed, []string{"d1", "d2", "d3"}) || tb.Get(stale["d2"], "site") != "plant-8" || stale["d3"] != 0 {
		t.Fatalf("changed %v stale %v", changed, stale)
	}
	s2 := l.Recompute(l.Labels(&events.PresenceEvent{DeviceID: "d2"}), "d2", stale["d2"])
	if got := tb.Map(s2); !reflect.DeepEqual(got, map[string]string{"kind": "dev", "site": "from-id"}) {
		t.Fatalf("d2 after the file changed: %v", got)
	}
	if _, err := dyn.Set("d1", map[string]string{"device_id": "x"}); err == nil {
		t.Fatal("implicit label accepted")
	}
}
