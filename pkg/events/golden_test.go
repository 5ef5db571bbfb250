package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/v1 from the Go values in golden_test.go")

// The golden events are built from the EMQX fixtures (client dev-42 on node
// emqx@10.0.0.11, connected at 1718000000123, keepalive timeout at
// 1718000300411) through the validating constructors, so the files pin both
// the wire shape and the id derivation.

func goldenPresenceConnected(t *testing.T) events.PresenceEvent {
	t.Helper()
	v, err := events.NewPresenceEvent(events.PresenceEvent{
		DeviceID:      "dev-42",
		Kind:          events.KindConnected,
		Node:          "emqx@10.0.0.11",
		BrokerTSMS:    1718000000123,
		ConnectedAtMS: 1718000000123,
		IP:            "203.0.113.7",
		Username:      "alice",
		Protocol:      "mqtt",
		ProtoVer:      5,
		KeepaliveS:    60,
		Source:        "emqx_sys_v5",
		ReceivedAtMS:  1718000000131,
	})
	return noErr(t, v, err)
}

func goldenPresenceDisconnected(t *testing.T) events.PresenceEvent {
	t.Helper()
	v, err := events.NewPresenceEvent(events.PresenceEvent{
		DeviceID:      "dev-42",
		Kind:          events.KindDisconnected,
		Reason:        events.NormalizeReason("keepalive_timeout"),
		RawReason:     "keepalive_timeout",
		Node:          "emqx@10.0.0.11",
		BrokerTSMS:    1718000300411,
		ConnectedAtMS: 1718000000123,
		IP:            "203.0.113.7",
		Username:      "alice",
		Protocol:      "mqtt",
		ProtoVer:      5,
		Source:        "emqx_sys_v5",
		ReceivedAtMS:  1718000300419,
	})
	return noErr(t, v, err)
}

func goldenPresenceDisconnectedAWS(t *testing.T) events.PresenceEvent {
	t.Helper()
	v, err := events.NewPresenceEvent(events.PresenceEvent{
		DeviceID:     "dev-42",
		Kind:         events.KindDisconnected,
		Reason:       events.NormalizeReason("MQTT_KEEP_ALIVE_TIMEOUT"),
		RawReason:    "MQTT_KEEP_ALIVE_TIMEOUT",
		Node:         "aws-iot",
		BrokerTSMS:   1718000300450,
		ConnVersion:  7,
		Source:       "aws_iot",
		ReceivedAtMS: 1718000300460,
	})
	return noErr(t, v, err)
}

func goldenFingerprint() string {
	return events.ContentID("fingerprint", string(events.AlertDeviceOffline), "dev-42")
}

func goldenAlertFiring(t *testing.T) events.AlertEvent {
	t.Helper()
	v, err := events.NewAlertEvent(events.AlertEvent{
		Fingerprint: goldenFingerprint(),
		Receiver:    "ops-dingtalk",
		Status:      events.StatusFiring,
		Kind:        events.AlertDeviceOffline,
		Severity:    events.SeverityCritical,
		GroupKey:    `{}:{device_id="dev-42"}`,
		GroupLabels: map[string]string{"device_id": "dev-42", "site": "sh-01"},
		Devices: []events.AlertDevice{{
			DeviceID: "dev-42",
			Status:   events.StatusFiring,
			Node:     "emqx@10.0.0.11",
			Reason:   events.ReasonKeepaliveTimeout,
			SinceMS:  1718000300411,
			Labels:   map[string]string{"gateway": "gw-7", "site": "sh-01"},
		}},
		DevicesTotal: 1,
		StartsAtMS:   1718000300411,
		CreatedAtMS:  1718000330411,
	})
	return noErr(t, v, err)
}

