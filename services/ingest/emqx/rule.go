package emqx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/internal/field"
)

// Sources of rule-engine and web hook inputs.
const (
	// SourceRuleV5 is an EMQX v5/6 rule-engine $events/client_connected or
	// client_disconnected output (republished with payload ${.}, or the body
	// of an HTTP action). It is told from v4 by the fields v5 always adds:
	// conn_props / disconn_props, receive_maximum, client_attrs.
	SourceRuleV5 = "emqx_rule_v5"
	// SourceRuleV4 is an EMQX v4 rule-engine event output.
	SourceRuleV4 = "emqx_rule_v4"
	// SourceWebhookV4 is a body of EMQX v4's web_hook plugin.
	SourceWebhookV4 = "emqx_webhook_v4"
)

// More rejections.
var (
	// ErrRuleEvent means the payload is not a valid EMQX rule-engine
	// client_connected/client_disconnected event.
	ErrRuleEvent = errors.New("invalid emqx rule event")
	// ErrWebhook means the body is not a valid EMQX web hook (v4 plugin)
	// or HTTP action (v5) presence body.
	ErrWebhook = errors.New("invalid emqx web hook body")
)

// UndefinedPayloadHint explains the literal payload "undefined": it is what
// a republish action with the default payload template ${payload} sends for
// an $events rule, whose events have no payload field.
const UndefinedPayloadHint = `the payload is the text "undefined": the rule's republish action uses the payload template ${payload}, ` +
	`which client events do not have; set the action's payload to ${.} (the whole event as JSON)`

// ruleEvents are EMQX rule-engine events (v4 and v5) that are not presence:
// they are ignored rather than dead-lettered when a rule forwards them.
var ruleEvents = map[string]bool{
	"client.connack": true, "client.check_authz_complete": true, "client.check_authn_complete": true,
	"session.subscribed": true, "session.unsubscribed": true, "message.publish": true,
	"message.delivered": true, "message.acked": true, "message.dropped": true, "delivery.dropped": true,
	"message.transformation_failed": true, "schema.validation_failed": true,
	"alarm.activated": true, "alarm.deactivated": true,
}

// webhookActions are v4 web_hook plugin actions that are not presence.
var webhookActions = map[string]bool{
	"client_connect": true, "client_connack": true, "client_subscribe": true, "client_unsubscribe": true,
	"session_subscribed": true, "session_unsubscribed": true, "session_terminated": true,
	"message_publish": true, "message_delivered": true, "message_acked": true, "message_dropped": true,
}

// rulePayload holds the fields read from a rule event or web hook body.
type rulePayload struct {
	Event          json.RawMessage `json:"event"`
	Action         json.RawMessage `json:"action"`
	Node           json.RawMessage `json:"node"`
	ClientID       json.RawMessage `json:"clientid"`
	Username       json.RawMessage `json:"username"`
	Peername       json.RawMessage `json:"peername"`
	IPAddress      json.RawMessage `json:"ipaddress"`
	ProtoName      json.RawMessage `json:"proto_name"`
	ProtoVer       json.RawMessage `json:"proto_ver"`
	Keepalive      json.RawMessage `json:"keepalive"`
	ConnectedAt    json.RawMessage `json:"connected_at"`
	DisconnectedAt json.RawMessage `json:"disconnected_at"`
	Timestamp      json.RawMessage `json:"timestamp"`
	Reason         json.RawMessage `json:"reason"`
	// Present only in v5/6 rule events.
	ConnProps      json.RawMessage `json:"conn_props"`
	DisconnProps   json.RawMessage `json:"disconn_props"`
	ReceiveMaximum json.RawMessage `json:"receive_maximum"`
	ClientAttrs    json.RawMessage `json:"client_attrs"`
}

// ParseRule turns one EMQX rule-engine client_connected/client_disconnected
// event (v4 or v5 field set), as a republish action with payload ${.} sends
// it, into a validated event. The kind comes from "event", the node from
// "node", the client id from "clientid"; the topic it arrived on does not
// matter. The broker time is connected_at / disconnected_at, falling back to
// "timestamp". The peer address is peername without its port (IPv6 comes
// without brackets: the port follows the last ':'). Other EMQX events
// (client.connack, session.subscribed, …) return ErrNotPresence.
func ParseRule(payload []byte, receivedAt time.Time) (events.PresenceEvent, error) {
	p, err := decode(payload, ErrRuleEvent)
	if err != nil {
		return events.PresenceEvent{}, err
	}
	return p.ruleEvent(receivedAt, ErrRuleEvent)
}

