package labels

import (
	"reflect"
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

func TestTableInterns(t *testing.T) {
	tb := NewTable()
	a := tb.Intern([]Label{{"site", "a"}, {"gw", "1"}})
	b := tb.Intern([]Label{{"gw", "1"}, {"site", "a"}})
	c := tb.Intern([]Label{{"gw", "1"}, {"site", "b"}, {"site", "a"}, {"owner", ""}})
	if a != b || a != c || a == 0 {
		t.Fatalf("sets %d %d %d, want one non-empty id", a, b, c)
	}
	if tb.Intern(nil) != 0 || tb.Intern([]Label{{"x", ""}}) != 0 {
		t.Fatal("empty set is not 0")
	}
	// Separators inside values cannot fake another set.
	x := tb.Intern([]Label{{"a", "1\x00b\x001"}})
	y := tb.Intern([]Label{{"a", "1"}, {"b", "1"}})
	if x == y {
		t.Fatal("NUL in a value collides with two labels")
	}
	if got := tb.Labels(a); !reflect.DeepEqual(got, []Label{{"gw", "1"}, {"site", "a"}}) {
		t.Fatalf("labels %v", got)
	}
	if tb.Get(a, "site") != "a" || tb.Get(a, "owner") != "" || tb.Get(Set(999), "site") != "" {
		t.Fatal("Get")
	}
	if m := tb.Map(a); !reflect.DeepEqual(m, map[string]string{"gw": "1", "site": "a"}) || tb.Map(0) != nil {
		t.Fatalf("Map %v", m)
	}
	m := tb.Merge(a, tb.Intern([]Label{{"site", "z"}, {"owner", "ops"}}))
	if got := tb.Map(m); !reflect.DeepEqual(got, map[string]string{"gw": "1", "site": "z", "owner": "ops"}) {
		t.Fatalf("Merge %v", got)
	}
	if tb.Merge(a, 0) != a || tb.Merge(0, a) != a {
		t.Fatal("Merge with empty")
	}
	if tb.Len() != 6 {
		t.Fatalf("Len %d", tb.Len())
	}
}

func presence(id, user, ip string) *events.PresenceEvent {
	return &events.PresenceEvent{DeviceID: id, Username: user, IP: ip, Kind: events.KindConnected, Node: "n1", BrokerTSMS: 1}
}

func TestLabeler(t *testing.T) {
	tb := NewTable()
	inv, err := ParseInventoryCSV([]byte("device_id,site,owner\nplant7-gw2-0001,plant-7-override,ops\n"), "", tb)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLabeler(Config{
		ClientID: []ClientIDRule{
			{Prefix: "test-", Labels: map[string]string{"env": "test"}},
			{Regex: `^(?P<site>plant[0-9]+)-(?P<gateway>gw[0-9]+)-`, Labels: map[string]string{"env": "prod", "path": "${site}/$gateway"}},
			{Prefix: "plant", Labels: map[string]string{"env": "never"}}, // the regex matched first
		},
		Username: "tenant",
		Subnets: []SubnetRule{
			{CIDR: "10.7.0.0/16", Labels: map[string]string{"network": "plant7-lan"}},
			{CIDR: "10.0.0.0/8", Labels: map[string]string{"network": "corp"}},
		},
		IPPrefix: IPPrefix{Label: "subnet"},
	}, tb, inv)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		e    *events.PresenceEvent
		want map[string]string
	}{
		{presence("test-1", "", ""), map[string]string{"env": "test"}},
		{presence("plant7-gw2-0002", "acme", "10.7.1.9"), map[string]string{"env": "prod", "site": "plant7", "gateway": "gw2",
			"path": "plant7/gw2", "tenant": "acme", "network": "plant7-lan", "subnet": "10.7.1.0/24"}},
		{presence("plant7-gw2-0001", "", "10.9.1.9"), map[string]string{"env": "prod", "site": "plant-7-override", "gateway": "gw2",
			"path": "plant7/gw2", "owner": "ops", "network": "corp", "subnet": "10.9.1.0/24"}},
		{presence("other", "", "fd00::1"), map[string]string{"subnet": "fd00::/64"}},
		{presence("other", "", "::ffff:10.7.0.1"), map[string]string{"network": "plant7-lan", "subnet": "10.7.0.0/24"}},
		{presence("other", "", "not an ip"), nil},
	}
	for _, tc := range tests {
		if got := tb.Map(l.Labels(tc.e)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Labels(%q, %q, %q) = %v, want %v", tc.e.DeviceID, tc.e.Username, tc.e.IP, got, tc.want)
		}
	}
	if !l.ConnectionDependent() {
		t.Fatal("username and IP rules are connection dependent")
	}

	// Relabel keeps the set when the connection labels did not change, and
	// recomputes it when they did.
	e := presence("plant7-gw2-0002", "acme", "10.7.1.9")
	s := l.Labels(e)
	if l.Relabel(s, presence("plant7-gw2-0002", "acme", "10.7.1.10")) != s {
		t.Fatal("same subnet, same set")
	}
	moved := l.Relabel(s, presence("plant7-gw2-0002", "", "10.8.1.10"))
	if got := tb.Map(moved); got["network"] != "corp" || got["tenant"] != "" || got["site"] != "plant7" {
		t.Fatalf("relabelled %v", got)
	}
}

