package backtest

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// Decoder parses PresenceEvent JSON lines without reflection: a scanner for
// the event's flat object that interns repeated strings (device ids, nodes,
// reasons), so that a known device costs no allocation. It accepts exactly
// what encoding/json accepts into an events.PresenceEvent and yields the
// same values (FuzzDecoder checks both), except that with Full unset it
// skips the fields the tracker does not read (id, raw_reason, protocol,
// proto_ver, source), validating them only as JSON.
//
// A Decoder is not safe for concurrent use. The strings it returns stay
// valid for its lifetime.
type Decoder struct {
	// Full keeps every field (tests); otherwise unread fields are skipped.
	Full bool

	strs map[string]string
	few  []string
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder { return &Decoder{strs: make(map[string]string)} }

// maxInterned bounds the interned strings; past it, strings are allocated.
const maxInterned = 50_000_000

// ErrSyntax is wrapped by every decode error.
var ErrSyntax = errors.New("invalid presence event JSON")

type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) fail(what string) error {
	return fmt.Errorf("%w: %s at byte %d", ErrSyntax, what, s.i)
}

// Decode parses one line into e (reset first).
func (d *Decoder) Decode(line []byte, e *events.PresenceEvent) error {
	*e = events.PresenceEvent{}
	s := scanner{b: line}
	s.ws()
	if s.null() {
		return s.end() // as encoding/json: null leaves the event as it is
	}
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return s.fail("want an object")
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return s.end()
	}
	for {
		s.ws()
		key, err := s.rawString()
		if err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return s.fail("want ':'")
		}
		s.i++
		s.ws()
		if err := d.field(&s, key, e); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.fail("unterminated object")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return s.end()
		default:
			return s.fail("want ',' or '}'")
		}
	}
}

func (s *scanner) end() error {
	s.ws()
	if s.i != len(s.b) {
		return s.fail("data after the object")
	}
	return nil
}

// rawString scans a string and returns its raw content (escapes not
// decoded), s.i past the closing quote.
func (s *scanner) rawString() ([]byte, error) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, s.fail("want a string")
	}
	s.i++
	start := s.i
	b := s.b
	for {
		i := s.i
		// Eight bytes at a time while none is a quote, a backslash or a
		// control character.
		for i+8 <= len(b) {
			x := binary.LittleEndian.Uint64(b[i:])
			if hasZero(x^(lsb*'"'))|hasZero(x^(lsb*'\\'))|hasLess(x, 0x20) != 0 {
				break
			}
			i += 8
		}
		for i < len(b) {
			if c := b[i]; c == '"' || c == '\\' || c < 0x20 {
				break
			}
			i++
		}
		s.i = i
		if i >= len(b) {
			return nil, s.fail("unterminated string")
		}
		switch b[i] {
		case '"':
			s.i++
			return b[start:i], nil
		case '\\':
			if err := s.escape(); err != nil {
				return nil, err
			}
		default:
			return nil, s.fail("control character in string")
		}
	}
}

// escape checks the escape sequence at s.i (a backslash) and skips it.
func (s *scanner) escape() error {
	s.i++
	if s.i >= len(s.b) {
		return s.fail("unterminated string")
	}
	switch s.b[s.i] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.i++
	case 'u':
		if s.i+4 >= len(s.b) {
			return s.fail("short \\u escape")
		}
		for _, h := range s.b[s.i+1 : s.i+5] {
			if !isHex(h) {
				return s.fail("bad \\u escape")
			}
		}
		s.i += 5
	default:
		return s.fail("bad escape")
	}
	return nil
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// hasZero is non-zero when a byte of x is 0.
func hasZero(x uint64) uint64 { return (x - lsb) & ^x & msb }

