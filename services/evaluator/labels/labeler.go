package labels

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// Implicit labels: every device has them, without configuration. They are
// not stored in its label set (they change too often, or are unique) but are
// visible to route matchers and group_by.
const (
	// DeviceID is the MQTT client id.
	DeviceID = "device_id"
	// Node is the broker node of the device's current (or last) connection.
	Node = "node"
	// Reason is the normalised disconnect reason of the device's outage.
	Reason = "reason"
	// AlertName is the kind of the alert being routed (device_offline,
	// device_flapping, group_outage, node_silent): visible to route
	// matchers, group_by and silences, never part of a device's labels.
	AlertName = "alertname"
)

// Reserved reports whether a label name is implicit and may not be set by
// rules or the inventory.
func Reserved(name string) bool {
	return name == DeviceID || name == Node || name == Reason || name == AlertName
}

var nameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// ValidName reports whether name is a valid label name: a letter or
// underscore, then letters, digits and underscores.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Config says where a device's labels come from. Later sources win for the
// same label name: client-id rules, then username, then IP rules, then the
// inventory (the operator's truth).
type Config struct {
	// ClientID rules are tried in order; the first that matches the client id
	// applies.
	ClientID []ClientIDRule `yaml:"client_id"`
	// Username, when set, names the label that receives the username.
	Username string `yaml:"username"`
	// Subnets are tried in order; the first that contains the device's IP
	// applies.
	Subnets []SubnetRule `yaml:"subnets"`
	// IPPrefix, when its label is set, labels every device with the network
	// of its IP (e.g. subnet="10.1.2.0/24"): a topology key for free.
	IPPrefix IPPrefix `yaml:"ip_prefix"`
	// Inventory is an optional file of per-device labels.
	Inventory InventoryConfig `yaml:"inventory"`
}

// ClientIDRule labels the devices whose client id matches it. Exactly one of
// Prefix and Regex is set.
type ClientIDRule struct {
	// Prefix matches client ids that start with it.
	Prefix string `yaml:"prefix"`
	// Regex matches client ids (use ^…$ to anchor); its named captures
	// become labels, e.g. ^(?P<site>[a-z]+)-(?P<gateway>gw[0-9]+)-.
	Regex string `yaml:"regex"`
	// Labels are added when the rule matches. In a regex rule, values may
	// refer to captures: $1, ${site}.
	Labels map[string]string `yaml:"labels"`
}

// SubnetRule labels the devices whose IP is in CIDR.
type SubnetRule struct {
	// CIDR is a network, e.g. 10.1.0.0/16 or fd00::/8.
	CIDR string `yaml:"cidr"`
	// Labels are added when the IP is in CIDR.
	Labels map[string]string `yaml:"labels"`
}

// IPPrefix labels a device with the network of its IP.
type IPPrefix struct {
	// Label names the label; empty turns the rule off.
	Label string `yaml:"label"`
	// IPv4Bits is the IPv4 prefix length (default 24).
	IPv4Bits int `yaml:"ipv4_bits"`
	// IPv6Bits is the IPv6 prefix length (default 64).
	IPv6Bits int `yaml:"ipv6_bits"`
}

