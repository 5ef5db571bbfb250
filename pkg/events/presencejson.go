package events

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/fleetwatch/fleetwatch/pkg/events/jsonscan"
)

// AppendPresence appends e's JSON to dst and returns the extended buffer:
// byte for byte what json.Marshal(e) writes (same field order, omitempty,
// string escaping), without reflection or allocation beyond dst's growth.
// Tests check it against json.Marshal, by fuzzing too, and fail when
// PresenceEvent gains a field it does not write.
func AppendPresence(dst []byte, e *PresenceEvent) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, int64(e.V), 10)
	dst = appendStringMember(dst, `,"id":`, e.ID)
	dst = appendStringMember(dst, `,"device_id":`, e.DeviceID)
	dst = appendStringMember(dst, `,"kind":`, string(e.Kind))
	if e.Reason != "" {
		dst = appendStringMember(dst, `,"reason":`, string(e.Reason))
	}
	if e.RawReason != "" {
		dst = appendStringMember(dst, `,"raw_reason":`, e.RawReason)
	}
	dst = appendStringMember(dst, `,"node":`, e.Node)
	dst = append(dst, `,"broker_ts_ms":`...)
	dst = strconv.AppendInt(dst, e.BrokerTSMS, 10)
	if e.ConnectedAtMS != 0 {
		dst = append(dst, `,"connected_at_ms":`...)
		dst = strconv.AppendInt(dst, e.ConnectedAtMS, 10)
	}
	if e.ConnVersion != 0 {
		dst = append(dst, `,"conn_version":`...)
		dst = strconv.AppendInt(dst, e.ConnVersion, 10)
	}
	if e.IP != "" {
		dst = appendStringMember(dst, `,"ip":`, e.IP)
	}
	if e.Username != "" {
		dst = appendStringMember(dst, `,"username":`, e.Username)
	}
	if e.Protocol != "" {
		dst = appendStringMember(dst, `,"protocol":`, e.Protocol)
	}
	if e.ProtoVer != 0 {
		dst = append(dst, `,"proto_ver":`...)
		dst = strconv.AppendInt(dst, int64(e.ProtoVer), 10)
	}
	if e.KeepaliveS != 0 {
		dst = append(dst, `,"keepalive_s":`...)
		dst = strconv.AppendInt(dst, int64(e.KeepaliveS), 10)
	}
	dst = appendStringMember(dst, `,"source":`, e.Source)
	dst = append(dst, `,"received_at_ms":`...)
	dst = strconv.AppendInt(dst, e.ReceivedAtMS, 10)
	return append(dst, '}')
}

func appendStringMember(dst []byte, name, s string) []byte {
	return jsonscan.AppendString(append(dst, name...), s)
}

// DecodePresence parses data into e exactly as json.Unmarshal(data, e)
// does: the same fields set (the others keep their values), the same
// values, the same errors. Unknown members are ignored, member names match
// case-insensitively, the last of duplicate members wins, null leaves a
// field as it is, escapes and invalid UTF-8 in strings decode as
// encoding/json decodes them. FuzzDecodePresence checks this.
//
// It does it without reflection for any valid payload whose member names
// are ASCII without escapes; other payloads (such names, an unknown member
// nested deeper than jsonscan.MaxDepth, and every payload encoding/json
// rejects) are handed to encoding/json, so errors are encoding/json's own.
func DecodePresence(data []byte, e *PresenceEvent) error {
	return decodePresence(data, e, nil)
}

// PresenceDecoder is DecodePresence for a reader of many events: it reuses
// strings across calls, so that an event whose strings it has seen before
// costs no allocation. Device ids and the low-cardinality fields (kind,
// reason, raw reason, node, protocol, source) are interned; the id, ip and
// username, mostly distinct, are not. A PresenceDecoder is not safe for
// concurrent use; the strings it returns stay valid forever.
type PresenceDecoder struct {
	// IgnoreID leaves PresenceEvent.ID as it was: the member is checked
	// as encoding/json checks it, not stored. For readers that never use
	// the id, it saves the one allocation a new event otherwise costs.
	IgnoreID bool

	max  int
	strs map[string]string
	few  [numClasses][]string
	buf  []byte
}

