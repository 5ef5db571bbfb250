package events_test

import (
	"errors"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

func validDelivery() events.DeliveryEvent {
	return events.DeliveryEvent{
		AlertID:     "5e1f0a0c3f0e4f2b9d1a7c6b5a4f3e2d",
		Fingerprint: "fp-dev-42",
		AlertStatus: events.StatusFiring,
		Receiver:    "ops-dingtalk",
		Channel:     "dingtalk",
		Attempt:     1,
		Outcome:     events.OutcomeDelivered,
		HTTPStatus:  200,
		RemoteCode:  "0",
		LatencyMS:   87,
		AtMS:        1718000330450,
	}
}

func TestNewDeliveryEventRejects(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*events.DeliveryEvent)
		want   string
	}{
		{"empty alert id", func(d *events.DeliveryEvent) { d.AlertID = "" }, "invalid event: alert_id is empty"},
		{"empty receiver", func(d *events.DeliveryEvent) { d.Receiver = "" }, "invalid event: receiver is empty"},
		{"empty channel", func(d *events.DeliveryEvent) { d.Channel = "" }, "invalid event: channel is empty"},
		{"attempt zero", func(d *events.DeliveryEvent) { d.Attempt = 0 }, "invalid event: attempt 0 is below 1"},
		{"negative attempt", func(d *events.DeliveryEvent) { d.Attempt = -2 }, "invalid event: attempt -2 is below 1"},
		{"zero time", func(d *events.DeliveryEvent) { d.AtMS = 0 }, "invalid event: at_ms 0 is not a positive epoch-ms time"},
		{"empty outcome", func(d *events.DeliveryEvent) { d.Outcome = "" }, `invalid event: outcome "" is unknown`},
		{"unknown outcome", func(d *events.DeliveryEvent) { d.Outcome = "failed" }, `invalid event: outcome "failed" is unknown`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := validDelivery()
			tt.modify(&d)
			got, err := events.NewDeliveryEvent(d)
			if err == nil {
				t.Fatalf("NewDeliveryEvent accepted %+v", got)
			}
			if err.Error() != tt.want {
				t.Fatalf("error %q, want %q", err, tt.want)
			}
			if !errors.Is(err, events.ErrInvalidEvent) {
				t.Fatalf("error %q does not wrap ErrInvalidEvent", err)
			}
			if got != (events.DeliveryEvent{}) {
				t.Fatalf("returned %+v with the error, want the zero event", got)
			}
		})
	}
}

func TestDeliveryValidateChecksVersionAndID(t *testing.T) {
	d, err := events.NewDeliveryEvent(validDelivery())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("Validate of a constructed event: %v", err)
	}
	wrongV := d
	wrongV.V = 0
	if err := wrongV.Validate(); err == nil || err.Error() != "invalid event: v is 0, want 1" {
		t.Fatalf("v 0: error %v", err)
	}
	tampered := d
	tampered.Attempt = 2
	want := `invalid event: id "` + d.ID + `" does not match the event content`
	if err := tampered.Validate(); err == nil || err.Error() != want {
		t.Fatalf("tampered: error %v, want %q", err, want)
	}
}

func TestNewDeliveryEventAcceptsEveryOutcome(t *testing.T) {
	for _, o := range []events.Outcome{events.OutcomeDelivered, events.OutcomeRetryable, events.OutcomeRateLimited, events.OutcomePermanent} {
		d := validDelivery()
		d.Outcome = o
		d.V, d.ID = 9, "replaced"
		got, err := events.NewDeliveryEvent(d)
		if err != nil {
			t.Fatalf("%s: %v", o, err)
		}
		d.V, d.ID = events.Version, got.ID
		if got != d {
			t.Fatalf("%s: NewDeliveryEvent changed more than V and ID:\n got %+v\nwant %+v", o, got, d)
		}
	}
}

func TestDeliveryIDDeterminism(t *testing.T) {
	build := func(modify func(*events.DeliveryEvent)) string {
		t.Helper()
		d := validDelivery()
		modify(&d)
		got, err := events.NewDeliveryEvent(d)
		if err != nil {
			t.Fatal(err)
		}
		return got.ID
	}
	base := build(func(*events.DeliveryEvent) {})
	if len(base) != 32 {
		t.Fatalf("id %q is %d characters, want 32", base, len(base))
	}
	if again := build(func(*events.DeliveryEvent) {}); again != base {
		t.Fatalf("same content, ids %q and %q", base, again)
	}
	identifying := map[string]func(*events.DeliveryEvent){
		"alert id": func(d *events.DeliveryEvent) { d.AlertID = "other" },
		"receiver": func(d *events.DeliveryEvent) { d.Receiver = "ops-feishu" },
		"attempt":  func(d *events.DeliveryEvent) { d.Attempt = 2 },
	}
	for name, modify := range identifying {
		if got := build(modify); got == base {
			t.Errorf("changing %s kept id %q", name, got)
		}
	}
	// A record of one attempt has one id, whatever the attempt's result.
	incidental := map[string]func(*events.DeliveryEvent){
		"outcome":  func(d *events.DeliveryEvent) { d.Outcome = events.OutcomeRetryable },
		"channel":  func(d *events.DeliveryEvent) { d.Channel = "feishu" },
		"latency":  func(d *events.DeliveryEvent) { d.LatencyMS = 1 },
		"time":     func(d *events.DeliveryEvent) { d.AtMS++ },
		"remote":   func(d *events.DeliveryEvent) { d.RemoteCode, d.RemoteMessage = "-1", "busy" },
		"response": func(d *events.DeliveryEvent) { d.HTTPStatus, d.Bytes, d.Hint = 502, 10, "retry" },
	}
	for name, modify := range incidental {
		if got := build(modify); got != base {
			t.Errorf("changing %s changed the id from %q to %q", name, base, got)
		}
	}
}

func TestOutcomeFinal(t *testing.T) {
	tests := []struct {
		o    events.Outcome
		want bool
	}{
		{events.OutcomeDelivered, true},
		{events.OutcomePermanent, true},
		{events.OutcomeRetryable, false},
		{events.OutcomeRateLimited, false},
		{"", false},
	}
	for _, tt := range tests {
		if got := tt.o.Final(); got != tt.want {
			t.Errorf("Outcome(%q).Final() = %v, want %v", tt.o, got, tt.want)
		}
	}
}

func TestDeliverySubject(t *testing.T) {
	d := validDelivery()
	if got, want := d.Subject(), "deliveries.v1.ops-dingtalk"; got != want {
		t.Fatalf("Subject() = %q, want %q", got, want)
	}
}