func goldenAlertResolved(t *testing.T) events.AlertEvent {
	t.Helper()
	v, err := events.NewAlertEvent(events.AlertEvent{
		Fingerprint: goldenFingerprint(),
		Receiver:    "ops-dingtalk",
		Status:      events.StatusResolved,
		Kind:        events.AlertDeviceOffline,
		Severity:    events.SeverityCritical,
		GroupKey:    `{}:{device_id="dev-42"}`,
		GroupLabels: map[string]string{"device_id": "dev-42", "site": "sh-01"},
		Devices: []events.AlertDevice{{
			DeviceID: "dev-42",
			Status:   events.StatusResolved,
			Node:     "emqx@10.0.0.11",
			Reason:   events.ReasonKeepaliveTimeout,
			SinceMS:  1718000300411,
			UntilMS:  1718000420123,
			Labels:   map[string]string{"gateway": "gw-7", "site": "sh-01"},
		}},
		DevicesTotal: 1,
		StartsAtMS:   1718000300411,
		EndsAtMS:     1718000420123,
		CreatedAtMS:  1718000420130,
	})
	return noErr(t, v, err)
}

func goldenAlertFiringSilenced(t *testing.T) events.AlertEvent {
	t.Helper()
	v, err := events.NewAlertEvent(events.AlertEvent{
		Fingerprint: events.ContentID("fingerprint", string(events.AlertGroupOutage), "site=sh-01"),
		Receiver:    "ops-feishu",
		Status:      events.StatusFiring,
		Kind:        events.AlertGroupOutage,
		Severity:    events.SeverityCritical,
		GroupKey:    `{}:{site="sh-01"}`,
		GroupLabels: map[string]string{"site": "sh-01"},
		Devices: []events.AlertDevice{
			{DeviceID: "dev-42", Status: events.StatusFiring, Node: "emqx@10.0.0.11", Reason: events.ReasonKeepaliveTimeout, SinceMS: 1718000300411},
			{DeviceID: "传感器 7.b", Status: events.StatusFiring, Node: "emqx@10.0.0.12", Reason: events.ReasonClosed, SinceMS: 1718000300412},
		},
		DevicesTotal:  120,
		StartsAtMS:    1718000300411,
		CreatedAtMS:   1718000330411,
		Silenced:      true,
		SilenceIDs:    []string{"sil-maint-sh01"},
		NewTotal:      115,
		ResolvedTotal: 3,
		FiringTotal:   2,
		KnownTotal:    150,
	})
	return noErr(t, v, err)
}

func goldenAlertFlapping(t *testing.T) events.AlertEvent {
	t.Helper()
	v, err := events.NewAlertEvent(events.AlertEvent{
		Fingerprint: events.ContentID("fingerprint", string(events.AlertDeviceFlapping), "dev-42"),
		Receiver:    "ops-dingtalk",
		Status:      events.StatusFiring,
		Kind:        events.AlertDeviceFlapping,
		Severity:    events.SeverityWarning,
		GroupKey:    `{}:{device_id="dev-42"}`,
		GroupLabels: map[string]string{"device_id": "dev-42"},
		Devices: []events.AlertDevice{
			{DeviceID: "dev-42", Status: events.StatusFiring, Node: "emqx@10.0.0.11", Reason: events.ReasonKeepaliveTimeout, SinceMS: 1718000300411},
		},
		StartsAtMS:  1718000300411,
		CreatedAtMS: 1718000300411,
		FlapCount:   7,
		Inhibited:   true,
		InhibitedBy: events.ContentID("fingerprint", string(events.AlertGroupOutage), "site=sh-01"),
		Tier:        1,
	})
	return noErr(t, v, err)
}

func goldenDelivery(t *testing.T) events.DeliveryEvent {
	t.Helper()
	a := goldenAlertFiring(t)
	v, err := events.NewDeliveryEvent(events.DeliveryEvent{
		AlertID:       a.ID,
		Fingerprint:   a.Fingerprint,
		AlertStatus:   a.Status,
		Receiver:      a.Receiver,
		Channel:       "dingtalk",
		Attempt:       1,
		Outcome:       events.OutcomeDelivered,
		HTTPStatus:    200,
		RemoteCode:    "0",
		RemoteMessage: "ok",
		Bytes:         512,
		LatencyMS:     87,
		AtMS:          1718000330450,
	})
	return noErr(t, v, err)
}

