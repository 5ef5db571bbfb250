package tracker

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

func TestDecay(t *testing.T) {
	const hl = int64(300_000)
	tests := []struct {
		p    uint32
		dt   int64
		want uint32
	}{
		{1000, 0, 1000},
		{1000, -5, 1000},
		{1000, hl, 500},
		{1000, 2 * hl, 250},
		{1000, hl / 2, 707},
		{3000, 3 * hl / 2, 1060},
		{12000, 4 * hl, 750},
		{1 << 31, 31 * hl, 1},
		{1 << 31, 32 * hl, 0},
		{0, hl, 0},
	}
	for _, tc := range tests {
		if got := decay(tc.p, tc.dt, hl); got != tc.want {
			t.Errorf("decay(%d, %d) = %d, want %d", tc.p, tc.dt, got, tc.want)
		}
	}
	// Within 0.07 % of the exact value (the table's step), and monotone.
	prev := uint32(math.MaxUint32)
	for dt := int64(0); dt < 6*hl; dt += 997 {
		got := decay(1_000_000, dt, hl)
		exact := 1e6 * math.Exp2(-float64(dt)/float64(hl))
		if math.Abs(float64(got)-exact) > exact*0.0007+2 {
			t.Fatalf("decay(1e6, %d) = %d, exact %.1f", dt, got, exact)
		}
		if got > prev {
			t.Fatalf("decay rose at %d: %d after %d", dt, got, prev)
		}
		prev = got
	}
	// calmAfter is the first time below the reuse limit.
	for _, p := range []uint32{751, 1000, 3865, 12000, 1 << 30} {
		dt := calmAfter(p, 750, hl)
		if decay(p, dt, hl) >= 750 || (dt > 0 && decay(p, dt-1, hl) < 750) {
			t.Fatalf("calmAfter(%d) = %d: decay %d, one ms earlier %d", p, dt, decay(p, dt, hl), decay(p, dt-1, hl))
		}
	}
	if calmAfter(700, 750, hl) != 0 {
		t.Fatal("a penalty below the reuse limit is calm at once")
	}
}

const flapRoutes = `
receivers: [ops]
flap: {}
`

// flapCycle is a short outage of dev: disconnect at off, back at on.
func flapCycle(t *testing.T, dev string, connAt, off, on int64) []gstep {
	return []gstep{
		{Event{disc(t, dev, "n1", connAt, off, events.ReasonKeepaliveTimeout)}, nil},
		{Event{conn(t, dev, "n1", on)}, nil},
	}
}