// ParseWebhook turns one HTTP body sent by EMQX into a validated event: the
// v4 web_hook plugin body (it has "action": client_connected or
// client_disconnected) or the v5 HTTP action body, which is the rule output
// (it has "event", as in ParseRule). Other actions and events return
// ErrNotPresence.
func ParseWebhook(body []byte, receivedAt time.Time) (events.PresenceEvent, error) {
	p, err := decode(body, ErrWebhook)
	if err != nil {
		return events.PresenceEvent{}, err
	}
	if field.Present(p.Action) {
		return p.webhookV4(receivedAt)
	}
	if !field.Present(p.Event) {
		return events.PresenceEvent{}, fmt.Errorf(`%w: neither "action" (v4 web_hook plugin) nor "event" (v5 HTTP action with the rule output as body) is set`, ErrWebhook)
	}
	return p.ruleEvent(receivedAt, ErrWebhook)
}

func decode(payload []byte, sentinel error) (rulePayload, error) {
	var p rulePayload
	if len(payload) > MaxPayloadSize {
		return p, fmt.Errorf("%w: payload is %d bytes, limit %d", sentinel, len(payload), MaxPayloadSize)
	}
	if string(bytes.TrimSpace(payload)) == "undefined" {
		return p, fmt.Errorf("%w: %s", sentinel, UndefinedPayloadHint)
	}
	if !field.IsObject(payload) {
		return p, fmt.Errorf("%w: not a JSON object", sentinel)
	}
	if m := p.members(); !field.Object(payload, m[:]) {
		var q rulePayload
		if err := json.Unmarshal(payload, &q); err != nil {
			return rulePayload{}, fmt.Errorf("%w: invalid JSON: %v", sentinel, err)
		}
		p = q
	}
	return p, nil
}

// members lists p's fields for field.Object, with their JSON names (an
// array, so that neither it nor p needs the heap).
func (p *rulePayload) members() [18]field.Member {
	return [18]field.Member{
		{Key: "event", Val: &p.Event}, {Key: "action", Val: &p.Action}, {Key: "node", Val: &p.Node},
		{Key: "clientid", Val: &p.ClientID}, {Key: "username", Val: &p.Username},
		{Key: "peername", Val: &p.Peername}, {Key: "ipaddress", Val: &p.IPAddress},
		{Key: "proto_name", Val: &p.ProtoName}, {Key: "proto_ver", Val: &p.ProtoVer},
		{Key: "keepalive", Val: &p.Keepalive}, {Key: "connected_at", Val: &p.ConnectedAt},
		{Key: "disconnected_at", Val: &p.DisconnectedAt}, {Key: "timestamp", Val: &p.Timestamp},
		{Key: "reason", Val: &p.Reason}, {Key: "conn_props", Val: &p.ConnProps},
		{Key: "disconn_props", Val: &p.DisconnProps}, {Key: "receive_maximum", Val: &p.ReceiveMaximum},
		{Key: "client_attrs", Val: &p.ClientAttrs},
	}
}

func (p rulePayload) ruleEvent(receivedAt time.Time, sentinel error) (events.PresenceEvent, error) {
	fail := func(err error) (events.PresenceEvent, error) {
		return events.PresenceEvent{}, fmt.Errorf("%w: %w", sentinel, err)
	}
	name, err := field.String(p.Event, "event", false)
	if err != nil {
		return fail(err)
	}
	ev := events.PresenceEvent{Source: SourceRuleV4}
	switch name {
	case "client.connected":
		ev.Kind = events.KindConnected
	case "client.disconnected":
		ev.Kind = events.KindDisconnected
	case "":
		return fail(errors.New(`event is missing: the rule must SELECT * (or at least event, clientid, node and the times) FROM "$events/client_connected", "$events/client_disconnected"`))
	default:
		if ruleEvents[name] {
			return events.PresenceEvent{}, fmt.Errorf("%w: rule event %q", ErrNotPresence, name)
		}
		return fail(fmt.Errorf("event %q is neither client.connected nor client.disconnected", name))
	}
	if field.Present(p.ConnProps) || field.Present(p.DisconnProps) || field.Present(p.ReceiveMaximum) || field.Present(p.ClientAttrs) {
		ev.Source = SourceRuleV5
	}
	if err := p.common(&ev); err != nil {
		return fail(err)
	}
	peer, err := field.String(p.Peername, "peername", true)
	if err != nil {
		return fail(err)
	}
	ev.IP = peerIP(peer)
	protoName, err := field.String(p.ProtoName, "proto_name", true)
	if err != nil {
		return fail(err)
	}
	ev.Protocol = v4Protocol(protoName)
	ts, hasTS, err := field.TimeMS(p.Timestamp, "timestamp")
	if err != nil {
		return fail(err)
	}
	if err := p.times(&ev, ts, hasTS, "timestamp"); err != nil {
		return fail(err)
	}
	return finish(ev, receivedAt, sentinel)
}