// hasLess is non-zero when a byte of x is below n (n <= 128).
func hasLess(x uint64, n uint64) uint64 { return (x - lsb*n) & ^x & msb }

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// plain reports whether raw string content needs no decoding: no escapes,
// valid UTF-8.
func plain(raw []byte) bool {
	ascii := true
	for _, c := range raw {
		if c == '\\' {
			return false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	return ascii || utf8.Valid(raw)
}

// unquote decodes raw string content the way encoding/json does.
func unquote(raw []byte) (string, error) {
	if plain(raw) {
		return string(raw), nil
	}
	q := make([]byte, 0, len(raw)+2)
	q = append(q, '"')
	q = append(q, raw...)
	q = append(q, '"')
	var out string
	if err := json.Unmarshal(q, &out); err != nil {
		return "", fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	return out, nil
}

// small returns a string value from a small set (kinds, reasons, nodes),
// interned in a short list searched before the map.
func (d *Decoder) small(s *scanner, dst *string) error {
	if s.null() {
		return nil
	}
	start := s.i
	raw, err := s.rawString()
	if err != nil {
		return err
	}
	for _, v := range d.few {
		if v == string(raw) {
			*dst = v
			return nil
		}
	}
	s.i = start
	if err := d.str(s, dst); err != nil {
		return err
	}
	if len(d.few) < 32 && plain(raw) {
		d.few = append(d.few, *dst)
	}
	return nil
}

// str returns a string value, interned; null keeps the field as it was.
func (d *Decoder) str(s *scanner, dst *string) error {
	if s.null() {
		return nil
	}
	raw, err := s.rawString()
	if err != nil {
		return err
	}
	if plain(raw) {
		if v, ok := d.strs[string(raw)]; ok {
			*dst = v
			return nil
		}
		v := string(raw)
		if len(d.strs) < maxInterned {
			d.strs[v] = v
		}
		*dst = v
		return nil
	}
	v, err := unquote(raw)
	if err != nil {
		return err
	}
	*dst = v
	return nil
}

func (s *scanner) null() bool {
	if len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// integer parses a JSON number into an int64 (bits wide), rejecting
// fractions and exponents as encoding/json does for integer fields.
func (s *scanner) integer(dst *int64, bits int) error {
	if s.null() {
		return nil
	}
	start := s.i
	neg := false
	if s.i < len(s.b) && s.b[s.i] == '-' {
		neg = true
		s.i++
	}
	if s.i >= len(s.b) || s.b[s.i] < '0' || s.b[s.i] > '9' {
		if s.i < len(s.b) && (s.b[s.i] == '"' || s.b[s.i] == 't' || s.b[s.i] == 'f' || s.b[s.i] == '{' || s.b[s.i] == '[') {
			return s.fail("want a number")
		}
		return s.fail("invalid number")
	}
	var u uint64
	overflow := false
	if s.b[s.i] == '0' {
		s.i++
	} else {
		digits := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			dgt := uint64(s.b[s.i] - '0')
			if digits >= 19 && u > (math.MaxUint64-dgt)/10 {
				overflow = true
			} else {
				u = u*10 + dgt
			}
			digits++
			s.i++
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		// A valid JSON number that is not an integer: encoding/json
		// refuses it for an int field. Check it is valid JSON first.
		s.i = start
		if err := s.skipNumber(); err != nil {
			return err
		}
		return s.fail("number is not an integer")
	}
	limit := uint64(1)<<(bits-1) - 1
	if neg {
		limit++
	}
	if overflow || u > limit {
		return s.fail("number out of range")
	}
	v := int64(u)
	if neg {
		v = -v
	}
	*dst = v
	return nil
}

func (s *scanner) intField(dst *int, bits int) error {
	v := int64(*dst)
	if err := s.integer(&v, bits); err != nil {
		return err
	}
	*dst = int(v)
	return nil
}

// field parses the value of one key.
func (d *Decoder) field(s *scanner, key []byte, e *events.PresenceEvent) error {
	switch string(key) {
	case "device_id":
		return d.str(s, &e.DeviceID)
	case "kind":
		return d.small(s, (*string)(&e.Kind))
	case "reason":
		return d.small(s, (*string)(&e.Reason))
	case "node":
		return d.small(s, &e.Node)
	case "ip":
		return d.fresh(s, &e.IP)
	case "username":
		return d.fresh(s, &e.Username)
	case "broker_ts_ms":
		return s.integer(&e.BrokerTSMS, 64)
	case "connected_at_ms":
		return s.integer(&e.ConnectedAtMS, 64)
	case "received_at_ms":
		return s.integer(&e.ReceivedAtMS, 64)
	case "conn_version":
		return s.integer(&e.ConnVersion, 64)
	case "keepalive_s":
		return s.intField(&e.KeepaliveS, 64)
	case "v":
		return s.intField(&e.V, 64)
	case "id":
		return d.other(s, &e.ID)
	case "raw_reason":
		return d.other(s, &e.RawReason)
	case "protocol":
		return d.other(s, &e.Protocol)
	case "source":
		return d.other(s, &e.Source)
	case "proto_ver":
		if !d.Full {
			var v int64
			return s.integer(&v, 64)
		}
		return s.intField(&e.ProtoVer, 64)
	}
	// Not a field name as written: encoding/json matches field names
	// case-insensitively too.
	k, err := unquote(key)
	if err != nil {
		return err
	}
	for _, f := range keys {
		if strings.EqualFold(f, k) {
			return d.field(s, []byte(f), e)
		}
	}
	return s.skipValue(0)
}

// other parses a field the tracker does not read: kept when Full, else
// only checked.
func (d *Decoder) other(s *scanner, dst *string) error {
	if d.Full {
		return d.str(s, dst)
	}
	if s.null() {
		return nil
	}
	_, err := s.rawString()
	return err
}

// fresh parses a string value without interning it (values that are
// mostly distinct, such as IP addresses).
func (d *Decoder) fresh(s *scanner, dst *string) error {
	if s.null() {
		return nil
	}
	raw, err := s.rawString()
	if err != nil {
		return err
	}
	v, err := unquote(raw)
	if err != nil {
		return err
	}
	*dst = v
	return nil
}

var keys = []string{"v", "id", "device_id", "kind", "reason", "raw_reason", "node", "broker_ts_ms", "connected_at_ms",
	"conn_version", "ip", "username", "protocol", "proto_ver", "keepalive_s", "source", "received_at_ms"}

// maxDepth bounds the nesting of skipped values (encoding/json allows
// 10000).
const maxDepth = 10000

// skipValue skips any JSON value, validating it.
func (s *scanner) skipValue(depth int) error {
	if depth > maxDepth {
		return s.fail("nested too deeply")
	}
	if s.i >= len(s.b) {
		return s.fail("want a value")
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, err := s.rawString()
		return err
	case c == '{':
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == '}' {
			s.i++
			return nil
		}
		for {
			s.ws()
			if _, err := s.rawString(); err != nil {
				return err
			}
			s.ws()
			if s.i >= len(s.b) || s.b[s.i] != ':' {
				return s.fail("want ':'")
			}
			s.i++
			s.ws()
			if err := s.skipValue(depth + 1); err != nil {
				return err
			}
			s.ws()
			if s.i >= len(s.b) {
				return s.fail("unterminated object")
			}
			if s.b[s.i] == '}' {
				s.i++
				return nil
			}
			if s.b[s.i] != ',' {
				return s.fail("want ',' or '}'")
			}
			s.i++
		}
	case c == '[':
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			return nil
		}
		for {
			s.ws()
			if err := s.skipValue(depth + 1); err != nil {
				return err
			}
			s.ws()
			if s.i >= len(s.b) {
				return s.fail("unterminated array")
			}
			if s.b[s.i] == ']' {
				s.i++
				return nil
			}
			if s.b[s.i] != ',' {
				return s.fail("want ',' or ']'")
			}
			s.i++
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.skipNumber()
}

func (s *scanner) literal(lit string) error {
	if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
		s.i += len(lit)
		return nil
	}
	return s.fail("invalid literal")
}

// skipNumber skips a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) skipNumber() error {
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.i < len(s.b) && s.b[s.i] >= '1' && s.b[s.i] <= '9':
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
	default:
		return s.fail("invalid number")
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.i >= len(s.b) || s.b[s.i] < '0' || s.b[s.i] > '9' {
			return s.fail("invalid number")
		}
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.i >= len(s.b) || s.b[s.i] < '0' || s.b[s.i] > '9' {
			return s.fail("invalid number")
		}
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
	}
	return nil
}
