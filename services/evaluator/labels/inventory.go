package labels

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Inventory formats.
const (
	FormatCSV  = "csv"
	FormatYAML = "yaml"
)

// InventoryConfig names a device inventory file.
//
// CSV: a header row, one column holding the device id (IDColumn), every other
// column a label (an empty cell sets nothing):
//
//	device_id,site,gateway,owner,criticality
//	plant7-gw1-0001,plant-7,gw1,ops-east,high
//
// YAML: a mapping of device id to labels:
//
//	devices:
//	  plant7-gw1-0001: {site: plant-7, gateway: gw1, criticality: high}
type InventoryConfig struct {
	// File is the path; empty means no inventory.
	File string `yaml:"file"`
	// Format is csv or yaml; by default taken from the file's extension.
	Format string `yaml:"format"`
	// IDColumn is the CSV column of the device id (default device_id).
	IDColumn string `yaml:"id_column"`
}

// Validate checks the settings; errors name the field under prefix.
func (c InventoryConfig) Validate(prefix string) error {
	if c.File == "" {
		if c.Format != "" || c.IDColumn != "" {
			return fmt.Errorf("%s.file is empty but format or id_column is set: set file, e.g. /etc/fleetwatch/inventory.csv", prefix)
		}
		return nil
	}
	if f := c.format(); f != FormatCSV && f != FormatYAML {
		return fmt.Errorf("%s.format is %q: use csv or yaml (or name the file *.csv, *.yaml)", prefix, f)
	}
	if c.IDColumn != "" && c.format() != FormatCSV {
		return fmt.Errorf("%s.id_column is set for a %s inventory: it applies to csv only, remove it", prefix, c.format())
	}
	return nil
}

func (c InventoryConfig) format() string {
	if c.Format != "" {
		return c.Format
	}
	switch strings.ToLower(filepath.Ext(c.File)) {
	case ".csv":
		return FormatCSV
	case ".yaml", ".yml":
		return FormatYAML
	}
	return ""
}

// Inventory maps device ids to their interned inventory labels.
type Inventory struct {
	devices map[string]Set
}

// Lookup returns a device's inventory labels (the empty set when unknown).
// A nil Inventory is empty.
func (inv *Inventory) Lookup(id string) Set {
	if inv == nil {
		return 0
	}
	return inv.devices[id]
}

// Len is the number of devices in the inventory.
func (inv *Inventory) Len() int {
	if inv == nil {
		return 0
	}
	return len(inv.devices)
}

// ErrInventory is wrapped by every inventory parse error.
var ErrInventory = errors.New("invalid inventory")

// LoadInventory reads the file cfg names (nil, nil when it names none).
func LoadInventory(cfg InventoryConfig, t *Table) (*Inventory, error) {
	if cfg.File == "" {
		return nil, nil
	}
	b, err := os.ReadFile(cfg.File)
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	var inv *Inventory
	if cfg.format() == FormatYAML {
		inv, err = ParseInventoryYAML(b, t)
	} else {
		inv, err = ParseInventoryCSV(b, cfg.IDColumn, t)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.File, err)
	}
	return inv, nil
}

// ParseInventoryCSV parses a CSV inventory; idColumn defaults to device_id.
// A device listed twice is an error.
func ParseInventoryCSV(b []byte, idColumn string, t *Table) (*Inventory, error) {
	if idColumn == "" {
		idColumn = DeviceID
	}
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))))
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty file: start with a header row, e.g. device_id,site", ErrInventory)
		}
		return nil, fmt.Errorf("%w: %v", ErrInventory, err)
	}
	names := make([]string, len(header))
	idCol := -1
	seen := map[string]bool{}
	for i, h := range header {
		h = strings.TrimSpace(h)
		switch {
		case h == idColumn:
			idCol = i
		case seen[h]:
			return nil, fmt.Errorf("%w: line 1: column %q appears twice", ErrInventory, h)
		default:
			if err := checkName(h); err != nil {
				return nil, fmt.Errorf("%w: line 1: column %q %v", ErrInventory, h, err)
			}
		}
		seen[h] = true
		names[i] = h
	}
	if idCol < 0 {
		return nil, fmt.Errorf("%w: line 1: no %q column: name the device id column %s (or set id_column)", ErrInventory, idColumn, idColumn)
	}
	inv := &Inventory{devices: map[string]Set{}}
	var ls []Label
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return inv, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInventory, err)
		}
		line, _ := r.FieldPos(0)
		id := rec[idCol]
		if id == "" {
			return nil, fmt.Errorf("%w: line %d: the %s cell is empty", ErrInventory, line, idColumn)
		}
		if _, dup := inv.devices[id]; dup {
			return nil, fmt.Errorf("%w: line %d: device %q is listed twice", ErrInventory, line, id)
		}
		ls = ls[:0]
		for i, v := range rec {
			if i != idCol {
				ls = append(ls, Label{Name: names[i], Value: strings.TrimSpace(v)})
			}
		}
		inv.devices[strings.Clone(id)] = t.Intern(ls)
	}
}

// yamlInventory is the YAML inventory file.
type yamlInventory struct {
	Devices map[string]map[string]string `yaml:"devices"`
}

// ParseInventoryYAML parses a YAML inventory (strict: unknown keys are
// errors).
func ParseInventoryYAML(b []byte, t *Table) (*Inventory, error) {
	var y yamlInventory
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&y); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %v", ErrInventory, err)
	}
	inv := &Inventory{devices: make(map[string]Set, len(y.Devices))}
	for _, id := range sortedKeys(y.Devices) {
		if id == "" {
			return nil, fmt.Errorf("%w: devices: a device id is empty", ErrInventory)
		}
		ls := make([]Label, 0, len(y.Devices[id]))
		for _, n := range sortedKeys(y.Devices[id]) {
			if err := checkName(n); err != nil {
				return nil, fmt.Errorf("%w: devices[%q]: label %q %v", ErrInventory, id, n, err)
			}
			ls = append(ls, Label{Name: n, Value: y.Devices[id][n]})
		}
		inv.devices[id] = t.Intern(ls)
	}
	return inv, nil
}
