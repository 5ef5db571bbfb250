package labels

import (
	"fmt"
	"maps"
	"slices"
)

// Dynamic is a device inventory in two layers: the inventory file (replaced
// on reload) and dynamic entries (the evaluator's NATS KV bucket, changed at
// run time through the API), whose labels override the file's name by name.
// A Labeler reads the merged view through Inventory().
//
// Like the Labeler and the Table, a Dynamic is not safe for concurrent use:
// its owner (the tracker's goroutine) serialises every call.
type Dynamic struct {
	table  *Table
	merged *Inventory
	file   map[string]Set
	kv     map[string]Set
}

// NewDynamic returns a dynamic inventory over file (nil: no file), whose
// sets must be interned in t.
func NewDynamic(t *Table, file *Inventory) *Dynamic {
	d := &Dynamic{table: t, merged: &Inventory{devices: map[string]Set{}}, file: map[string]Set{}, kv: map[string]Set{}}
	if file != nil {
		maps.Copy(d.file, file.devices)
		maps.Copy(d.merged.devices, file.devices)
	}
	return d
}

// Inventory returns the merged inventory, to pass to NewLabeler. It stays
// current as the Dynamic changes.
func (d *Dynamic) Inventory() *Inventory { return d.merged }

// Len is the number of dynamic entries.
func (d *Dynamic) Len() int { return len(d.kv) }

// CheckInventoryLabels validates the labels of a dynamic entry: label names
// only (no implicit ones), values any text.
func CheckInventoryLabels(m map[string]string) error {
	for _, n := range sortedKeys(m) {
		if err := checkName(n); err != nil {
			return fmt.Errorf("label %q %v", n, err)
		}
	}
	return nil
}

// Set makes m the dynamic labels of device id and returns the device's
// merged inventory set before the change.
func (d *Dynamic) Set(id string, m map[string]string) (old Set, err error) {
	if err := CheckInventoryLabels(m); err != nil {
		return 0, err
	}
	d.kv[id] = d.table.Intern(toLabels(m))
	return d.update(id), nil
}

// Delete removes the dynamic labels of device id and returns the device's
// merged inventory set before the change.
func (d *Dynamic) Delete(id string) (old Set) {
	delete(d.kv, id)
	return d.update(id)
}

// ReplaceFile swaps the file layer for file (nil: none; its sets interned in
// the Dynamic's table) and returns the devices whose merged labels changed,
// sorted, with their merged set before the change.
func (d *Dynamic) ReplaceFile(file *Inventory) (changed []string, old map[string]Set) {
	prev := d.file
	d.file = map[string]Set{}
	if file != nil {
		maps.Copy(d.file, file.devices)
	}
	old = map[string]Set{}
	for _, m := range []map[string]Set{prev, d.file} {
		for id := range m {
			if _, seen := old[id]; seen {
				continue
			}
			if before := d.update(id); before != d.merged.devices[id] {
				old[id] = before
			}
		}
	}
	return slices.Sorted(maps.Keys(old)), old
}

// update recomputes the merged set of id and returns the previous one.
func (d *Dynamic) update(id string) Set {
	old := d.merged.devices[id]
	s := d.table.Merge(d.file[id], d.kv[id])
	if s == 0 {
		delete(d.merged.devices, id)
	} else {
		d.merged.devices[id] = s
	}
	return old
}

// Recompute returns the labels of a known device after the inventory or the
// labeler's rules changed, without its connection: the client-id rules of
// id, then the connection-derived labels (this labeler's username, subnet
// and ip_prefix label names) kept from prev unless staleInventory (the
// device's inventory set before the change) holds that name, then the
// inventory. A connection label that an earlier inventory overrode comes
// back at the device's next connection, when Labels runs again.
func (l *Labeler) Recompute(prev Set, id string, staleInventory Set) Set {
	ls := l.scratch[:0]
	ls = l.appendClientID(ls, id)
	for _, n := range l.connNames {
		if v := l.table.Get(prev, n); v != "" && l.table.Get(staleInventory, n) == "" {
			ls = append(ls, Label{Name: n, Value: v})
		}
	}
	if l.inventory != nil {
		ls = append(ls, l.table.Labels(l.inventory.Lookup(id))...)
	}
	l.scratch = ls[:0]
	return l.table.Intern(ls)
}
