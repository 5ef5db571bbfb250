package emqxsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// errAdministrativeAction is what Kick disconnects a client with.
var errAdministrativeAction = packets.ErrAdministrativeAction

// conn is one established client connection, with what its $SYS messages say.
type conn struct {
	client         *mqtt.Client
	clientID       string
	username       string
	ip             string
	sockPort       int
	protoName      string
	protoVer       int
	keepalive      int
	cleanStart     bool
	expiryMS       int64
	connectedAtMS  int64
	disconnectSent bool
}

// connectedPayload is EMQX v5's $SYS …/connected message, field for field.
type connectedPayload struct {
	ClientID       string `json:"clientid"`
	Username       string `json:"username"`
	IPAddress      string `json:"ipaddress"`
	SockPort       int    `json:"sockport"`
	Protocol       string `json:"protocol"`
	ProtoName      string `json:"proto_name"`
	ProtoVer       int    `json:"proto_ver"`
	ConnectedAt    int64  `json:"connected_at"`
	TS             int64  `json:"ts"`
	Keepalive      int    `json:"keepalive"`
	CleanStart     bool   `json:"clean_start"`
	ExpiryInterval int64  `json:"expiry_interval"`
}

// disconnectedPayload is EMQX v5's $SYS …/disconnected message.
type disconnectedPayload struct {
	ClientID       string `json:"clientid"`
	Username       string `json:"username"`
	IPAddress      string `json:"ipaddress"`
	SockPort       int    `json:"sockport"`
	Protocol       string `json:"protocol"`
	ProtoName      string `json:"proto_name"`
	ProtoVer       int    `json:"proto_ver"`
	ConnectedAt    int64  `json:"connected_at"`
	TS             int64  `json:"ts"`
	Reason         string `json:"reason"`
	DisconnectedAt int64  `json:"disconnected_at"`
}

// newConn captures what the $SYS messages of cl's connection report.
func (b *Broker) newConn(cl *mqtt.Client) *conn {
	c := &conn{
		client:     cl,
		clientID:   cl.ID,
		username:   string(cl.Properties.Username),
		protoVer:   int(cl.Properties.ProtocolVersion),
		keepalive:  int(cl.State.Keepalive),
		cleanStart: cl.Properties.Clean,
	}
	if c.username == "" {
		c.username = "undefined" // EMQX's rendering of an absent username
	}
	c.protoName = "MQTT"
	if c.protoVer == 3 {
		c.protoName = "MQIsdp"
	}
	switch {
	case c.protoVer == 5:
		c.expiryMS = int64(cl.Properties.Props.SessionExpiryInterval) * 1000
	case !c.cleanStart:
		c.expiryMS = v3SessionExpiryMS
	}
	c.ip = cl.Net.Remote
	if host, _, err := net.SplitHostPort(cl.Net.Remote); err == nil {
		c.ip = host
	}
	if cl.Net.Conn != nil {
		if a, ok := cl.Net.Conn.LocalAddr().(*net.TCPAddr); ok {
			c.sockPort = a.Port
		}
	}
	c.connectedAtMS = b.cfg.Now().UnixMilli()
	return c
}

// publishConnected publishes c's connected message. b.mu is held.
func (b *Broker) publishConnected(c *conn) {
	p := connectedPayload{
		ClientID: c.clientID, Username: c.username, IPAddress: c.ip, SockPort: c.sockPort,
		Protocol: "mqtt", ProtoName: c.protoName, ProtoVer: c.protoVer,
		ConnectedAt: c.connectedAtMS, TS: b.cfg.Now().UnixMilli(),
		Keepalive: c.keepalive, CleanStart: c.cleanStart, ExpiryInterval: c.expiryMS,
	}
	b.publishPresence(c.clientID, "connected", p)
}

// publishDisconnected publishes c's disconnected message once. b.mu is held.
func (b *Broker) publishDisconnected(c *conn, reason string) {
	if c.disconnectSent {
		return
	}
	c.disconnectSent = true
	now := b.cfg.Now().UnixMilli()
	p := disconnectedPayload{
		ClientID: c.clientID, Username: c.username, IPAddress: c.ip, SockPort: c.sockPort,
		Protocol: "mqtt", ProtoName: c.protoName, ProtoVer: c.protoVer,
		ConnectedAt: c.connectedAtMS, TS: now, Reason: reason, DisconnectedAt: now,
	}
	b.publishPresence(c.clientID, "disconnected", p)
}

func (b *Broker) publishPresence(clientID, event string, payload any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(payload); err != nil {
		b.log.Error("emqxsim: encode presence", "client", clientID, "err", err)
		return
	}
	topic := b.sysTopic("clients/" + clientID + "/" + event)
	data := bytes.TrimRight(buf.Bytes(), "\n")
	if err := b.srv.Publish(topic, data, false, *b.cfg.SysQoS); err != nil {
		b.log.Warn("emqxsim: publish presence", "client", clientID, "event", event, "err", err)
		return
	}
	b.log.Debug("emqxsim: presence", "client", clientID, "event", event)
}

// hook connects mochi's client lifecycle to the $SYS presence messages,
// accepts every client and applies the "$ topics need a $ filter" rule.
type hook struct {
	mqtt.HookBase
	b *Broker

	subMu       sync.Mutex
	subscribing map[*mqtt.Client][]string // filters of SUBSCRIBE packets being processed
}

var _ mqtt.Hook = (*hook)(nil)

// ID names the hook.
func (h *hook) ID() string { return "emqxsim-presence" }

// Provides lists the hook methods implemented here.
func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSubscribe, mqtt.OnSubscribed,
		mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect:
		return true
	}
	return false
}