func goldenDeliveryPermanent(t *testing.T) events.DeliveryEvent {
	t.Helper()
	a := goldenAlertResolved(t)
	v, err := events.NewDeliveryEvent(events.DeliveryEvent{
		AlertID:       a.ID,
		Fingerprint:   a.Fingerprint,
		AlertStatus:   a.Status,
		Receiver:      a.Receiver,
		Channel:       "dingtalk",
		Attempt:       1,
		Outcome:       events.OutcomePermanent,
		HTTPStatus:    200,
		RemoteCode:    "310000",
		RemoteMessage: "keywords not in content",
		Hint:          "add the keyword 告警 to receiver ops-dingtalk, or the robot's keyword to its config",
		Bytes:         498,
		LatencyMS:     64,
		AtMS:          1718000420180,
	})
	return noErr(t, v, err)
}

func goldenNodeSilent(t *testing.T) events.NodeEvent {
	t.Helper()
	v, err := events.NewNodeEvent(events.NodeEvent{
		Node:       "emqx@10.0.0.11",
		Status:     events.NodeSilent,
		LastSeenMS: 1718000300000,
		AtMS:       1718000345000,
		Source:     "emqx_sys_heartbeat",
		Mark:       "86400123",
	})
	return noErr(t, v, err)
}

// golden is one file under testdata/v1 and the Go value it must hold.
type golden struct {
	file string
	typ  reflect.Type
	run  func(t *testing.T, path string)
}

func goldens(t *testing.T) []golden {
	return []golden{
		goldenOf(t, "presence_connected.json", goldenPresenceConnected),
		goldenOf(t, "presence_disconnected.json", goldenPresenceDisconnected),
		goldenOf(t, "presence_disconnected_aws.json", goldenPresenceDisconnectedAWS),
		goldenOf(t, "alert_firing.json", goldenAlertFiring),
		goldenOf(t, "alert_resolved.json", goldenAlertResolved),
		goldenOf(t, "alert_firing_silenced.json", goldenAlertFiringSilenced),
		goldenOf(t, "alert_flapping_inhibited.json", goldenAlertFlapping),
		goldenOf(t, "delivery.json", goldenDelivery),
		goldenOf(t, "delivery_permanent.json", goldenDeliveryPermanent),
		goldenOf(t, "node_silent.json", goldenNodeSilent),
	}
}

func goldenOf[T interface{ Validate() error }](t *testing.T, file string, build func(*testing.T) T) golden {
	return golden{
		file: file,
		typ:  reflect.TypeFor[T](),
		run: func(t *testing.T, path string) {
			checkGolden(t, path, build(t))
		},
	}
}

// encodeGolden is the one canonical form of a golden file: two-space
// indented JSON with a trailing newline.
func encodeGolden(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return append(b, '\n')
}

// checkGolden decodes the file strictly, validates it, re-encodes it and
// requires the very same bytes, and requires it to equal want. With -update
// it first rewrites the file from want.
func checkGolden[T interface{ Validate() error }](t *testing.T, path string, want T) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, encodeGolden(t, want), 0o644); err != nil {
			t.Fatalf("update: %v", err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -update to create it): %v", err)
	}

	var got T
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("strict decode: %v", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		t.Fatalf("trailing data after the event: %v", err)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if re := encodeGolden(t, got); !bytes.Equal(re, b) {
		t.Fatalf("re-encoding differs from the golden file: the event type changed shape (v1 allows only new optional fields)\n--- file\n%s\n--- re-encoded\n%s", b, re)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("golden file holds\n%+v\nthe constructors now build\n%+v", got, want)
	}
}

