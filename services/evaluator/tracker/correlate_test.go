package tracker

import (
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// correlatedTracker groups devices by site (client id prefix), with a
// mass-outage threshold of k devices within a minute.
func correlatedTracker(t testing.TB, routesYAML string, c Correlation) *Tracker {
	t.Helper()
	cfg := routedConfig(t, siteLabels, routesYAML)
	cfg.Correlation = c
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

const outageRoutes = `
receivers: [ops]
routes:
  - matchers: [alertname=group_outage]
    group_wait: 30s
    group_interval: 5m
`

func TestMassOutage(t *testing.T) {
	tr := correlatedTracker(t, outageRoutes, Correlation{Keys: []string{"site"}, Window: time.Minute, MinDevices: 3})
	const outKey = `group_outage:root.0{site="a"}`
	inh := func(dev string) string { return `root{device_id="` + dev + `"}~group_outage{site="a"}` }
	var steps []gstep
	for _, dev := range []string{"a-1", "a-2", "a-3", "a-4", "a-5", "b-1"} {
		steps = append(steps, gstep{Event{conn(t, dev, "n1", 0)}, nil})
	}
	steps = append(steps,
		gstep{Event{disc(t, "a-1", "n1", 0, 10_000, events.ReasonKeepaliveTimeout)}, nil},
		gstep{Event{disc(t, "a-2", "n1", 0, 12_000, events.ReasonKeepaliveTimeout)}, nil},
		gstep{Event{disc(t, "b-1", "n1", 0, 13_000, events.ReasonKeepaliveTimeout)}, nil},
		gstep{Event{disc(t, "a-3", "n1", 0, 14_000, events.ReasonKeepaliveTimeout)}, nil}, // the third of site a: a mass outage
		gstep{at(44_000), []string{
			"ops firing " + inh("a-1") + " new=1 res=0 firing=1 total=1 [a-1:f]",
			"ops firing " + inh("a-2") + " new=1 res=0 firing=1 total=1 [a-2:f]",
			"ops firing " + inh("a-3") + " new=1 res=0 firing=1 total=1 [a-3:f]",
			`ops firing root{device_id="b-1"} new=1 res=0 firing=1 total=1 [b-1:f]`,
		}},
		gstep{at(74_000), []string{"ops firing " + outKey + " new=3 res=0 firing=3 total=3 [a-1:f a-2:f a-3:f]"}},
		gstep{Event{disc(t, "a-4", "n1", 0, 80_000, events.ReasonKeepaliveTimeout)}, nil},
		gstep{at(110_000), []string{"ops firing " + inh("a-4") + " new=1 res=0 firing=1 total=1 [a-4:f]"}},
		gstep{Event{conn(t, "a-1", "n1", 200_000)}, []string{"ops resolved " + inh("a-1") + " new=0 res=1 firing=0 total=1 [a-1:r]"}},
		// Two of five still down: no longer a mass outage. a-2 and a-3 get
		// their own alerts if they stay down for their grace.
		gstep{Event{conn(t, "a-4", "n1", 210_000)}, []string{
			"ops resolved " + inh("a-2") + " new=0 res=0 firing=0 total=0 []",
			"ops resolved " + inh("a-3") + " new=0 res=0 firing=0 total=0 []",
			"ops resolved " + inh("a-4") + " new=0 res=1 firing=0 total=1 [a-4:r]",
		}},
		gstep{at(239_999), nil},
		gstep{Event{conn(t, "a-3", "n1", 235_000)}, nil},
		gstep{at(240_000), []string{`ops firing root{device_id="a-2"} new=1 res=0 firing=1 total=1 [a-2:f]`}},
		gstep{at(373_999), nil},
		// a-4 joined after the last notification and left before the next:
		// never announced, never mentioned.
		gstep{at(374_000), []string{"ops resolved " + outKey + " new=0 res=1 firing=0 total=1 [a-1:r]"}},
	)
	all := runGroups(t, tr, steps)
	var outage []events.AlertEvent
	for _, d := range all {
		a := d.Alert
		switch {
		case a.Kind == events.AlertGroupOutage:
			outage = append(outage, a)
		case strings.Contains(a.GroupKey, "~"):
			if !a.Inhibited || a.InhibitedBy != events.ContentID(string(events.AlertGroupOutage), outKey) {
				t.Fatalf("inhibited copy %+v", a)
			}
		case a.Inhibited:
			t.Fatalf("own alert inhibited %+v", a)
		}
	}
	if len(outage) != 2 || outage[0].KnownTotal != 5 || outage[0].Severity != events.SeverityCritical ||
		outage[0].GroupLabels["site"] != "a" || outage[0].StartsAtMS != t0+10_000 || outage[1].EndsAtMS != t0+210_000 {
		t.Fatalf("group_outage alerts %+v", outage)
	}
	if s := tr.Stats(); s.Correlated != 1 || s.Folded != 4 || s.Fired != 6 {
		t.Fatalf("stats %+v", s)
	}
	if s, _ := tr.Device("a-2"); s.Inhibited || !s.Alerting {
		t.Fatalf("a-2 %+v", s)
	}
}

func TestMassOutageRatioAndBlips(t *testing.T) {
	tr := correlatedTracker(t, "receivers: [ops]\n", Correlation{Keys: []string{"site"}, Window: time.Minute, MinRatio: 0.5})
	for i := range 4 {
		tr.Apply(Event{conn(t, "a-"+string(rune('1'+i)), "n1", 0)})
	}
	// Two of four within the window: 50 %. They come back within the
	// grace: nothing is sent, and the mass outage ends with them.
	tr.Apply(Event{disc(t, "a-1", "n1", 0, 10_000, events.ReasonClosed)})
	tr.Apply(Event{disc(t, "a-2", "n1", 0, 11_000, events.ReasonClosed)})
	if g := tr.topo.groups[0]; !g.active || g.recent != 2 || g.down != 2 || g.known != 4 {
		t.Fatalf("site a %+v", g)
	}
	tr.Apply(Event{conn(t, "a-1", "n1", 20_000)})
	tr.Apply(Event{conn(t, "a-2", "n1", 21_000)})
	if got := tr.Apply(at(100_000)); len(got) != 0 {
		t.Fatalf("decided %v", got)
	}
	if g := tr.topo.groups[0]; g.active || g.recent != 0 || g.down != 0 {
		t.Fatalf("site a %+v", g)
	}
	// Two outages further apart than the window are not a mass outage.
	tr.Apply(Event{disc(t, "a-1", "n1", 20_000, 200_000, events.ReasonClosed)})
	tr.Apply(Event{disc(t, "a-2", "n1", 21_000, 300_000, events.ReasonClosed)})
	if g := tr.topo.groups[0]; g.active || g.recent != 1 || g.down != 2 {
		t.Fatalf("site a %+v", g)
	}
	if s := tr.Stats(); s.Correlated != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestCorrelationValidate(t *testing.T) {
	tests := []struct {
		c    Correlation
		want string
	}{
		{Correlation{}, ""},
		{Correlation{Keys: []string{"site", "node"}, Window: time.Minute, MinDevices: 5}, ""},
		{Correlation{Window: time.Minute}, "c.keys is empty but other settings are set: name the topology labels, e.g. [site, gateway]"},
		{Correlation{Keys: []string{"si te"}, Window: time.Minute, MinDevices: 5}, `c.keys[0] "si te" is not a label name: use letters, digits and _, not starting with a digit`},
		{Correlation{Keys: []string{"device_id"}, Window: time.Minute, MinDevices: 5}, `c.keys[0] "device_id" is not a topology label: use a label shared by devices, e.g. site, gateway or node`},
		{Correlation{Keys: []string{"site", "site"}, Window: time.Minute, MinDevices: 5}, `c.keys[1] "site" is listed twice: remove the duplicate`},
		{Correlation{Keys: []string{"site"}, MinDevices: 5}, "c.window is 0s: use a positive duration, e.g. 2m"},
		{Correlation{Keys: []string{"site"}, Window: time.Minute, MinDevices: 1}, "c.min_devices is 1: use at least 2 (one device is not a mass outage), or 0 to use min_ratio alone"},
		{Correlation{Keys: []string{"site"}, Window: time.Minute, MinRatio: 30}, "c.min_ratio is 30: use a fraction from 0 to 1, e.g. 0.3 for 30 %"},
		{Correlation{Keys: []string{"site"}, Window: time.Minute}, "c: set min_devices, min_ratio or both, e.g. min_devices: 20"},
		{Correlation{Keys: []string{"site"}, Window: time.Minute, MinDevices: 2, Severity: "high"}, `c.severity is "high": use info, warning or critical`},
	}
	for _, tc := range tests {
		err := tc.c.Validate("c")
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.c, got, tc.want)
		}
	}
}
