package evaluator_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry/telemetrytest"
	"github.com/fleetwatch/fleetwatch/services/evaluator/api"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
	"github.com/nats-io/nats.go"
)

// byKind splits stored alerts by kind.
func byKind(as []storedAlert) map[events.AlertKind][]events.AlertEvent {
	out := map[events.AlertKind][]events.AlertEvent{}
	for _, a := range as {
		out[a.alert.Kind] = append(out[a.alert.Kind], a.alert)
	}
	return out
}

// TestFlappingDeviceAlertsOnce: three quick disconnects make a device
// flap: one device_flapping alert, at once; its following outages, longer
// than the grace, are held (no device_offline alert), and once its penalty
// decayed the episode resolves.
func TestFlappingDeviceAlertsOnce(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig("ops")
	cfg.Route = &route.Config{Flap: &route.FlapConfig{Penalty: 1000, HalfLife: time.Minute, Suppress: 2500, Reuse: 500}}
	r := h.start(t, cfg)
	connAt := t0
	es := []events.PresenceEvent{connected(t, "f1", "n1", t0)}
	for i := range int64(3) { // blips at +1s, +3s, +5s
		down := t0 + 1_000 + 2_000*i
		es = append(es, disconnected(t, "f1", "n1", connAt, down, events.ReasonKeepaliveTimeout))
		connAt = down + 1_000
		es = append(es, connected(t, "f1", "n1", connAt))
	}
	h.waitProcessed(t, h.publish(t, es...))
	got := h.waitAlerts(t, 1)[0].alert
	if got.Kind != events.AlertDeviceFlapping || got.Status != events.StatusFiring || got.FlapCount != 3 || got.GroupKey != `device_flapping:root{device_id="f1"}` ||
		got.CreatedAtMS != t0+5_005 || got.Silenced || got.Inhibited {
		t.Fatalf("flapping alert %+v", got)
	}
	// Two outages of a minute, each past the 30s grace: held.
	for _, down := range []int64{t0 + 10_000, t0 + 80_000} {
		seq := h.publish(t, disconnected(t, "f1", "n1", connAt, down, events.ReasonKeepaliveTimeout))
		h.waitProcessed(t, seq)
		h.clock.set(down + 45_000)
		h.waitTicks(t, 3)
		connAt = down + 60_000
		h.waitProcessed(t, h.publish(t, connected(t, "f1", "n1", connAt)))
	}
	h.wantAlerts(t, 1)
	// Calm: the penalty (~4000 at +80s) falls under 500 three half-lives
	// later.
	h.clock.set(t0 + 600_000)
	as := h.waitAlerts(t, 2)
	if res := as[1].alert; res.Kind != events.AlertDeviceFlapping || res.Status != events.StatusResolved || res.FlapCount != 5 ||
		res.Fingerprint != got.Fingerprint {
		t.Fatalf("resolved %+v", res)
	}
	h.waitTicks(t, 3)
	h.wantAlerts(t, 2)
	if n := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_decisions", "status"); n["firing"] != 1 || n["resolved"] != 1 {
		t.Fatalf("decisions %v", n)
	}
}

