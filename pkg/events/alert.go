package events

import (
	"strconv"
)

// MaxAlertDevices caps the device list carried by one AlertEvent;
// DevicesTotal always says how many there are.
const MaxAlertDevices = 100

// AlertStatus is firing or resolved.
type AlertStatus string

// Alert statuses.
const (
	StatusFiring   AlertStatus = "firing"
	StatusResolved AlertStatus = "resolved"
)

// AlertKind names what an alert is about.
type AlertKind string

// Alert kinds.
const (
	AlertDeviceOffline  AlertKind = "device_offline"
	AlertDeviceFlapping AlertKind = "device_flapping"
	AlertGroupOutage    AlertKind = "group_outage"
	AlertNodeSilent     AlertKind = "node_silent"
)

// Severity ranks an alert.
type Severity string

// Severities, lowest first.
const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// AlertDevice is one device covered by an alert.
type AlertDevice struct {
	// DeviceID is the MQTT client id.
	DeviceID string `json:"device_id"`
	// Status is the device's own status in this notification.
	Status AlertStatus `json:"status"`
	// Node is the broker node of the device's last connection.
	Node string `json:"node,omitempty"`
	// Reason is the normalised reason of the disconnect that started the outage.
	Reason Reason `json:"reason,omitempty"`
	// SinceMS is when the device went offline (broker time).
	SinceMS int64 `json:"since_ms"`
	// UntilMS is when it came back (resolved only).
	UntilMS int64 `json:"until_ms,omitempty"`
	// Labels are the device's labels.
	Labels map[string]string `json:"labels,omitempty"`
}

// AlertEvent is one notification for one receiver and one group, decided by
// the evaluator and delivered by the notifier.
type AlertEvent struct {
	// V is the schema version (1).
	V int `json:"v"`
	// ID is the idempotency key: the same decision always has the same id.
	ID string `json:"id"`
	// Fingerprint is stable for one alert across its firing and resolved
	// notifications.
	Fingerprint string `json:"fingerprint"`
	// Receiver names the configured receiver to notify.
	Receiver string `json:"receiver"`
	// Status is firing or resolved.
	Status AlertStatus `json:"status"`
	// Kind says what the alert is about.
	Kind AlertKind `json:"kind"`
	// Severity ranks it.
	Severity Severity `json:"severity"`
	// GroupKey identifies the group of alerts this notification covers.
	GroupKey string `json:"group_key"`
	// GroupLabels are the labels shared by the group.
	GroupLabels map[string]string `json:"group_labels,omitempty"`
	// Devices lists up to MaxAlertDevices devices covered.
	Devices []AlertDevice `json:"devices"`
	// DevicesTotal is the number of devices covered, listed or not.
	DevicesTotal int `json:"devices_total"`
	// StartsAtMS is when the alert's condition began.
	StartsAtMS int64 `json:"starts_at_ms"`
	// EndsAtMS is when it ended (resolved only).
	EndsAtMS int64 `json:"ends_at_ms,omitempty"`
	// CreatedAtMS is the evaluator's (injected) clock at the decision.
	CreatedAtMS int64 `json:"created_at_ms"`
	// Silenced marks an alert that is recorded but must not be delivered.
	Silenced bool `json:"silenced,omitempty"`
	// SilenceIDs names the silences that matched a silenced alert.
	SilenceIDs []string `json:"silence_ids,omitempty"`
	// Inhibited marks an alert folded into another one (a device alert
	// covered by its group's group_outage): recorded, not delivered.
	Inhibited bool `json:"inhibited,omitempty"`
	// InhibitedBy is the fingerprint of the alert that covers an inhibited one.
	InhibitedBy string `json:"inhibited_by,omitempty"`

	// NewTotal, ResolvedTotal and FiringTotal count the devices of a group
	// notification by their status in it (new offline, recovered, still
	// offline), listed or not: "12 new offline, 3 recovered, 140 still down".
	NewTotal      int `json:"new_total,omitempty"`
	ResolvedTotal int `json:"resolved_total,omitempty"`
	FiringTotal   int `json:"firing_total,omitempty"`
	// KnownTotal is, for a group_outage or node_silent alert, how many
	// devices the group (or node) has in all, so that DevicesTotal /
	// KnownTotal is the share that is down.
	KnownTotal int `json:"known_total,omitempty"`
	// FlapCount is, for a device_flapping alert, how many disconnects the
	// device had in the flap window.
	FlapCount int `json:"flap_count,omitempty"`
	// Tier is the escalation tier (0 = first) of a device_offline alert.
	Tier int `json:"tier,omitempty"`
}

// NewAlertEvent validates a, caps its device list, sets V, and derives the ID
// from fingerprint, receiver, status and start time when a.ID is empty.
func NewAlertEvent(a AlertEvent) (AlertEvent, error) {
	a.V = Version
	if a.DevicesTotal < len(a.Devices) {
		a.DevicesTotal = len(a.Devices)
	}
	if len(a.Devices) > MaxAlertDevices {
		a.Devices = a.Devices[:MaxAlertDevices]
	}
	if a.ID == "" {
		a.ID = AlertID(a)
	}
	if err := a.Validate(); err != nil {
		return AlertEvent{}, err
	}
	return a, nil
}

// AlertID derives the default id of an alert notification.
func AlertID(a AlertEvent) string {
	return ContentID("alert.v1", a.Receiver, a.Fingerprint, string(a.Status),
		strconv.FormatInt(a.StartsAtMS, 10), strconv.FormatInt(a.EndsAtMS, 10))
}

// Validate checks an alert read from the wire.
func (a AlertEvent) Validate() error {
	switch {
	case a.V != Version:
		return invalid("v is %d, want %d", a.V, Version)
	case a.ID == "":
		return invalid("id is empty")
	case a.Fingerprint == "":
		return invalid("fingerprint is empty")
	case a.Receiver == "":
		return invalid("receiver is empty")
	case a.Status != StatusFiring && a.Status != StatusResolved:
		return invalid("status %q is neither firing nor resolved", a.Status)
	case a.Kind == "":
		return invalid("kind is empty")
	case a.Severity != SeverityInfo && a.Severity != SeverityWarning && a.Severity != SeverityCritical:
		return invalid("severity %q is not info, warning or critical", a.Severity)
	case a.StartsAtMS <= 0:
		return invalid("starts_at_ms %d is not a positive epoch-ms time", a.StartsAtMS)
	case a.Status == StatusResolved && a.EndsAtMS < a.StartsAtMS:
		return invalid("a resolved alert needs ends_at_ms >= starts_at_ms")
	case len(a.Devices) > MaxAlertDevices:
		return invalid("%d devices listed, limit %d", len(a.Devices), MaxAlertDevices)
	case a.DevicesTotal < len(a.Devices):
		return invalid("devices_total %d is below the %d devices listed", a.DevicesTotal, len(a.Devices))
	}
	for i, d := range a.Devices {
		if d.DeviceID == "" {
			return invalid("devices[%d].device_id is empty", i)
		}
	}
	return nil
}

// Subject returns the alert's subject.
func (a AlertEvent) Subject() string { return AlertSubject(a.Receiver) }
