package template

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/digest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current templates")

// kindCase is one alert (or digest, or test message) rendered in both
// languages for the golden file.
type kindCase struct {
	name   string
	alert  events.AlertEvent
	note   Note
	digest *digest.Digest
	test   bool
}

func dev(id string, st events.AlertStatus, sinceMS, untilMS int64) events.AlertDevice {
	return events.AlertDevice{DeviceID: id, Status: st, Node: "emqx@n1", Reason: events.ReasonKeepaliveTimeout, SinceMS: sinceMS, UntilMS: untilMS}
}

func kindCases() []kindCase {
	base := func(kind events.AlertKind, st events.AlertStatus, sev events.Severity, labels map[string]string, devs ...events.AlertDevice) events.AlertEvent {
		a := events.AlertEvent{V: 1, ID: "0123456789abcdef0123456789abcdef", Fingerprint: "fp/1 (a)", Receiver: "ops", Status: st, Kind: kind,
			Severity: sev, GroupLabels: labels, Devices: devs, DevicesTotal: len(devs), StartsAtMS: t0, CreatedAtMS: t0 + 30_000}
		if st == events.StatusResolved {
			a.EndsAtMS = t0 + 3723_000
		}
		return a
	}
	site := map[string]string{"site": "sh-01"}
	var cs []kindCase
	add := func(name string, a events.AlertEvent) { cs = append(cs, kindCase{name: name, alert: a}) }

	add("device_offline firing one device", base(events.AlertDeviceOffline, events.StatusFiring, events.SeverityWarning, site,
		dev("dev-42", events.StatusFiring, t0, 0)))
	g := base(events.AlertDeviceOffline, events.StatusFiring, events.SeverityCritical, site,
		dev("dev-1", events.StatusFiring, t0+60_000, 0), dev("dev-2", events.StatusFiring, t0+61_000, 0),
		dev("dev-3", events.StatusResolved, t0, t0+312_000), dev("dev-4", events.StatusFiring, t0, 0))
	g.DevicesTotal, g.NewTotal, g.ResolvedTotal, g.FiringTotal = 155, 12, 3, 140
	add("device_offline firing group update", g)
	first := base(events.AlertDeviceOffline, events.StatusFiring, events.SeverityWarning, site,
		dev("dev-1", events.StatusFiring, t0, 0), dev("dev-2", events.StatusFiring, t0, 0))
	first.DevicesTotal, first.NewTotal = 30, 30
	add("device_offline firing group first", first)
	add("device_offline resolved one device", base(events.AlertDeviceOffline, events.StatusResolved, events.SeverityWarning, site,
		dev("dev-42", events.StatusResolved, t0, t0+312_000)))
	res := base(events.AlertDeviceOffline, events.StatusResolved, events.SeverityCritical, site,
		dev("dev-1", events.StatusResolved, t0, t0+312_000), dev("dev-2", events.StatusResolved, t0+60_000, 0))
	res.DevicesTotal = 7
	add("device_offline resolved group", res)

	flap := base(events.AlertDeviceFlapping, events.StatusFiring, events.SeverityWarning, map[string]string{"device_id": "dev-42"},
		dev("dev-42", events.StatusFiring, t0, 0))
	flap.FlapCount = 7
	add("device_flapping firing", flap)
	flapRes := flap
	flapRes.Status, flapRes.EndsAtMS, flapRes.FlapCount = events.StatusResolved, t0+3723_000, 0
	flapRes.Devices = []events.AlertDevice{dev("dev-42", events.StatusResolved, t0, t0+3723_000)}
	add("device_flapping resolved", flapRes)

	outage := base(events.AlertGroupOutage, events.StatusFiring, events.SeverityCritical, site,
		dev("dev-1", events.StatusFiring, t0, 0), dev("传感器 7.b", events.StatusFiring, t0+1_000, 0))
	outage.DevicesTotal, outage.KnownTotal = 120, 150
	add("group_outage firing", outage)
	outageRes := outage
	outageRes.Status, outageRes.EndsAtMS = events.StatusResolved, t0+3723_000
	outageRes.Devices = []events.AlertDevice{dev("dev-1", events.StatusResolved, t0, t0+3723_000)}
	add("group_outage resolved", outageRes)

	node := base(events.AlertNodeSilent, events.StatusFiring, events.SeverityCritical, map[string]string{"node": "emqx@n1"},
		dev("dev-1", events.StatusFiring, t0, 0), dev("dev-2", events.StatusFiring, t0, 0))
	node.DevicesTotal, node.KnownTotal = 40, 2000
	add("node_silent firing", node)
	nodeRes := node
	nodeRes.Status, nodeRes.EndsAtMS, nodeRes.Devices = events.StatusResolved, t0+125_000, nil
	add("node_silent resolved", nodeRes)

	tier := base(events.AlertDeviceOffline, events.StatusFiring, events.SeverityCritical, site, dev("dev-42", events.StatusFiring, t0, 0))
	tier.Tier = 2
	add("device_offline evaluator tier 2", tier)
	cs = append(cs, kindCase{name: "device_offline escalated by the chain", alert: base(events.AlertDeviceOffline, events.StatusFiring,
		events.SeverityWarning, site, dev("dev-42", events.StatusFiring, t0, 0)), note: Note{EscalatedFrom: "ops-dt", EscalatedAfter: 30 * time.Minute}})

	folded := []events.AlertEvent{g, outage, flap, res}
	for i := range folded {
		folded[i].ID = fmt.Sprintf("id-%d", i)
	}
	d := digest.Fold("ops", folded, digest.Options{GroupBy: []string{"site"}, Samples: 4})
	cs = append(cs, kindCase{name: "digest of mixed kinds", digest: &d}, kindCase{name: "test message", test: true})
	return cs
}

