package route

import (
	"bytes"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestParseMatcher(t *testing.T) {
	tests := []struct {
		in      string
		want    string // String() of the result, or the error
		yes, no []string
	}{
		{`site=a`, `site="a"`, []string{"a"}, []string{"", "ab"}},
		{`site = "plant 7"`, `site="plant 7"`, []string{"plant 7"}, []string{"plant"}},
		{`site!=a`, `site!="a"`, []string{"", "b"}, []string{"a"}},
		{`site=~plant-[0-9]+`, `site=~"plant-[0-9]+"`, []string{"plant-7"}, []string{"xplant-7", "plant-7x"}},
		{`site!~"a|b"`, `site!~"a|b"`, []string{"", "c", "ab"}, []string{"a", "b"}},
		{`site=`, `site=""`, []string{""}, []string{"a"}},
		{`site="a\"b"`, `site="a\"b"`, []string{`a"b`}, nil},
		{`site`, `invalid matcher: no operator: write name=value, name!=value, name=~regexp or name!~regexp`, nil, nil},
		{`site!a`, `invalid matcher: bad operator: write name=value, name!=value, name=~regexp or name!~regexp`, nil, nil},
		{`si te=a`, `invalid matcher: "si te" is not a label name: use letters, digits and _, not starting with a digit`, nil, nil},
		{`site=~(`, "invalid matcher: error parsing regexp: missing closing ): `^(?:()$`: use RE2 syntax", nil, nil},
		{`site="a`, `invalid matcher: bad quoted value "a: close the quotes and escape " and \ inside`, nil, nil},
	}
	for _, tc := range tests {
		m, err := ParseMatcher(tc.in)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = m.String()
		}
		if got != tc.want {
			t.Errorf("ParseMatcher(%q) = %s, want %s", tc.in, got, tc.want)
			continue
		}
		for _, v := range tc.yes {
			if !m.Matches(v) {
				t.Errorf("%s does not match %q", tc.in, v)
			}
		}
		for _, v := range tc.no {
			if m.Matches(v) {
				t.Errorf("%s matches %q", tc.in, v)
			}
		}
	}
}

func FuzzParseMatcher(f *testing.F) {
	for _, s := range []string{`site=a`, `site!="a b"`, `x=~a.*`, `x!~"(a|b)"`, `x`, `=`, `a="\x00"`} {
		f.Add(s, "value")
	}
	f.Fuzz(func(t *testing.T, s, v string) {
		m, err := ParseMatcher(s)
		if err != nil {
			return
		}
		// String round-trips, and the copy decides alike.
		back, err := ParseMatcher(m.String())
		if err != nil {
			t.Fatalf("ParseMatcher(%q).String() = %q does not parse: %v", s, m.String(), err)
		}
		if back.Name != m.Name || back.Type != m.Type || back.Value != m.Value || back.Matches(v) != m.Matches(v) {
			t.Fatalf("round trip of %q: %+v vs %+v", s, m, back)
		}
	})
}

func dur(d time.Duration) *time.Duration { return &d }

var defaults = Defaults{Receivers: []string{"default"}, GroupBy: []string{"device_id"}, Grace: 30 * time.Second}

