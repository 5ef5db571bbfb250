package tracker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"gopkg.in/yaml.v3"
)

// routedTracker builds a tracker with the labels and routes of two YAML
// documents.
func routedTracker(t testing.TB, labelsYAML, routesYAML string) *Tracker {
	t.Helper()
	tr, err := New(routedConfig(t, labelsYAML, routesYAML))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// routedConfig is the tracker config of routedTracker.
func routedConfig(t testing.TB, labelsYAML, routesYAML string) Config {
	t.Helper()
	var lc labels.Config
	var rc route.Config
	for _, d := range []struct {
		y   string
		dst any
	}{{labelsYAML, &lc}, {routesYAML, &rc}} {
		dec := yaml.NewDecoder(bytes.NewReader([]byte(d.y)))
		dec.KnownFields(true)
		if err := dec.Decode(d.dst); err != nil {
			t.Fatal(err)
		}
	}
	l, err := labels.NewLabeler(lc, labels.NewTable(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := route.New(rc, route.Defaults{Receivers: []string{"default"}, GroupBy: []string{labels.DeviceID}, Grace: grace}, "routes")
	if err != nil {
		t.Fatal(err)
	}
	return Config{Grace: grace, Severity: events.SeverityWarning, Routes: tree, Labeler: l}
}

// gsum summarises a group notification: receiver, status, group key, the
// counts, and the listed devices with their own status.
func gsum(d Decision) string {
	a := d.Alert
	var devs []string
	for _, dev := range a.Devices {
		devs = append(devs, dev.DeviceID+":"+string(dev.Status)[:1])
	}
	return fmt.Sprintf("%s %s %s new=%d res=%d firing=%d total=%d [%s]", a.Receiver, a.Status, a.GroupKey,
		d.New, d.Resolved, d.Firing, a.DevicesTotal, strings.Join(devs, " "))
}

// gstep is an input with the expected notification summaries.
type gstep struct {
	in   Input
	want []string
}

func runGroups(t *testing.T, tr *Tracker, steps []gstep) []Decision {
	t.Helper()
	var all []Decision
	for i, s := range steps {
		got := tr.Apply(s.in)
		var sums []string
		for _, d := range got {
			if err := d.Alert.Validate(); err != nil {
				t.Fatalf("step %d: invalid alert: %v", i, err)
			}
			sums = append(sums, gsum(d))
		}
		if !reflect.DeepEqual(sums, s.want) {
			t.Fatalf("step %d: notifications\n got %q\nwant %q", i, sums, s.want)
		}
		all = append(all, got...)
	}
	return all
}

func at(ms int64) Tick { return Tick{Now: time.UnixMilli(t0 + ms)} }

const siteLabels = `
client_id:
  - regex: '^(?P<site>[a-z]+)-'
`

func TestGroupLifecycle(t *testing.T) {
	tr := routedTracker(t, siteLabels, `
receivers: [ops, chat]
group_by: [site]
group_wait: 30s
group_interval: 5m
repeat_interval: 1h
`)
	const key = `root{site="a"}`
	all := runGroups(t, tr, []gstep{
		{Event{conn(t, "a-1", "n1", 0)}, nil},
		{Event{conn(t, "a-2", "n1", 0)}, nil},
		{Event{conn(t, "a-3", "n1", 0)}, nil},
		{Event{conn(t, "a-4", "n1", 0)}, nil},
		{Event{conn(t, "b-1", "n1", 0)}, nil},
		{Event{disc(t, "a-1", "n1", 0, 10_000, events.ReasonKeepaliveTimeout)}, nil},
		{Event{disc(t, "a-2", "n1", 0, 12_000, events.ReasonKeepaliveTimeout)}, nil},
		{Event{disc(t, "a-3", "n1", 0, 14_000, events.ReasonKeepaliveTimeout)}, nil},
		{Event{disc(t, "b-1", "n1", 0, 14_000, events.ReasonKeepaliveTimeout)}, nil},
		{at(40_000), nil}, // a-1 fired; its group waits 30s for more
		{at(44_000), nil}, // the others fired
		{at(69_999), nil},
		{at(70_000), []string{ // group_wait after a-1 fired at 40s
			"ops firing " + key + " new=3 res=0 firing=3 total=3 [a-1:f a-2:f a-3:f]",
			"chat firing " + key + " new=3 res=0 firing=3 total=3 [a-1:f a-2:f a-3:f]",
		}},
		{at(74_000), []string{
			`ops firing root{site="b"} new=1 res=0 firing=1 total=1 [b-1:f]`,
			`chat firing root{site="b"} new=1 res=0 firing=1 total=1 [b-1:f]`,
		}},
		{Event{conn(t, "a-1", "n1", 100_000)}, nil}, // recovered: reported after group_interval
		{Event{disc(t, "a-4", "n1", 0, 200_000, events.ReasonClosed)}, nil},
		{at(369_999), nil},
		{at(370_000), []string{
			"ops firing " + key + " new=1 res=1 firing=3 total=4 [a-4:f a-1:r a-2:f a-3:f]",
			"chat firing " + key + " new=1 res=1 firing=3 total=4 [a-4:f a-1:r a-2:f a-3:f]",
		}},
		{at(3_674_000), []string{ // b: repeat_interval after its first notification
			`ops firing root{site="b"} new=0 res=0 firing=1 total=1 [b-1:f]`,
			`chat firing root{site="b"} new=0 res=0 firing=1 total=1 [b-1:f]`,
		}},
		{at(3_969_999), nil},
		{at(3_970_000), []string{ // repeat_interval with nothing new
			"ops firing " + key + " new=0 res=0 firing=3 total=3 [a-2:f a-3:f a-4:f]",
			"chat firing " + key + " new=0 res=0 firing=3 total=3 [a-2:f a-3:f a-4:f]",
		}},
		{Event{conn(t, "a-2", "n1", 4_000_000)}, nil},
		{Event{conn(t, "a-3", "n1", 4_000_001)}, nil},
		{Event{conn(t, "a-4", "n1", 4_000_002)}, nil},
		{at(4_269_999), nil},
		{at(4_270_000), []string{ // group_interval after the repeat: the episode ends
			"ops resolved " + key + " new=0 res=3 firing=0 total=3 [a-2:r a-3:r a-4:r]",
			"chat resolved " + key + " new=0 res=3 firing=0 total=3 [a-2:r a-3:r a-4:r]",
		}},
		{at(10_000_000), []string{ // b-1 is still down: repeats
			`ops firing root{site="b"} new=0 res=0 firing=1 total=1 [b-1:f]`,
			`chat firing root{site="b"} new=0 res=0 firing=1 total=1 [b-1:f]`,
		}},
	})
	if tr.Groups() != 1 {
		t.Fatalf("%d groups open, want b's", tr.Groups())
	}
	// Every notification has its own id; the resolved one carries the episode.
	ids := map[string]bool{}
	for _, d := range all {
		if ids[d.Alert.ID] {
			t.Fatalf("duplicate id %s", d.Alert.ID)
		}
		ids[d.Alert.ID] = true
	}
	res := all[10].Alert
	if res.Status != events.StatusResolved || res.StartsAtMS != t0+10_000 || res.EndsAtMS != t0+4_000_002 ||
		res.GroupLabels["site"] != "a" || len(res.GroupLabels) != 1 || res.CreatedAtMS != t0+4_270_000 {
		t.Fatalf("resolved notification %+v", res)
	}
	if d := res.Devices[0]; d.UntilMS != t0+4_000_000 || d.SinceMS != t0+12_000 || d.Labels["site"] != "a" {
		t.Fatalf("resolved device %+v", d)
	}
}

func TestGroupRecoveredBeforeAnnouncedIsQuiet(t *testing.T) {
	tr := routedTracker(t, siteLabels, "group_by: [site]\ngroup_wait: 1m\n")
	runGroups(t, tr, []gstep{
		{Event{disc(t, "a-1", "n1", 0, 10_000, events.ReasonClosed)}, nil},
		{at(40_000), nil}, // fired, waiting
		{Event{conn(t, "a-1", "n1", 50_000)}, nil},
		{at(200_000), nil},
	})
	if tr.Groups() != 0 || tr.Stats().Fired != 1 || tr.Stats().Resolved != 1 || tr.Stats().Notifications != 0 {
		t.Fatalf("groups %d stats %+v", tr.Groups(), tr.Stats())
	}
}

func TestGroupRoutesWithContinueAndLabels(t *testing.T) {
	tr := routedTracker(t, `
client_id:
  - regex: '^(?P<site>[a-z]+)-(?P<criticality>hi|lo)-'
username: tenant
`, `
receivers: [ops]
group_by: [site]
routes:
  - matchers: [criticality=hi]
    receivers: [oncall]
    group_by: [...]
    continue: true
  - matchers: ['tenant=~"acme|globex"', 'node!=n9']
    receivers: [tenants]
    group_by: [tenant, node]
`)
	e := conn(t, "a-hi-1", "n1", 0)
	e.Username = "acme"
	runGroups(t, tr, []gstep{
		{Event{e}, nil},
		{Event{disc(t, "a-hi-1", "n1", 0, 10_000, events.ReasonClosed)}, nil},
		{Event{disc(t, "a-lo-1", "n1", 0, 10_000, events.ReasonClosed)}, nil}, // no username: root
		{at(40_000), []string{
			`oncall firing root.0{criticality="hi",device_id="a-hi-1",node="n1",reason="closed",site="a",tenant="acme"} new=1 res=0 firing=1 total=1 [a-hi-1:f]`,
			`tenants firing root.1{node="n1",tenant="acme"} new=1 res=0 firing=1 total=1 [a-hi-1:f]`,
			`ops firing root{site="a"} new=1 res=0 firing=1 total=1 [a-lo-1:f]`,
		}},
		{Event{conn(t, "a-hi-1", "n2", 50_000)}, []string{
			`oncall resolved root.0{criticality="hi",device_id="a-hi-1",node="n1",reason="closed",site="a",tenant="acme"} new=0 res=1 firing=0 total=1 [a-hi-1:r]`,
			`tenants resolved root.1{node="n1",tenant="acme"} new=0 res=1 firing=0 total=1 [a-hi-1:r]`,
		}},
	})
	if got := tr.Labels("a-hi-1"); !reflect.DeepEqual(got, map[string]string{"site": "a", "criticality": "hi", "device_id": "a-hi-1", "node": "n2"}) {
		t.Fatalf("labels after a connection without username %v", got)
	}
	if tr.Labels("nope") != nil {
		t.Fatal("labels of an unknown device")
	}
}

func TestGroupListIsCapped(t *testing.T) {
	tr := routedTracker(t, siteLabels, "group_by: [site]\n")
	for i := range 150 {
		tr.Apply(Event{disc(t, fmt.Sprintf("a-%03d", i), "n1", 0, 10_000+int64(i), events.ReasonClosed)})
	}
	got := tr.Apply(at(100_000))
	if len(got) != 1 || len(got[0].Alert.Devices) != events.MaxAlertDevices || got[0].Alert.DevicesTotal != 150 ||
		got[0].New != 150 || got[0].Alert.NewTotal != 150 || got[0].Alert.FiringTotal != 150 || got[0].Alert.Devices[99].DeviceID != "a-099" {
		t.Fatalf("capped notification: %d decisions, %d listed", len(got), len(got[0].Alert.Devices))
	}
}

// TestGroupsDeterministic replays a mixed history through a grouped config
// twice: the decisions are byte-identical.
func TestGroupsDeterministic(t *testing.T) {
	runOnce := func() []byte {
		tr := routedTracker(t, siteLabels, "receivers: [a, b]\ngroup_by: [site]\ngroup_wait: 10s\ngroup_interval: 20s\nrepeat_interval: 1m\n")
		var all []Decision
		for i := range 300 {
			dev := fmt.Sprintf("%c-%d", 'a'+i%3, i%11)
			node := fmt.Sprintf("n%d", i%2)
			at0 := int64(i) * 7_000
			all = append(all, tr.Apply(Event{conn(t, dev, node, at0)})...)
			all = append(all, tr.Apply(Event{disc(t, dev, node, at0, at0+500+int64(i%5)*20_000, events.ReasonClosed)})...)
			all = append(all, tr.Apply(Tick{Now: time.UnixMilli(t0 + at0 + 3_000)})...)
		}
		all = append(all, tr.Apply(Tick{Now: time.UnixMilli(t0 + 100_000_000)})...)
		b, err := json.Marshal(all)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := runOnce(), runOnce()
	if !bytes.Equal(a, b) {
		t.Fatal("two runs of the same inputs decided differently")
	}
	if len(a) < 10_000 {
		t.Fatalf("too few decisions to mean anything: %d bytes", len(a))
	}
}

func TestRecoveryOfGroupedOutage(t *testing.T) {
	cfg := "receivers: [ops]\ngroup_by: [site]\n"
	first := routedTracker(t, siteLabels, cfg)
	first.Apply(Event{disc(t, "a-1", "n1", 0, 10_000, events.ReasonClosed)})
	fired := first.Apply(at(40_000))
	if len(fired) != 1 {
		t.Fatalf("fired %v", fired)
	}
	sent := map[string]bool{fired[0].Alert.ID: true}

	second := routedTracker(t, siteLabels, cfg)
	second.Apply(Event{disc(t, "a-1", "n1", 0, 10_000, events.ReasonClosed)})
	if !second.MarkAlerted("a-1", func(id string) bool { return sent[id] }) {
		t.Fatal("the announced outage was not recognised")
	}
	if got := second.Apply(at(50_000)); len(got) != 0 {
		t.Fatalf("re-fired %v", got)
	}
	again := second.Alerting(time.UnixMilli(t0 + 50_000))
	if len(again) != 1 || again[0].Alert.ID != fired[0].Alert.ID {
		t.Fatalf("Alerting = %v, want the id of %v", again, fired)
	}
	res := second.Apply(Event{conn(t, "a-1", "n1", 60_000)})
	if len(res) != 1 || res[0].Alert.Status != events.StatusResolved || res[0].Alert.StartsAtMS != t0+10_000 {
		t.Fatalf("resolved %v", res)
	}
}

func TestGraceFromRoutesAndKeepalive(t *testing.T) {
	tr := routedTracker(t, siteLabels, `
receivers: [ops]
keepalive_grace: {factor: 1.5, floor: 5s}
routes:
  - matchers: [site=fast]
    grace: 10s
`)
	withKA := func(e *events.PresenceEvent, ka int) *events.PresenceEvent { e.KeepaliveS = ka; return e }
	steps := []gstep{
		{Event{withKA(conn(t, "ka-1", "n1", 0), 60)}, nil}, // grace 90s
		{Event{withKA(conn(t, "ka-2", "n1", 0), 2)}, nil},  // grace 5s (the floor)
		{Event{conn(t, "ka-3", "n1", 0)}, nil},             // keepalive unknown: 30s
		{Event{withKA(conn(t, "fast-1", "n1", 0), 60)}, nil},
	}
	for _, id := range []string{"ka-1", "ka-2", "ka-3", "fast-1"} {
		steps = append(steps, gstep{Event{disc(t, id, "n1", 0, 1_000, events.ReasonKeepaliveTimeout)}, nil})
	}
	steps = append(steps,
		gstep{at(5_999), nil},
		gstep{at(6_000), []string{`ops firing root{device_id="ka-2"} new=1 res=0 firing=1 total=1 [ka-2:f]`}},
		gstep{at(11_000), []string{`ops firing root.0{device_id="fast-1"} new=1 res=0 firing=1 total=1 [fast-1:f]`}},
		gstep{at(31_000), []string{`ops firing root{device_id="ka-3"} new=1 res=0 firing=1 total=1 [ka-3:f]`}},
		gstep{at(90_999), nil},
		gstep{at(91_000), []string{`ops firing root{device_id="ka-1"} new=1 res=0 firing=1 total=1 [ka-1:f]`}},
	)
	runGroups(t, tr, steps)
	// A reconnect within the device's own grace is a blip.
	runGroups(t, tr, []gstep{
		{Event{withKA(conn(t, "blip", "n1", 0), 60)}, nil},
		{Event{disc(t, "blip", "n1", 0, 100_000, events.ReasonClosed)}, nil},
		{Event{conn(t, "blip", "n1", 180_000)}, nil},
	})
	if s := tr.Stats(); s.Blips != 1 || s.Fired != 4 {
		t.Fatalf("stats %+v", s)
	}
}

func TestEscalationTiers(t *testing.T) {
	tr := routedTracker(t, siteLabels, `
receivers: [ops]
escalations:
  - after: 2m
    severity: warning
  - after: 1h
    receivers: [oncall]
`)
	all := runGroups(t, tr, []gstep{
		{Event{disc(t, "a-1", "n1", 0, 10_000, events.ReasonKeepaliveTimeout)}, nil},
		{at(40_000), []string{`ops firing root{device_id="a-1"} new=1 res=0 firing=1 total=1 [a-1:f]`}},
		{at(129_999), nil},
		{at(130_000), []string{`ops firing root{device_id="a-1"}@1:2m0s new=1 res=0 firing=1 total=1 [a-1:f]`}},
		{at(3_609_999), nil},
		{at(3_610_000), []string{
			`ops firing root{device_id="a-1"}@2:1h0m0s new=1 res=0 firing=1 total=1 [a-1:f]`,
			`oncall firing root{device_id="a-1"}@2:1h0m0s new=1 res=0 firing=1 total=1 [a-1:f]`,
		}},
		{Event{conn(t, "a-1", "n1", 7_210_000)}, []string{
			`ops resolved root{device_id="a-1"} new=0 res=1 firing=0 total=1 [a-1:r]`,
			`ops resolved root{device_id="a-1"}@1:2m0s new=0 res=1 firing=0 total=1 [a-1:r]`,
			`ops resolved root{device_id="a-1"}@2:1h0m0s new=0 res=1 firing=0 total=1 [a-1:r]`,
			`oncall resolved root{device_id="a-1"}@2:1h0m0s new=0 res=1 firing=0 total=1 [a-1:r]`,
		}},
		{at(10_000_000), nil},
	})
	for i, want := range []events.Severity{"warning", "warning", "critical", "critical", "warning", "warning", "critical", "critical"} {
		if all[i].Alert.Severity != want {
			t.Fatalf("notification %d severity %s, want %s", i, all[i].Alert.Severity, want)
		}
		if tier := []int{0, 1, 2, 2, 0, 1, 2, 2}[i]; all[i].Alert.Tier != tier {
			t.Fatalf("notification %d tier %d, want %d", i, all[i].Alert.Tier, tier)
		}
	}
	// The resolved notifications carry the outage: 2 hours.
	if r := all[4].Alert; r.EndsAtMS-r.StartsAtMS != 7_200_000 || r.Devices[0].UntilMS-r.Devices[0].SinceMS != 7_200_000 {
		t.Fatalf("resolved %+v", r)
	}
	if s := tr.Stats(); s.Escalated != 2 || tr.Groups() != 0 {
		t.Fatalf("stats %+v groups %d", s, tr.Groups())
	}

	// A device whose outage is first noticed after an hour joins every
	// reached tier at once.
	late := routedTracker(t, siteLabels, "receivers: [ops]\nescalations:\n  - after: 2m\n  - after: 1h\n")
	late.Apply(Event{disc(t, "b-1", "n1", 0, 10_000, events.ReasonClosed)})
	if got := late.Apply(at(4_000_000)); len(got) != 3 {
		t.Fatalf("late: %d notifications, want base + 2 tiers", len(got))
	}
}
