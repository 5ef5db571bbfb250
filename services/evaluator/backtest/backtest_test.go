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
