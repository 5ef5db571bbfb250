package events_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// validPresence is a disconnect from the v5 $SYS fixture.
func validPresence() events.PresenceEvent {
	return events.PresenceEvent{
		DeviceID:      "dev-42",
		Kind:          events.KindDisconnected,
		Reason:        events.ReasonKeepaliveTimeout,
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
	}
}

func TestNewPresenceEventRejects(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*events.PresenceEvent)
		want   string
	}{
		{"empty device id", func(e *events.PresenceEvent) { e.DeviceID = "" }, "invalid event: device_id is empty"},
		{"device id too long", func(e *events.PresenceEvent) { e.DeviceID = strings.Repeat("d", events.MaxDeviceIDLen+1) }, "invalid event: device_id is 65536 bytes, limit 65535"},
		{"device id not utf-8", func(e *events.PresenceEvent) { e.DeviceID = "dev-\xff" }, "invalid event: device_id is not valid UTF-8"},
		{"empty kind", func(e *events.PresenceEvent) { e.Kind = "" }, `invalid event: kind "" is neither connected nor disconnected`},
		{"unknown kind", func(e *events.PresenceEvent) { e.Kind = "online" }, `invalid event: kind "online" is neither connected nor disconnected`},
		{"empty node", func(e *events.PresenceEvent) { e.Node = "" }, "invalid event: node is empty"},
		{"zero broker time", func(e *events.PresenceEvent) { e.BrokerTSMS = 0 }, "invalid event: broker_ts_ms 0 is not a positive epoch-ms time"},
		{"negative broker time", func(e *events.PresenceEvent) { e.BrokerTSMS = -1 }, "invalid event: broker_ts_ms -1 is not a positive epoch-ms time"},
		{"negative connected_at", func(e *events.PresenceEvent) { e.ConnectedAtMS = -5 }, "invalid event: connected_at_ms -5 is negative"},
		{"empty source", func(e *events.PresenceEvent) { e.Source = "" }, "invalid event: source is empty"},
		{"connected with reason", func(e *events.PresenceEvent) { e.Kind = events.KindConnected; e.RawReason = "" }, "invalid event: a connected event has no reason"},
		{"connected with raw reason", func(e *events.PresenceEvent) { e.Kind = events.KindConnected; e.Reason = "" }, "invalid event: a connected event has no reason"},
		{"disconnected without reason", func(e *events.PresenceEvent) { e.Reason = "" }, `invalid event: a disconnected event needs a reason (use "other" when unknown)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := validPresence()
			tt.modify(&e)
			got, err := events.NewPresenceEvent(e)
			if err == nil {
				t.Fatalf("NewPresenceEvent accepted %+v", got)
			}
			if err.Error() != tt.want {
				t.Fatalf("error %q, want %q", err, tt.want)
			}
			if !errors.Is(err, events.ErrInvalidEvent) {
				t.Fatalf("error %q does not wrap ErrInvalidEvent", err)
			}
			if got != (events.PresenceEvent{}) {
				t.Fatalf("returned %+v with the error, want the zero event", got)
			}
			// Validate applies the same rules to events read from the wire.
			e.V, e.ID = events.Version, events.PresenceID(e)
			if err := e.Validate(); err == nil || err.Error() != tt.want {
				t.Fatalf("Validate: error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestNewPresenceEventAccepts(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*events.PresenceEvent)
	}{
		{"fixture disconnect", func(*events.PresenceEvent) {}},
		{"connected", func(e *events.PresenceEvent) { e.Kind, e.Reason, e.RawReason = events.KindConnected, "", "" }},
		{"device id at the limit", func(e *events.PresenceEvent) { e.DeviceID = strings.Repeat("d", events.MaxDeviceIDLen) }},
		{"device id with subject characters and unicode", func(e *events.PresenceEvent) { e.DeviceID = "plant 7/line.3*>设备 %" }},
		{"connected_at unknown", func(e *events.PresenceEvent) { e.ConnectedAtMS = 0 }},
		{"only required fields", func(e *events.PresenceEvent) {
			*e = events.PresenceEvent{DeviceID: "d", Kind: events.KindDisconnected, Reason: events.ReasonOther, Node: "n", BrokerTSMS: 1, Source: "s"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := validPresence()
			tt.modify(&in)
			in.V, in.ID = 7, "caller-set ids are replaced"
			got, err := events.NewPresenceEvent(in)
			if err != nil {
				t.Fatal(err)
			}
			if got.V != events.Version {
				t.Fatalf("V = %d, want %d", got.V, events.Version)
			}
			if want := events.PresenceID(got); got.ID != want {
				t.Fatalf("ID = %q, want PresenceID %q", got.ID, want)
			}
			in.V, in.ID = got.V, got.ID
			if got != in {
				t.Fatalf("NewPresenceEvent changed more than V and ID:\n got %+v\nwant %+v", got, in)
			}
			if err := got.Validate(); err != nil {
				t.Fatalf("Validate of a constructed event: %v", err)
			}
		})
	}
}

func TestPresenceValidateChecksVersionAndID(t *testing.T) {
	e, err := events.NewPresenceEvent(validPresence())
	if err != nil {
		t.Fatal(err)
	}
	wrongV := e
	wrongV.V = 2
	if err := wrongV.Validate(); err == nil || err.Error() != "invalid event: v is 2, want 1" {
		t.Fatalf("v 2: error %v", err)
	}
	missingV := e
	missingV.V = 0
	if err := missingV.Validate(); err == nil || err.Error() != "invalid event: v is 0, want 1" {
		t.Fatalf("v 0: error %v", err)
	}
	tampered := e
	tampered.BrokerTSMS++
	want := `invalid event: id "` + e.ID + `" does not match the event content`
	if err := tampered.Validate(); err == nil || err.Error() != want {
		t.Fatalf("tampered: error %v, want %q", err, want)
	}
}

func TestPresenceIDDeterminism(t *testing.T) {
	base, err := events.NewPresenceEvent(validPresence())
	if err != nil {
		t.Fatal(err)
	}
	if len(base.ID) != 32 {
		t.Fatalf("id %q is %d characters, want 32", base.ID, len(base.ID))
	}
	again, err := events.NewPresenceEvent(validPresence())
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != base.ID {
		t.Fatalf("same content, ids %q and %q", base.ID, again.ID)
	}

	// What identifies the broker event changes the id.
	identifying := []struct {
		name   string
		modify func(*events.PresenceEvent)
	}{
		{"device id", func(e *events.PresenceEvent) { e.DeviceID = "dev-43" }},
		{"node", func(e *events.PresenceEvent) { e.Node = "emqx@10.0.0.12" }},
		{"kind", func(e *events.PresenceEvent) { e.Kind, e.Reason, e.RawReason = events.KindConnected, "", "" }},
		{"broker time", func(e *events.PresenceEvent) { e.BrokerTSMS++ }},
		{"connected_at", func(e *events.PresenceEvent) { e.ConnectedAtMS++ }},
		{"conn version", func(e *events.PresenceEvent) { e.ConnVersion = 7 }},
		{"device id and node swapped", func(e *events.PresenceEvent) { e.DeviceID, e.Node = e.Node, e.DeviceID }},
	}
	for _, tt := range identifying {
		t.Run("changes with "+tt.name, func(t *testing.T) {
			e := validPresence()
			tt.modify(&e)
			got, err := events.NewPresenceEvent(e)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID == base.ID {
				t.Fatalf("changing %s kept id %q", tt.name, got.ID)
			}
		})
	}

	// The same event seen through another source, by another replica or at
	// another time keeps its id, so JetStream stores it once.
	incidental := []struct {
		name   string
		modify func(*events.PresenceEvent)
	}{
		{"source", func(e *events.PresenceEvent) { e.Source = "emqx_events_v5" }},
		{"received at", func(e *events.PresenceEvent) { e.ReceivedAtMS += 5000 }},
		{"raw reason", func(e *events.PresenceEvent) { e.RawReason = "{shutdown,keepalive_timeout}" }},
		{"reason", func(e *events.PresenceEvent) { e.Reason = events.ReasonOther }},
		{"ip", func(e *events.PresenceEvent) { e.IP = "" }},
		{"username", func(e *events.PresenceEvent) { e.Username = "" }},
		{"protocol", func(e *events.PresenceEvent) { e.Protocol, e.ProtoVer, e.KeepaliveS = "", 0, 0 }},
	}
	for _, tt := range incidental {
		t.Run("keeps with "+tt.name, func(t *testing.T) {
			e := validPresence()
			tt.modify(&e)
			got, err := events.NewPresenceEvent(e)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != base.ID {
				t.Fatalf("changing %s changed the id from %q to %q", tt.name, base.ID, got.ID)
			}
		})
	}
}

func TestNormalizeReason(t *testing.T) {
	tests := []struct {
		raw  string
		want events.Reason
	}{
		// contracts/emqx.md, EMQX reasons.
		{"normal", events.ReasonNormal},
		{"kicked", events.ReasonKicked},
		{"discarded", events.ReasonDiscarded},
		{"takenover", events.ReasonTakenOver},
		{"takeovered", events.ReasonTakenOver},
		{"keepalive_timeout", events.ReasonKeepaliveTimeout},
		{"tcp_closed", events.ReasonClosed},
		{"ssl_closed", events.ReasonClosed},
		{"closed", events.ReasonClosed},
		{"econnreset", events.ReasonSocketError},
		{"etimedout", events.ReasonSocketError},
		{"einval", events.ReasonSocketError},
		{"enotconn", events.ReasonSocketError},
		{"epipe", events.ReasonSocketError},
		{"not_authorized", events.ReasonNotAuthorized},
		{"protocol_error", events.ReasonProtocolError},
		{"packet_too_large", events.ReasonProtocolError},
		{"quota_exceeded", events.ReasonProtocolError},
		{"use_another_server", events.ReasonServerShutdown},
		{"tls_alert", events.ReasonSocketError},
		{"internal_error", events.ReasonSocketError},
		// Tuples, collapsed as EMQX collapses them.
		{"{tls_alert,{unknown_ca,\"TLS server: In state certify received CLIENT ALERT: Fatal - Unknown CA\"}}", events.ReasonSocketError},
		{"{tls_alert,{handshake_failure,\"x\"}}", events.ReasonSocketError},
		{"{ssl_error,closed}", events.ReasonSocketError},
		{"{shutdown,takenover}", events.ReasonTakenOver},
		{"{shutdown, discarded}", events.ReasonDiscarded},
		{"{shutdown,keepalive_timeout}", events.ReasonKeepaliveTimeout},
		{"{shutdown,'normal'}", events.ReasonNormal},
		{"{shutdown}", events.ReasonServerShutdown},
		{"{tcp_closed}", events.ReasonClosed},
		// AWS IoT Core lifecycle disconnectReason.
		{"MQTT_KEEP_ALIVE_TIMEOUT", events.ReasonKeepaliveTimeout},
		{"CONNECTION_LOST", events.ReasonClosed},
		{"DUPLICATE_CLIENTID", events.ReasonDiscarded},
		{"CLIENT_INITIATED_DISCONNECT", events.ReasonNormal},
		{"AUTH_ERROR", events.ReasonNotAuthorized},
		// Case and spacing do not matter.
		{"  Keepalive_Timeout\n", events.ReasonKeepaliveTimeout},
		{"TAKENOVER", events.ReasonTakenOver},
		// The set is open: anything else is "other".
		{"", events.ReasonOther},
		{"{", events.ReasonOther},
		{"{}", events.ReasonOther},
		{"{,}", events.ReasonOther},
		{"undefined", events.ReasonOther},
		{"some_future_reason", events.ReasonOther},
		{"THROTTLED", events.ReasonOther},
	}
	for _, tt := range tests {
		if got := events.NormalizeReason(tt.raw); got != tt.want {
			t.Errorf("NormalizeReason(%q) = %q, want %q", tt.raw, got, tt.want)
		}
	}
}

func TestIsSessionHandover(t *testing.T) {
	tests := []struct {
		reason events.Reason
		want   bool
	}{
		{events.ReasonTakenOver, true},
		{events.ReasonDiscarded, true},
		{events.ReasonNormal, false},
		{events.ReasonKicked, false},
		{events.ReasonKeepaliveTimeout, false},
		{events.ReasonClosed, false},
		{events.ReasonSocketError, false},
		{events.ReasonNotAuthorized, false},
		{events.ReasonProtocolError, false},
		{events.ReasonServerShutdown, false},
		{events.ReasonOther, false},
		{"", false},
	}
	for _, tt := range tests {
		if got := tt.reason.IsSessionHandover(); got != tt.want {
			t.Errorf("Reason(%q).IsSessionHandover() = %v, want %v", tt.reason, got, tt.want)
		}
	}
	// Every raw spelling of a handover, from every source.
	for _, raw := range []string{"takenover", "takeovered", "discarded", "DUPLICATE_CLIENTID", "{shutdown,takenover}"} {
		if !events.NormalizeReason(raw).IsSessionHandover() {
			t.Errorf("raw reason %q is not a session handover", raw)
		}
	}
}
