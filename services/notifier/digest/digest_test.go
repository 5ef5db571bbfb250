package digest

import (
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

const t0 = 1714528800000

// device is one alert per device, as the evaluator emits them.
func device(id string, status events.AlertStatus, sev events.Severity, labels map[string]string) events.AlertEvent {
	a := events.AlertEvent{
		V: 1, ID: "id-" + id + "-" + string(status), Fingerprint: "fp-" + id, Receiver: "ops", Status: status,
		Kind: events.AlertDeviceOffline, Severity: sev, GroupKey: "device:" + id,
		GroupLabels: map[string]string{"device_id": id}, DevicesTotal: 1, StartsAtMS: t0, CreatedAtMS: t0 + 1000,
		Devices: []events.AlertDevice{{DeviceID: id, Status: status, Node: "emqx@n1", Labels: labels, SinceMS: t0}},
	}
	if status == events.StatusResolved {
		a.EndsAtMS = t0 + 300_000
		a.CreatedAtMS = a.EndsAtMS
	}
	return a
}

func TestFold(t *testing.T) {
	sh, bj := map[string]string{"site": "sh-01"}, map[string]string{"site": "bj-02"}
	group := events.AlertEvent{
		V: 1, ID: "id-group", Fingerprint: "fp-g", Receiver: "ops", Status: events.StatusFiring, Kind: events.AlertGroupOutage,
		Severity: events.SeverityWarning, GroupLabels: map[string]string{"gateway": "gw-3"}, DevicesTotal: 40, StartsAtMS: t0 - 5000,
		Devices: []events.AlertDevice{{DeviceID: "g-1", Node: "emqx@n2"}},
	}
	alerts := []events.AlertEvent{
		device("a", events.StatusFiring, events.SeverityWarning, sh),
		device("b", events.StatusResolved, events.SeverityCritical, sh),
		device("c", events.StatusFiring, events.SeverityInfo, bj),
		device("d", events.StatusFiring, events.SeverityWarning, nil),
		group,
	}
	d := Fold("ops", alerts, Options{GroupBy: []string{"site"}, TopGroups: 3, Samples: 4})
	if d.FiringAlerts != 4 || d.ResolvedAlerts != 1 || d.FiringDevices != 43 || d.ResolvedDevices != 1 || d.Alerts() != 5 || d.Devices() != 44 {
		t.Fatalf("counts %+v", d)
	}
	if d.Severity != events.SeverityWarning {
		t.Fatalf("severity %s: the highest firing severity wins over a resolved critical", d.Severity)
	}
	if d.FromMS != t0-5000 || d.ToMS != t0+300_000 {
		t.Fatalf("span %d..%d", d.FromMS, d.ToMS)
	}
	wantGroups := []Group{{Name: "gateway=gw-3", Firing: 40}, {Name: "site=sh-01", Firing: 1, Resolved: 1}, {Name: "node=emqx@n1", Firing: 1}}
	if !reflect.DeepEqual(d.Groups, wantGroups) || d.MoreGroups != 1 {
		t.Fatalf("groups %+v more %d", d.Groups, d.MoreGroups)
	}
	var ids []string
	for _, s := range d.Samples {
		ids = append(ids, s.DeviceID+"/"+string(s.Status))
	}
	if want := []string{"a/firing", "c/firing", "d/firing", "g-1/firing"}; !slices.Equal(ids, want) {
		t.Fatalf("samples %v", ids)
	}
	if !slices.IsSorted(d.AlertIDs) || len(d.AlertIDs) != 5 {
		t.Fatalf("alert ids %v", d.AlertIDs)
	}
	// The id depends on the set, not the order.
	slices.Reverse(alerts)
	if again := Fold("ops", alerts, Options{}); again.ID != d.ID || again.ID == Fold("other", alerts, Options{}).ID {
		t.Fatal("digest id is not a function of receiver and alert set")
	}
}

func TestFoldSamplesResolvedAfterFiring(t *testing.T) {
	var alerts []events.AlertEvent
	for i := range 3 {
		alerts = append(alerts, device(fmt.Sprint("r", i), events.StatusResolved, events.SeverityWarning, nil))
	}
	for i := range 3 {
		alerts = append(alerts, device(fmt.Sprint("f", i), events.StatusFiring, events.SeverityWarning, nil))
	}
	d := Fold("ops", alerts, Options{Samples: 4})
	var ids []string
	for _, s := range d.Samples {
		ids = append(ids, s.DeviceID)
	}
	if want := []string{"f0", "f1", "f2", "r0"}; !slices.Equal(ids, want) {
		t.Fatalf("samples %v", ids)
	}
	if d.Samples[3].UntilMS != t0+300_000 {
		t.Fatalf("resolved sample %+v", d.Samples[3])
	}
}

// TestFoldGroupCounts: a firing group notification that counts its
// devices (12 new, 3 recovered, 140 still down) adds 152 firing and 3
// resolved devices; its listed devices count by their own status and the
// unlisted rest by what the counts leave; kinds are counted.
func TestFoldGroupCounts(t *testing.T) {
	sh := map[string]string{"site": "sh-01"}
	g := events.AlertEvent{
		V: 1, ID: "id-g", Fingerprint: "fp-g", Receiver: "ops", Status: events.StatusFiring, Kind: events.AlertDeviceOffline,
		Severity: events.SeverityCritical, GroupLabels: sh, DevicesTotal: 155, NewTotal: 12, ResolvedTotal: 3, FiringTotal: 140,
		StartsAtMS: t0, CreatedAtMS: t0 + 1000,
		Devices: []events.AlertDevice{
			{DeviceID: "n-1", Status: events.StatusFiring, SinceMS: t0},
			{DeviceID: "r-1", Status: events.StatusResolved, SinceMS: t0, UntilMS: t0 + 500},
		},
	}
	flap := device("f", events.StatusFiring, events.SeverityWarning, sh)
	flap.Kind = events.AlertDeviceFlapping
	d := Fold("ops", []events.AlertEvent{g, flap, device("x", events.StatusResolved, events.SeverityWarning, sh)}, Options{GroupBy: []string{"site"}})
	if d.FiringDevices != 153 || d.ResolvedDevices != 4 || d.FiringAlerts != 2 || d.ResolvedAlerts != 1 {
		t.Fatalf("counts %+v", d)
	}
	if want := []Group{{Name: "site=sh-01", Firing: 153, Resolved: 4}}; !reflect.DeepEqual(d.Groups, want) {
		t.Fatalf("groups %+v, want %+v", d.Groups, want)
	}
	if want := []KindCount{{events.AlertDeviceOffline, 2}, {events.AlertDeviceFlapping, 1}}; !reflect.DeepEqual(d.Kinds, want) {
		t.Fatalf("kinds %+v", d.Kinds)
	}
	var ids []string
	for _, s := range d.Samples {
		ids = append(ids, s.DeviceID+":"+string(s.Status))
	}
	if want := []string{"n-1:firing", "f:firing", "r-1:resolved", "x:resolved"}; !slices.Equal(ids, want) {
		t.Fatalf("samples %v, want %v", ids, want)
	}
	if d.Samples[2].UntilMS != t0+500 {
		t.Fatalf("sample %+v", d.Samples[2])
	}
}