// TestSiteOutageFolds: 60 devices of a site drop within seconds: one
// group_outage alert per receiver, and every member's device alert
// recorded inhibited; a device of another site alerts on its own. When the
// site is back, the members' alerts resolve (inhibited) and the
// group_outage resolves once, after its group_interval.
func TestSiteOutageFolds(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig("ops", "oncall")
	cfg.Labels = labels.Config{ClientID: []labels.ClientIDRule{{Regex: `^(?P<site>plant[0-9]+)-`}}}
	cfg.Correlation = tracker.Correlation{Keys: []string{"site"}, Window: time.Minute, MinDevices: 20}
	interval := time.Minute
	cfg.Route = &route.Config{Routes: []route.Config{{Matchers: []string{"alertname=group_outage"}, GroupInterval: &interval}}}
	h.start(t, cfg)
	var es []events.PresenceEvent
	dev := func(i int) string { return fmt.Sprintf("plant1-%02d", i) }
	for i := range 60 {
		es = append(es, connected(t, dev(i), "n1", t0))
	}
	for i := range 5 {
		es = append(es, connected(t, fmt.Sprintf("plant2-%d", i), "n1", t0))
	}
	for i := range 60 {
		es = append(es, disconnected(t, dev(i), "n1", t0, t0+10_000+int64(i)*50, events.ReasonKeepaliveTimeout))
	}
	es = append(es, disconnected(t, "plant2-0", "n1", t0, t0+10_000, events.ReasonKeepaliveTimeout))
	h.waitProcessed(t, h.publish(t, es...))
	h.wantAlerts(t, 0)
	h.clock.set(t0 + 45_000) // every grace has ended
	const fired = 2 + 60*2 + 2
	got := byKind(h.waitAlerts(t, fired))
	outages := got[events.AlertGroupOutage]
	if len(outages) != 2 || outages[0].Receiver != "ops" || outages[1].Receiver != "oncall" {
		t.Fatalf("group_outage alerts %+v", outages)
	}
	for _, o := range outages {
		if o.Status != events.StatusFiring || o.GroupKey != `group_outage:root.0{site="plant1"}` || o.DevicesTotal != 60 || o.KnownTotal != 60 ||
			o.NewTotal != 60 || o.Severity != events.SeverityCritical || o.Inhibited || len(o.Devices) != 60 {
			t.Fatalf("group_outage %+v", o)
		}
	}
	var own []events.AlertEvent
	inhibited := map[string]int{}
	for _, a := range got[events.AlertDeviceOffline] {
		if !a.Inhibited {
			own = append(own, a)
			continue
		}
		if a.InhibitedBy != outages[0].Fingerprint || a.Status != events.StatusFiring || a.Devices[0].DeviceID[:7] != "plant1-" {
			t.Fatalf("inhibited %+v", a)
		}
		inhibited[a.Receiver]++
	}
	if inhibited["ops"] != 60 || inhibited["oncall"] != 60 {
		t.Fatalf("inhibited device alerts by receiver %v", inhibited)
	}
	if len(own) != 2 || own[0].GroupKey != `root{device_id="plant2-0"}` || own[0].Status != events.StatusFiring {
		t.Fatalf("own device alerts %+v", own)
	}
	// The site comes back: the members' alerts resolve, inhibited (the
	// last 19, still down when the count fell under 20, leave the mass
	// outage first: their copies resolve without a device).
	es = es[:0]
	for i := range 60 {
		es = append(es, connected(t, dev(i), "n1", t0+60_000))
	}
	h.waitProcessed(t, h.publish(t, es...))
	as := h.waitAlerts(t, fired+120)
	for _, a := range as[fired:] {
		if a.alert.Kind != events.AlertDeviceOffline || a.alert.Status != events.StatusResolved || !a.alert.Inhibited {
			t.Fatalf("member resolution %+v", a.alert)
		}
	}
	h.clock.set(t0 + 45_000 + 61_000)
	as = h.waitAlerts(t, fired+120+2)
	for i, rc := range []string{"ops", "oncall"} {
		if a := as[fired+120+i].alert; a.Kind != events.AlertGroupOutage || a.Receiver != rc || a.Status != events.StatusResolved ||
			a.ResolvedTotal != 41 || a.EndsAtMS != t0+60_000 {
			t.Fatalf("group_outage resolved %+v", a)
		}
	}
	h.waitTicks(t, 3)
	h.wantAlerts(t, fired+122)
}

