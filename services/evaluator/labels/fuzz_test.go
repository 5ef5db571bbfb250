package labels

import (
	"os"
	"testing"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// checkInventory verifies what every parsed inventory must satisfy: every
// label has a valid, non-reserved name and a non-empty value, sorted.
func checkInventory(t *testing.T, tb *Table, inv *Inventory) {
	for id, s := range inv.devices {
		if id == "" {
			t.Fatal("empty device id")
		}
		ls := tb.Labels(s)
		for i, l := range ls {
			if !ValidName(l.Name) || Reserved(l.Name) || l.Value == "" || (i > 0 && ls[i-1].Name >= l.Name) {
				t.Fatalf("device %q: bad labels %v", id, ls)
			}
		}
	}
}

func FuzzInventoryCSV(f *testing.F) {
	f.Add([]byte("device_id,site,gateway\nd1,a,gw1\n\"d,2\",b,\n"), "")
	f.Add([]byte("id,site\nd1,a\n"), "id")
	f.Add([]byte("device_id,node\n"), "")
	f.Add([]byte("device_id,site\nd1,a\nd1,b\n"), "")
	f.Fuzz(func(t *testing.T, data []byte, idColumn string) {
		tb := NewTable()
		inv, err := ParseInventoryCSV(data, idColumn, tb)
		if err != nil {
			return
		}
		checkInventory(t, tb, inv)
	})
}

func FuzzInventoryYAML(f *testing.F) {
	f.Add([]byte("devices:\n  d1: {site: a, criticality: 1}\n"))
	f.Add([]byte("devices:\n  \"\": {a: b}\n"))
	f.Add([]byte("devices: [a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tb := NewTable()
		inv, err := ParseInventoryYAML(data, tb)
		if err != nil {
			return
		}
		checkInventory(t, tb, inv)
	})
}