func parse(t *testing.T, y string) Config {
	t.Helper()
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader([]byte(y)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTreeInheritsAndMatches(t *testing.T) {
	tree, err := New(parse(t, `
receivers: [ops]
group_by: [site]
group_wait: 30s
group_interval: 5m
repeat_interval: 4h
routes:
  - matchers: [criticality=high]
    receivers: [oncall]
    continue: true
    group_wait: 0s
  - matchers: ['site=~"plant-.*"']
    group_by: [site, gateway]
    routes:
      - matchers: [gateway=gw1]
        receivers: [gw1-team]
  - matchers: [site=lab]
    group_by: [...]
`), defaults, "r")
	if err != nil {
		t.Fatal(err)
	}
	ids := func(rs []*Route) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	for _, tc := range []struct {
		labels map[string]string
		want   []string
	}{
		{map[string]string{}, []string{"root"}},
		{map[string]string{"site": "lab"}, []string{"root.2"}},
		{map[string]string{"site": "plant-7"}, []string{"root.1"}},
		{map[string]string{"site": "plant-7", "gateway": "gw1"}, []string{"root.1.0"}},
		{map[string]string{"site": "plant-7", "gateway": "gw1", "criticality": "high"}, []string{"root.0", "root.1.0"}},
		{map[string]string{"site": "x", "criticality": "high"}, []string{"root.0"}},
	} {
		got := ids(tree.Match(func(n string) string { return tc.labels[n] }))
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Match(%v) = %v, want %v", tc.labels, got, tc.want)
		}
	}
	r := tree.All
	if len(r) != 5 || r[3].ID != "root.1.0" || r[3].Index != 3 {
		t.Fatalf("routes %v", ids(r))
	}
	checks := []struct {
		r         *Route
		receivers []string
		groupBy   []string
		all       bool
		wait      time.Duration
	}{
		{r[0], []string{"ops"}, []string{"site"}, false, 30 * time.Second},
		{r[1], []string{"oncall"}, []string{"site"}, false, 0},
		{r[2], []string{"ops"}, []string{"gateway", "site"}, false, 30 * time.Second},
		{r[3], []string{"gw1-team"}, []string{"gateway", "site"}, false, 30 * time.Second},
		{r[4], []string{"ops"}, nil, true, 30 * time.Second},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.r.Receivers, c.receivers) || !reflect.DeepEqual(c.r.GroupBy, c.groupBy) || c.r.GroupByAll != c.all ||
			c.r.GroupWait != c.wait || c.r.GroupInterval != 5*time.Minute || c.r.RepeatInterval != 4*time.Hour {
			t.Errorf("route %s = %+v", c.r.ID, c.r)
		}
	}
	gl := r[2].GroupLabels(func(n string) string { return map[string]string{"site": "plant-7"}[n] }, nil)
	if !reflect.DeepEqual(gl, map[string]string{"site": "plant-7"}) {
		t.Fatalf("group labels %v", gl)
	}
	if k := r[3].GroupKey(map[string]string{"site": "p\"7", "gateway": "gw1"}); k != `root.1.0{gateway="gw1",site="p\"7"}` {
		t.Fatalf("group key %s", k)
	}
}

func TestDefaultTree(t *testing.T) {
	tree, err := New(Config{}, defaults, "r")
	if err != nil {
		t.Fatal(err)
	}
	if got := tree.Match(func(string) string { return "" }); len(got) != 1 || got[0] != tree.Root ||
		!reflect.DeepEqual(tree.Root.Receivers, []string{"default"}) || !reflect.DeepEqual(tree.Root.GroupBy, []string{"device_id"}) {
		t.Fatalf("default tree %+v", tree.Root)
	}
}

func TestTreeErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		d    Defaults
		want string
	}{
		{Config{Matchers: []string{"a=b"}}, defaults, "r.matchers is set: the root route matches every alert, move the matchers to a child route"},
		{Config{Continue: true}, defaults, "r.continue is set: the root route has no siblings, remove it"},
		{Config{}, Defaults{Grace: time.Second}, "r.receivers is empty: name at least one receiver, e.g. [default]"},
		{Config{}, Defaults{Receivers: []string{"a"}}, "r defaults: grace 0s is not positive"},
		{Config{Grace: dur(0)}, defaults, "r.grace is 0s: use a positive duration, e.g. 30s"},
		{Config{KeepaliveGrace: &KeepaliveGrace{Factor: 0.5, Floor: time.Second}}, defaults, "r.keepalive_grace.factor is 0.5: use 1 to 10, e.g. 1.5"},
		{Config{KeepaliveGrace: &KeepaliveGrace{Factor: 1.5}}, defaults, "r.keepalive_grace.floor is 0s: use a positive duration, e.g. 10s"},
		{Config{Severity: "page"}, defaults, `r.severity is "page": use info, warning or critical`},
		{Config{Escalations: []Escalation{{After: 0}}}, defaults, "r.escalations[0].after is 0s: use a positive duration, e.g. 1h"},
		{Config{Escalations: []Escalation{{After: time.Hour}, {After: time.Hour}}}, defaults, "r.escalations[1].after 1h0m0s is not after the previous tier's 1h0m0s: list tiers in increasing order"},
		{Config{Escalations: []Escalation{{After: time.Hour, Severity: "x"}}}, defaults, `r.escalations[0].severity is "x": use info, warning or critical`},
		{Config{Escalations: []Escalation{{After: time.Hour, Receivers: []string{""}}}}, defaults, "r.escalations[0].receivers[0] is empty: name the receiver, e.g. oncall"},
		{Config{Escalations: []Escalation{{After: time.Second}}}, defaults, "r: escalation 0 after 1s is not longer than the grace 30s: raise after or lower grace"},
		{Config{Routes: []Config{{Matchers: []string{"a"}}}}, defaults, `r.routes[0].matchers[0] "a": invalid matcher: no operator: write name=value, name!=value, name=~regexp or name!~regexp`},
		{Config{Routes: []Config{{Receivers: []string{"a", "a"}}}}, defaults, `r.routes[0].receivers[1] "a" is listed twice: remove the duplicate`},
		{Config{Routes: []Config{{Receivers: []string{""}}}}, defaults, "r.routes[0].receivers[0] is empty: name the receiver, e.g. default"},
		{Config{GroupBy: []string{"site", "..."}}, defaults, `r.group_by: [1] "..." must be the only entry: use [...] alone to group by every label`},
		{Config{GroupBy: []string{"si-te"}}, defaults, `r.group_by: [0] "si-te" is not a label name: use letters, digits and _, not starting with a digit`},
		{Config{GroupBy: []string{"a", "a"}}, defaults, `r.group_by: [1] "a" is listed twice: remove the duplicate`},
		{Config{GroupWait: dur(-time.Second)}, defaults, "r.group_wait is -1s: use 0 or a positive duration, e.g. 30s"},
		{Config{GroupInterval: dur(time.Hour), RepeatInterval: dur(time.Minute)}, defaults, "r.repeat_interval 1m0s is shorter than group_interval 1h0m0s: use at least the group interval, e.g. 4h"},
	} {
		_, err := New(tc.cfg, tc.d, "r")
		if err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
	var c Config
	dec := yaml.NewDecoder(strings.NewReader("reciever: [a]\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err == nil || !strings.Contains(err.Error(), "field reciever not found") {
		t.Fatalf("strict decode: %v", err)
	}
}

func TestTimingSettings(t *testing.T) {
	tree, err := New(parse(t, `
receivers: [ops]
keepalive_grace: {factor: 1.5, floor: 10s}
escalations:
  - after: 2m
    severity: warning
  - after: 1h
    receivers: [oncall, ops]
routes:
  - matchers: [site=a]
    receivers: [site-a]
    grace: 1m
    severity: info
  - matchers: [site=b]
    escalations: []
`), defaults, "r")
	if err != nil {
		t.Fatal(err)
	}
	root, a, b := tree.All[0], tree.All[1], tree.All[2]
	if tree.UniformGrace || !tree.Escalates {
		t.Fatalf("uniform %v escalates %v", tree.UniformGrace, tree.Escalates)
	}
	for _, c := range []struct {
		r    *Route
		ka   int
		want time.Duration
	}{{root, 0, 30 * time.Second}, {root, 4, 10 * time.Second}, {root, 60, 90 * time.Second}, {a, 60, time.Minute}, {b, 0, 30 * time.Second}} {
		if got := c.r.GraceFor(c.ka); got != c.want {
			t.Errorf("%s GraceFor(%d) = %s, want %s", c.r.ID, c.ka, got, c.want)
		}
	}
	if root.Severity != "warning" || a.Severity != "info" || b.Severity != "warning" || a.Grace != time.Minute {
		t.Fatalf("severities %s %s %s", root.Severity, a.Severity, b.Severity)
	}
	want := []Tier{{After: 2 * time.Minute, Severity: "warning", Receivers: []string{"site-a"}},
		{After: time.Hour, Severity: "critical", Extra: []string{"oncall", "ops"}, Receivers: []string{"site-a", "oncall", "ops"}}}
	if !reflect.DeepEqual(a.Escalations, want) || len(b.Escalations) != 0 || len(root.Escalations) != 2 || !reflect.DeepEqual(root.Escalations[1].Receivers, []string{"ops", "oncall"}) {
		t.Fatalf("escalations root %+v a %+v b %+v", root.Escalations, a.Escalations, b.Escalations)
	}
	plain, err := New(Config{}, defaults, "r")
	if err != nil || !plain.UniformGrace || plain.Escalates {
		t.Fatalf("plain tree: %v %+v", err, plain)
	}
}

func TestFlapSettings(t *testing.T) {
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(`
flap: {}
routes:
  - matchers: [site=a]
    flap: {penalty: 500, half_life: 1m, suppress: 2000, reuse: 400, max_penalty: 4000}
  - matchers: [site=b]
    flap: {disabled: true}
  - matchers: [site=c]
`))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	tree, err := New(c, defaults, "r")
	if err != nil {
		t.Fatal(err)
	}
	def := Flap{Penalty: 1000, HalfLife: 5 * time.Minute, Suppress: 3000, Reuse: 750, MaxPenalty: 12000}
	for i, want := range []*Flap{&def, {Penalty: 500, HalfLife: time.Minute, Suppress: 2000, Reuse: 400, MaxPenalty: 4000}, nil, &def} {
		if got := tree.All[i].Flap; !reflect.DeepEqual(got, want) {
			t.Errorf("route %s flap %+v, want %+v", tree.All[i].ID, got, want)
		}
	}
	if tree.UniformFlap {
		t.Error("uniform with three different settings")
	}
	if plain, _ := New(Config{}, defaults, "r"); plain.Root.Flap != nil || !plain.UniformFlap {
		t.Errorf("default tree flap %+v uniform %v", plain.Root.Flap, plain.UniformFlap)
	}
	withDefault, err := New(Config{}, Defaults{Receivers: []string{"a"}, Grace: time.Second, Flap: &FlapConfig{Suppress: 5000}}, "r")
	if err != nil || withDefault.Root.Flap.Suppress != 5000 || withDefault.Root.Flap.Penalty != 1000 {
		t.Fatalf("defaults flap %+v, %v", withDefault.Root.Flap, err)
	}
	for _, tc := range []struct {
		f    FlapConfig
		want string
	}{
		{FlapConfig{Disabled: true, Penalty: 1}, "r.flap.disabled is set with other settings: remove them or disabled"},
		{FlapConfig{Penalty: -1}, "r.flap.penalty is -1: use 1 to 1073741824 (or leave it out for the default)"},
		{FlapConfig{HalfLife: time.Millisecond}, "r.flap.half_life is 1ms: use 1s to 24h, e.g. 5m"},
		{FlapConfig{Reuse: 3000}, "r.flap: reuse 3000 is not below suppress 3000: lower reuse or raise suppress"},
		{FlapConfig{Suppress: 20000}, "r.flap: suppress 20000 is above max_penalty 12000: a device could never be suppressed, raise max_penalty"},
		{FlapConfig{Penalty: 5000, MaxPenalty: 4000, Suppress: 3000}, "r.flap: penalty 5000 is above max_penalty 4000: lower penalty or raise max_penalty"},
	} {
		if _, err := New(Config{Flap: &tc.f}, defaults, "r"); err == nil || err.Error() != tc.want {
			t.Errorf("flap %+v: %v, want %q", tc.f, err, tc.want)
		}
	}
}