// Validate checks the rules; errors name the field under prefix (e.g.
// "evaluator.labels") and say how to fix it.
func (c Config) Validate(prefix string) error {
	for i, r := range c.ClientID {
		f := fmt.Sprintf("%s.client_id[%d]", prefix, i)
		switch {
		case (r.Prefix == "") == (r.Regex == ""):
			return fmt.Errorf("%s: set exactly one of prefix and regex", f)
		case r.Prefix != "" && len(r.Labels) == 0:
			return fmt.Errorf("%s.labels is empty: a prefix rule needs labels to add, e.g. {site: plant-7}", f)
		}
		if r.Regex != "" {
			re, err := regexp.Compile(r.Regex)
			if err != nil {
				return fmt.Errorf("%s.regex %q: %v: use RE2 syntax", f, r.Regex, err)
			}
			captures := 0
			for _, n := range re.SubexpNames()[1:] {
				if n == "" {
					continue
				}
				captures++
				if err := checkName(n); err != nil {
					return fmt.Errorf("%s.regex capture %q %v", f, n, err)
				}
			}
			if captures == 0 && len(r.Labels) == 0 {
				return fmt.Errorf("%s: the regex has no named capture and labels is empty: add (?P<name>…) or labels", f)
			}
		}
		if err := checkLabels(f+".labels", r.Labels); err != nil {
			return err
		}
	}
	if c.Username != "" {
		if err := checkName(c.Username); err != nil {
			return fmt.Errorf("%s.username %q %v", prefix, c.Username, err)
		}
	}
	for i, s := range c.Subnets {
		f := fmt.Sprintf("%s.subnets[%d]", prefix, i)
		if _, err := netip.ParsePrefix(s.CIDR); err != nil {
			return fmt.Errorf("%s.cidr %q is not a network: use e.g. 10.1.0.0/16", f, s.CIDR)
		}
		if len(s.Labels) == 0 {
			return fmt.Errorf("%s.labels is empty: add the labels of this network, e.g. {site: plant-7}", f)
		}
		if err := checkLabels(f+".labels", s.Labels); err != nil {
			return err
		}
	}
	if p := c.IPPrefix; p.Label != "" {
		if err := checkName(p.Label); err != nil {
			return fmt.Errorf("%s.ip_prefix.label %q %v", prefix, p.Label, err)
		}
		if p.IPv4Bits < 0 || p.IPv4Bits > 32 {
			return fmt.Errorf("%s.ip_prefix.ipv4_bits is %d: use 1 to 32, e.g. 24", prefix, p.IPv4Bits)
		}
		if p.IPv6Bits < 0 || p.IPv6Bits > 128 {
			return fmt.Errorf("%s.ip_prefix.ipv6_bits is %d: use 1 to 128, e.g. 64", prefix, p.IPv6Bits)
		}
	}
	return c.Inventory.Validate(prefix + ".inventory")
}

func checkName(n string) error {
	switch {
	case !ValidName(n):
		return errors.New("is not a label name: use letters, digits and _, not starting with a digit")
	case n == AlertName:
		return fmt.Errorf("is implicit (%s is the alert kind, set by the evaluator): pick another name", AlertName)
	case Reserved(n):
		return fmt.Errorf("is implicit (%s, %s and %s are set by the evaluator): pick another name", DeviceID, Node, Reason)
	}
	return nil
}