func TestGoldenV1(t *testing.T) {
	for _, g := range goldens(t) {
		t.Run(g.file, func(t *testing.T) {
			g.run(t, filepath.Join("testdata", "v1", g.file))
		})
	}
}

// TestGoldenV1FilesAreTested keeps testdata/v1 and the list above in step: a
// released golden file must never be dropped from the test.
func TestGoldenV1FilesAreTested(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "v1"))
	if err != nil {
		t.Fatal(err)
	}
	var onDisk, listed []string
	for _, e := range entries {
		onDisk = append(onDisk, e.Name())
	}
	for _, g := range goldens(t) {
		listed = append(listed, g.file)
	}
	sort.Strings(listed)
	if !slices.Equal(onDisk, listed) {
		t.Fatalf("testdata/v1 holds %v, the test checks %v", onDisk, listed)
	}
}

// TestGoldenV1CoversEveryField requires every JSON field of every event type
// to be set in at least one golden file, so that a change to any field's
// name or type breaks a golden test. A new optional field needs a new golden
// file (released files never change).
func TestGoldenV1CoversEveryField(t *testing.T) {
	seen := map[reflect.Type]map[string]bool{}
	mark := func(typ reflect.Type, obj map[string]any) {
		if seen[typ] == nil {
			seen[typ] = map[string]bool{}
		}
		for k := range obj {
			seen[typ][k] = true
		}
	}
	for _, g := range goldens(t) {
		b, err := os.ReadFile(filepath.Join("testdata", "v1", g.file))
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := json.Unmarshal(b, &obj); err != nil {
			t.Fatalf("%s: %v", g.file, err)
		}
		mark(g.typ, obj)
		if g.typ == reflect.TypeFor[events.AlertEvent]() {
			devs, _ := obj["devices"].([]any)
			for _, d := range devs {
				m, _ := d.(map[string]any)
				mark(reflect.TypeFor[events.AlertDevice](), m)
			}
		}
	}
	for _, typ := range eventTypes {
		for _, name := range jsonNames(typ) {
			if !seen[typ][name] {
				t.Errorf("%s.%s is not set in any golden file under testdata/v1", typ.Name(), name)
			}
		}
	}
}

// eventTypes are the types that travel as JSON.
var eventTypes = []reflect.Type{
	reflect.TypeFor[events.PresenceEvent](),
	reflect.TypeFor[events.AlertEvent](),
	reflect.TypeFor[events.AlertDevice](),
	reflect.TypeFor[events.DeliveryEvent](),
	reflect.TypeFor[events.NodeEvent](),
}

func jsonNames(typ reflect.Type) []string {
	var names []string
	for f := range typ.Fields() {
		if f.IsExported() {
			names = append(names, strings.Split(f.Tag.Get("json"), ",")[0])
		}
	}
	return names
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

func TestEventFieldsHaveJSONTags(t *testing.T) {
	for _, typ := range eventTypes {
		names := map[string]string{}
		for f := range typ.Fields() {
			if !f.IsExported() {
				continue
			}
			tag, ok := f.Tag.Lookup("json")
			if !ok {
				t.Errorf("%s.%s has no json tag", typ.Name(), f.Name)
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if !snakeCase.MatchString(name) {
				t.Errorf("%s.%s: json name %q is not snake_case", typ.Name(), f.Name, name)
			}
			if opts != "" && opts != "omitempty" {
				t.Errorf("%s.%s: json options %q: only omitempty is used on the wire types", typ.Name(), f.Name, opts)
			}
			if prev, dup := names[name]; dup {
				t.Errorf("%s.%s and %s both use json name %q", typ.Name(), f.Name, prev, name)
			}
			names[name] = f.Name
		}
	}
}

// noErr returns v, failing the test if err is set.
func noErr[T any](t *testing.T, v T, err error) T {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	return v
}