// groupKeyReference is GroupKey as it was first written: the keys sorted,
// each value strconv.Quote'd. Group keys are part of the alerts (and their
// fingerprints), so the faster GroupKey must produce the same bytes.
func groupKeyReference(r *Route, groupLabels map[string]string) string {
	var b strings.Builder
	b.WriteString(r.ID)
	b.WriteByte('{')
	ks := make([]string, 0, len(groupLabels))
	for k := range groupLabels {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	for i, k := range ks {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(groupLabels[k]))
	}
	b.WriteByte('}')
	return b.String()
}

func TestGroupKeyMatchesReference(t *testing.T) {
	r := &Route{ID: "root.1"}
	values := []string{"", "a", "dev-00001", `q"uote`, `back\slash`, "tab\t", "nul\x00", "\x01", "del\x7f", "ü", "日本",
		"\xff invalid", " space ", "~!@#$%^&*()_+{}|:<>?`-=[];',./"}
	for _, v := range values {
		for _, m := range []map[string]string{nil, {}, {"device_id": v}, {"site": v, "gateway": "gw" + v}, {"b": "1", "a": v, "c": v + v}} {
			if got, want := r.GroupKey(m), groupKeyReference(r, m); got != want {
				t.Errorf("GroupKey(%q) = %q, want %q", m, got, want)
			}
		}
	}
}

func FuzzGroupKey(f *testing.F) {
	f.Add("dev-1", "site")
	f.Add("\"\\\x00ü", "a")
	f.Fuzz(func(t *testing.T, v, name string) {
		r := &Route{ID: "root"}
		for _, m := range []map[string]string{{name: v}, {name: v, name + "x": v + "y"}} {
			if got, want := r.GroupKey(m), groupKeyReference(r, m); got != want {
				t.Fatalf("GroupKey(%q) = %q, want %q", m, got, want)
			}
		}
	})
}
