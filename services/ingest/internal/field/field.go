// Package field decodes the loosely typed JSON values that presence sources
// send: strings where EMQX writes "undefined" for an absent value, integers
// that may arrive as integral floats, and epoch times in milliseconds (or
// seconds, as EMQX 4.0.x sends them). Errors name the field and never wrap a
// sentinel: each parser wraps them with its own.
package field

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// SecondsBelow: times below this many milliseconds are seconds (EMQX 4.0.x):
// about 1973-03-03 in ms, 5138 AD in seconds.
const SecondsBelow = 1e11

// Times outside [MinTimeMS, MaxTimeMS) are rejected: before 2000-01-01 or
// after about 5138 AD, the value is not a broker event time.
const (
	MinTimeMS = 946684800000
	MaxTimeMS = 1e14
)

// Present reports whether a JSON value is there and not null.
func Present(raw json.RawMessage) bool {
	return len(raw) > 0 && string(raw) != "null"
}

// IsObject reports whether payload, after leading white space, starts a JSON
// object. It is the cheap first check before decoding.
func IsObject(payload []byte) bool {
	t := bytes.TrimLeft(payload, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

// String decodes an optional string ("" when absent or null). With absent,
// EMQX's "undefined" is empty too.
func String(raw json.RawMessage, name string, absent bool) (string, error) {
	if !Present(raw) {
		return "", nil
	}
	s, ok := plainString(raw)
	if !ok {
		var err error
		if s, err = jsonString(raw); err != nil {
			return "", fmt.Errorf("%s is %s, want a string", name, Kind(raw))
		}
	}
	if absent && s == "undefined" {
		return "", nil
	}
	return s, nil
}

// jsonString decodes a JSON string with encoding/json (kept apart so that
// the fast path does not allocate the result on the heap).
func jsonString(raw json.RawMessage) (string, error) {
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

// plainString decodes a JSON string that needs no unescaping: no escapes,
// no control characters, valid UTF-8 (encoding/json would replace invalid
// bytes). Anything else reports false for encoding/json to decode.
func plainString(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	ascii := true
	for _, c := range in {
		switch {
		case c == '"' || c == '\\' || c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if !ascii && !utf8.Valid(in) {
		return "", false
	}
	return string(in), true
}

// plainInt decodes a JSON integer of at most 18 digits (no fraction, no
// exponent), which cannot overflow. Anything else reports false.
func plainInt(raw json.RawMessage) (int64, bool) {
	digits := raw
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 18 || (digits[0] == '0' && len(digits) > 1) {
		return 0, false
	}
	var v int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	if raw[0] == '-' {
		v = -v
	}
	return v, true
}

// Bool decodes an optional JSON boolean.
func Bool(raw json.RawMessage, name string) (v, ok bool, err error) {
	if !Present(raw) {
		return false, false, nil
	}
	switch string(raw) {
	case "true":
		return true, true, nil
	case "false":
		return false, true, nil
	}
	return false, false, fmt.Errorf("%s is %s, want a boolean", name, Kind(raw))
}

// Int decodes an optional JSON integer (an integral number).
func Int(raw json.RawMessage, name string) (int64, bool, error) {
	if !Present(raw) {
		return 0, false, nil
	}
	if v, ok := plainInt(raw); ok {
		return v, true, nil
	}
	if raw[0] == '"' {
		return 0, false, fmt.Errorf("%s is a string, want an integer", name)
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, false, fmt.Errorf("%s is %s, want an integer", name, Kind(raw))
	}
	if i, err := n.Int64(); err == nil {
		return i, true, nil
	}
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) || math.Abs(f) >= 1<<53 {
		return 0, false, fmt.Errorf("%s is %s, want an integer", name, n.String())
	}
	return int64(f), true, nil
}

// TimeMS decodes an optional epoch time in ms; values below SecondsBelow are
// seconds and are scaled.
func TimeMS(raw json.RawMessage, name string) (int64, bool, error) {
	v, ok, err := Int(raw, name)
	if err != nil || !ok {
		return 0, ok, err
	}
	return Time(v, name)
}

// Time checks an epoch time in ms or s (see TimeMS) and returns it in ms.
func Time(v int64, name string) (int64, bool, error) {
	if v <= 0 {
		return 0, false, fmt.Errorf("%s %d is not a positive epoch time", name, v)
	}
	if v < SecondsBelow {
		v *= 1000
	}
	if v < MinTimeMS || v >= MaxTimeMS {
		return 0, false, fmt.Errorf("%s %d is not an epoch time between 2000 and 5000 AD", name, v)
	}
	return v, true, nil
}

// ProtoVer decodes proto_ver: an integer for MQTT, possibly a version string
// such as "1.2" for gateway clients (reported as 0 when not an integer).
func ProtoVer(raw json.RawMessage) (int, error) {
	if Present(raw) && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("proto_ver is not a valid string")
		}
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > math.MaxUint8 {
			return 0, nil
		}
		return v, nil
	}
	v, _, err := Int(raw, "proto_ver")
	if err != nil {
		return 0, err
	}
	if v < 0 || v > math.MaxUint8 {
		return 0, fmt.Errorf("proto_ver %d is not 0..255", v)
	}
	return int(v), nil
}

// Keepalive decodes keepalive in seconds (0..65535).
func Keepalive(raw json.RawMessage) (int, error) {
	v, _, err := Int(raw, "keepalive")
	if err != nil {
		return 0, err
	}
	if v < 0 || v > math.MaxUint16 {
		return 0, fmt.Errorf("keepalive %d is not 0..65535 seconds", v)
	}
	return int(v), nil
}

// Kind describes a JSON value's type for error messages.
func Kind(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "empty"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}