// maxFew bounds each field's short list searched before the map.
const maxFew = 32

// NewPresenceDecoder returns a PresenceDecoder that interns up to
// maxInterned distinct strings; past that, new strings are allocated.
func NewPresenceDecoder(maxInterned int) *PresenceDecoder {
	return &PresenceDecoder{max: maxInterned, strs: make(map[string]string)}
}

// Decode parses data into e as DecodePresence does (and, when IgnoreID is
// set, leaves e.ID as it was).
func (d *PresenceDecoder) Decode(data []byte, e *PresenceEvent) error {
	return decodePresence(data, e, d)
}

func decodePresence(data []byte, e *PresenceEvent, d *PresenceDecoder) error {
	// Decode into a copy: on input the fast path refuses, encoding/json
	// must start from e as it was.
	x := *e
	p := presenceParser{Scanner: jsonscan.Scanner{B: data}, d: d}
	if p.event(&x) {
		*e = x
		return nil
	}
	// Through a copy again, so that e does not escape: callers may keep
	// their events on the stack.
	y := new(PresenceEvent)
	*y = *e
	err := json.Unmarshal(data, y)
	if d != nil && d.IgnoreID {
		y.ID = e.ID
	}
	*e = *y
	return err
}

// strClass says how a string field's values are shared.
type strClass uint8

const (
	fresh   strClass = iota // mostly distinct (id, ip, username): a new string each time
	many                    // many values, each seen many times (device id)
	discard                 // checked, not stored
	// A handful of values (kind, reason, …), each field its own list.
	fewKind
	fewReason
	fewRawReason
	fewNode
	fewProtocol
	fewSource
	numClasses
)

// presenceParser is one decoding of a presence event.
type presenceParser struct {
	jsonscan.Scanner
	d *PresenceDecoder // nil: no state across calls
}

// event reads a whole payload into e. It reports false, e possibly
// changed, on anything encoding/json should decide.
func (p *presenceParser) event(e *PresenceEvent) bool {
	p.WS()
	if p.Next() == 'n' {
		return p.Literal("null") && p.End() // null leaves e as it is
	}
	if !p.Eat('{') {
		return false
	}
	p.WS()
	if p.Eat('}') {
		return p.End()
	}
	for {
		p.WS()
		raw, escaped, ascii, ok := p.Str()
		if !ok || escaped || !ascii {
			return false // names with escapes or non-ASCII runes: encoding/json folds them
		}
		p.WS()
		if !p.Eat(':') {
			return false
		}
		p.WS()
		if !p.member(raw, e) {
			return false
		}
		p.WS()
		if p.Eat('}') {
			return p.End()
		}
		if !p.Eat(',') {
			return false
		}
	}
}

// member reads the value of the member named name (ASCII, no escapes).
func (p *presenceParser) member(name []byte, e *PresenceEvent) bool {
	var lower [16]byte
	for try := 0; try < 2; try++ {
		switch string(name) {
		case "v":
			return p.intField(&e.V)
		case "id":
			if p.d != nil && p.d.IgnoreID {
				return p.text(nil, discard)
			}
			return p.text(&e.ID, fresh)
		case "device_id":
			return p.text(&e.DeviceID, many)
		case "kind":
			return p.text((*string)(&e.Kind), fewKind)
		case "reason":
			return p.text((*string)(&e.Reason), fewReason)
		case "raw_reason":
			return p.text(&e.RawReason, fewRawReason)
		case "node":
			return p.text(&e.Node, fewNode)
		case "broker_ts_ms":
			return p.int64Field(&e.BrokerTSMS)
		case "connected_at_ms":
			return p.int64Field(&e.ConnectedAtMS)
		case "conn_version":
			return p.int64Field(&e.ConnVersion)
		case "ip":
			return p.text(&e.IP, fresh)
		case "username":
			return p.text(&e.Username, fresh)
		case "protocol":
			return p.text(&e.Protocol, fewProtocol)
		case "proto_ver":
			return p.intField(&e.ProtoVer)
		case "keepalive_s":
			return p.intField(&e.KeepaliveS)
		case "source":
			return p.text(&e.Source, fewSource)
		case "received_at_ms":
			return p.int64Field(&e.ReceivedAtMS)
		}
		// encoding/json also matches names case-insensitively (ASCII
		// letters here: name is ASCII).
		if try > 0 || len(name) > len(lower) {
			break
		}
		upper := false
		for i, c := range name {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
				upper = true
			}
			lower[i] = c
		}
		if !upper {
			break
		}
		name = lower[:len(name)]
	}
	return p.SkipValue(0) // an unknown member
}

