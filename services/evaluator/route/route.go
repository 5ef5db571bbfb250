package route

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
)

// GroupByAll as the only group_by entry groups by every label: one group
// per device.
const GroupByAll = "..."

// Config is one node of the routing tree as written in the config file.
// Unset fields are inherited from the parent (the root's from Defaults).
type Config struct {
	// Receivers get one notification per group flush; inherited when empty.
	Receivers []string `yaml:"receivers"`
	// Matchers must all match for an alert to enter this route.
	Matchers []string `yaml:"matchers"`
	// Continue goes on to the next sibling after this route matched.
	Continue bool `yaml:"continue"`
	// GroupBy lists the labels whose values form a group (e.g. [site]);
	// [...] means every label (one group per device).
	GroupBy []string `yaml:"group_by"`
	// GroupWait is how long a new group waits for more alerts before its
	// first notification.
	GroupWait *time.Duration `yaml:"group_wait"`
	// GroupInterval is how long a group waits after a notification before
	// it notifies of changes (new or resolved devices).
	GroupInterval *time.Duration `yaml:"group_interval"`
	// RepeatInterval is how long a group with no changes waits before it
	// repeats its notification; 0 never repeats.
	RepeatInterval *time.Duration `yaml:"repeat_interval"`
	// Grace is how long a device must stay offline before it alerts on
	// this route. A device matching several routes fires when the shortest
	// grace has passed, and joins every route's groups then.
	Grace *time.Duration `yaml:"grace"`
	// KeepaliveGrace, when set, derives the grace from the keepalive of the
	// device's last connection: max(floor, factor × keepalive). Devices
	// whose keepalive is unknown use Grace. A route that sets grace but not
	// keepalive_grace does not inherit its parent's keepalive_grace.
	KeepaliveGrace *KeepaliveGrace `yaml:"keepalive_grace"`
	// Severity of the route's alerts: info, warning or critical.
	Severity string `yaml:"severity"`
	// Escalations add a tier per offline duration: a device offline for
	// After also joins the tier's group, notified with the tier's severity
	// to the route's receivers plus the tier's. [] turns inherited ones off.
	Escalations []Escalation `yaml:"escalations"`
	// Flap turns on flap suppression (RFC 2439 damping) for the route's
	// devices; a device uses the settings of the first route it matches.
	Flap *FlapConfig `yaml:"flap"`
	// Routes are the children, tried in order.
	Routes []Config `yaml:"routes"`
}

// KeepaliveGrace derives a grace period from a device's MQTT keepalive.
type KeepaliveGrace struct {
	// Factor multiplies the keepalive (e.g. 1.5, EMQX's own timeout).
	Factor float64 `yaml:"factor"`
	// Floor is the shortest grace it yields, e.g. 10s.
	Floor time.Duration `yaml:"floor"`
}

// Escalation is a tier of an offline alert.
type Escalation struct {
	// After is the offline duration (since the disconnect) that reaches the
	// tier; it must exceed the route's grace.
	After time.Duration `yaml:"after"`
	// Severity of the tier's notifications (default critical).
	Severity string `yaml:"severity"`
	// Receivers are added to the route's for this tier.
	Receivers []string `yaml:"receivers"`
}

// Defaults are the root route's settings for fields its config leaves unset.
type Defaults struct {
	Receivers                                []string
	GroupBy                                  []string
	GroupWait, GroupInterval, RepeatInterval time.Duration
	// Grace is the root's grace (required, positive).
	Grace time.Duration
	// Severity is the root's severity (default warning).
	Severity string
	// Flap is the root's flap suppression (nil: off).
	Flap *FlapConfig
}

// Route is a compiled node of the tree.
type Route struct {
	// ID is the route's path in the tree: "root", "root.0", "root.0.2".
	ID string
	// Index is the route's position in a depth-first walk (root = 0).
	Index     int
	Receivers []string
	Matchers  Matchers
	Continue  bool
	// GroupBy is sorted; GroupByAll says group by every label.
	GroupBy                                  []string
	GroupByAll                               bool
	GroupWait, GroupInterval, RepeatInterval time.Duration
	Grace                                    time.Duration
	KeepaliveGrace                           *KeepaliveGrace
	Severity                                 string
	// Escalations are sorted by After.
	Escalations []Tier
	// Flap is the route's flap suppression (nil: off).
	Flap   *Flap
	Routes []*Route
}

