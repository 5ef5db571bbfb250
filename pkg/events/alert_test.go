package events_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

func validAlert() events.AlertEvent {
	return events.AlertEvent{
		Fingerprint: "fp-dev-42",
		Receiver:    "ops-dingtalk",
		Status:      events.StatusFiring,
		Kind:        events.AlertDeviceOffline,
		Severity:    events.SeverityCritical,
		GroupKey:    `{}:{device_id="dev-42"}`,
		Devices: []events.AlertDevice{
			{DeviceID: "dev-42", Status: events.StatusFiring, SinceMS: 1718000300411},
		},
		DevicesTotal: 1,
		StartsAtMS:   1718000300411,
		CreatedAtMS:  1718000330411,
	}
}

func devices(n int) []events.AlertDevice {
	ds := make([]events.AlertDevice, n)
	for i := range ds {
		ds[i] = events.AlertDevice{DeviceID: fmt.Sprintf("dev-%03d", i), Status: events.StatusFiring, SinceMS: 1718000300411}
	}
	return ds
}

func TestNewAlertEventRejects(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*events.AlertEvent)
		want   string
	}{
		{"empty fingerprint", func(a *events.AlertEvent) { a.Fingerprint = "" }, "invalid event: fingerprint is empty"},
		{"empty receiver", func(a *events.AlertEvent) { a.Receiver = "" }, "invalid event: receiver is empty"},
		{"empty status", func(a *events.AlertEvent) { a.Status = "" }, `invalid event: status "" is neither firing nor resolved`},
		{"unknown status", func(a *events.AlertEvent) { a.Status = "pending" }, `invalid event: status "pending" is neither firing nor resolved`},
		{"empty kind", func(a *events.AlertEvent) { a.Kind = "" }, "invalid event: kind is empty"},
		{"empty severity", func(a *events.AlertEvent) { a.Severity = "" }, `invalid event: severity "" is not info, warning or critical`},
		{"unknown severity", func(a *events.AlertEvent) { a.Severity = "major" }, `invalid event: severity "major" is not info, warning or critical`},
		{"zero start", func(a *events.AlertEvent) { a.StartsAtMS = 0 }, "invalid event: starts_at_ms 0 is not a positive epoch-ms time"},
		{"negative start", func(a *events.AlertEvent) { a.StartsAtMS = -1 }, "invalid event: starts_at_ms -1 is not a positive epoch-ms time"},
		{"resolved without end", func(a *events.AlertEvent) { a.Status = events.StatusResolved }, "invalid event: a resolved alert needs ends_at_ms >= starts_at_ms"},
		{"resolved before start", func(a *events.AlertEvent) {
			a.Status, a.EndsAtMS = events.StatusResolved, a.StartsAtMS-1
		}, "invalid event: a resolved alert needs ends_at_ms >= starts_at_ms"},
		{"device without id", func(a *events.AlertEvent) { a.Devices = append(devices(1), events.AlertDevice{}) }, "invalid event: devices[1].device_id is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := validAlert()
			tt.modify(&a)
			got, err := events.NewAlertEvent(a)
			if err == nil {
				t.Fatalf("NewAlertEvent accepted %+v", got)
			}
			if err.Error() != tt.want {
				t.Fatalf("error %q, want %q", err, tt.want)
			}
			if !errors.Is(err, events.ErrInvalidEvent) {
				t.Fatalf("error %q does not wrap ErrInvalidEvent", err)
			}
			if !reflect.DeepEqual(got, events.AlertEvent{}) {
				t.Fatalf("returned %+v with the error, want the zero event", got)
			}
		})
	}
}