func checkLabels(field string, m map[string]string) error {
	for _, n := range sortedKeys(m) {
		if err := checkName(n); err != nil {
			return fmt.Errorf("%s: %q %v", field, n, err)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Labeler computes the label set of devices. It is deterministic and does no
// I/O; it is not safe for concurrent use (it interns into its Table).
type Labeler struct {
	table     *Table
	rules     []rule
	username  string
	subnets   []subnet
	ipPrefix  IPPrefix
	inventory *Inventory
	connNames []string // label names that depend on the connection
	scratch   []Label
}

type rule struct {
	prefix string
	re     *regexp.Regexp
	labels []Label // sorted by name
}

type subnet struct {
	prefix netip.Prefix
	labels []Label
}

// NewLabeler compiles cfg's rules. The inventory may be nil. Labels are
// interned into table.
func NewLabeler(cfg Config, table *Table, inv *Inventory) (*Labeler, error) {
	if err := cfg.Validate("labels"); err != nil {
		return nil, err
	}
	l := &Labeler{table: table, username: cfg.Username, ipPrefix: cfg.IPPrefix, inventory: inv}
	if l.ipPrefix.IPv4Bits == 0 {
		l.ipPrefix.IPv4Bits = 24
	}
	if l.ipPrefix.IPv6Bits == 0 {
		l.ipPrefix.IPv6Bits = 64
	}
	for _, r := range cfg.ClientID {
		cr := rule{prefix: r.Prefix, labels: toLabels(r.Labels)}
		if r.Regex != "" {
			cr.re = regexp.MustCompile(r.Regex) // validated above
		}
		l.rules = append(l.rules, cr)
	}
	names := map[string]bool{}
	if l.username != "" {
		names[l.username] = true
	}
	for _, s := range cfg.Subnets {
		l.subnets = append(l.subnets, subnet{prefix: netip.MustParsePrefix(s.CIDR).Masked(), labels: toLabels(s.Labels)})
		for n := range s.Labels {
			names[n] = true
		}
	}
	if l.ipPrefix.Label != "" {
		names[l.ipPrefix.Label] = true
	}
	for n := range names {
		l.connNames = append(l.connNames, n)
	}
	slices.Sort(l.connNames)
	return l, nil
}

func toLabels(m map[string]string) []Label {
	out := make([]Label, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, Label{Name: k, Value: m[k]})
	}
	return out
}

// Table returns the table the labeler interns into.
func (l *Labeler) Table() *Table { return l.table }

// ConnectionDependent reports whether labels depend on a connection's
// username or IP (and so must be recomputed on every new connection).
func (l *Labeler) ConnectionDependent() bool { return len(l.connNames) > 0 }

// Labels returns the label set of the device of e, from every source.
func (l *Labeler) Labels(e *events.PresenceEvent) Set {
	ls := l.scratch[:0]
	ls = l.appendClientID(ls, e.DeviceID)
	ls = l.appendConnection(ls, e)
	if l.inventory != nil {
		ls = append(ls, l.table.Labels(l.inventory.Lookup(e.DeviceID))...)
	}
	l.scratch = ls[:0]
	return l.table.Intern(ls)
}

// Relabel returns the label set of the device of e, a new connection of a
// device whose labels were prev. When the connection-derived labels are
// those already in prev, it returns prev without running the client-id
// rules again.
func (l *Labeler) Relabel(prev Set, e *events.PresenceEvent) Set {
	if !l.ConnectionDependent() {
		return prev
	}
	if l.sameConnection(prev, e) {
		return prev
	}
	return l.Labels(e)
}

// sameConnection reports whether the connection labels of e are those in
// prev, without allocating: the values appendConnection would add, the last
// one of a name winning.
func (l *Labeler) sameConnection(prev Set, e *events.PresenceEvent) bool {
	var (
		ip  netip.Addr
		ok  bool
		sub *subnet
		buf [64]byte
	)
	if e.IP != "" && (len(l.subnets) > 0 || l.ipPrefix.Label != "") {
		a, err := netip.ParseAddr(e.IP)
		ip, ok = a.Unmap().WithZone(""), err == nil
	}
	if ok {
		for i := range l.subnets {
			if l.subnets[i].prefix.Contains(ip) {
				sub = &l.subnets[i]
				break
			}
		}
	}
	for _, n := range l.connNames {
		want := ""
		if n == l.username {
			want = e.Username
		}
		if sub != nil {
			for _, lb := range sub.labels {
				if lb.Name == n {
					want = lb.Value
				}
			}
		}
		got := l.table.Get(prev, n)
		if ok && n == l.ipPrefix.Label {
			bits := l.ipPrefix.IPv4Bits
			if ip.Is6() {
				bits = l.ipPrefix.IPv6Bits
			}
			if p, err := ip.Prefix(bits); err == nil {
				if got != string(p.AppendTo(buf[:0])) {
					return false
				}
				continue
			}
		}
		if got != want {
			return false
		}
	}
	return true
}

func (l *Labeler) appendClientID(ls []Label, id string) []Label {
	for _, r := range l.rules {
		if r.re == nil {
			if strings.HasPrefix(id, r.prefix) {
				return append(ls, r.labels...)
			}
			continue
		}
		m := r.re.FindStringSubmatchIndex(id)
		if m == nil {
			continue
		}
		for i, n := range r.re.SubexpNames() {
			if i > 0 && n != "" && m[2*i] >= 0 {
				ls = append(ls, Label{Name: n, Value: id[m[2*i]:m[2*i+1]]})
			}
		}
		for _, lb := range r.labels {
			v := lb.Value
			if strings.IndexByte(v, '$') >= 0 {
				v = string(r.re.ExpandString(nil, v, id, m))
			}
			ls = append(ls, Label{Name: lb.Name, Value: v})
		}
		return ls
	}
	return ls
}

func (l *Labeler) appendConnection(ls []Label, e *events.PresenceEvent) []Label {
	if l.username != "" && e.Username != "" {
		ls = append(ls, Label{Name: l.username, Value: e.Username})
	}
	if len(l.subnets) == 0 && l.ipPrefix.Label == "" || e.IP == "" {
		return ls
	}
	ip, err := netip.ParseAddr(e.IP)
	if err != nil {
		return ls
	}
	ip = ip.Unmap().WithZone("")
	for _, s := range l.subnets {
		if s.prefix.Contains(ip) {
			ls = append(ls, s.labels...)
			break
		}
	}
	if l.ipPrefix.Label != "" {
		bits := l.ipPrefix.IPv4Bits
		if ip.Is6() {
			bits = l.ipPrefix.IPv6Bits
		}
		if p, err := ip.Prefix(bits); err == nil {
			ls = append(ls, Label{Name: l.ipPrefix.Label, Value: p.String()})
		}
	}
	return ls
}
