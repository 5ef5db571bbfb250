package events

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Version is the schema version of every event in this package.
const Version = 1

// MaxDeviceIDLen bounds a device id (EMQX's default max_clientid_len).
const MaxDeviceIDLen = 65535

// Kind says whether a presence event opens or closes a connection.
type Kind string

// Presence kinds.
const (
	KindConnected    Kind = "connected"
	KindDisconnected Kind = "disconnected"
)

// Reason is a normalised disconnect reason. The set is open: the raw reason
// is always kept beside it in PresenceEvent.RawReason.
type Reason string

// Normalised disconnect reasons (see contracts/emqx.md).
const (
	ReasonNormal           Reason = "normal"            // the client sent DISCONNECT
	ReasonKicked           Reason = "kicked"            // an admin kicked it
	ReasonDiscarded        Reason = "discarded"         // a new connection with clean_start replaced it
	ReasonTakenOver        Reason = "takenover"         // a new connection took the session over
	ReasonKeepaliveTimeout Reason = "keepalive_timeout" // no packet for ~1.5x keepalive: the device died
	ReasonClosed           Reason = "closed"            // the peer closed the socket
	ReasonSocketError      Reason = "socket_error"      // econnreset, etimedout, epipe, ...
	ReasonNotAuthorized    Reason = "not_authorized"
	ReasonProtocolError    Reason = "protocol_error"  // protocol_error, packet_too_large, ...
	ReasonServerShutdown   Reason = "server_shutdown" // node evacuation, shutdown
	ReasonOther            Reason = "other"
)

// NormalizeReason maps a raw EMQX (or AWS IoT) disconnect reason to a
// normalised Reason. Tuples are collapsed as EMQX itself collapses them:
// "{shutdown,R}" to R, any other tuple to its first atom ("{tls_alert,…}" →
// tls_alert). Unknown reasons map to ReasonOther.
func NormalizeReason(raw string) Reason {
	r := strings.ToLower(strings.TrimSpace(raw))
	if strings.HasPrefix(r, "{") {
		r = collapseTuple(r)
	}
	switch r {
	case "normal", "client_initiated_disconnect", "normal_disconnection":
		return ReasonNormal
	case "kicked", "forbidden_by_policy", "connection_rate_exceeded":
		return ReasonKicked
	case "discarded", "duplicate_clientid":
		return ReasonDiscarded
	case "takenover", "takeovered", "taken_over", "session_taken_over":
		return ReasonTakenOver
	case "keepalive_timeout", "mqtt_keep_alive_timeout", "keep_alive_timeout":
		return ReasonKeepaliveTimeout
	case "tcp_closed", "ssl_closed", "closed", "sock_closed", "connection_lost":
		return ReasonClosed
	case "econnreset", "etimedout", "einval", "enotconn", "epipe", "econnrefused", "ehostunreach", "tls_alert", "ssl_error", "internal_error":
		return ReasonSocketError
	case "not_authorized", "bad_username_or_password", "banned", "auth_error", "authorization_failure":
		return ReasonNotAuthorized
	case "protocol_error", "packet_too_large", "malformed_packet", "quota_exceeded", "receive_maximum_exceeded", "topic_alias_invalid", "frame_too_large":
		return ReasonProtocolError
	case "use_another_server", "server_moved", "server_shutting_down", "server_shutdown", "shutdown":
		return ReasonServerShutdown
	}
	return ReasonOther
}

// collapseTuple returns the atom that stands for an Erlang tuple printed as
// text: the second element of {shutdown,Atom}, else the first element.
func collapseTuple(t string) string {
	elems := strings.SplitN(strings.TrimLeft(t, "{"), ",", 3)
	for i, e := range elems {
		if j := strings.IndexAny(e, "{}"); j >= 0 {
			e = e[:j]
		}
		elems[i] = strings.Trim(strings.TrimSpace(e), "'")
	}
	if elems[0] == "shutdown" && len(elems) > 1 && elems[1] != "" {
		return elems[1]
	}
	return elems[0]
}

// IsSessionHandover reports whether a disconnect with this reason only means
// that a newer connection of the same device replaced this one. Such a
// disconnect never means the device is offline.
func (r Reason) IsSessionHandover() bool {
	return r == ReasonTakenOver || r == ReasonDiscarded
}

// Sources whose ConnVersion the evaluator interprets (see ConnVersion).
const (
	// SourceAWSIoT is AWS IoT Core lifecycle events: ConnVersion is
	// versionNumber + 1, increasing from one connection to the next.
	SourceAWSIoT = "aws_iot"
	// SourceSparkplug is Sparkplug B NBIRTH/NDEATH: ConnVersion is bdSeq + 1,
	// compared in 8-bit serial arithmetic.
	SourceSparkplug = "sparkplug_b"
)

