// Package awsiot parses AWS IoT Core lifecycle events
// ($aws/events/presence/connected|disconnected/<clientId>) into fleetwatch
// presence events. It is pure: no I/O, no clock.
//
// AWS IoT has no broker node in its events; the caller names one (e.g.
// "aws-iot" or the account's endpoint). The connection is identified by
// versionNumber (carried as ConnVersion), which connect and disconnect of
// one connection share and which increases per connection of a client id.
package awsiot

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/internal/field"
)

// Source is reported in events.PresenceEvent.Source.
const Source = events.SourceAWSIoT

// TopicPrefix starts every lifecycle presence topic.
const TopicPrefix = "$aws/events/presence/"

// MaxPayloadSize bounds a lifecycle event payload.
const MaxPayloadSize = 64 << 10

// Errors. Every rejection wraps one of them.
var (
	// ErrTopic means the topic is not an AWS IoT presence lifecycle topic.
	ErrTopic = errors.New("not an aws iot presence topic")
	// ErrPayload means the payload is not a valid lifecycle event.
	ErrPayload = errors.New("invalid aws iot lifecycle event")
)

type payload struct {
	ClientID                  json.RawMessage `json:"clientId"`
	Timestamp                 json.RawMessage `json:"timestamp"`
	EventType                 json.RawMessage `json:"eventType"`
	IPAddress                 json.RawMessage `json:"ipAddress"`
	VersionNumber             json.RawMessage `json:"versionNumber"`
	ClientInitiatedDisconnect json.RawMessage `json:"clientInitiatedDisconnect"`
	DisconnectReason          json.RawMessage `json:"disconnectReason"`
}

// members lists p's fields for field.Object, with their JSON names (an
// array, so that neither it nor p needs the heap).
func (p *payload) members() [7]field.Member {
	return [7]field.Member{
		{Key: "clientId", Val: &p.ClientID}, {Key: "timestamp", Val: &p.Timestamp},
		{Key: "eventType", Val: &p.EventType}, {Key: "ipAddress", Val: &p.IPAddress},
		{Key: "versionNumber", Val: &p.VersionNumber},
		{Key: "clientInitiatedDisconnect", Val: &p.ClientInitiatedDisconnect},
		{Key: "disconnectReason", Val: &p.DisconnectReason},
	}
}

// Parse turns one lifecycle message into a validated event. node names the
// AWS IoT endpoint in the event. The kind comes from eventType (it must
// agree with the topic), the client id from clientId, the broker time from
// timestamp (ms), the connection from versionNumber. A disconnect's raw
// reason is disconnectReason (MQTT_KEEP_ALIVE_TIMEOUT, CONNECTION_LOST,
// DUPLICATE_CLIENTID, …); without one it is CLIENT_INITIATED_DISCONNECT when
// clientInitiatedDisconnect is true, else unknown (normalised "other").
func Parse(topic string, data []byte, node string, receivedAt time.Time) (events.PresenceEvent, error) {
	rest, ok := strings.CutPrefix(topic, TopicPrefix)
	kindText, topicID, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || topicID == "" {
		return events.PresenceEvent{}, fmt.Errorf("%w: %q is not %s<connected|disconnected>/<clientId>", ErrTopic, topic, TopicPrefix)
	}
	var kind events.Kind
	switch kindText {
	case "connected", "disconnected":
		kind = events.Kind(kindText)
	default:
		return events.PresenceEvent{}, fmt.Errorf("%w: %q: unknown event %q (want connected or disconnected)", ErrTopic, topic, kindText)
	}
	ev, err := parse(data, kind)
	if err != nil {
		return events.PresenceEvent{}, fmt.Errorf("%w: %w", ErrPayload, err)
	}
	ev.Node, ev.ReceivedAtMS = node, receivedAt.UnixMilli()
	if ev, err = events.NewPresenceEvent(ev); err != nil {
		return events.PresenceEvent{}, fmt.Errorf("%w: %w", ErrPayload, err)
	}
	return ev, nil
}

func parse(data []byte, kind events.Kind) (events.PresenceEvent, error) {
	ev := events.PresenceEvent{Kind: kind, Source: Source, Protocol: "mqtt"}
	if len(data) > MaxPayloadSize {
		return ev, fmt.Errorf("payload is %d bytes, limit %d", len(data), MaxPayloadSize)
	}
	if !field.IsObject(data) {
		return ev, errors.New("not a JSON object")
	}
	var p payload
	if m := p.members(); !field.Object(data, m[:]) {
		var q payload
		if err := json.Unmarshal(data, &q); err != nil {
			return ev, fmt.Errorf("invalid JSON: %v", err)
		}
		p = q
	}
	eventType, err := field.String(p.EventType, "eventType", false)
	if err != nil {
		return ev, err
	}
	if eventType != string(kind) {
		return ev, fmt.Errorf("eventType %q does not match the topic's %q", eventType, kind)
	}
	if ev.DeviceID, err = field.String(p.ClientID, "clientId", false); err != nil {
		return ev, err
	}
	if ev.DeviceID == "" {
		return ev, errors.New("clientId is missing")
	}
	var has bool
	if ev.BrokerTSMS, has, err = field.TimeMS(p.Timestamp, "timestamp"); err != nil {
		return ev, err
	}
	if !has {
		return ev, errors.New("timestamp is missing")
	}
	if ev.ConnVersion, _, err = field.Int(p.VersionNumber, "versionNumber"); err != nil {
		return ev, err
	}
	if ev.ConnVersion < 0 || ev.ConnVersion == math.MaxInt64 {
		return ev, fmt.Errorf("versionNumber %d is out of range (0 to 2^63-2)", ev.ConnVersion)
	}
	// Carried + 1: AWS's versions start at 0, and ConnVersion 0 means
	// "no version".
	ev.ConnVersion++
	if ev.IP, err = field.String(p.IPAddress, "ipAddress", true); err != nil {
		return ev, err
	}
	if kind == events.KindConnected {
		return ev, nil
	}
	if ev.RawReason, err = field.String(p.DisconnectReason, "disconnectReason", true); err != nil {
		return ev, err
	}
	clientInitiated, _, err := field.Bool(p.ClientInitiatedDisconnect, "clientInitiatedDisconnect")
	if err != nil {
		return ev, err
	}
	switch {
	case ev.RawReason != "":
		ev.Reason = events.NormalizeReason(ev.RawReason)
	case clientInitiated:
		ev.Reason = events.ReasonNormal
	default:
		ev.Reason = events.ReasonOther
	}
	return ev, nil
}