// TestSilenceFromAPI: a silence created through the API marks the next
// alert of a matching device silenced (recorded, with the silence's id);
// with expire_when_resolved it is deleted once the device is back, and the
// next outage is delivered again.
func TestSilenceFromAPI(t *testing.T) {
	h := newHarness(t)
	cfg := apiConfig(t)
	cfg.Route = nil // one group per device
	r := h.start(t, cfg)
	c := client{t: t, base: "http://" + r.svc.APIAddr()}
	h.waitProcessed(t, h.publish(t, connected(t, "plant2-a", "n1", t0), connected(t, "plant3-b", "n1", t0)))

	var sl api.Silence
	body := `{"matchers":["site=\"plant2\""],"starts_at":"2023-11-14T00:00:00Z","ends_at":"2099-01-01T00:00:00Z","expire_when_resolved":true}`
	if code, msg := c.do("POST", "/api/v1/silences", apiToken, body, &sl); code != 201 {
		t.Fatalf("create: %d %s", code, msg)
	}
	// The watch hands the new set to the tracker; wait until it is in force.
	waitFor(t, "the silence in force", func() bool { return slices.Contains(trackerSilences(t, r), sl.ID) })
	h.waitProcessed(t, h.publish(t,
		disconnected(t, "plant2-a", "n1", t0, t0+1_000, events.ReasonKeepaliveTimeout),
		disconnected(t, "plant3-b", "n1", t0, t0+1_000, events.ReasonKeepaliveTimeout)))
	h.clock.set(t0 + 40_000)
	as := h.waitAlerts(t, 2)
	slices.SortFunc(as, func(a, b storedAlert) int { return compare(a.alert.GroupKey, b.alert.GroupKey) })
	if a := as[0].alert; a.GroupKey != `root{device_id="plant2-a"}` || !a.Silenced || !slices.Equal(a.SilenceIDs, []string{sl.ID}) {
		t.Fatalf("plant2-a %+v", a)
	}
	if a := as[1].alert; a.GroupKey != `root{device_id="plant3-b"}` || a.Silenced || a.SilenceIDs != nil {
		t.Fatalf("plant3-b %+v", a)
	}
	// Back: the recovery is silenced too, then the silence is deleted.
	h.waitProcessed(t, h.publish(t, connected(t, "plant2-a", "n1", t0+50_000)))
	as = h.waitAlerts(t, 3)
	if a := as[2].alert; a.Status != events.StatusResolved || !a.Silenced || !slices.Equal(a.SilenceIDs, []string{sl.ID}) {
		t.Fatalf("plant2-a resolved %+v", a)
	}
	waitFor(t, "the expired silence deleted", func() bool {
		code, _ := c.do("GET", "/api/v1/silences/"+url.PathEscape(sl.ID), "", "", nil)
		return code == 404
	})
	waitFor(t, "the silence gone", func() bool { return !slices.Contains(trackerSilences(t, r), sl.ID) })
	h.waitProcessed(t, h.publish(t, disconnected(t, "plant2-a", "n1", t0+50_000, t0+60_000, events.ReasonKeepaliveTimeout)))
	h.clock.set(t0 + 100_000)
	as = h.waitAlerts(t, 4)
	if a := as[3].alert; a.GroupKey != `root{device_id="plant2-a"}` || a.Status != events.StatusFiring || a.Silenced {
		t.Fatalf("after the silence %+v", a)
	}
	if n := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_silences_expired", ""); n[""] != 1 {
		t.Fatalf("silences expired %v", n)
	}
}

// trackerSilences returns the ids of the silences the tracker has.
func trackerSilences(t *testing.T, r *running) []string {
	t.Helper()
	var ids []string
	if err := r.svc.Query(t.Context(), func(tr *tracker.Tracker) { ids = tr.SilenceIDs() }); err != nil {
		t.Fatal(err)
	}
	return ids
}