func TestLabelerWithoutConnectionRules(t *testing.T) {
	tb := NewTable()
	l, err := NewLabeler(Config{ClientID: []ClientIDRule{{Regex: `^(?P<site>[a-z]+)-`}}}, tb, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := l.Labels(presence("abc-1", "u", "10.0.0.1"))
	if l.ConnectionDependent() || l.Relabel(s, presence("xyz-1", "", "")) != s {
		t.Fatal("relabel without connection rules must keep the set")
	}
	if got := tb.Map(s); !reflect.DeepEqual(got, map[string]string{"site": "abc"}) {
		t.Fatalf("labels %v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"empty", Config{}, ""},
		{"neither", Config{ClientID: []ClientIDRule{{}}}, "l.client_id[0]: set exactly one of prefix and regex"},
		{"both", Config{ClientID: []ClientIDRule{{Prefix: "a", Regex: "b"}}}, "l.client_id[0]: set exactly one of prefix and regex"},
		{"prefix without labels", Config{ClientID: []ClientIDRule{{Prefix: "a"}}}, "l.client_id[0].labels is empty: a prefix rule needs labels to add, e.g. {site: plant-7}"},
		{"bad regex", Config{ClientID: []ClientIDRule{{Regex: "("}}}, "l.client_id[0].regex \"(\": error parsing regexp: missing closing ): `(`: use RE2 syntax"},
		{"regex without output", Config{ClientID: []ClientIDRule{{Regex: "^a"}}}, "l.client_id[0]: the regex has no named capture and labels is empty: add (?P<name>…) or labels"},
		{"reserved capture", Config{ClientID: []ClientIDRule{{Regex: "^(?P<node>a)"}}}, `l.client_id[0].regex capture "node" is implicit (device_id, node and reason are set by the evaluator): pick another name`},
		{"bad label name", Config{ClientID: []ClientIDRule{{Prefix: "a", Labels: map[string]string{"site-id": "x"}}}}, `l.client_id[0].labels: "site-id" is not a label name: use letters, digits and _, not starting with a digit`},
		{"alertname", Config{Username: "alertname"}, `l.username "alertname" is implicit (alertname is the alert kind, set by the evaluator): pick another name`},
		{"username", Config{Username: "device_id"}, `l.username "device_id" is implicit (device_id, node and reason are set by the evaluator): pick another name`},
		{"cidr", Config{Subnets: []SubnetRule{{CIDR: "10.0.0.0", Labels: map[string]string{"a": "b"}}}}, `l.subnets[0].cidr "10.0.0.0" is not a network: use e.g. 10.1.0.0/16`},
		{"subnet labels", Config{Subnets: []SubnetRule{{CIDR: "10.0.0.0/8"}}}, "l.subnets[0].labels is empty: add the labels of this network, e.g. {site: plant-7}"},
		{"ip prefix bits", Config{IPPrefix: IPPrefix{Label: "net", IPv4Bits: 33}}, "l.ip_prefix.ipv4_bits is 33: use 1 to 32, e.g. 24"},
		{"ip prefix label", Config{IPPrefix: IPPrefix{Label: "1net"}}, `l.ip_prefix.label "1net" is not a label name: use letters, digits and _, not starting with a digit`},
		{"inventory format", Config{Inventory: InventoryConfig{File: "inv.txt"}}, `l.inventory.format is "": use csv or yaml (or name the file *.csv, *.yaml)`},
		{"inventory id column", Config{Inventory: InventoryConfig{File: "inv.yaml", IDColumn: "id"}}, "l.inventory.id_column is set for a yaml inventory: it applies to csv only, remove it"},
		{"inventory without file", Config{Inventory: InventoryConfig{Format: "csv"}}, "l.inventory.file is empty but format or id_column is set: set file, e.g. /etc/fleetwatch/inventory.csv"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate("l")
			if (err == nil && tc.want != "") || (err != nil && err.Error() != tc.want) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestInventoryCSV(t *testing.T) {
	tb := NewTable()
	inv, err := ParseInventoryCSV([]byte("\xef\xbb\xbfid, site ,gateway,criticality\n"+
		"dev-1,plant-7,gw1,high\n\"dev,2 ü\",plant-7,,low\n"), "id", tb)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Len() != 2 {
		t.Fatalf("len %d", inv.Len())
	}
	if got := tb.Map(inv.Lookup("dev-1")); !reflect.DeepEqual(got, map[string]string{"site": "plant-7", "gateway": "gw1", "criticality": "high"}) {
		t.Fatalf("dev-1 %v", got)
	}
	if got := tb.Map(inv.Lookup("dev,2 ü")); !reflect.DeepEqual(got, map[string]string{"site": "plant-7", "criticality": "low"}) {
		t.Fatalf("dev,2 %v", got)
	}
	if inv.Lookup("nope") != 0 || (*Inventory)(nil).Lookup("x") != 0 || (*Inventory)(nil).Len() != 0 {
		t.Fatal("unknown devices have no labels")
	}
	for _, tc := range []struct{ in, want string }{
		{"", "invalid inventory: empty file: start with a header row, e.g. device_id,site"},
		{"site\n", `invalid inventory: line 1: no "device_id" column: name the device id column device_id (or set id_column)`},
		{"device_id,site,site\n", `invalid inventory: line 1: column "site" appears twice`},
		{"device_id,node\n", `invalid inventory: line 1: column "node" is implicit (device_id, node and reason are set by the evaluator): pick another name`},
		{"device_id,a b\n", `invalid inventory: line 1: column "a b" is not a label name: use letters, digits and _, not starting with a digit`},
		{"device_id,site\nd1,a\nd1,b\n", `invalid inventory: line 3: device "d1" is listed twice`},
		{"device_id,site\n,a\n", "invalid inventory: line 2: the device_id cell is empty"},
		{"device_id,site\nd1\n", "invalid inventory: record on line 2: wrong number of fields"},
	} {
		if _, err := ParseInventoryCSV([]byte(tc.in), "", NewTable()); err == nil || err.Error() != tc.want {
			t.Errorf("ParseInventoryCSV(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestInventoryYAML(t *testing.T) {
	tb := NewTable()
	inv, err := ParseInventoryYAML([]byte("devices:\n  dev-1: {site: plant-7, criticality: 1}\n  \"dev/2\": {}\n"), tb)
	if err != nil {
		t.Fatal(err)
	}
	if got := tb.Map(inv.Lookup("dev-1")); !reflect.DeepEqual(got, map[string]string{"site": "plant-7", "criticality": "1"}) {
		t.Fatalf("dev-1 %v", got)
	}
	if inv.Len() != 2 || inv.Lookup("dev/2") != 0 {
		t.Fatal("dev/2")
	}
	for _, tc := range []struct{ in, want string }{
		{"device:\n  a: {}\n", "invalid inventory: yaml: unmarshal errors:\n  line 1: field device not found in type labels.yamlInventory"},
		{"devices:\n  a: {reason: x}\n", `invalid inventory: devices["a"]: label "reason" is implicit (device_id, node and reason are set by the evaluator): pick another name`},
		{"devices:\n  \"\": {a: b}\n", "invalid inventory: devices: a device id is empty"},
		{"devices: [a]\n", "invalid inventory: yaml: unmarshal errors:\n  line 1: cannot unmarshal !!seq into map[string]map[string]string"},
	} {
		if _, err := ParseInventoryYAML([]byte(tc.in), NewTable()); err == nil || err.Error() != tc.want {
			t.Errorf("ParseInventoryYAML(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
	if inv, err := ParseInventoryYAML(nil, NewTable()); err != nil || inv.Len() != 0 {
		t.Fatalf("empty file: %v", err)
	}
}

func TestLoadInventory(t *testing.T) {
	dir := t.TempDir()
	if inv, err := LoadInventory(InventoryConfig{}, NewTable()); inv != nil || err != nil {
		t.Fatal("no file, no inventory")
	}
	if _, err := LoadInventory(InventoryConfig{File: dir + "/missing.csv"}, NewTable()); err == nil || !strings.HasPrefix(err.Error(), "read inventory: open ") {
		t.Fatalf("missing file: %v", err)
	}
	writeFile(t, dir+"/inv.yml", "devices:\n  d: {site: s}\n")
	writeFile(t, dir+"/bad.csv", "site\n")
	tb := NewTable()
	inv, err := LoadInventory(InventoryConfig{File: dir + "/inv.yml"}, tb)
	if err != nil || tb.Get(inv.Lookup("d"), "site") != "s" {
		t.Fatalf("yaml: %v", err)
	}
	if _, err := LoadInventory(InventoryConfig{File: dir + "/bad.csv"}, tb); err == nil || err.Error() != dir+`/bad.csv: invalid inventory: line 1: no "device_id" column: name the device id column device_id (or set id_column)` {
		t.Fatalf("bad csv: %v", err)
	}
}