func TestFlapSuppression(t *testing.T) {
	tr := routedTracker(t, "{}", flapRoutes)
	const flapKey = `device_flapping:root{device_id="d"}`
	steps := []gstep{{Event{conn(t, "d", "n1", 0)}, nil}}
	steps = append(steps, flapCycle(t, "d", 0, 10_000, 15_000)...)
	steps = append(steps, flapCycle(t, "d", 15_000, 20_000, 25_000)...)
	steps = append(steps, flapCycle(t, "d", 25_000, 30_000, 35_000)...)
	steps = append(steps,
		// The fourth disconnect within 30 s crosses 3000: one flapping alert.
		gstep{Event{disc(t, "d", "n1", 35_000, 40_000, events.ReasonKeepaliveTimeout)}, []string{
			"ops firing " + flapKey + " new=1 res=0 firing=1 total=1 [d:f]"}},
		gstep{at(60_000), nil},
		gstep{Event{conn(t, "d", "n1", 100_000)}, nil}, // a 60 s outage: held, no alert
		gstep{Event{disc(t, "d", "n1", 100_000, 200_000, events.ReasonKeepaliveTimeout)}, nil},
		gstep{at(300_000), nil}, // offline past its grace, still held
	)
	all := runGroups(t, tr, steps)
	if a := all[0].Alert; a.Kind != events.AlertDeviceFlapping || a.FlapCount != 4 || a.StartsAtMS != t0+40_000 ||
		a.Severity != events.SeverityWarning || a.Fingerprint != events.ContentID(string(events.AlertDeviceFlapping), flapKey) {
		t.Fatalf("flapping alert %+v", a)
	}
	s, _ := tr.Device("d")
	if !s.Flapping || s.FlapCount != 5 || !s.Pending || s.Alerting || s.Online {
		t.Fatalf("state while flapping %+v", s)
	}
	// Penalty: 3864 after 4 disconnects by 40 s, decayed to 200 s (2670),
	// plus the fifth: 3670, below 750 after 5 min × log2(3670/750) = 687 s.
	d := *devOf(t, tr, "d")
	due := d.flapTime() + calmAfter(d.penalty, 750, 300_000)
	if d.penalty < 3660 || d.penalty > 3680 || due < t0+880_000 || due > t0+890_000 {
		t.Fatalf("penalty %d at %d, calm at %d", d.penalty, d.flapTime()-t0, due-t0)
	}
	runGroups(t, tr, []gstep{
		{Tick{Now: time.UnixMilli(due - 1)}, nil},
		// Calm: the flapping alert resolves, and the device, still down
		// past its grace, fires its offline alert now.
		{Tick{Now: time.UnixMilli(due)}, []string{
			"ops resolved " + flapKey + " new=0 res=1 firing=0 total=1 [d:r]",
			"ops firing " + `root{device_id="d"}` + " new=1 res=0 firing=1 total=1 [d:f]",
		}},
		{Event{conn(t, "d", "n1", 2_000_000)}, []string{"ops resolved " + `root{device_id="d"}` + " new=0 res=1 firing=0 total=1 [d:r]"}},
	})
	if s := tr.Stats(); s.Flapping != 1 || s.Calmed != 1 || s.Fired != 1 || s.Resolved != 1 {
		t.Fatalf("stats %+v", s)
	}
	if s, _ := tr.Device("d"); s.Flapping || s.Alerting || s.Pending || !s.Online {
		t.Fatalf("final state %+v", s)
	}
}

func TestFlapCalmsWhileOnline(t *testing.T) {
	tr := routedTracker(t, "{}", "receivers: [ops]\nflap: {penalty: 1500, suppress: 2500, reuse: 1000, half_life: 1m}\n")
	steps := []gstep{{Event{conn(t, "d", "n1", 0)}, nil}}
	steps = append(steps, flapCycle(t, "d", 0, 10_000, 11_000)...)
	steps = append(steps,
		gstep{Event{disc(t, "d", "n1", 11_000, 12_000, events.ReasonClosed)}, []string{
			`ops firing device_flapping:root{device_id="d"} new=1 res=0 firing=1 total=1 [d:f]`}},
		gstep{Event{conn(t, "d", "n1", 13_000)}, nil},
		// ~2990 at 12 s decays below 1000 after log2(2.99) minutes: 12 s + 94.8 s.
		gstep{at(106_000), nil},
		gstep{at(107_000), []string{`ops resolved device_flapping:root{device_id="d"} new=0 res=1 firing=0 total=1 [d:r]`}},
		gstep{at(10_000_000), nil},
	)
	all := runGroups(t, tr, steps)
	if r := all[1].Alert; r.EndsAtMS != t0+107_000 || r.FlapCount != 2 || r.Devices[0].UntilMS != t0+107_000 {
		t.Fatalf("resolved %+v", r)
	}
	// A takeover is not a flap: no penalty.
	tr.Apply(Event{disc(t, "d", "n1", 13_000, 200_000, events.ReasonTakenOver)})
	if d := *devOf(t, tr, "d"); d.flapTime() != t0+12_000 {
		t.Fatalf("a takeover updated the penalty: %+v", d)
	}
}

