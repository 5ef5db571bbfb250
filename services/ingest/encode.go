package ingest

import (
	"strconv"
	"unicode/utf8"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// appendEvent appends ev's JSON, byte for byte what json.Marshal writes for
// an events.PresenceEvent (same field order, omitempty, string escaping),
// without reflection: it is on the path of every event. encode_test.go
// checks it against json.Marshal, by fuzzing too, and fails when
// PresenceEvent gains a field this function does not write.
func appendEvent(dst []byte, ev *events.PresenceEvent) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, int64(ev.V), 10)
	dst = appendStringField(dst, `,"id":`, ev.ID)
	dst = appendStringField(dst, `,"device_id":`, ev.DeviceID)
	dst = appendStringField(dst, `,"kind":`, string(ev.Kind))
	if ev.Reason != "" {
		dst = appendStringField(dst, `,"reason":`, string(ev.Reason))
	}
	if ev.RawReason != "" {
		dst = appendStringField(dst, `,"raw_reason":`, ev.RawReason)
	}
	dst = appendStringField(dst, `,"node":`, ev.Node)
	dst = append(dst, `,"broker_ts_ms":`...)
	dst = strconv.AppendInt(dst, ev.BrokerTSMS, 10)
	if ev.ConnectedAtMS != 0 {
		dst = append(dst, `,"connected_at_ms":`...)
		dst = strconv.AppendInt(dst, ev.ConnectedAtMS, 10)
	}
	if ev.ConnVersion != 0 {
		dst = append(dst, `,"conn_version":`...)
		dst = strconv.AppendInt(dst, ev.ConnVersion, 10)
	}
	if ev.IP != "" {
		dst = appendStringField(dst, `,"ip":`, ev.IP)
	}
	if ev.Username != "" {
		dst = appendStringField(dst, `,"username":`, ev.Username)
	}
	if ev.Protocol != "" {
		dst = appendStringField(dst, `,"protocol":`, ev.Protocol)
	}
	if ev.ProtoVer != 0 {
		dst = append(dst, `,"proto_ver":`...)
		dst = strconv.AppendInt(dst, int64(ev.ProtoVer), 10)
	}
	if ev.KeepaliveS != 0 {
		dst = append(dst, `,"keepalive_s":`...)
		dst = strconv.AppendInt(dst, int64(ev.KeepaliveS), 10)
	}
	dst = appendStringField(dst, `,"source":`, ev.Source)
	dst = append(dst, `,"received_at_ms":`...)
	dst = strconv.AppendInt(dst, ev.ReceivedAtMS, 10)
	return append(dst, '}')
}

func appendStringField(dst []byte, name, s string) []byte {
	return appendJSONString(append(dst, name...), s)
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as encoding/json does with HTML escaping on
// (its default): <, > and & as \u003c…, control characters, invalid UTF-8
// as \ufffd, U+2028 and U+2029 escaped.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
