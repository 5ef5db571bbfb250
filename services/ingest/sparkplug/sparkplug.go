// Package sparkplug parses Sparkplug B edge-node presence: the NBIRTH and
// NDEATH messages an edge node's session produces
// (spBv1.0/<group_id>/NBIRTH|NDEATH/<edge_node_id>), whose protobuf payload
// carries the bdSeq metric that pairs a death with its birth. It reads only
// what presence needs — the payload timestamp and the bdSeq metric — with a
// hand-written decoder over google.golang.org/protobuf's wire format
// (sparkplug_b.proto field numbers), skipping everything else. It is pure:
// no I/O, no clock (the receive time is passed in).
package sparkplug

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/internal/field"
	"google.golang.org/protobuf/encoding/protowire"
)

// Source is reported in events.PresenceEvent.Source.
const Source = events.SourceSparkplug

// Namespace is the first topic level of Sparkplug B.
const Namespace = "spBv1.0"

// RawReasonDeath is the raw reason of a disconnect: an NDEATH says the
// session ended, not why (the broker publishes it as the session's Will
// when the connection is lost, the edge node itself before it disconnects).
const RawReasonDeath = "NDEATH"

// MaxPayloadSize bounds a payload (an NBIRTH lists every metric of the
// node, with metadata and templates: it can be large).
const MaxPayloadSize = 16 << 20

// DefaultTopics are the NBIRTH and NDEATH filters of every group.
var DefaultTopics = []string{Namespace + "/+/NBIRTH/+", Namespace + "/+/NDEATH/+"}

// Device id schemes (Config.DeviceID).
const (
	// DeviceGroupEdge makes the device id <group_id>/<edge_node_id>: edge
	// node ids are unique within a group only.
	DeviceGroupEdge = "group/edge"
	// DeviceEdge makes it <edge_node_id>, for deployments whose edge node
	// ids are unique across groups.
	DeviceEdge = "edge"
)

// Errors. Every rejection wraps one of them.
var (
	// ErrTopic means the topic is not spBv1.0/<group>/<type>/<edge node>.
	ErrTopic = errors.New("not a sparkplug b edge node topic")
	// ErrPayload means the payload is not a valid NBIRTH/NDEATH payload.
	ErrPayload = errors.New("invalid sparkplug b payload")
	// ErrNotPresence means a well-formed Sparkplug message that is not an
	// edge node's birth or death (NDATA, DBIRTH, STATE, …).
	ErrNotPresence = errors.New("sparkplug b message that is not an edge node birth or death")
)

// Config is the source's configuration.
type Config struct {
	// Enabled turns the source on.
	Enabled bool `yaml:"enabled"`
	// Topics are the filters (default DefaultTopics; narrow the group
	// level to take some groups only).
	Topics []string `yaml:"topics"`
	// DeviceID is DeviceGroupEdge (default) or DeviceEdge.
	DeviceID string `yaml:"device_id"`
	// Node names the broker in the events (default: the MQTT broker's
	// host:port).
	Node string `yaml:"node"`
}

// DefaultConfig is off, with every group's births and deaths.
func DefaultConfig() Config {
	return Config{Topics: append([]string(nil), DefaultTopics...), DeviceID: DeviceGroupEdge}
}

// Validate checks cfg; prefix names the config section in errors.
func (c Config) Validate(prefix string) error {
	if len(c.Topics) == 0 {
		return fmt.Errorf("%s.topics is empty: use %s and %s", prefix, DefaultTopics[0], DefaultTopics[1])
	}
	for _, t := range c.Topics {
		if !strings.HasPrefix(t, Namespace+"/") {
			return fmt.Errorf("%s.topics: %q is not under %s/: use e.g. %s", prefix, t, Namespace, DefaultTopics[0])
		}
	}
	if c.DeviceID != DeviceGroupEdge && c.DeviceID != DeviceEdge {
		return fmt.Errorf("%s.device_id is %q: use %q (<group_id>/<edge_node_id>) or %q (<edge_node_id>)", prefix, c.DeviceID, DeviceGroupEdge, DeviceEdge)
	}
	return nil
}

// Parser parses NBIRTH/NDEATH messages of one configuration.
type Parser struct {
	cfg Config
}