func TestFlapSettingsPerRoute(t *testing.T) {
	tr := routedTracker(t, siteLabels, `
receivers: [ops]
flap: {suppress: 2000, reuse: 500}
routes:
  - matchers: [site=calm]
    flap: {disabled: true}
`)
	for _, dev := range []string{"calm-1", "busy-1"} {
		tr.Apply(Event{conn(t, dev, "n1", 0)})
		for i := int64(1); i <= 3; i++ {
			tr.Apply(Event{disc(t, dev, "n1", (i-1)*1000, i*1000-500, events.ReasonClosed)})
			tr.Apply(Event{conn(t, dev, "n1", i*1000)})
		}
	}
	if s, _ := tr.Device("calm-1"); s.Flapping || s.FlapCount != 0 {
		t.Fatalf("calm-1 %+v", s)
	}
	if s, _ := tr.Device("busy-1"); !s.Flapping || s.FlapCount != 3 {
		t.Fatalf("busy-1 %+v", s)
	}
}

// TestPropertyFlapRandomDelivery delivers generated histories (many short
// outages per device) in random orders EMQX allows, with duplicates, with
// flap suppression on: the final connection state is the truth, every
// offline alert is about a real outage and none is decided while its device
// is flapping, and a device flaps only after at least four real outages
// (three within the decay, after a remainder below the reuse limit).
func TestPropertyFlapRandomDelivery(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	flapped := 0
	for range 300 {
		h := genHistory(t, rng, 1+rng.IntN(3), 10, 0.1)
		for range 10 {
			order := randomDelivery(rng, h, 0.3)
			tr := routedTracker(t, "{}", flapRoutes)
			tr, ds := deliverTo(t, tr, h, order)
			ds = append(ds, tr.Apply(Tick{Now: time.UnixMilli(h.events[len(h.events)-1].trueT + 3_600_000)})...)
			for dev, s := range h.final {
				got, _ := tr.Device(dev)
				if got.Online != s.Online || got.Node != s.Node || got.ConnectedAtMS != s.ConnectedAtMS || got.SinceMS != s.SinceMS ||
					got.Reason != s.Reason || got.HandedOver != s.HandedOver {
					t.Fatalf("%s: final state %+v, want %+v", dev, got, s)
				}
				if got.Flapping || got.Pending != false || got.Alerting == s.Online {
					t.Fatalf("%s: an hour after the end %+v (truth %+v)", dev, got, s)
				}
			}
			flapping := map[string]bool{}
			firing := map[string]int64{}
			for _, d := range ds {
				a := d.Alert
				if err := a.Validate(); err != nil {
					t.Fatal(err)
				}
				dev := a.Devices[0].DeviceID
				if a.Kind == events.AlertDeviceFlapping {
					if a.Status == events.StatusFiring {
						if n := len(h.outages[dev]); n < 4 || a.FlapCount < 3 || flapping[dev] {
							t.Fatalf("%s flapping after %d outages: %+v", dev, n, a)
						}
						flapped++
					}
					flapping[dev] = a.Status == events.StatusFiring
					continue
				}
				if !slices.Contains(h.outages[dev], a.StartsAtMS) {
					t.Fatalf("alert %+v is not about a real outage of %s", a, dev)
				}
				since, on := firing[dev]
				switch {
				case a.Status == events.StatusFiring && (on || flapping[dev]):
					t.Fatalf("firing for %s while firing (%v) or flapping (%v): %+v", dev, on, flapping[dev], a)
				case a.Status == events.StatusFiring:
					firing[dev] = a.StartsAtMS
				case !on || since != a.StartsAtMS:
					t.Fatalf("resolved without its firing for %s: %+v", dev, a)
				default:
					delete(firing, dev)
				}
			}
		}
	}
	if flapped == 0 {
		t.Fatal("no history flapped")
	}
	t.Logf("%d flapping alerts", flapped)
}

// devOf returns the state of a tracked device.
func devOf(t *testing.T, tr *Tracker, id string) *device {
	t.Helper()
	slot, _, ok := tr.index.lookup(tr.devs, &tr.ids, id)
	if !ok {
		t.Fatalf("%s is not tracked", id)
	}
	return &tr.devs[slot]
}

