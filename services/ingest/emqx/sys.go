// Package emqx parses EMQX's presence messages into fleetwatch presence
// events. It owns the knowledge of EMQX's formats (contracts/emqx.md): the
// $SYS client connected/disconnected messages of EMQX v4 and v5/6, topic
// shapes included. It is pure: no I/O, no clock (the receive time is passed
// in).
package emqx

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/internal/field"
)

// MaxPayloadSize bounds a $SYS presence payload. Real ones are well under
// 1 KiB; e5.9+ adds client_attrs and properties, still far below this.
const MaxPayloadSize = 64 << 10

// Sources reported in events.PresenceEvent.Source.
const (
	// SourceSysV5 is an EMQX v5/6 $SYS message (it has "protocol").
	SourceSysV5 = "emqx_sys_v5"
	// SourceSysV4 is an EMQX v4 $SYS message (no "protocol"; connected has "connack").
	SourceSysV4 = "emqx_sys_v4"
)

// Errors. Every rejection wraps exactly one of them.
var (
	// ErrTopic means the topic is not an EMQX $SYS client presence topic.
	ErrTopic = errors.New("not an emqx $SYS presence topic")
	// ErrNotPresence means the input is a well-formed EMQX client event
	// that is not presence ($SYS subscribed/unsubscribed, a rule's
	// client.connack, a web hook's message_publish): not an error, nothing
	// to store.
	ErrNotPresence = errors.New("emqx client event that is not presence")
	// ErrPayload means the payload is not a valid EMQX $SYS presence message.
	ErrPayload = errors.New("invalid emqx $SYS presence payload")
)

// SysTopic is a parsed $SYS presence topic:
// $SYS/brokers/<node>/clients/<clientid>/<event> or
// $SYS/brokers/<node>/gateway/<gateway>/clients/<clientid>/<event>.
type SysTopic struct {
	// Node is the EMQX node that published the message.
	Node string
	// Gateway is the gateway name (e.g. mqttsn, coap), empty for MQTT.
	Gateway string
	// ClientID is the topic's view of the client id: all levels between
	// "clients" and the event. The payload's clientid is authoritative.
	ClientID string
	// Kind is connected or disconnected.
	Kind events.Kind
}

// ParseSysTopic parses a $SYS presence topic. It runs for every message
// and does not allocate: every part is a substring of topic.
func ParseSysTopic(topic string) (SysTopic, error) {
	levels := strings.Count(topic, "/") + 1
	sys, rest, _ := strings.Cut(topic, "/")
	brokers, rest, _ := strings.Cut(rest, "/")
	node, rest, _ := strings.Cut(rest, "/")
	if levels < 6 || sys != "$SYS" || brokers != "brokers" {
		return SysTopic{}, fmt.Errorf("%w: %q does not start with $SYS/brokers/<node>/clients/", ErrTopic, topic)
	}
	t := SysTopic{Node: node}
	levels -= 3 // those of rest: at least clients/<clientid>/<event>
	first, after, _ := strings.Cut(rest, "/")
	if first == "gateway" {
		gateway, r, _ := strings.Cut(after, "/")
		if levels < 5 || gateway == "" {
			return SysTopic{}, fmt.Errorf("%w: %q is not $SYS/brokers/<node>/gateway/<gateway>/clients/<clientid>/<event>", ErrTopic, topic)
		}
		t.Gateway = gateway
		first, after, _ = strings.Cut(r, "/")
	}
	if first != "clients" {
		return SysTopic{}, fmt.Errorf("%w: %q is not $SYS/brokers/<node>/clients/<clientid>/<event>", ErrTopic, topic)
	}
	if t.Node == "" {
		return SysTopic{}, fmt.Errorf("%w: %q has an empty node", ErrTopic, topic)
	}
	i := strings.LastIndexByte(after, '/') // after is <clientid>/<event>
	switch ev := after[i+1:]; ev {
	case string(events.KindConnected), string(events.KindDisconnected):
		t.Kind = events.Kind(ev)
	case "subscribed", "unsubscribed":
		return SysTopic{}, fmt.Errorf("%w: %q", ErrNotPresence, topic)
	default:
		return SysTopic{}, fmt.Errorf("%w: %q: unknown event %q (want connected or disconnected)", ErrTopic, topic, ev)
	}
	t.ClientID = after[:i]
	return t, nil
}

// sysPayload holds the fields fleetwatch reads; others are ignored.
type sysPayload struct {
	ClientID       json.RawMessage `json:"clientid"`
	Username       json.RawMessage `json:"username"`
	IPAddress      json.RawMessage `json:"ipaddress"`
	Protocol       json.RawMessage `json:"protocol"`
	ProtoName      json.RawMessage `json:"proto_name"`
	ProtoVer       json.RawMessage `json:"proto_ver"`
	ConnectedAt    json.RawMessage `json:"connected_at"`
	DisconnectedAt json.RawMessage `json:"disconnected_at"`
	TS             json.RawMessage `json:"ts"`
	Keepalive      json.RawMessage `json:"keepalive"`
	Reason         json.RawMessage `json:"reason"`
}

// members lists p's fields for field.Object, with their JSON names (an
// array, so that neither it nor p needs the heap).
func (p *sysPayload) members() [11]field.Member {
	return [11]field.Member{
		{Key: "clientid", Val: &p.ClientID}, {Key: "username", Val: &p.Username},
		{Key: "ipaddress", Val: &p.IPAddress}, {Key: "protocol", Val: &p.Protocol},
		{Key: "proto_name", Val: &p.ProtoName}, {Key: "proto_ver", Val: &p.ProtoVer},
		{Key: "connected_at", Val: &p.ConnectedAt}, {Key: "disconnected_at", Val: &p.DisconnectedAt},
		{Key: "ts", Val: &p.TS}, {Key: "keepalive", Val: &p.Keepalive}, {Key: "reason", Val: &p.Reason},
	}
}

