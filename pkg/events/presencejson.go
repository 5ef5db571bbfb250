package events

import (
	"encoding/binary"
	"encoding/json"
	"hash/maphash"
	"math/bits"
	"strconv"
	"unicode/utf8"
	"unsafe"

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
// costs no allocation. Device ids, usernames and the low-cardinality fields
// (kind, reason, raw reason, node, protocol, source) are interned; the id
// and ip, mostly distinct, are not. A PresenceDecoder is not safe for
// concurrent use; the strings it returns stay valid forever (unless
// Borrow is set). The zero PresenceDecoder interns nothing.
type PresenceDecoder struct {
	// IgnoreID leaves PresenceEvent.ID as it was: the member is checked
	// as encoding/json checks it, not stored. For readers that never use
	// the id, it saves the one allocation a new event otherwise costs.
	IgnoreID bool
	// Borrow makes the strings that need no unescaping point into the
	// data decoded instead of being copied or interned: no allocation
	// and no lookup, but they are valid only while data is unchanged.
	// For readers that are done with an event before they reuse its
	// bytes (and keep copies of what they keep).
	Borrow bool

	max  int
	strs strTable
	few  [numClasses][]string
	buf  []byte
}

// maxFew bounds each field's short list searched before the table.
const maxFew = 32

// NewPresenceDecoder returns a PresenceDecoder that interns up to
// maxInterned distinct strings; past that, new strings are allocated.
func NewPresenceDecoder(maxInterned int) *PresenceDecoder {
	return &PresenceDecoder{max: maxInterned, strs: strTable{seed: maphash.MakeSeed()}}
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
	fresh   strClass = iota // mostly distinct (id, ip): a new string each time
	many                    // many values, each seen many times (device id, username)
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
	x := *e
	if p.compact(&x) {
		*e = x
		return true
	}
	p.I = 0
	return p.general(e)
}

// Integers of at most this many digits fit the fields: compact reads them
// without range checks.
const (
	int64Digits = 18
	intDigits   = 9 + 9*(strconv.IntSize/64)
)

// compact reads a payload as json.Marshal and AppendPresence write it, the
// usual case, in one pass: an object without white space, member names of
// PresenceEvent as they are spelled, strings without escapes (and valid
// UTF-8), integers without sign of at most int64Digits (intDigits) digits.
// It reports false, e possibly changed, on anything else, which general
// reads again.
func (p *presenceParser) compact(e *PresenceEvent) bool {
	b := p.B
	if len(b) < 2 || b[0] != '{' {
		return false
	}
	if b[1] == '}' {
		return len(b) == 2
	}
	ignoreID := p.d != nil && p.d.IgnoreID
	i := 1
	for {
		// The name up to the next quote, then a colon: whatever it holds,
		// only the names below (no escape, no quote) are taken.
		if i >= len(b) || b[i] != '"' {
			return false
		}
		i++
		start := i
		i = quote(b, i)
		if i+1 >= len(b) || b[i+1] != ':' {
			return false
		}
		name := b[start:i]
		i += 2
		var (
			str   *string
			class strClass
			i64   *int64
			in    *int
		)
		switch string(name) {
		case "v":
			in = &e.V
		case "id":
			str, class = &e.ID, fresh
			if ignoreID {
				class = discard
			}
		case "device_id":
			str, class = &e.DeviceID, many
		case "kind":
			str, class = (*string)(&e.Kind), fewKind
		case "reason":
			str, class = (*string)(&e.Reason), fewReason
		case "raw_reason":
			str, class = &e.RawReason, fewRawReason
		case "node":
			str, class = &e.Node, fewNode
		case "broker_ts_ms":
			i64 = &e.BrokerTSMS
		case "connected_at_ms":
			i64 = &e.ConnectedAtMS
		case "conn_version":
			i64 = &e.ConnVersion
		case "ip":
			str, class = &e.IP, fresh
		case "username":
			str, class = &e.Username, many
		case "protocol":
			str, class = &e.Protocol, fewProtocol
		case "proto_ver":
			in = &e.ProtoVer
		case "keepalive_s":
			in = &e.KeepaliveS
		case "source":
			str, class = &e.Source, fewSource
		case "received_at_ms":
			i64 = &e.ReceivedAtMS
		default:
			return false
		}
		if str != nil {
			if i >= len(b) || b[i] != '"' {
				return false
			}
			end, ascii := jsonscan.Plain(b, i+1)
			if end >= len(b) || b[end] != '"' {
				return false // an escape, a control character or no end
			}
			raw := b[i+1 : end]
			i = end + 1
			if class != discard {
				if !ascii && !utf8.Valid(raw) {
					return false
				}
				*str = p.intern(raw, class)
			}
		} else {
			start := i
			var u uint64
			for i+8 <= len(b) {
				x := binary.LittleEndian.Uint64(b[i:])
				if !eightDigits(x) {
					break
				}
				u = u*100_000_000 + digitsValue(x)
				i += 8
			}
			for i < len(b) && b[i]-'0' <= 9 {
				u = u*10 + uint64(b[i]-'0')
				i++
			}
			n := i - start
			if n == 0 || n > 1 && b[start] == '0' {
				return false
			}
			if i64 != nil {
				if n > int64Digits {
					return false
				}
				*i64 = int64(u)
			} else {
				if n > intDigits {
					return false
				}
				*in = int(u)
			}
		}
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return i+1 == len(b)
		default:
			return false
		}
	}
}