// nodeEvents returns how many node events the tracker applied.
func nodeEvents(t *testing.T, r *running) uint64 {
	t.Helper()
	var n uint64
	if err := r.svc.Query(t.Context(), func(tr *tracker.Tracker) { n = tr.Stats().NodeEvents }); err != nil {
		t.Fatal(err)
	}
	return n
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// publishNode stores a node health event the way the ingest does.
func (h *harness) publishNode(t *testing.T, node string, st events.NodeStatus, lastSeen, at int64) {
	t.Helper()
	e, err := events.NewNodeEvent(events.NodeEvent{Node: node, Status: st, LastSeenMS: lastSeen, AtMS: at, Source: "test",
		Mark: fmt.Sprint(lastSeen)})
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(events.NodeSubject(node))
	m.Data = data
	m.Header.Set(events.HeaderMsgID, e.ID)
	if _, err := h.js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
}

// TestNodeSilent: a silent node makes its devices unknown (API) and sends
// one node_silent alert per receiver, whatever its devices do meanwhile; a
// repeated silent changes nothing; back resolves it, and the outage that
// began while the node was silent fires then.
func TestNodeSilent(t *testing.T) {
	h := newHarness(t)
	cfg := apiConfig(t)
	cfg.Route = nil
	cfg.Receivers = []string{"ops", "oncall"}
	r := h.start(t, cfg)
	c := client{t: t, base: "http://" + r.svc.APIAddr()}
	h.waitProcessed(t, h.publish(t, connected(t, "plant1-a", "n1", t0), connected(t, "plant1-b", "n1", t0),
		connected(t, "plant2-c", "n2", t0)))

	h.publishNode(t, "n1", events.NodeSilent, t0+5_000, t0+20_000)
	as := h.waitAlerts(t, 2)
	for i, rc := range []string{"ops", "oncall"} {
		if a := as[i].alert; a.Kind != events.AlertNodeSilent || a.Receiver != rc || a.Status != events.StatusFiring || a.DevicesTotal != 2 ||
			a.KnownTotal != 2 || a.GroupKey != `node_silent:root{node="n1"}` || a.StartsAtMS != t0+5_000 || a.Severity != events.SeverityWarning {
			t.Fatalf("node_silent %+v", a)
		}
	}
	var list api.DeviceList
	waitFor(t, "unknown devices", func() bool {
		c.do("GET", "/api/v1/devices", "", "", &list)
		return list.Counts["unknown"] == 2
	})
	if list.Counts["online"] != 1 || list.Total != 3 {
		t.Fatalf("devices %+v", list)
	}
	var d api.Device
	c.do("GET", "/api/v1/devices/plant1-a", "", "", &d)
	if d.Status != tracker.StatusUnknown {
		t.Fatalf("plant1-a %+v", d)
	}
	// A disconnect meanwhile: its grace ends while the node is silent, held.
	h.waitProcessed(t, h.publish(t, disconnected(t, "plant1-b", "n1", t0, t0+21_000, events.ReasonKeepaliveTimeout)))
	h.publishNode(t, "n1", events.NodeSilent, t0+6_000, t0+25_000) // a second ingest replica's report
	waitFor(t, "the second silent applied", func() bool { return nodeEvents(t, r) == 2 })
	h.clock.set(t0 + 60_000)
	h.waitTicks(t, 5)
	h.wantAlerts(t, 2)

	h.publishNode(t, "n1", events.NodeBack, t0+70_000, t0+70_000)
	as = h.waitAlerts(t, 6)
	for i, rc := range []string{"ops", "oncall"} {
		if a := as[2+i].alert; a.Kind != events.AlertNodeSilent || a.Receiver != rc || a.Status != events.StatusResolved || a.EndsAtMS != t0+70_000 ||
			a.Fingerprint != as[i].alert.Fingerprint {
			t.Fatalf("node_silent resolved %+v", a)
		}
		if a := as[4+i].alert; a.Kind != events.AlertDeviceOffline || a.Receiver != rc || a.Status != events.StatusFiring ||
			a.GroupKey != `root{device_id="plant1-b"}` || a.CreatedAtMS != t0+70_000 {
			t.Fatalf("held outage %+v", a)
		}
	}
	c.do("GET", "/api/v1/devices", "", "", &list)
	if list.Counts["unknown"] != 0 || list.Counts["online"] != 2 || list.Counts["offline"] != 1 {
		t.Fatalf("after back %+v", list)
	}
	h.publishNode(t, "n1", events.NodeBack, t0+71_000, t0+71_000)
	waitFor(t, "the second back applied", func() bool { return nodeEvents(t, r) == 4 })
	h.waitTicks(t, 5)
	h.wantAlerts(t, 6)
}
