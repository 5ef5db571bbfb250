// Package lastwill parses the broker-agnostic Last-Will/birth presence
// convention: a device publishes a (usually retained) "online" on a status
// topic after connecting and sets a Will of "offline" on the same topic,
// which the broker publishes when the connection is lost. Topic pattern,
// payload values and an optional JSON timestamp field are configurable. It
// is pure: no I/O, no clock (the receive time is passed in).
package lastwill

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/internal/field"
)

// Source is reported in events.PresenceEvent.Source.
const Source = "last_will"

// DeviceLevel marks the topic level that holds the device id in a pattern.
const DeviceLevel = "{device}"

// MaxPayloadSize bounds a status payload.
const MaxPayloadSize = 64 << 10

// Errors. Every rejection wraps one of them.
var (
	// ErrTopic means the topic does not match the configured pattern.
	ErrTopic = errors.New("topic does not match the last-will status pattern")
	// ErrPayload means the payload is not a configured status.
	ErrPayload = errors.New("invalid last-will status payload")
	// ErrNotPresence means the message carries no presence to store: an
	// empty payload (a retained status being cleared), or a retained status
	// without a timestamp, replayed by the broker on every subscribe (its
	// time is unknown, and storing it each time would invent transitions).
	ErrNotPresence = errors.New("last-will status that is not a presence change")
)

// Config describes a deployment's convention.
type Config struct {
	// Enabled turns the source on.
	Enabled bool `yaml:"enabled"`
	// Pattern is the status topic with the device id level written
	// {device}, e.g. devices/{device}/status; other levels may be "+", and
	// the last may be "#". A device id cannot contain "/" here.
	Pattern string `yaml:"pattern"`
	// Online and Offline are the payload values (compared without case and
	// surrounding white space) meaning connected and disconnected.
	Online  []string `yaml:"online"`
	Offline []string `yaml:"offline"`
	// StateField, when set, makes the payload a JSON object whose field of
	// this name holds the value (a string, or a boolean: true/false).
	StateField string `yaml:"state_field"`
	// TimestampField, when set, names a JSON field with the status time:
	// epoch ms (or seconds), or an RFC 3339 string. Without it the receive
	// time is used, and retained statuses replayed on subscribe are ignored.
	TimestampField string `yaml:"timestamp_field"`
	// Node names the broker in the events (default: the MQTT broker's
	// host:port).
	Node string `yaml:"node"`
}

// DefaultConfig is off, with the common convention.
func DefaultConfig() Config {
	return Config{
		Pattern: "devices/{device}/status",
		Online:  []string{"online"},
		Offline: []string{"offline"},
	}
}

// Validate checks the convention; prefix names the config section.
func (c Config) Validate(prefix string) error {
	if _, _, err := compile(c.Pattern); err != nil {
		return fmt.Errorf("%s.pattern %q %w", prefix, c.Pattern, err)
	}
	if len(c.Online) == 0 || len(c.Offline) == 0 {
		return fmt.Errorf("%s.online and %s.offline must both list payload values, e.g. [online] and [offline]", prefix, prefix)
	}
	seen := map[string]string{}
	for _, l := range []struct {
		list string
		vals []string
	}{{"online", c.Online}, {"offline", c.Offline}} {
		list := l.list
		for _, v := range l.vals {
			k := norm(v)
			if k == "" {
				return fmt.Errorf("%s.%s has an empty value: an empty payload clears a retained status", prefix, list)
			}
			if other, ok := seen[k]; ok && other != list {
				return fmt.Errorf("%s: %q is both an online and an offline value", prefix, v)
			}
			seen[k] = list
		}
	}
	if c.StateField != "" && c.StateField == c.TimestampField {
		return fmt.Errorf("%s.state_field and timestamp_field are both %q: use two fields", prefix, c.StateField)
	}
	return nil
}

// Filter is the subscription filter of the pattern ({device} becomes +).
func (c Config) Filter() string {
	return strings.ReplaceAll(c.Pattern, DeviceLevel, "+")
}

func compile(pattern string) (levels []string, device int, err error) {
	if pattern == "" {
		return nil, 0, errors.New("is empty: use e.g. devices/{device}/status")
	}
	levels = strings.Split(pattern, "/")
	device = -1
	for i, l := range levels {
		switch {
		case l == DeviceLevel:
			if device >= 0 {
				return nil, 0, errors.New("has {device} twice: mark one level")
			}
			device = i
		case l == "#" && i == len(levels)-1:
		case strings.ContainsAny(l, "#") || (strings.Contains(l, "+") && l != "+"):
			return nil, 0, errors.New("has a wildcard that is not a whole level ('#' only last)")
		case strings.ContainsAny(l, "{}"):
			return nil, 0, errors.New("has a level with braces other than {device}")
		}
	}
	if device < 0 {
		return nil, 0, errors.New("has no {device} level: mark the level that holds the device id, e.g. devices/{device}/status")
	}
	if strings.HasPrefix(pattern, "$share/") {
		return nil, 0, errors.New("is a shared subscription: set ingest.mqtt.shared_group instead")
	}
	return levels, device, nil
}