// PresenceEvent is one connect or disconnect of one device, whatever the
// source format. Times are epoch milliseconds.
type PresenceEvent struct {
	// V is the schema version (1).
	V int `json:"v"`
	// ID is content-derived (see PresenceID) and doubles as Nats-Msg-Id.
	ID string `json:"id"`
	// DeviceID is the MQTT client id, any UTF-8, taken from the payload.
	DeviceID string `json:"device_id"`
	// Kind is connected or disconnected.
	Kind Kind `json:"kind"`
	// Reason is the normalised disconnect reason (empty for connected).
	Reason Reason `json:"reason,omitempty"`
	// RawReason is the disconnect reason exactly as the broker said it.
	RawReason string `json:"raw_reason,omitempty"`
	// Node is the broker node that reported the event.
	Node string `json:"node"`
	// BrokerTSMS is the broker's time of the event itself: connected_at for
	// a connect, disconnected_at for a disconnect (falling back to the
	// message's ts/timestamp). Never our clock.
	BrokerTSMS int64 `json:"broker_ts_ms"`
	// ConnectedAtMS is the start of the connection this event belongs to,
	// when the source says it (0 when unknown). With Node and DeviceID it
	// keys the connection.
	ConnectedAtMS int64 `json:"connected_at_ms,omitempty"`
	// ConnVersion orders connections for sources without connected_at:
	// AWS IoT's versionNumber + 1 (Source SourceAWSIoT), Sparkplug's bdSeq
	// + 1 (Source SourceSparkplug, 1–256, wrapping); 0 when unknown.
	ConnVersion int64 `json:"conn_version,omitempty"`
	// IP is the peer address without port.
	IP string `json:"ip,omitempty"`
	// Username is empty when the broker said it was absent.
	Username string `json:"username,omitempty"`
	// Protocol is "mqtt" or a gateway name.
	Protocol string `json:"protocol,omitempty"`
	// ProtoVer is the MQTT protocol version (3, 4, 5).
	ProtoVer int `json:"proto_ver,omitempty"`
	// KeepaliveS is the connection's keepalive in seconds.
	KeepaliveS int `json:"keepalive_s,omitempty"`
	// Source names the input format, e.g. "emqx_sys_v5".
	Source string `json:"source"`
	// ReceivedAtMS is when ingest received the message (our clock).
	ReceivedAtMS int64 `json:"received_at_ms"`
}

// Validation errors.
var (
	// ErrInvalidEvent is wrapped by every validation error of this package.
	ErrInvalidEvent = errors.New("invalid event")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidEvent, fmt.Sprintf(format, args...))
}

// NewPresenceEvent validates e, fills V and the derived ID, and returns it.
func NewPresenceEvent(e PresenceEvent) (PresenceEvent, error) {
	e.V = Version
	if err := e.validateFields(); err != nil {
		return PresenceEvent{}, err
	}
	e.ID = PresenceID(e)
	return e, nil
}

// Validate checks an event read from the wire, including its id.
func (e PresenceEvent) Validate() error {
	if e.V != Version {
		return invalid("v is %d, want %d", e.V, Version)
	}
	if err := e.validateFields(); err != nil {
		return err
	}
	if e.ID != PresenceID(e) {
		return invalid("id %q does not match the event content", e.ID)
	}
	return nil
}

func (e PresenceEvent) validateFields() error {
	switch {
	case e.DeviceID == "":
		return invalid("device_id is empty")
	case len(e.DeviceID) > MaxDeviceIDLen:
		return invalid("device_id is %d bytes, limit %d", len(e.DeviceID), MaxDeviceIDLen)
	case !utf8.ValidString(e.DeviceID):
		return invalid("device_id is not valid UTF-8")
	case e.Kind != KindConnected && e.Kind != KindDisconnected:
		return invalid("kind %q is neither connected nor disconnected", e.Kind)
	case e.Node == "":
		return invalid("node is empty")
	case e.BrokerTSMS <= 0:
		return invalid("broker_ts_ms %d is not a positive epoch-ms time", e.BrokerTSMS)
	case e.ConnectedAtMS < 0:
		return invalid("connected_at_ms %d is negative", e.ConnectedAtMS)
	case e.Source == "":
		return invalid("source is empty")
	case e.Kind == KindConnected && (e.Reason != "" || e.RawReason != ""):
		return invalid("a connected event has no reason")
	case e.Kind == KindDisconnected && e.Reason == "":
		return invalid("a disconnected event needs a reason (use %q when unknown)", ReasonOther)
	}
	return nil
}

// PresenceID derives the event id from what identifies the broker event:
// node, device, kind, broker time and connection. The same EMQX event seen
// through $SYS, a rule or a webhook, by two replicas or twice, gets one id.
func PresenceID(e PresenceEvent) string {
	var stack [256]byte
	buf := appendIDPart(stack[:0], "presence.v1")
	buf = appendIDPart(buf, e.Node)
	buf = appendIDPart(buf, e.DeviceID)
	buf = appendIDPart(buf, string(e.Kind))
	buf = appendIDInt(buf, e.BrokerTSMS)
	buf = appendIDInt(buf, e.ConnectedAtMS)
	buf = appendIDInt(buf, e.ConnVersion)
	return idOf(buf)
}

// Subject returns the event's subject for a deployment with the given
// partition count.
func (e PresenceEvent) Subject(partitions int) string {
	return PresenceSubject(e.DeviceID, partitions)
}