// text reads a string value (null keeps *dst) of a field of class c.
func (p *presenceParser) text(dst *string, c strClass) bool {
	if p.Next() == 'n' {
		return p.Literal("null")
	}
	raw, escaped, ascii, ok := p.Str()
	if !ok {
		return false // not a string, or invalid: a type or syntax error
	}
	if c == discard {
		return true
	}
	if escaped || !ascii && !utf8.Valid(raw) {
		*dst = p.unquote(raw)
		return true
	}
	*dst = p.intern(raw, c)
	return true
}

// unquote returns the string raw (a string's content with escapes or
// invalid UTF-8) stands for.
func (p *presenceParser) unquote(raw []byte) string {
	if p.d != nil {
		p.d.buf = jsonscan.AppendUnquoted(p.d.buf[:0], raw)
		return string(p.d.buf)
	}
	var stack [128]byte
	return string(jsonscan.AppendUnquoted(stack[:0], raw))
}

// intern returns raw as a string, shared with earlier ones where its class
// allows.
func (p *presenceParser) intern(raw []byte, c strClass) string {
	d := p.d
	switch {
	case d == nil && c >= fewKind:
		return common(raw)
	case d == nil || c == fresh:
		return string(raw)
	case c == many:
		return d.shared(raw)
	}
	few := d.few[c]
	for _, v := range few {
		if v == string(raw) {
			return v
		}
	}
	v := d.shared(raw)
	if len(few) < maxFew {
		d.few[c] = append(few, v)
	}
	return v
}

// shared returns the interned copy of raw, interning it if there is room.
func (d *PresenceDecoder) shared(raw []byte) string {
	if v, ok := d.strs[string(raw)]; ok {
		return v
	}
	v := string(raw)
	if len(d.strs) < d.max {
		d.strs[v] = v
	}
	return v
}

// common returns the usual values of the low-cardinality fields without
// allocating, and a copy of anything else.
func common(b []byte) string {
	switch string(b) {
	case "":
		return ""
	case "connected":
		return "connected"
	case "disconnected":
		return "disconnected"
	case "mqtt":
		return "mqtt"
	case "normal":
		return "normal"
	case "keepalive_timeout":
		return "keepalive_timeout"
	case "closed":
		return "closed"
	case "tcp_closed":
		return "tcp_closed"
	case "takenover":
		return "takenover"
	case "discarded":
		return "discarded"
	case "kicked":
		return "kicked"
	case "socket_error":
		return "socket_error"
	case "other":
		return "other"
	case "emqx_sys_v5":
		return "emqx_sys_v5"
	case "emqx_sys_v4":
		return "emqx_sys_v4"
	case "emqx_rule_v5":
		return "emqx_rule_v5"
	case "emqx_rule_v4":
		return "emqx_rule_v4"
	case "emqx_webhook_v4":
		return "emqx_webhook_v4"
	case "aws_iot":
		return "aws_iot"
	}
	return string(b)
}

// int64Field reads an integer value (null keeps *dst).
func (p *presenceParser) int64Field(dst *int64) bool {
	if p.Next() == 'n' {
		return p.Literal("null")
	}
	v, ok := p.Integer(64)
	if ok {
		*dst = v
	}
	return ok
}

// intField reads an integer value into an int (null keeps *dst).
func (p *presenceParser) intField(dst *int) bool {
	if p.Next() == 'n' {
		return p.Literal("null")
	}
	v, ok := p.Integer(strconv.IntSize)
	if ok {
		*dst = int(v)
	}
	return ok
}