// Tier is a compiled escalation.
type Tier struct {
	After    time.Duration
	Severity string
	// Extra are the tier's own receivers; Receivers the route's plus Extra.
	Extra     []string
	Receivers []string
}

// GraceFor returns the route's grace for a device whose keepalive is
// keepaliveS seconds (0: unknown).
func (r *Route) GraceFor(keepaliveS int) time.Duration {
	if k := r.KeepaliveGrace; k != nil && keepaliveS > 0 {
		return max(k.Floor, time.Duration(k.Factor*float64(keepaliveS)*float64(time.Second)))
	}
	return r.Grace
}

// Tree is a compiled routing tree.
type Tree struct {
	Root *Route
	// All lists every route, by Index.
	All []*Route
	// UniformGrace says every route has the same grace settings, so a
	// device's grace does not depend on its labels.
	UniformGrace bool
	// Escalates says some route has escalation tiers.
	Escalates bool
	// UniformFlap says every route has the same flap settings (Root.Flap),
	// so a device's do not depend on its labels.
	UniformFlap bool
	// PerDevice says routing or grouping reads the device_id label (a
	// matcher, group_by, or group_by [...]), so results cannot be shared
	// between devices with the same other labels.
	PerDevice bool
}

// New compiles cfg. Errors name the field under prefix (e.g.
// "evaluator.route") and say how to fix it.
func New(cfg Config, d Defaults, prefix string) (*Tree, error) {
	if len(cfg.Matchers) > 0 {
		return nil, fmt.Errorf("%s.matchers is set: the root route matches every alert, move the matchers to a child route", prefix)
	}
	if cfg.Continue {
		return nil, fmt.Errorf("%s.continue is set: the root route has no siblings, remove it", prefix)
	}
	if d.Grace <= 0 {
		return nil, fmt.Errorf("%s defaults: grace %s is not positive", prefix, d.Grace)
	}
	if d.Severity == "" {
		d.Severity = "warning"
	}
	parent := &Route{Receivers: d.Receivers, GroupWait: d.GroupWait, GroupInterval: d.GroupInterval, RepeatInterval: d.RepeatInterval,
		Grace: d.Grace, Severity: d.Severity}
	if err := parent.setGroupBy(d.GroupBy); err != nil {
		return nil, fmt.Errorf("%s defaults: %w", prefix, err)
	}
	flap, err := compileFlap(d.Flap, nil, prefix+" defaults: flap")
	if err != nil {
		return nil, err
	}
	parent.Flap = flap
	t := &Tree{}
	root, err := t.compile(cfg, parent, "root", prefix)
	if err != nil {
		return nil, err
	}
	if len(root.Receivers) == 0 {
		return nil, fmt.Errorf("%s.receivers is empty: name at least one receiver, e.g. [default]", prefix)
	}
	t.Root = root
	t.UniformGrace, t.UniformFlap = true, true
	for _, r := range t.All {
		if r.Grace != root.Grace || !reflect.DeepEqual(r.KeepaliveGrace, root.KeepaliveGrace) {
			t.UniformGrace = false
		}
		if !reflect.DeepEqual(r.Flap, root.Flap) {
			t.UniformFlap = false
		}
		if len(r.Escalations) > 0 {
			t.Escalates = true
		}
		if r.GroupByAll || slices.Contains(r.GroupBy, labels.DeviceID) ||
			slices.ContainsFunc(r.Matchers, func(m Matcher) bool { return m.Name == labels.DeviceID }) {
			t.PerDevice = true
		}
	}
	return t, nil
}

func validSeverity(s string) bool { return s == "info" || s == "warning" || s == "critical" }