// TestFlapDecayIsEvenWithShortHalfLife: with a 1 s half-life, a penalty
// halves between disconnects 1 s apart whatever their phase within the
// second (flap times were whole seconds: the decay then ranged from 1/2 to
// almost 1/4 by phase), and the calm timer is due to the ms.
func TestFlapDecayIsEvenWithShortHalfLife(t *testing.T) {
	const routes = "receivers: [ops]\nflap: {penalty: 1000, suppress: 2400, reuse: 100, half_life: 1s, max_penalty: 4000}\n"
	for _, phase := range []int64{0, 1, 250, 500, 999} {
		tr := routedTracker(t, "{}", routes)
		runGroups(t, tr, []gstep{
			{Event{conn(t, "d", "n1", 0)}, nil},
			{Event{disc(t, "d", "n1", 0, 1_000+phase, events.ReasonKeepaliveTimeout)}, nil},
			{Event{conn(t, "d", "n1", 1_100+phase)}, nil},
			{Event{disc(t, "d", "n1", 1_100+phase, 2_000+phase, events.ReasonKeepaliveTimeout)}, nil},
			{Event{conn(t, "d", "n1", 2_100+phase)}, nil},
		})
		if d := devOf(t, tr, "d"); d.penalty != 1500 || d.flapTime() != t0+2_000+phase {
			t.Fatalf("phase %d ms: penalty %d at %d, want 1500 at %d", phase, d.penalty, d.flapTime()-t0, 2_000+phase)
		}
		// The third disconnect, 1 s later: 750 + 1000 = 1750; the fourth,
		// 500 ms after: 1750/√2 + 1000 = 2237 (within the table's 0.07 %);
		// the fifth, 250 ms after: 2237·2^-¼ + 1000 = 2881, flapping.
		runGroups(t, tr, []gstep{
			{Event{disc(t, "d", "n1", 2_100+phase, 3_000+phase, events.ReasonKeepaliveTimeout)}, nil},
			{Event{conn(t, "d", "n1", 3_100+phase)}, nil},
		})
		if d := devOf(t, tr, "d"); d.penalty != 1750 {
			t.Fatalf("phase %d ms: penalty %d, want 1750", phase, d.penalty)
		}
		runGroups(t, tr, []gstep{
			{Event{disc(t, "d", "n1", 3_100+phase, 3_500+phase, events.ReasonKeepaliveTimeout)}, nil},
			{Event{conn(t, "d", "n1", 3_600+phase)}, nil},
		})
		if d := devOf(t, tr, "d"); d.penalty < 2236 || d.penalty > 2238 {
			t.Fatalf("phase %d ms: penalty %d, want 2237", phase, d.penalty)
		}
		runGroups(t, tr, []gstep{
			{Event{disc(t, "d", "n1", 3_600+phase, 3_750+phase, events.ReasonKeepaliveTimeout)}, []string{
				`ops firing device_flapping:root{device_id="d"} new=1 res=0 firing=1 total=1 [d:f]`}},
		})
		d := devOf(t, tr, "d")
		// Calm below 100: log2(p/100) half-lives after the last update.
		due := d.flapTime() + calmAfter(d.penalty, 100, 1_000)
		exact := float64(t0+3_750+phase) + 1000*math.Log2(float64(d.penalty)/100)
		if math.Abs(float64(due)-exact) > 2 {
			t.Fatalf("phase %d ms: penalty %d, calm due at %d, exact %.1f", phase, d.penalty, due-t0, exact-float64(t0))
		}
		runGroups(t, tr, []gstep{
			{Tick{Now: time.UnixMilli(due - 1)}, nil},
			{Tick{Now: time.UnixMilli(due)}, []string{
				`ops resolved device_flapping:root{device_id="d"} new=0 res=1 firing=0 total=1 [d:r]`}},
		})
	}
}