// ParseSys turns one EMQX $SYS presence message (v4 or v5/6 payload) into a
// validated event. receivedAt is when ingest received it.
//
// The node comes from the topic, the client id from the payload (client ids
// may contain "/"). Times are epoch ms (values below 1e11 are seconds and
// are scaled). Absent values ("undefined", null, "") become empty. The
// broker time is connected_at for a connect and disconnected_at for a
// disconnect, falling back to ts. Unknown fields are ignored; anything else
// that is missing or of the wrong type is an error wrapping ErrTopic or
// ErrPayload.
func ParseSys(topic string, payload []byte, receivedAt time.Time) (events.PresenceEvent, error) {
	t, err := ParseSysTopic(topic)
	if err != nil {
		return events.PresenceEvent{}, err
	}
	if len(payload) > MaxPayloadSize {
		return events.PresenceEvent{}, payloadErr("payload is %d bytes, limit %d", len(payload), MaxPayloadSize)
	}
	if !field.IsObject(payload) {
		return events.PresenceEvent{}, payloadErr("not a JSON object")
	}
	var p sysPayload
	if m := p.members(); !field.Object(payload, m[:]) {
		var q sysPayload
		if err := json.Unmarshal(payload, &q); err != nil {
			return events.PresenceEvent{}, payloadErr("invalid JSON: %v", err)
		}
		p = q
	}
	ev, err := p.event(t)
	if err != nil {
		return events.PresenceEvent{}, err
	}
	ev.ReceivedAtMS = receivedAt.UnixMilli()
	ev, err = events.NewPresenceEvent(ev)
	if err != nil {
		return events.PresenceEvent{}, fmt.Errorf("%w: %w", ErrPayload, err)
	}
	return ev, nil
}

func (p sysPayload) event(t SysTopic) (events.PresenceEvent, error) {
	ev := events.PresenceEvent{Node: t.Node, Kind: t.Kind}
	var err error
	if ev.DeviceID, err = str(p.ClientID, "clientid", false); err != nil {
		return ev, err
	}
	if ev.DeviceID == "" {
		return ev, payloadErr("clientid is missing")
	}
	if ev.Username, err = str(p.Username, "username", true); err != nil {
		return ev, err
	}
	if ev.IP, err = str(p.IPAddress, "ipaddress", true); err != nil {
		return ev, err
	}
	protoName, err := str(p.ProtoName, "proto_name", true)
	if err != nil {
		return ev, err
	}
	protocol, err := str(p.Protocol, "protocol", true)
	if err != nil {
		return ev, err
	}
	switch {
	case present(p.Protocol) || t.Gateway != "":
		ev.Source = SourceSysV5
		ev.Protocol = protocol
		if ev.Protocol == "" {
			ev.Protocol = t.Gateway
		}
	default:
		ev.Source = SourceSysV4
		ev.Protocol = v4Protocol(protoName)
	}
	if ev.ProtoVer, err = field.ProtoVer(p.ProtoVer); err != nil {
		return ev, wrap(err)
	}
	if ev.KeepaliveS, err = field.Keepalive(p.Keepalive); err != nil {
		return ev, wrap(err)
	}

	connectedAt, hasConnectedAt, err := timeMS(p.ConnectedAt, "connected_at")
	if err != nil {
		return ev, err
	}
	ts, hasTS, err := timeMS(p.TS, "ts")
	if err != nil {
		return ev, err
	}
	ev.ConnectedAtMS = connectedAt
	switch t.Kind {
	case events.KindConnected:
		ev.BrokerTSMS = connectedAt
		if !hasConnectedAt {
			ev.BrokerTSMS = ts
		}
		if !hasConnectedAt && !hasTS {
			return ev, payloadErr("connected_at and ts are both missing")
		}
	case events.KindDisconnected:
		disconnectedAt, has, err := timeMS(p.DisconnectedAt, "disconnected_at")
		if err != nil {
			return ev, err
		}
		ev.BrokerTSMS = disconnectedAt
		if !has {
			ev.BrokerTSMS = ts
		}
		if !has && !hasTS {
			return ev, payloadErr("disconnected_at and ts are both missing")
		}
		reason, err := str(p.Reason, "reason", false)
		if err != nil {
			return ev, err
		}
		if reason == "" {
			return ev, payloadErr("reason is missing")
		}
		ev.RawReason = reason
		ev.Reason = events.NormalizeReason(reason)
	}
	return ev, nil
}

func payloadErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrPayload, fmt.Sprintf(format, args...))
}

// wrap marks a field decoding error as an invalid $SYS payload.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrPayload, err)
}

func present(raw json.RawMessage) bool { return field.Present(raw) }

// str decodes an optional string. With absent, "undefined" (EMQX's
// rendering of an absent value) is empty too.
func str(raw json.RawMessage, name string, absent bool) (string, error) {
	s, err := field.String(raw, name, absent)
	return s, wrap(err)
}

// timeMS decodes an optional epoch time in ms (seconds when below 1e11).
func timeMS(raw json.RawMessage, name string) (int64, bool, error) {
	v, ok, err := field.TimeMS(raw, name)
	return v, ok, wrap(err)
}

// v4Protocol names the protocol of a message that does not say it: "mqtt"
// for MQTT and MQIsdp (3.1), else the lower-cased proto_name.
func v4Protocol(protoName string) string {
	switch protoName {
	case "MQTT", "MQIsdp":
		return "mqtt"
	}
	return strings.ToLower(protoName)
}