func (t *Tree) compile(cfg Config, parent *Route, id, field string) (*Route, error) {
	r := &Route{
		ID:             id,
		Index:          len(t.All),
		Receivers:      parent.Receivers,
		Continue:       cfg.Continue,
		GroupBy:        parent.GroupBy,
		GroupByAll:     parent.GroupByAll,
		GroupWait:      parent.GroupWait,
		GroupInterval:  parent.GroupInterval,
		RepeatInterval: parent.RepeatInterval,
		Grace:          parent.Grace,
		KeepaliveGrace: parent.KeepaliveGrace,
		Severity:       parent.Severity,
		Escalations:    parent.Escalations,
		Flap:           parent.Flap,
	}
	t.All = append(t.All, r)
	if len(cfg.Receivers) > 0 {
		seen := map[string]bool{}
		for i, rc := range cfg.Receivers {
			switch {
			case rc == "":
				return nil, fmt.Errorf("%s.receivers[%d] is empty: name the receiver, e.g. default", field, i)
			case seen[rc]:
				return nil, fmt.Errorf("%s.receivers[%d] %q is listed twice: remove the duplicate", field, i, rc)
			}
			seen[rc] = true
		}
		r.Receivers = slices.Clone(cfg.Receivers)
	}
	ms, err := ParseMatchers(cfg.Matchers)
	if err != nil {
		return nil, fmt.Errorf("%s.matchers%w", field, err)
	}
	r.Matchers = ms
	if cfg.GroupBy != nil {
		if err := r.setGroupBy(cfg.GroupBy); err != nil {
			return nil, fmt.Errorf("%s.group_by: %w", field, err)
		}
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		dst  *time.Duration
	}{{"group_wait", cfg.GroupWait, &r.GroupWait}, {"group_interval", cfg.GroupInterval, &r.GroupInterval}, {"repeat_interval", cfg.RepeatInterval, &r.RepeatInterval}} {
		if d.v == nil {
			continue
		}
		if *d.v < 0 {
			return nil, fmt.Errorf("%s.%s is %s: use 0 or a positive duration, e.g. 30s", field, d.name, *d.v)
		}
		*d.dst = *d.v
	}
	if cfg.Grace != nil {
		if *cfg.Grace <= 0 {
			return nil, fmt.Errorf("%s.grace is %s: use a positive duration, e.g. 30s", field, *cfg.Grace)
		}
		r.Grace = *cfg.Grace
		r.KeepaliveGrace = nil // an explicit grace is not overridden by an inherited keepalive rule
	}
	if k := cfg.KeepaliveGrace; k != nil {
		switch {
		case k.Factor < 1 || k.Factor > 10:
			return nil, fmt.Errorf("%s.keepalive_grace.factor is %g: use 1 to 10, e.g. 1.5", field, k.Factor)
		case k.Floor <= 0:
			return nil, fmt.Errorf("%s.keepalive_grace.floor is %s: use a positive duration, e.g. 10s", field, k.Floor)
		}
		kc := *k
		r.KeepaliveGrace = &kc
	}
	if cfg.Severity != "" {
		if !validSeverity(cfg.Severity) {
			return nil, fmt.Errorf("%s.severity is %q: use info, warning or critical", field, cfg.Severity)
		}
		r.Severity = cfg.Severity
	}
	if cfg.Escalations != nil {
		r.Escalations = nil
		for i, e := range cfg.Escalations {
			f := fmt.Sprintf("%s.escalations[%d]", field, i)
			tier := Tier{After: e.After, Severity: e.Severity}
			if tier.Severity == "" {
				tier.Severity = "critical"
			}
			switch {
			case e.After <= 0:
				return nil, fmt.Errorf("%s.after is %s: use a positive duration, e.g. 1h", f, e.After)
			case i > 0 && e.After <= cfg.Escalations[i-1].After:
				return nil, fmt.Errorf("%s.after %s is not after the previous tier's %s: list tiers in increasing order", f, e.After, cfg.Escalations[i-1].After)
			case !validSeverity(tier.Severity):
				return nil, fmt.Errorf("%s.severity is %q: use info, warning or critical", f, e.Severity)
			}
			for j, rc := range e.Receivers {
				if rc == "" {
					return nil, fmt.Errorf("%s.receivers[%d] is empty: name the receiver, e.g. oncall", f, j)
				}
				tier.Extra = append(tier.Extra, rc)
			}
			r.Escalations = append(r.Escalations, tier)
		}
	}
	r.Escalations = slices.Clone(r.Escalations)
	for i, e := range r.Escalations {
		rcv := slices.Clone(r.Receivers)
		for _, rc := range e.Extra {
			if !slices.Contains(rcv, rc) {
				rcv = append(rcv, rc)
			}
		}
		r.Escalations[i].Receivers = rcv
		if e.After <= r.Grace {
			return nil, fmt.Errorf("%s: escalation %d after %s is not longer than the grace %s: raise after or lower grace", field, i, e.After, r.Grace)
		}
	}
	flap, err := compileFlap(cfg.Flap, r.Flap, field+".flap")
	if err != nil {
		return nil, err
	}
	r.Flap = flap
	if r.RepeatInterval > 0 && r.RepeatInterval < r.GroupInterval {
		return nil, fmt.Errorf("%s.repeat_interval %s is shorter than group_interval %s: use at least the group interval, e.g. 4h", field, r.RepeatInterval, r.GroupInterval)
	}
	for i, c := range cfg.Routes {
		child, err := t.compile(c, r, id+"."+strconv.Itoa(i), fmt.Sprintf("%s.routes[%d]", field, i))
		if err != nil {
			return nil, err
		}
		r.Routes = append(r.Routes, child)
	}
	return r, nil
}