// New validates cfg and returns its parser. node names the broker when
// cfg.Node is empty.
func New(cfg Config, node string) (*Parser, error) {
	if cfg.Node == "" {
		cfg.Node = node
	}
	if err := cfg.Validate("sparkplug"); err != nil {
		return nil, err
	}
	if cfg.Node == "" {
		return nil, errors.New("sparkplug.node is empty: name the broker, e.g. hivemq-1")
	}
	return &Parser{cfg: cfg}, nil
}

// Parse turns one NBIRTH or NDEATH into a validated event.
//
// The device id is the edge node (see Config.DeviceID); the kind is
// connected for NBIRTH, disconnected for NDEATH; the bdSeq metric is the
// connection identity, carried as ConnVersion = bdSeq + 1 (ConnVersion 0
// means unknown, and bdSeq starts at 0): the death of a session has its
// birth's bdSeq, so a death whose bdSeq is not the current birth's is
// stale. The broker time of an NBIRTH is its payload timestamp (required
// by Sparkplug 3.0); that of an NDEATH is receivedAt, because a death is
// usually the Will registered at CONNECT, whose payload timestamp, when
// present, is the time of the connect, not of the death.
func (p *Parser) Parse(topic string, payload []byte, receivedAt time.Time) (events.PresenceEvent, error) {
	group, typ, edge, err := parseTopic(topic)
	if err != nil {
		return events.PresenceEvent{}, err
	}
	var kind events.Kind
	switch typ {
	case "NBIRTH":
		kind = events.KindConnected
	case "NDEATH":
		kind = events.KindDisconnected
	default:
		return events.PresenceEvent{}, fmt.Errorf("%w: %s", ErrNotPresence, typ)
	}
	if len(payload) > MaxPayloadSize {
		return events.PresenceEvent{}, fmt.Errorf("%w: payload is %d bytes, limit %d", ErrPayload, len(payload), MaxPayloadSize)
	}
	pl, err := decode(payload)
	if err != nil {
		return events.PresenceEvent{}, fmt.Errorf("%w: %s: %w", ErrPayload, typ, err)
	}
	if !pl.hasBdSeq {
		return events.PresenceEvent{}, fmt.Errorf("%w: %s has no bdSeq metric (Sparkplug B requires it in both NBIRTH and NDEATH)", ErrPayload, typ)
	}
	ev := events.PresenceEvent{Kind: kind, Node: p.cfg.Node, Source: Source, Protocol: "mqtt",
		ConnVersion: int64(pl.bdSeq) + 1, ReceivedAtMS: receivedAt.UnixMilli()}
	ev.DeviceID = edge
	if p.cfg.DeviceID == DeviceGroupEdge {
		ev.DeviceID = group + "/" + edge
	}
	switch kind {
	case events.KindConnected:
		if !pl.hasTimestamp {
			return events.PresenceEvent{}, fmt.Errorf("%w: NBIRTH has no timestamp (Sparkplug B requires one)", ErrPayload)
		}
		if pl.timestamp > 1<<62 {
			return events.PresenceEvent{}, fmt.Errorf("%w: NBIRTH timestamp %d is not an epoch time in ms", ErrPayload, pl.timestamp)
		}
		ts, _, err := field.Time(int64(pl.timestamp), "timestamp")
		if err != nil {
			return events.PresenceEvent{}, fmt.Errorf("%w: NBIRTH %w", ErrPayload, err)
		}
		ev.BrokerTSMS, ev.ConnectedAtMS = ts, ts
	default:
		ev.BrokerTSMS = receivedAt.UnixMilli()
		ev.RawReason = RawReasonDeath
		ev.Reason = events.NormalizeReason(RawReasonDeath)
	}
	if ev, err = events.NewPresenceEvent(ev); err != nil {
		return events.PresenceEvent{}, fmt.Errorf("%w: %w", ErrPayload, err)
	}
	return ev, nil
}

// parseTopic splits spBv1.0/<group_id>/<message_type>/<edge_node_id>[/<device_id>].
func parseTopic(topic string) (group, typ, edge string, err error) {
	lv := strings.Split(topic, "/")
	switch {
	case len(lv) < 3 || lv[0] != Namespace:
		return "", "", "", fmt.Errorf("%w: %q is not %s/<group_id>/<message_type>/<edge_node_id>", ErrTopic, topic, Namespace)
	case lv[1] == "STATE":
		return "", "", "", fmt.Errorf("%w: host application STATE", ErrNotPresence)
	case len(lv) < 4 || len(lv) > 5 || lv[1] == "" || lv[3] == "":
		return "", "", "", fmt.Errorf("%w: %q is not %s/<group_id>/<message_type>/<edge_node_id>", ErrTopic, topic, Namespace)
	case len(lv) == 5:
		return "", "", "", fmt.Errorf("%w: %s of device %q", ErrNotPresence, lv[2], lv[4])
	}
	return lv[1], lv[2], lv[3], nil
}

