package tracker

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// The digests below were computed on the tracker before its hot path was
// optimised (fleetwatch issues 4 and 8): alert ids, fingerprints and every
// other byte of the decisions are a contract (a restarted evaluator
// recognises the alerts already published by id), so any change to them
// must be deliberate. Each is a sha256 over the JSON of every Apply's
// decisions, one per line, then the final snapshot.
const (
	pinStageCore = "b35c216c973be839e5addd7dab42f06e8f87853f34d0daeb9d17119d7b2df205"
	pinMixed     = "2f7a6afb3a1e6855426924d1b0535e7d8718db237ed01be32eef3a64bf6683a8"
	pinRich      = "99d86c226a6a836345563301b36f097d44bdd3a3105b9780c42ed809bd991cd0"
	pinGrouped   = "ab1733432f856649be0638324458be35a6b41ca33cd4b98408f8fa301fba6c8b"
)

// pinHash feeds the decisions of one Apply to h.
func pinHash(t testing.TB, h hash.Hash, ds []Decision) {
	t.Helper()
	h.Write([]byte(mustJSON(t, ds)))
	h.Write([]byte{'\n'})
}

// pinFinish adds the tracker's snapshot and the recovery views to h and
// returns the digest.
func pinFinish(t testing.TB, h hash.Hash, tr *Tracker, now int64) string {
	t.Helper()
	pinHash(t, h, tr.Alerting(time.UnixMilli(now)))
	snap, err := tr.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	h.Write(snap)
	fmt.Fprintf(h, "%+v", tr.Stats())
	return hex.EncodeToString(h.Sum(nil))
}

// TestPinStageCore: the workload of BenchmarkStageCore (default config,
// per-device groups, a storm of alerts), smaller.
func TestPinStageCore(t *testing.T) {
	const n, devices = 200_000, 10_000
	base := time.UnixMilli(t0)
	tr := newTracker(t, "ops", "audit")
	h := sha256.New()
	last := int64(0)
	for i := range n {
		dev, round := i%devices, i/devices
		connectedAt := base.Add(time.Duration(round/2*2000+dev*5) * time.Millisecond).UnixMilli() // spread as 50k devices
		e := events.PresenceEvent{DeviceID: "bench-dev-" + strconv.Itoa(dev), Node: "emqx@127.0.0.1", Source: "bench",
			ConnectedAtMS: connectedAt, ReceivedAtMS: connectedAt, IP: "127.0.0.1", Username: "bench", KeepaliveS: 60}
		if round%2 == 0 {
			e.Kind, e.BrokerTSMS = events.KindConnected, connectedAt
		} else {
			e.Kind, e.BrokerTSMS = events.KindDisconnected, connectedAt+1000
			e.Reason, e.RawReason = events.ReasonKeepaliveTimeout, "keepalive_timeout"
		}
		pinHash(t, h, tr.Apply(Event{&e}))
		if i%1024 == 0 {
			pinHash(t, h, tr.Apply(Tick{Now: time.UnixMilli(e.BrokerTSMS)}))
		}
		last = e.BrokerTSMS
	}
	// The recovery path derives the same ids.
	marked := 0
	for i := range devices {
		id := "bench-dev-" + strconv.Itoa(i)
		if tr.MarkAlerted(id, func(id string) bool { return id[0] < '8' }) {
			marked++
		}
	}
	fmt.Fprintf(h, "marked %d\n", marked)
	if got := pinFinish(t, h, tr, last); got != pinStageCore {
		t.Errorf("stage core decisions digest %s, want %s", got, pinStageCore)
	}
}