// OnConnectAuthenticate accepts every client.
func (h *hook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// OnSubscribe remembers the filters being subscribed so that OnACLCheck
// can tell a subscription check from a delivery check.
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	filters := make([]string, 0, len(pk.Filters))
	for _, f := range pk.Filters {
		filters = append(filters, f.Filter)
	}
	h.subMu.Lock()
	if h.subscribing == nil {
		h.subscribing = make(map[*mqtt.Client][]string)
	}
	h.subscribing[cl] = filters
	h.subMu.Unlock()
	return pk
}

// OnSubscribed ends the subscription check window of OnSubscribe.
func (h *hook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) {
	h.subMu.Lock()
	delete(h.subscribing, cl)
	h.subMu.Unlock()
}

// OnACLCheck allows everything except the delivery of a "$" topic through a
// filter that starts with a wildcard (mochi would deliver $SYS messages to a
// "#" subscriber; EMQX and MQTT §4.7.2 do not).
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write || cl.Net.Inline || !strings.HasPrefix(topic, "$") {
		return true
	}
	h.subMu.Lock()
	for _, f := range h.subscribing[cl] {
		if f == topic {
			h.subMu.Unlock()
			return true // checking a subscription, not a delivery
		}
	}
	h.subMu.Unlock()
	for filter := range cl.State.Subscriptions.GetAll() {
		if matchDollar(filter, topic) {
			return true
		}
	}
	return false
}

// OnSessionEstablish runs before mochi takes over an existing session of the
// same client id: EMQX (≥ 5.0.5) reports the old connection's disconnect
// before the new connect, with reason discarded (clean start) or takenover.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	b := h.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.live[cl.ID]; ok && old.client != cl {
		b.publishDisconnected(old, handoverReason(pk.Connect.Clean))
		delete(b.live, cl.ID)
	}
}

// OnSessionEstablished publishes the connected message.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if cl.Net.Inline {
		return
	}
	b := h.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if cl.Closed() {
		return // kicked (e.g. taken over) before it was established: EMQX reports nothing
	}
	if old, ok := b.live[cl.ID]; ok && old.client != cl {
		// Two connections raced: the other one was established after our
		// OnSessionEstablish and has been taken over since.
		b.publishDisconnected(old, handoverReason(cl.Properties.Clean))
	}
	c := b.newConn(cl)
	b.live[cl.ID] = c
	b.publishConnected(c)
}

// OnDisconnect publishes the disconnected message with the EMQX reason.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	if cl.Net.Inline {
		return
	}
	b := h.b
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.live[cl.ID]
	if !ok || c.client != cl {
		return // never established, or already reported as taken over
	}
	delete(b.live, cl.ID)
	cause := cl.StopCause()
	if cause == nil {
		cause = err
	}
	b.publishDisconnected(c, DisconnectReason(cause))
}

func handoverReason(cleanStart bool) string {
	if cleanStart {
		return "discarded"
	}
	return "takenover"
}

// DisconnectReason maps why mochi closed a connection to EMQX's reason:
// a DISCONNECT packet → normal, session take-over → takenover, keepalive
// expiry → keepalive_timeout, the peer closing the socket → tcp_closed,
// socket errors → their errno name (econnreset, epipe, etimedout), MQTT
// reason codes → EMQX's reason-code names (not_authorized,
// packet_too_large, server_shutting_down, kicked for an administrative
// action, …), anything else → internal_error.
func DisconnectReason(cause error) string {
	var code packets.Code
	var nerr net.Error
	switch {
	case cause == nil:
		return "closed"
	case errors.As(cause, &code):
		return codeReason(code)
	case errors.Is(cause, syscall.ECONNRESET):
		return "econnreset"
	case errors.Is(cause, syscall.EPIPE):
		return "epipe"
	case errors.Is(cause, syscall.ETIMEDOUT):
		return "etimedout"
	case errors.As(cause, &nerr) && nerr.Timeout():
		return "keepalive_timeout" // the read deadline of 1.5 × keepalive passed
	case errors.Is(cause, io.EOF), errors.Is(cause, io.ErrUnexpectedEOF):
		return "tcp_closed"
	case errors.Is(cause, net.ErrClosed):
		return "closed"
	}
	return "internal_error"
}

// codeReason names an MQTT reason code the way EMQX's emqx_reason_codes does.
func codeReason(c packets.Code) string {
	switch c.Code {
	case packets.CodeDisconnect.Code, packets.CodeDisconnectWillMessage.Code:
		return "normal"
	case packets.ErrSessionTakenOver.Code:
		return "takenover"
	case packets.ErrKeepAliveTimeout.Code:
		return "keepalive_timeout"
	case packets.ErrAdministrativeAction.Code:
		return "kicked"
	case packets.ErrProtocolViolation.Code:
		return "protocol_error"
	case packets.ErrMalformedPacket.Code:
		return "malformed_packet"
	case packets.ErrQuotaExceeded.Code:
		return "quota_exceeded"
	}
	name, _, _ := strings.Cut(c.Reason, ":")
	name = strings.ReplaceAll(strings.ToLower(strings.TrimSpace(name)), " ", "_")
	if name == "" {
		return "reason_code_" + strconv.Itoa(int(c.Code))
	}
	return name
}

// matchDollar reports whether a subscription filter matches topic under
// MQTT's rule that a filter starting with a wildcard does not match a topic
// starting with "$". Shared subscriptions ($share/<group>/…) are unwrapped.
// It runs for every $SYS delivery: it does not allocate.
func matchDollar(filter, topic string) bool {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		_, f, ok := strings.Cut(rest, "/")
		if !ok {
			return false
		}
		filter = f
	}
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "#") || strings.HasPrefix(filter, "+")) {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a".
			return fmore == tmore || (fmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}