// Field numbers of sparkplug_b.proto (org.eclipse.tahu.protobuf).
const (
	payloadTimestamp = 1 // uint64
	payloadMetrics   = 2 // repeated Metric
	metricName       = 1 // string
	metricDatatype   = 4 // uint32
	metricIsNull     = 7 // bool
	metricIntValue   = 10
	metricLongValue  = 11
)

// Sparkplug B DataType values of the integer types.
const (
	typeInt8   = 1
	typeUInt64 = 8
)

// payload is what presence needs of a Payload message.
type payload struct {
	timestamp    uint64
	hasTimestamp bool
	bdSeq        uint64
	hasBdSeq     bool
}

// decode reads the timestamp and the bdSeq metric, checking the wire
// format of everything it skips.
func decode(b []byte) (payload, error) {
	var p payload
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return p, fmt.Errorf("invalid protobuf: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == payloadTimestamp && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return p, fmt.Errorf("invalid protobuf timestamp: %w", protowire.ParseError(n))
			}
			p.timestamp, p.hasTimestamp, b = v, true, b[n:]
		case num == payloadMetrics && typ == protowire.BytesType:
			m, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return p, fmt.Errorf("invalid protobuf metric: %w", protowire.ParseError(n))
			}
			b = b[n:]
			v, isBdSeq, err := bdSeq(m)
			if err != nil {
				return p, err
			}
			if isBdSeq {
				if p.hasBdSeq {
					return p, errors.New("two bdSeq metrics")
				}
				p.bdSeq, p.hasBdSeq = v, true
			}
		case num == payloadTimestamp || num == payloadMetrics:
			return p, fmt.Errorf("invalid protobuf: payload field %d has wire type %d", num, typ)
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return p, fmt.Errorf("invalid protobuf field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return p, nil
}

// bdSeq reads a Metric message: whether it is the bdSeq metric and, if so,
// its value (long_value, or int_value from encoders that use a 32-bit type).
func bdSeq(b []byte) (uint64, bool, error) {
	var (
		name               []byte
		hasName            bool
		value, datatype    uint64
		hasValue, hasType  bool
		isNull, wrongValue bool
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false, fmt.Errorf("invalid protobuf in a metric: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == metricName && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, false, fmt.Errorf("invalid protobuf metric name: %w", protowire.ParseError(n))
			}
			name, hasName, b = v, true, b[n:]
		case (num == metricDatatype || num == metricIsNull || num == metricIntValue || num == metricLongValue) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, false, fmt.Errorf("invalid protobuf metric field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case metricDatatype:
				datatype, hasType = v, true
			case metricIsNull:
				isNull = v != 0
			case metricIntValue:
				value, hasValue = uint64(uint32(v)), true
			default:
				value, hasValue = v, true
			}
		case num == metricName || num == metricDatatype || num == metricIsNull || num == metricIntValue || num == metricLongValue:
			return 0, false, fmt.Errorf("invalid protobuf: metric field %d has wire type %d", num, typ)
		default:
			if num >= 12 && num <= 19 { // another value of the oneof
				wrongValue = true
			}
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return 0, false, fmt.Errorf("invalid protobuf metric field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if !hasName || string(name) != "bdSeq" {
		return 0, false, nil
	}
	switch {
	case isNull:
		return 0, false, errors.New("the bdSeq metric is null")
	case hasType && (datatype < typeInt8 || datatype > typeUInt64):
		return 0, false, fmt.Errorf("the bdSeq metric has datatype %d, want an integer type (Int64 = 4)", datatype)
	case wrongValue || !hasValue:
		return 0, false, errors.New("the bdSeq metric has no integer value (long_value)")
	case value > 1<<62: // Sparkplug 3.0 wraps it at 255; older nodes may count on
		return 0, false, fmt.Errorf("the bdSeq metric %d is too large for a birth/death sequence number", value)
	}
	return value, true, nil
}
