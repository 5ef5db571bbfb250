package archiver

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// decode parses and validates one message payload. Unknown JSON fields are
// accepted: v1 may gain optional fields that this archiver does not store.
//
// Presence events, the bulk of the archive, are first tried with
// decodePresence, which is several times faster than encoding/json and
// gives exactly its result for the payloads it accepts; anything else goes
// through encoding/json.
func decode[E event](data []byte) (E, error) {
	var e E
	p, isPresence := any(&e).(*events.PresenceEvent)
	if !isPresence || !decodePresence(data, p) {
		if err := json.Unmarshal(data, &e); err != nil {
			return e, fmt.Errorf("decode json: %w", err)
		}
	}
	if err := e.Validate(); err != nil {
		return e, err
	}
	return e, nil
}

// decodePresence parses a presence event without reflection when the
// payload has the shape fleetwatch writes: one JSON object whose keys are
// exactly the event's JSON field names, with string values (simple escapes
// allowed, valid UTF-8) and integer values. On anything else (another key,
// even one encoding/json would match case-insensitively or ignore; null;
// a float; a surrogate escape; invalid JSON) it reports false and leaves
// *out unchanged, and the caller falls back to encoding/json. When it
// reports true, *out is what json.Unmarshal would have produced
// (FuzzDecodePresence checks this).
func decodePresence(data []byte, out *events.PresenceEvent) bool {
	s := scanner{b: data}
	var e events.PresenceEvent
	if !s.consume('{') {
		return false
	}
	if s.consume('}') {
		return s.end(out, e)
	}
	for {
		key, ok := s.rawKey()
		if !ok || !s.consume(':') {
			return false
		}
		switch string(key) {
		case "v":
			ok = s.integer(&e.V)
		case "id":
			e.ID, ok = s.str()
		case "device_id":
			e.DeviceID, ok = s.str()
		case "kind":
			var k string
			k, ok = s.str()
			e.Kind = events.Kind(k)
		case "reason":
			var r string
			r, ok = s.str()
			e.Reason = events.Reason(r)
		case "raw_reason":
			e.RawReason, ok = s.str()
		case "node":
			e.Node, ok = s.str()
		case "broker_ts_ms":
			ok = s.integer64(&e.BrokerTSMS)
		case "connected_at_ms":
			ok = s.integer64(&e.ConnectedAtMS)
		case "conn_version":
			ok = s.integer64(&e.ConnVersion)
		case "ip":
			e.IP, ok = s.str()
		case "username":
			e.Username, ok = s.str()
		case "protocol":
			e.Protocol, ok = s.str()
		case "proto_ver":
			ok = s.integer(&e.ProtoVer)
		case "keepalive_s":
			ok = s.integer(&e.KeepaliveS)
		case "source":
			e.Source, ok = s.str()
		case "received_at_ms":
			ok = s.integer64(&e.ReceivedAtMS)
		default:
			return false
		}
		if !ok {
			return false
		}
		if s.consume('}') {
			return s.end(out, e)
		}
		if !s.consume(',') {
			return false
		}
	}
}

// scanner reads the JSON subset decodePresence accepts. Every method
// reports false on input outside that subset.
type scanner struct {
	b []byte
	i int
	// buf holds unescaped string bytes.
	buf []byte
}

func (s *scanner) skipSpace() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// consume skips white space and then c, if c is next.
func (s *scanner) consume(c byte) bool {
	s.skipSpace()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end accepts the object just closed if only white space follows it.
func (s *scanner) end(out *events.PresenceEvent, e events.PresenceEvent) bool {
	s.skipSpace()
	if s.i != len(s.b) {
		return false
	}
	*out = e
	return true
}

// rawKey reads an object key without escapes or non-ASCII bytes.
func (s *scanner) rawKey() ([]byte, bool) {
	if !s.consume('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
			return nil, false
		}
		s.i++
	}
	return nil, false
}

// str reads a string value: valid UTF-8, escapes other than surrogate
// \u sequences decoded.
func (s *scanner) str() (string, bool) {
	if !s.consume('"') {
		return "", false
	}
	start := s.i
	ascii := true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw := s.b[start:s.i]
			s.i++
			if !ascii && !utf8.Valid(raw) {
				return "", false
			}
			return intern(raw), true
		case c == '\\':
			return s.escaped(start, ascii)
		case c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		s.i++
	}
	return "", false
}

// escaped finishes a string that has an escape at s.i; start is its first
// byte.
func (s *scanner) escaped(start int, ascii bool) (string, bool) {
	if !ascii && !utf8.Valid(s.b[start:s.i]) {
		return "", false
	}
	buf := append(s.buf[:0], s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			s.buf = buf
			return string(buf), true
		case c < 0x20:
			return "", false
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return "", false
			}
			s.i += 2
			switch s.b[s.i-1] {
			case '"', '\\', '/':
				buf = append(buf, s.b[s.i-1])
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				if s.i+4 > len(s.b) {
					return "", false
				}
				r, err := strconv.ParseUint(string(s.b[s.i:s.i+4]), 16, 32)
				if err != nil || r >= 0xD800 && r <= 0xDFFF {
					return "", false // a surrogate: encoding/json pairs or replaces it
				}
				buf = utf8.AppendRune(buf, rune(r))
				s.i += 4
			default:
				return "", false
			}
			continue
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && size == 1 {
				return "", false
			}
			buf = append(buf, s.b[s.i:s.i+size]...)
			s.i += size
			continue
		}
		buf = append(buf, c)
		s.i++
	}
	return "", false
}

// integer64 reads an integer value: -?(0|[1-9][0-9]*) in the int64 range,
// not followed by a fraction or exponent.
func (s *scanner) integer64(v *int64) bool {
	s.skipSpace()
	neg := s.i < len(s.b) && s.b[s.i] == '-'
	if neg {
		s.i++
	}
	limit := uint64(1<<63 - 1)
	if neg {
		limit = 1 << 63
	}
	start := s.i
	var u uint64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		d := uint64(s.b[s.i] - '0')
		if u > (limit-d)/10 {
			return false // out of range: encoding/json fails
		}
		u = u*10 + d
		s.i++
	}
	switch {
	case s.i == start, // no digit
		s.b[start] == '0' && s.i-start > 1, // a leading zero
		s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E'):
		return false
	}
	if neg {
		*v = int64(-u) //nolint:gosec // u <= 1<<63: -u wraps to the intended value
	} else {
		*v = int64(u)
	}
	return true
}

// integer reads an integer value in the range of int.
func (s *scanner) integer(v *int) bool {
	var n int64
	if !s.integer64(&n) || n < -1<<(strconv.IntSize-1) || n > 1<<(strconv.IntSize-1)-1 {
		return false
	}
	*v = int(n)
	return true
}

// intern returns the common values of low-cardinality fields without
// allocating, and a copy of anything else.
func intern(b []byte) string {
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
	}
	return string(b)
}