func (r *Route) setGroupBy(gb []string) error {
	if len(gb) == 1 && gb[0] == GroupByAll {
		r.GroupBy, r.GroupByAll = nil, true
		return nil
	}
	seen := map[string]bool{}
	out := make([]string, 0, len(gb))
	for i, n := range gb {
		switch {
		case n == GroupByAll:
			return fmt.Errorf("[%d] %q must be the only entry: use [...] alone to group by every label", i, n)
		case !labels.ValidName(n):
			return fmt.Errorf("[%d] %q is not a label name: use letters, digits and _, not starting with a digit", i, n)
		case seen[n]:
			return fmt.Errorf("[%d] %q is listed twice: remove the duplicate", i, n)
		}
		seen[n] = true
		out = append(out, n)
	}
	slices.Sort(out)
	r.GroupBy, r.GroupByAll = out, false
	return nil
}

// Match returns the routes an alert with these labels goes to, in tree
// order: the deepest matching routes, Alertmanager's way. get returns a
// label's value ("" when absent).
func (t *Tree) Match(get func(name string) string) []*Route {
	return t.Root.match(get, nil)
}

func (r *Route) match(get func(string) string, out []*Route) []*Route {
	if !r.Matchers.Matches(get) {
		return out
	}
	n := len(out)
	for _, c := range r.Routes {
		before := len(out)
		out = c.match(get, out)
		if len(out) > before && !c.Continue {
			break
		}
	}
	if len(out) == n {
		out = append(out, r)
	}
	return out
}

// GroupLabels returns the group_by labels of an alert (all labels for
// GroupByAll, which the caller passes as all). Absent labels are left out.
func (r *Route) GroupLabels(get func(string) string, all func() map[string]string) map[string]string {
	if r.GroupByAll {
		return all()
	}
	m := make(map[string]string, len(r.GroupBy))
	for _, n := range r.GroupBy {
		if v := get(n); v != "" {
			m[n] = v
		}
	}
	return m
}

// GroupKey formats a route's group key from its group labels:
// root{site="a",gateway="gw1"}. It is stable for the same labels.
func (r *Route) GroupKey(groupLabels map[string]string) string {
	n := len(r.ID) + 2
	for k, v := range groupLabels {
		n += len(k) + len(v) + 4
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(r.ID)
	b.WriteByte('{')
	if len(groupLabels) == 1 {
		// The common case (group_by one label): nothing to sort.
		for k, v := range groupLabels {
			writeLabel(&b, k, v)
		}
	} else {
		ks := make([]string, 0, len(groupLabels))
		for k := range groupLabels {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		for i, k := range ks {
			if i > 0 {
				b.WriteByte(',')
			}
			writeLabel(&b, k, groupLabels[k])
		}
	}
	b.WriteByte('}')
	return b.String()
}

// writeLabel writes name=strconv.Quote(value).
func writeLabel(b *strings.Builder, name, value string) {
	b.WriteString(name)
	b.WriteByte('=')
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			b.WriteString(strconv.Quote(value))
			return
		}
	}
	// Printable ASCII without quotes or backslashes: strconv.Quote adds the
	// quotes alone.
	b.WriteByte('"')
	b.WriteString(value)
	b.WriteByte('"')
}