func norm(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// Parser parses status messages of one convention.
type Parser struct {
	cfg    Config
	levels []string
	device int
	kinds  map[string]events.Kind
}

// New validates cfg and returns its parser. node is used when cfg.Node is
// empty.
func New(cfg Config, node string) (*Parser, error) {
	if cfg.Node == "" {
		cfg.Node = node
	}
	if err := cfg.Validate("last_will"); err != nil {
		return nil, err
	}
	if cfg.Node == "" {
		return nil, errors.New("last_will.node is empty: name the broker, e.g. mosquitto-1")
	}
	p := &Parser{cfg: cfg, kinds: map[string]events.Kind{}}
	p.levels, p.device, _ = compile(cfg.Pattern)
	for _, v := range cfg.Online {
		p.kinds[norm(v)] = events.KindConnected
	}
	for _, v := range cfg.Offline {
		p.kinds[norm(v)] = events.KindDisconnected
	}
	return p, nil
}

// deviceID returns the device id level of topic, if topic matches.
func (p *Parser) deviceID(topic string) (string, bool) {
	ts := strings.Split(topic, "/")
	id := ""
	for i, l := range p.levels {
		switch {
		case l == "#":
			return id, len(ts) >= i && id != ""
		case i >= len(ts):
			return "", false
		case i == p.device:
			id = ts[i]
		case l != "+" && l != ts[i]:
			return "", false
		}
	}
	return id, len(ts) == len(p.levels) && id != ""
}

// Parse turns one status message into a validated event. retained is the
// MQTT retain flag: a retained status reaches a subscriber when it
// subscribes, not when it was published.
//
// The device id is the topic's {device} level; the kind is the configured
// meaning of the payload value; a disconnect's raw reason is that value
// (normalised "other" unless it is a known reason). The broker time is the
// timestamp field, else receivedAt. With a timestamp a connect's time is
// also its connection start (ConnectedAtMS).
func (p *Parser) Parse(topic string, payload []byte, retained bool, receivedAt time.Time) (events.PresenceEvent, error) {
	id, ok := p.deviceID(topic)
	if !ok {
		return events.PresenceEvent{}, fmt.Errorf("%w: %q does not match %s", ErrTopic, topic, p.cfg.Pattern)
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		return events.PresenceEvent{}, fmt.Errorf("%w: empty payload (a retained status cleared)", ErrNotPresence)
	}
	if len(payload) > MaxPayloadSize {
		return events.PresenceEvent{}, fmt.Errorf("%w: payload is %d bytes, limit %d", ErrPayload, len(payload), MaxPayloadSize)
	}
	state, ts, hasTS, err := p.values(payload)
	if err != nil {
		return events.PresenceEvent{}, fmt.Errorf("%w: %w", ErrPayload, err)
	}
	kind, ok := p.kinds[norm(state)]
	if !ok {
		return events.PresenceEvent{}, fmt.Errorf("%w: status %q is neither online %q nor offline %q", ErrPayload, state, p.cfg.Online, p.cfg.Offline)
	}
	if !hasTS && retained {
		return events.PresenceEvent{}, fmt.Errorf("%w: retained status %q without a timestamp, replayed on subscribe (set timestamp_field to use it)", ErrNotPresence, state)
	}
	ev := events.PresenceEvent{DeviceID: id, Kind: kind, Node: p.cfg.Node, Source: Source,
		BrokerTSMS: receivedAt.UnixMilli(), ReceivedAtMS: receivedAt.UnixMilli()}
	if hasTS {
		ev.BrokerTSMS = ts
		if kind == events.KindConnected {
			ev.ConnectedAtMS = ts
		}
	}
	if kind == events.KindDisconnected {
		ev.RawReason = strings.TrimSpace(state)
		ev.Reason = events.NormalizeReason(ev.RawReason)
	}
	if ev, err = events.NewPresenceEvent(ev); err != nil {
		return events.PresenceEvent{}, fmt.Errorf("%w: %w", ErrPayload, err)
	}
	return ev, nil
}

// values reads the status value and the timestamp.
func (p *Parser) values(payload []byte) (state string, ts int64, hasTS bool, err error) {
	if p.cfg.StateField == "" && p.cfg.TimestampField == "" {
		return string(payload), 0, false, nil
	}
	if !field.IsObject(payload) {
		return "", 0, false, fmt.Errorf("not a JSON object (state_field/timestamp_field are set)")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(payload, &m); err != nil {
		return "", 0, false, fmt.Errorf("invalid JSON: %v", err)
	}
	state = string(payload)
	if f := p.cfg.StateField; f != "" {
		raw := m[f]
		switch {
		case !field.Present(raw):
			return "", 0, false, fmt.Errorf("%s is missing", f)
		case string(raw) == "true" || string(raw) == "false":
			state = string(raw)
		default:
			if state, err = field.String(raw, f, false); err != nil {
				return "", 0, false, err
			}
		}
	}
	if f := p.cfg.TimestampField; f != "" {
		raw := m[f]
		if field.Present(raw) && raw[0] == '"' {
			var s string
			_ = json.Unmarshal(raw, &s)
			t, perr := time.Parse(time.RFC3339Nano, s)
			if perr != nil {
				return "", 0, false, fmt.Errorf("%s %q is neither epoch ms/s nor an RFC 3339 time", f, s)
			}
			ts, hasTS, err = field.Time(t.UnixMilli(), f)
		} else {
			ts, hasTS, err = field.TimeMS(raw, f)
		}
		if err != nil {
			return "", 0, false, err
		}
	}
	return state, ts, hasTS, nil
}