// TestPinMixed: mixed traffic with labels, site groups, waits, repeats and
// escalation tiers (BenchmarkMixedTraffic's config).
func TestPinMixed(t *testing.T) {
	const n, devices = 200_000, 5_000
	ids := make([]string, devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("site%d-gw%d-%08d", i%40, i%7, i)
	}
	tr := routedTracker(t, benchLabels, benchRoutes)
	h := sha256.New()
	var e events.PresenceEvent
	clock := int64(0)
	for i := range n {
		mixedEvent(&e, ids, i)
		pinHash(t, h, tr.Apply(Event{&e}))
		clock = max(clock, e.BrokerTSMS)
		if i%1000 == 999 {
			pinHash(t, h, tr.Apply(Tick{Now: time.UnixMilli(clock)}))
		}
	}
	pinHash(t, h, tr.Apply(Tick{Now: time.UnixMilli(clock + 5*3_600_000)}))
	if got := pinFinish(t, h, tr, clock); got != pinMixed {
		t.Errorf("mixed decisions digest %s, want %s", got, pinMixed)
	}
}

// TestPinRich: every feature (per-device and per-site groups, tiers, flap
// suppression, correlation, node health, silences), and an id scope.
func TestPinRich(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	h := sha256.New()
	flapping := uint64(0)
	for round := range 30 {
		cfg := routedConfig(t, siteLabels, richRoutes)
		cfg.Correlation = richCorrelation
		if round%3 == 0 {
			cfg.IDScope = "p" + strconv.Itoa(round)
		}
		tr, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		in := genInputs(t, rng, 600)
		for _, x := range in {
			pinHash(t, h, tr.Apply(x))
		}
		// Then a few devices flap, some calm down, and all recover.
		clock := t0 + 1e8 + int64(round)*1e6
		for i := range 40 {
			for _, id := range []string{"a-01", "b-02", "c-03", "c-04"} {
				at := clock + int64(i)*7_000 + rng.Int64N(3_000)
				c := events.PresenceEvent{DeviceID: id, Kind: events.KindConnected, Node: "n1", BrokerTSMS: at, ConnectedAtMS: at,
					ReceivedAtMS: at + 1, KeepaliveS: 30}
				d := c
				d.Kind, d.BrokerTSMS, d.ReceivedAtMS, d.Reason = events.KindDisconnected, at+2_000, at+2_001, events.ReasonKeepaliveTimeout
				pinHash(t, h, tr.Apply(Event{&c}))
				if i < 30 || id[0] == 'c' {
					pinHash(t, h, tr.Apply(Event{&d}))
				}
			}
			pinHash(t, h, tr.Apply(Tick{Now: time.UnixMilli(clock + int64(i)*7_000 + 6_000)}))
		}
		pinHash(t, h, tr.Apply(Tick{Now: time.UnixMilli(clock + 3_600_000)}))
		flapping += tr.Stats().Flapping
		fmt.Fprintf(h, "%s\n", pinFinish(t, sha256.New(), tr, t0+1e9))
	}
	if flapping == 0 {
		t.Error("no flapping episode: the workload misses flap suppression")
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != pinRich {
		t.Errorf("rich decisions digest %s, want %s", got, pinRich)
	}
}

// TestPinGrouped: the fuzz targets' inputs from a fixed random stream,
// through the grouped config (a device_id matcher: per-device routing) and
// the default one.
func TestPinGrouped(t *testing.T) {
	const routes = "receivers: [r1]\ngroup_by: [node]\ngroup_wait: 2s\ngroup_interval: 5s\nrepeat_interval: 1m\n" +
		"escalations:\n  - after: 1m\n    receivers: [r2]\nroutes:\n  - matchers: ['device_id=~\"dev/.*\"']\n    group_by: [...]\n    continue: true\n"
	rng := rand.New(rand.NewPCG(31, 32))
	h := sha256.New()
	for round := range 40 {
		data := make([]byte, 6*400)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		tr := routedTracker(t, "{}", routes)
		plain := newTracker(t, "ops")
		for _, x := range fuzzOps(data) {
			pinHash(t, h, tr.Apply(x))
			pinHash(t, h, plain.Apply(x))
		}
		fmt.Fprintf(h, "%d %s %s\n", round, pinFinish(t, sha256.New(), tr, t0+1e9), pinFinish(t, sha256.New(), plain, t0+1e9))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != pinGrouped {
		t.Errorf("grouped decisions digest %s, want %s", got, pinGrouped)
	}
}