func renderCase(t *testing.T, tp *Template, c kindCase) Message {
	t.Helper()
	var (
		m   Message
		err error
	)
	switch {
	case c.digest != nil:
		m, err = tp.RenderDigest(*c.digest, nil)
	case c.test:
		m, err = tp.RenderTest("ops-dt", time.UnixMilli(t0), nil)
	default:
		m, err = tp.RenderNote(c.alert, c.note, nil)
	}
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	return m
}

// TestRenderEveryKindGolden renders every alert kind, firing and
// resolved, escalations, a digest and the test message in Chinese and
// English, with links, and compares them with testdata/kinds.golden
// (go test -run TestRenderEveryKindGolden -update rewrites it).
func TestRenderEveryKindGolden(t *testing.T) {
	var b strings.Builder
	for _, lang := range []Language{Chinese, English} {
		tp, err := New(Options{Language: lang, Keyword: "告警", Location: cst, LinkBaseURL: "https://fleet.example.com/"})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range kindCases() {
			m := renderCase(t, tp, c)
			fmt.Fprintf(&b, "=== %s: %s\ntitle: %s\n", lang, c.name, m.Title)
			for _, l := range m.Links {
				fmt.Fprintf(&b, "link: %s <%s>\n", l.Title, l.URL)
			}
			fmt.Fprintf(&b, "firing: %t · severity: %s · shown %d · omitted %d\n---\n%s\n\n", m.Firing, m.Severity, m.Shown, m.Omitted, m.Body)
		}
	}
	const golden = "testdata/kinds.golden"
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got := b.String(); got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("%s line %d:\n got %q\nwant %q", golden, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("%s: %d lines, want %d", golden, len(gl), len(wl))
	}
}

// TestEveryKindFitsEveryBudget renders each kind with the full 100 long
// device ids against small and large budgets: the message always fits,
// keeps the keyword, and says how many devices it does not list.
func TestEveryKindFitsEveryBudget(t *testing.T) {
	for _, lang := range []Language{Chinese, English} {
		tp, err := New(Options{Language: lang, Keyword: "告警", Location: cst, LinkBaseURL: "https://fleet.example.com"})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range kindCases() {
			if c.digest != nil || c.test {
				continue
			}
			a := c.alert
			a.Devices = nil
			for i := range events.MaxAlertDevices {
				a.Devices = append(a.Devices, dev(fmt.Sprintf("设备-%03d-%s", i, strings.Repeat("温湿度传感器😀", 20)), a.Status, t0, 0))
			}
			a.DevicesTotal = 5000
			for _, limit := range []int{2048, 4096, 20000} {
				// The links count against the budget like a channel's buttons.
				fits := func(m Message) bool {
					n := len(m.Title) + len(m.Body)
					for _, l := range m.Links {
						n += len(l.Title) + len(l.URL)
					}
					return n <= limit
				}
				m, err := tp.RenderNote(a, c.note, fits)
				if err != nil {
					t.Fatal(err)
				}
				more := fmt.Sprintf("- 另有 %d 台", m.Omitted)
				if lang == English {
					more = fmt.Sprintf("- +%d more", m.Omitted)
				}
				switch {
				case !fits(m):
					t.Fatalf("%s %s limit %d: does not fit", lang, c.name, limit)
				case !strings.Contains(m.Title, "告警"):
					t.Fatalf("%s %s limit %d: no keyword in %q", lang, c.name, limit, m.Title)
				case m.Truncated || m.Shown == 0 || m.Shown+m.Omitted != 5000 || !strings.Contains(m.Body, more):
					t.Fatalf("%s %s limit %d: shown %d omitted %d truncated %t", lang, c.name, limit, m.Shown, m.Omitted, m.Truncated)
				case !utf8.ValidString(m.Body):
					t.Fatalf("%s %s: invalid UTF-8", lang, c.name)
				}
			}
		}
	}
}

func TestShareAndChanges(t *testing.T) {
	for _, tt := range []struct {
		part, whole int
		want        string
	}{{120, 150, "80%"}, {1, 3, "33%"}, {2, 3, "66%"}, {1, 1000, "0.1%"}, {1, 100000, "0.1%"}, {0, 10, "0%"}, {10, 10, "100%"},
		{9999, 10000, "99%"}, {15, 200, "7.5%"}, {12, 10, "100%"}} {
		if got := share(tt.part, tt.whole); got != tt.want {
			t.Errorf("share(%d, %d) = %q, want %q", tt.part, tt.whole, got, tt.want)
		}
	}
	if got := changes(English, 12, 3, 140); got != "12 new offline, 3 recovered, 140 still down" {
		t.Errorf("en changes %q", got)
	}
	if got := changes(Chinese, 12, 0, 140); got != "新离线 12 台，仍离线 140 台" {
		t.Errorf("zh changes %q", got)
	}
	if got := changes(English, 0, 0, 0); got != "" {
		t.Errorf("no changes %q", got)
	}
}