func (p rulePayload) webhookV4(receivedAt time.Time) (events.PresenceEvent, error) {
	fail := func(err error) (events.PresenceEvent, error) {
		return events.PresenceEvent{}, fmt.Errorf("%w: %w", ErrWebhook, err)
	}
	action, err := field.String(p.Action, "action", false)
	if err != nil {
		return fail(err)
	}
	ev := events.PresenceEvent{Source: SourceWebhookV4}
	switch action {
	case "client_connected":
		ev.Kind = events.KindConnected
	case "client_disconnected":
		ev.Kind = events.KindDisconnected
	default:
		if webhookActions[action] {
			return events.PresenceEvent{}, fmt.Errorf("%w: web hook action %q", ErrNotPresence, action)
		}
		return fail(fmt.Errorf("action %q is neither client_connected nor client_disconnected", action))
	}
	if err := p.common(&ev); err != nil {
		return fail(err)
	}
	if ev.IP, err = field.String(p.IPAddress, "ipaddress", true); err != nil {
		return fail(err)
	}
	if err := p.times(&ev, 0, false, ""); err != nil {
		return fail(err)
	}
	return finish(ev, receivedAt, ErrWebhook)
}

// common reads what rule events and web hook bodies share: node, clientid,
// username, proto_ver, keepalive and the reason of a disconnect.
func (p rulePayload) common(ev *events.PresenceEvent) error {
	var err error
	if ev.Node, err = field.String(p.Node, "node", true); err != nil {
		return err
	}
	if ev.Node == "" {
		return errors.New("node is missing")
	}
	if ev.DeviceID, err = field.String(p.ClientID, "clientid", false); err != nil {
		return err
	}
	if ev.DeviceID == "" {
		return errors.New("clientid is missing")
	}
	if ev.Username, err = field.String(p.Username, "username", true); err != nil {
		return err
	}
	if ev.ProtoVer, err = field.ProtoVer(p.ProtoVer); err != nil {
		return err
	}
	if ev.KeepaliveS, err = field.Keepalive(p.Keepalive); err != nil {
		return err
	}
	if ev.Kind == events.KindDisconnected {
		reason, err := field.String(p.Reason, "reason", false)
		if err != nil {
			return err
		}
		if reason == "" {
			return errors.New("reason is missing")
		}
		ev.RawReason, ev.Reason = reason, events.NormalizeReason(reason)
	}
	return nil
}

// times sets BrokerTSMS and ConnectedAtMS: connected_at for a connect,
// disconnected_at for a disconnect, else the fallback (named fallbackName;
// "" when there is none).
func (p rulePayload) times(ev *events.PresenceEvent, fallback int64, hasFallback bool, fallbackName string) error {
	connectedAt, hasConnectedAt, err := field.TimeMS(p.ConnectedAt, "connected_at")
	if err != nil {
		return err
	}
	ev.ConnectedAtMS = connectedAt
	own, has, name := connectedAt, hasConnectedAt, "connected_at"
	if ev.Kind == events.KindDisconnected {
		name = "disconnected_at"
		if own, has, err = field.TimeMS(p.DisconnectedAt, name); err != nil {
			return err
		}
	}
	switch {
	case has:
		ev.BrokerTSMS = own
	case hasFallback:
		ev.BrokerTSMS = fallback
	case fallbackName != "":
		return fmt.Errorf("%s and %s are both missing", name, fallbackName)
	default:
		return fmt.Errorf("%s is missing", name)
	}
	return nil
}

func finish(ev events.PresenceEvent, receivedAt time.Time, sentinel error) (events.PresenceEvent, error) {
	ev.ReceivedAtMS = receivedAt.UnixMilli()
	ev, err := events.NewPresenceEvent(ev)
	if err != nil {
		return events.PresenceEvent{}, fmt.Errorf("%w: %w", sentinel, err)
	}
	return ev, nil
}

// peerIP returns the address of an EMQX peername "ip:port". IPv6 addresses
// come without brackets ("2001:db8::1:50312"), so the port is what follows
// the last ':'. A value without a numeric port is returned whole.
func peerIP(peer string) string {
	i := strings.LastIndexByte(peer, ':')
	if i < 0 {
		return peer
	}
	if port, err := strconv.ParseUint(peer[i+1:], 10, 16); err != nil || port > 65535 {
		return peer
	}
	host := peer[:i]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	return host
}