// TestAlertValidateRejects covers the rules NewAlertEvent repairs itself
// (id, version, device cap, total) on events read from the wire.
func TestAlertValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*events.AlertEvent)
		want   string
	}{
		{"missing version", func(a *events.AlertEvent) { a.V = 0 }, "invalid event: v is 0, want 1"},
		{"future version", func(a *events.AlertEvent) { a.V = 2 }, "invalid event: v is 2, want 1"},
		{"empty id", func(a *events.AlertEvent) { a.ID = "" }, "invalid event: id is empty"},
		{"too many devices", func(a *events.AlertEvent) {
			a.Devices, a.DevicesTotal = devices(events.MaxAlertDevices+1), 500
		}, "invalid event: 101 devices listed, limit 100"},
		{"total below listed", func(a *events.AlertEvent) { a.Devices, a.DevicesTotal = devices(2), 1 }, "invalid event: devices_total 1 is below the 2 devices listed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := events.NewAlertEvent(validAlert())
			if err != nil {
				t.Fatal(err)
			}
			tt.modify(&a)
			if err := a.Validate(); err == nil || err.Error() != tt.want {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestNewAlertEventAccepts(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*events.AlertEvent)
	}{
		{"firing", func(*events.AlertEvent) {}},
		{"resolved", func(a *events.AlertEvent) { a.Status, a.EndsAtMS = events.StatusResolved, a.StartsAtMS+60000 }},
		{"resolved at its start", func(a *events.AlertEvent) { a.Status, a.EndsAtMS = events.StatusResolved, a.StartsAtMS }},
		{"info", func(a *events.AlertEvent) { a.Severity = events.SeverityInfo }},
		{"warning", func(a *events.AlertEvent) { a.Severity = events.SeverityWarning }},
		{"kinds are an open set", func(a *events.AlertEvent) { a.Kind = "site_degraded" }},
		{"no devices listed", func(a *events.AlertEvent) { a.Kind, a.Devices, a.DevicesTotal = events.AlertNodeSilent, nil, 0 }},
		{"devices at the cap", func(a *events.AlertEvent) { a.Devices, a.DevicesTotal = devices(events.MaxAlertDevices), 0 }},
		{"silenced", func(a *events.AlertEvent) { a.Silenced = true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := validAlert()
			tt.modify(&a)
			got, err := events.NewAlertEvent(a)
			if err != nil {
				t.Fatal(err)
			}
			if got.V != events.Version || got.ID != events.AlertID(got) {
				t.Fatalf("V %d ID %q, want %d and AlertID %q", got.V, got.ID, events.Version, events.AlertID(got))
			}
			if err := got.Validate(); err != nil {
				t.Fatalf("Validate of a constructed alert: %v", err)
			}
		})
	}
}

func TestNewAlertEventCapsDevices(t *testing.T) {
	tests := []struct {
		name      string
		listed    int
		total     int
		wantList  int
		wantTotal int
	}{
		{"total filled in", 3, 0, 3, 3},
		{"total kept when larger", 3, 5000, 3, 5000},
		{"total raised to the list", 3, 2, 3, 3},
		{"list capped, total counts all", 150, 0, events.MaxAlertDevices, 150},
		{"list capped, larger total kept", 150, 5000, events.MaxAlertDevices, 5000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := validAlert()
			a.Devices, a.DevicesTotal = devices(tt.listed), tt.total
			got, err := events.NewAlertEvent(a)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Devices) != tt.wantList || got.DevicesTotal != tt.wantTotal {
				t.Fatalf("%d listed, total %d; want %d listed, total %d", len(got.Devices), got.DevicesTotal, tt.wantList, tt.wantTotal)
			}
			if !reflect.DeepEqual(got.Devices, a.Devices[:tt.wantList]) {
				t.Fatal("the capped list is not the head of the input list")
			}
		})
	}
}

func TestNewAlertEventKeepsCallerID(t *testing.T) {
	a := validAlert()
	a.ID = "repeat-2"
	got, err := events.NewAlertEvent(a)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "repeat-2" {
		t.Fatalf("ID = %q, want the caller's repeat-2", got.ID)
	}
}

func TestAlertIDDeterminism(t *testing.T) {
	base := events.AlertID(validAlert())
	if len(base) != 32 {
		t.Fatalf("id %q is %d characters, want 32", base, len(base))
	}
	if again := events.AlertID(validAlert()); again != base {
		t.Fatalf("same content, ids %q and %q", base, again)
	}
	identifying := []struct {
		name   string
		modify func(*events.AlertEvent)
	}{
		{"receiver", func(a *events.AlertEvent) { a.Receiver = "ops-feishu" }},
		{"fingerprint", func(a *events.AlertEvent) { a.Fingerprint = "fp-dev-43" }},
		{"status", func(a *events.AlertEvent) { a.Status = events.StatusResolved }},
		{"start", func(a *events.AlertEvent) { a.StartsAtMS++ }},
		{"end", func(a *events.AlertEvent) { a.EndsAtMS = a.StartsAtMS + 1 }},
		{"receiver and fingerprint swapped", func(a *events.AlertEvent) { a.Receiver, a.Fingerprint = a.Fingerprint, a.Receiver }},
	}
	for _, tt := range identifying {
		a := validAlert()
		tt.modify(&a)
		if got := events.AlertID(a); got == base {
			t.Errorf("changing %s kept id %q", tt.name, got)
		}
	}
	incidental := []struct {
		name   string
		modify func(*events.AlertEvent)
	}{
		{"severity", func(a *events.AlertEvent) { a.Severity = events.SeverityWarning }},
		{"kind", func(a *events.AlertEvent) { a.Kind = events.AlertGroupOutage }},
		{"group key", func(a *events.AlertEvent) { a.GroupKey = "other" }},
		{"devices", func(a *events.AlertEvent) { a.Devices, a.DevicesTotal = devices(7), 9 }},
		{"created at", func(a *events.AlertEvent) { a.CreatedAtMS += 60000 }},
		{"silenced", func(a *events.AlertEvent) { a.Silenced = true }},
	}
	for _, tt := range incidental {
		a := validAlert()
		tt.modify(&a)
		if got := events.AlertID(a); got != base {
			t.Errorf("changing %s changed the id from %q to %q", tt.name, base, got)
		}
	}
}

func TestAlertSubject(t *testing.T) {
	a := validAlert()
	if got, want := a.Subject(), "alerts.v1.ops-dingtalk"; got != want {
		t.Fatalf("Subject() = %q, want %q", got, want)
	}
	a.Receiver = "ops.team *"
	if got, want := a.Subject(), "alerts.v1.ops%2Eteam%20%2A"; got != want {
		t.Fatalf("Subject() = %q, want %q", got, want)
	}
}