// eightDigits reports whether the eight bytes of x (loaded little-endian)
// are ASCII digits.
func eightDigits(x uint64) bool {
	return x&0xf0f0f0f0f0f0f0f0|(x+0x0606060606060606)&0xf0f0f0f0f0f0f0f0>>4 == 0x3333333333333333
}

// digitsValue returns the number eight ASCII digits loaded little-endian
// in x stand for (the first byte the most significant digit).
func digitsValue(x uint64) uint64 {
	x = (x & 0x0f0f0f0f0f0f0f0f) * (1 + 10<<8) >> 8
	x = (x & 0x00ff00ff00ff00ff) * (1 + 100<<16) >> 16
	return (x & 0x0000ffff0000ffff) * (1 + 10000<<32) >> 32
}

// quote returns the index of the first quote in b at or after i, len(b)
// if there is none, reading eight bytes at a time.
func quote(b []byte, i int) int {
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:]) ^ (0x0101010101010101 * '"')
		if m := (x - 0x0101010101010101) & ^x & 0x8080808080808080; m != 0 {
			return i + bits.TrailingZeros64(m)>>3 // the lowest flagged byte is exact
		}
	}
	for ; i < len(b) && b[i] != '"'; i++ {
	}
	return i
}

// general reads a whole payload into e, any JSON encoding/json accepts
// except for the cases it leaves to it. It reports false, e possibly
// changed, on anything encoding/json should decide.
func (p *presenceParser) general(e *PresenceEvent) bool {
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
			return p.text(&e.Username, many)
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
	case d != nil && d.Borrow:
		return unsafe.String(unsafe.SliceData(raw), len(raw))
	case d == nil && c >= fewKind:
		return common(raw)
	case d == nil || c == fresh:
		return string(raw)
	case c == many:
		return d.shared(raw)
	}
	few := d.few[c]
	for _, v := range few {
		// The last bytes differ first (node names, reasons): compared
		// before calling memequal.
		if len(v) == len(raw) && (len(v) == 0 || v[len(v)-1] == raw[len(raw)-1]) && v == string(raw) {
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
	if len(raw) == 0 {
		return ""
	}
	if d.max == 0 {
		return string(raw) // nothing to intern (and no seed in a zero PresenceDecoder)
	}
	h := maphash.Bytes(d.strs.seed, raw)
	if v, ok := d.strs.find(raw, h); ok {
		return v
	}
	v := string(raw)
	if d.strs.n < d.max {
		d.strs.add(v, h)
	}
	return v
}

// strTable is a set of strings looked up by their bytes without
// allocating: open addressing with linear probing, each slot the string
// and its hash (compared first), at most 3/4 full. It costs a hash and
// about one cache miss less than a map[string]string per lookup.
type strTable struct {
	seed  maphash.Seed
	slots []strSlot // a power of two long; len(s) == 0: empty
	n     int
}

type strSlot struct {
	h uint64
	s string
}

// find returns the string of the bytes raw (not empty), whose hash is h.
func (t *strTable) find(raw []byte, h uint64) (string, bool) {
	mask := uint64(len(t.slots) - 1)
	if len(t.slots) == 0 {
		return "", false
	}
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &t.slots[i]
		if len(sl.s) == 0 {
			return "", false
		}
		if sl.h == h && sl.s == string(raw) {
			return sl.s, true
		}
	}
}

// add adds s (not empty, not in the table), whose hash is h.
func (t *strTable) add(s string, h uint64) {
	if (t.n+1)*4 > len(t.slots)*3 {
		old := t.slots
		t.slots = make([]strSlot, max(2*len(old), 1024))
		for _, sl := range old {
			if len(sl.s) != 0 {
				t.place(sl)
			}
		}
	}
	t.place(strSlot{h: h, s: s})
	t.n++
}

func (t *strTable) place(sl strSlot) {
	mask := uint64(len(t.slots) - 1)
	for i := sl.h & mask; ; i = (i + 1) & mask {
		if len(t.slots[i].s) == 0 {
			t.slots[i] = sl
			return
		}
	}
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
