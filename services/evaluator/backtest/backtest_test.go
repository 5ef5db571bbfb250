package backtest_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator"
	"github.com/fleetwatch/fleetwatch/services/evaluator/backtest"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silencestore"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
)

const t0 = int64(1_700_000_000_000)

func line(t *testing.T, e events.PresenceEvent) string {
	t.Helper()
	e.Source = "test"
	e.ReceivedAtMS = e.BrokerTSMS + 2
	ev, err := events.NewPresenceEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

func conn(t *testing.T, dev string, at int64) string {
	return line(t, events.PresenceEvent{DeviceID: dev, Kind: events.KindConnected, Node: "n1", BrokerTSMS: at, ConnectedAtMS: at})
}

func disc(t *testing.T, dev string, connAt, at int64) string {
	return line(t, events.PresenceEvent{DeviceID: dev, Kind: events.KindDisconnected, Node: "n1", Reason: events.ReasonKeepaliveTimeout,
		RawReason: "keepalive_timeout", BrokerTSMS: at, ConnectedAtMS: connAt})
}

// scenario: d1 is down 90 s, d2 blips 10 s, lab-1 goes down for good, d3's
// connect is duplicated, and one line is not JSON.
func scenario(t *testing.T) string {
	return conn(t, "d1", t0) + conn(t, "d2", t0) + conn(t, "lab-1", t0) + conn(t, "d3", t0) + conn(t, "d3", t0) +
		disc(t, "lab-1", t0, t0+5_000) +
		disc(t, "d1", t0, t0+10_000) +
		"not json\n" +
		disc(t, "d2", t0, t0+20_000) +
		conn(t, "d2", t0+30_000) +
		conn(t, "d1", t0+100_000)
}

func config(grace time.Duration) evaluator.Config {
	cfg := evaluator.DefaultConfig()
	cfg.Grace = grace
	cfg.Receivers = []string{"ops"}
	cfg.Labels = labels.Config{ClientID: []labels.ClientIDRule{{Prefix: "lab-", Labels: map[string]string{"env": "test"}}}}
	cfg.Route = &route.Config{Routes: []route.Config{{Matchers: []string{"env=test"}, Receivers: []string{"lab"}}}}
	return cfg
}

func sim(t *testing.T, name string, cfg evaluator.Config) *backtest.Sim {
	t.Helper()
	tr, err := cfg.NewTracker()
	if err != nil {
		t.Fatal(err)
	}
	return backtest.NewSim(name, tr, cfg.TickInterval())
}

func fromJSONL(data string) func(apply func([]events.PresenceEvent)) (backtest.Input, error) {
	return func(apply func([]events.PresenceEvent)) (backtest.Input, error) {
		return backtest.ReadJSONL(strings.NewReader(data), apply)
	}
}

func TestScenarioExactCounts(t *testing.T) {
	res, err := backtest.Run(sim(t, "candidate", config(30*time.Second)), sim(t, "baseline", config(2*time.Minute)),
		backtest.Options{EndMS: t0 + 200_000}, fromJSONL(scenario(t)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Input.Lines != 11 || res.Input.Skipped != 1 || !strings.HasPrefix(res.Input.FirstError, "line 8: invalid presence event JSON") {
		t.Fatalf("input %+v", res.Input)
	}
	c, b := res.Candidate, res.Baseline
	if c.Events != 10 || c.Devices != 4 || c.Duplicates != 1 || c.Outages != 3 || c.Blips != 1 || c.Fired != 2 || c.Resolved != 1 {
		t.Fatalf("candidate %+v", c)
	}
	want := map[string]backtest.ReceiverCount{"ops": {Firing: 1, Resolved: 1}, "lab": {Firing: 1}}
	if got := counts(c); !reflect.DeepEqual(got, want) {
		t.Fatalf("candidate receivers %v, want %v", got, want)
	}
	if want := []backtest.DeviceCount{{DeviceID: "d1", Alerts: 1}, {DeviceID: "lab-1", Alerts: 1}}; !reflect.DeepEqual(c.Noisy, want) {
		t.Fatalf("noisy %v", c.Noisy)
	}
	// The baseline's 2 min grace: d1 came back in time; lab-1 fires at
	// t0+125s, within the simulated end.
	if want := map[string]backtest.ReceiverCount{"lab": {Firing: 1}}; !reflect.DeepEqual(counts(b), want) {
		t.Fatalf("baseline receivers %v", counts(b))
	}
	if b.Blips != 2 || b.Fired != 1 {
		t.Fatalf("baseline %+v", b)
	}
	if *res.Diff != (backtest.Diff{OnlyCandidate: 1}) {
		t.Fatalf("diff %+v", *res.Diff)
	}
	var out bytes.Buffer
	res.Print(&out)
	for _, want := range []string{
		"replayed 10 events (broker time 2023-11-14T22:13:20Z .. 2023-11-14T22:15:00Z)",
		"11 lines, 1 skipped",
		"  lab                               1          1         +0   1/0/0\n",
		"  ops                               2          0         +2   1/1/0\n",
		"  total                             3          1         +2\n",
		"  devices alerted only by the candidate: 1, only by the baseline: 0\n",
		"  d1                                            1  (baseline 0)\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func counts(r *backtest.Report) map[string]backtest.ReceiverCount {
	out := map[string]backtest.ReceiverCount{}
	for k, v := range r.Receivers {
		out[k] = *v
	}
	return out
}

// TestSimulatedClockWithoutEnd: without an end, the clock stops at the last
// event: lab-1 (down since t0+5s) fired at t0+35s; d1 fired and resolved.
func TestSimulatedClockStopsAtTheLastEvent(t *testing.T) {
	res, err := backtest.Run(sim(t, "c", config(30*time.Second)), nil, backtest.Options{}, fromJSONL(scenario(t)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Baseline != nil || res.Diff != nil || res.Candidate.Fired != 2 {
		t.Fatalf("%+v", res)
	}
	res, err = backtest.Run(sim(t, "c", config(2*time.Minute)), nil, backtest.Options{}, fromJSONL(scenario(t)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Candidate.Fired != 0 || res.Candidate.Notifications != 0 {
		t.Fatalf("2 min grace, clock at t0+100s: %+v", res.Candidate)
	}
}

// TestGeneratedHistoryDecodesLikeEncodingJSON replays a generated history
// through the fast path and through encoding/json: the reports must be
// identical.
func TestGeneratedHistoryDecodesLikeEncodingJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := backtest.Generate(&buf, backtest.GenOptions{Devices: 500, Events: 40_000, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	data := buf.String()
	fast, err := backtest.Run(sim(t, "c", config(30*time.Second)), nil, backtest.Options{Top: 5}, fromJSONL(data))
	if err != nil {
		t.Fatal(err)
	}
	slow, err := backtest.Run(sim(t, "c", config(30*time.Second)), nil, backtest.Options{Top: 5},
		func(apply func([]events.PresenceEvent)) (backtest.Input, error) {
			var in backtest.Input
			sc := bufio.NewScanner(strings.NewReader(data))
			var batch []events.PresenceEvent
			for sc.Scan() {
				in.Lines++
				var e events.PresenceEvent
				if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
					return in, err
				}
				if err := e.Validate(); err != nil {
					return in, fmt.Errorf("line %d: %w", in.Lines, err)
				}
				batch = append(batch, e)
			}
			apply(batch)
			return in, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if fast.Input.Lines != 40_000 || fast.Input.Skipped != 0 || fast.Candidate.Events != 40_000 {
		t.Fatalf("input %+v, events %d", fast.Input, fast.Candidate.Events)
	}
	fast.Seconds, fast.EventsPerSecond, slow.Seconds, slow.EventsPerSecond = 0, 0, 0, 0
	fj, _ := json.Marshal(fast)
	sj, _ := json.Marshal(slow)
	if !bytes.Equal(fj, sj) {
		t.Fatalf("fast path:\n%s\nencoding/json:\n%s", fj, sj)
	}
	c := fast.Candidate
	// The history has outages, blips, duplicates and alerts, and every
	// alert that resolved was first fired.
	if c.Outages == 0 || c.Blips == 0 || c.Duplicates == 0 || c.Fired == 0 || c.Resolved > c.Fired ||
		c.Receivers["ops"] == nil || c.Receivers["ops"].Firing == 0 {
		t.Fatalf("generated history exercises too little: %+v", c)
	}
	var again bytes.Buffer
	if err := backtest.Generate(&again, backtest.GenOptions{Devices: 500, Events: 40_000, Seed: 7}); err != nil || again.String() != data {
		t.Fatalf("Generate is not deterministic (err %v)", err)
	}
}

// TestCandidateFoldsFlapsAndSilences: the candidate's correlation folds a
// site outage into one group_outage, its flap suppression turns a flapping
// device's outages into one device_flapping alert, and its maintenance
// window mutes the alert of a device in maintenance; the baseline, without
// them, notifies each outage.
func TestCandidateFoldsFlapsAndSilences(t *testing.T) {
	var hist strings.Builder
	for i := range 10 {
		hist.WriteString(conn(t, fmt.Sprintf("s1-%d", i), t0))
	}
	hist.WriteString(conn(t, "f-1", t0) + conn(t, "m-1", t0))
	hist.WriteString(disc(t, "m-1", t0, t0+1_000))
	for i := range 10 {
		hist.WriteString(disc(t, fmt.Sprintf("s1-%d", i), t0, t0+10_000+int64(i)*100))
	}
	// f-1: six outages of 40 s, 5 s apart.
	connAt := t0
	for i := range int64(6) {
		down := t0 + 20_000 + i*45_000
		hist.WriteString(disc(t, "f-1", connAt, down))
		connAt = down + 40_000
		hist.WriteString(conn(t, "f-1", connAt))
	}
	base := evaluator.DefaultConfig()
	base.Receivers = []string{"ops"}
	base.Labels = labels.Config{ClientID: []labels.ClientIDRule{{Regex: `^(?P<site>[a-z0-9]+)-`}}}
	cand := base
	cand.Route = &route.Config{Flap: &route.FlapConfig{}}
	cand.Correlation = tracker.Correlation{Keys: []string{"site"}, Window: time.Minute, MinDevices: 5}
	ws, err := silencestore.CompileWindows([]silencestore.WindowConfig{{Name: "m", Matchers: []string{"site=m"}, Start: "22:00", End: "23:00"}}, "w")
	if err != nil {
		t.Fatal(err)
	}
	cs := sim(t, "candidate", cand)
	cs.SetSilences(func(now time.Time) ([]silence.Silence, time.Time) { return silencestore.Expand(ws, now) })
	res, err := backtest.Run(cs, sim(t, "baseline", base), backtest.Options{EndMS: t0 + 3_600_000}, fromJSONL(hist.String()))
	if err != nil {
		t.Fatal(err)
	}
	c, b := res.Candidate, res.Baseline
	// Candidate: one group_outage, notified at the tick that folds s1-0 and
	// updated at the next (s1-1..9); 10 inhibited device alerts; f-1's
	// first three outages fire and resolve, the fourth disconnect makes it
	// flap (one firing, one resolved once calm); m-1 silenced. It never
	// resolves: the site stays down.
	if want := map[string]backtest.ReceiverCount{"ops": {Firing: 2 + 3 + 1, Resolved: 3 + 1, Muted: 10 + 1}}; !reflect.DeepEqual(counts(c), want) {
		t.Fatalf("candidate receivers %v, want %v", counts(c), want)
	}
	if c.MassOutages != 1 || c.Folded != 10 || c.Flapping != 1 || c.Inhibited != 10 || c.Silenced != 1 {
		t.Fatalf("candidate %+v", c)
	}
	// Baseline: 10 + 6 + 1 firing, f-1's 6 resolved.
	if want := map[string]backtest.ReceiverCount{"ops": {Firing: 17, Resolved: 6}}; !reflect.DeepEqual(counts(b), want) {
		t.Fatalf("baseline receivers %v, want %v", counts(b), want)
	}
	var out bytes.Buffer
	res.Print(&out)
	for _, want := range []string{"  flapping episodes                 1          0         +1\n", "  mass outages                      1          0         +1\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
