package events

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// DefaultPartitions is the number of presence partitions used when a
// deployment does not set its own. It is fixed for the life of a deployment:
// changing it moves devices between partitions.
const DefaultPartitions = 64

// maxTokenLen bounds an encoded subject token. Longer device ids are still
// addressable, through a hashed token (see EncodeToken).
const maxTokenLen = 200

// Subject prefixes, one per stream. The schema version is part of every subject.
const (
	PresencePrefix   = "presence.v1"
	AlertsPrefix     = "alerts.v1"
	DeliveriesPrefix = "deliveries.v1"
	DeadLetterPrefix = "deadletter.v1"
)

// ErrBadToken is returned by DecodeToken for text that EncodeToken cannot have
// produced.
var ErrBadToken = errors.New("not an encoded subject token")

// Partition returns the partition of a device: FNV-1a 32 of the device id
// modulo partitions. It is stable across versions and processes.
func Partition(deviceID string, partitions int) int {
	if partitions <= 0 {
		partitions = DefaultPartitions
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(deviceID))
	return int(h.Sum32() % uint32(partitions))
}

// PresenceSubject is the subject of a presence event:
// presence.v1.<partition>.<encoded device id>. "Last message for device X" is
// one lookup on it, and presence.v1.<p>.* selects one partition.
func PresenceSubject(deviceID string, partitions int) string {
	return PresencePrefix + "." + strconv.Itoa(Partition(deviceID, partitions)) + "." + EncodeToken(deviceID)
}

// PresencePartitionFilter selects every presence event of one partition.
func PresencePartitionFilter(partition int) string {
	return PresencePrefix + "." + strconv.Itoa(partition) + ".*"
}

// AlertSubject is the subject of an alert for one receiver:
// alerts.v1.<encoded receiver>.
func AlertSubject(receiver string) string {
	return AlertsPrefix + "." + EncodeToken(receiver)
}

// DeliverySubject is the subject of a delivery attempt record:
// deliveries.v1.<encoded receiver>.
func DeliverySubject(receiver string) string {
	return DeliveriesPrefix + "." + EncodeToken(receiver)
}

// DeadLetterSubject is the subject of a rejected input:
// deadletter.v1.<stage>.<encoded source>.
func DeadLetterSubject(stage, source string) string {
	return DeadLetterPrefix + "." + EncodeToken(stage) + "." + EncodeToken(source)
}

// EncodeToken turns any string into one NATS subject token, reversibly.
// Bytes in [A-Za-z0-9_-] are kept, so common client ids stay readable; every
// other byte (".", "*", ">", spaces, "%", unicode) becomes %XX. The empty
// string becomes "%". An encoding longer than 200 bytes is replaced by
// "~" + hex SHA-256 of the id: still stable and device-addressable, but not
// reversible (the id is always in the payload).
func EncodeToken(s string) string {
	if s == "" {
		return "%"
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isPlain(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0x0f])
	}
	if b.Len() > maxTokenLen {
		sum := sha256.Sum256([]byte(s))
		return "~" + hex.EncodeToString(sum[:])
	}
	return b.String()
}

// DecodeToken reverses EncodeToken. Hashed tokens ("~…") cannot be reversed
// and return ErrBadToken, as does any text EncodeToken cannot have produced
// (lowercase or needless escapes such as "%41", tokens over 200 bytes), so
// that every device id has exactly one token.
func DecodeToken(tok string) (string, error) {
	if tok == "%" {
		return "", nil
	}
	if tok == "" || tok[0] == '~' || len(tok) > maxTokenLen {
		return "", fmt.Errorf("%q: %w", tok, ErrBadToken)
	}
	var b strings.Builder
	b.Grow(len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case isPlain(c):
			b.WriteByte(c)
		case c == '%' && i+2 < len(tok):
			hi, ok1 := unhex(tok[i+1])
			lo, ok2 := unhex(tok[i+2])
			if !ok1 || !ok2 || isPlain(hi<<4|lo) {
				return "", fmt.Errorf("%q: bad escape at %d: %w", tok, i, ErrBadToken)
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
		default:
			return "", fmt.Errorf("%q: byte %q at %d: %w", tok, c, i, ErrBadToken)
		}
	}
	return b.String(), nil
}

const hexDigits = "0123456789ABCDEF"

func isPlain(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// ContentID derives a stable 128-bit id (32 hex characters) from the given
// parts. It is used for Nats-Msg-Id and event ids, so that the same content
// always gets the same id and JetStream stores it once. Different part lists
// always hash different input: each part ends with a NUL byte, and NUL and
// 0x01 bytes inside a part are escaped with 0x01 (parts without them hash as
// they are, so ids of ordinary content never change).
func ContentID(parts ...string) string {
	var stack [256]byte
	buf := stack[:0]
	for _, p := range parts {
		buf = appendIDPart(buf, p)
	}
	return idOf(buf)
}

// ContentID's input is assembled in a caller's stack buffer by appendIDPart
// and appendIDInt, and hashed by idOf, so that deriving an id costs one
// allocation (the id string) on the ingest and archiver hot paths.

// appendIDPart appends one part, escaped, and its terminating NUL.
func appendIDPart(buf []byte, p string) []byte {
	for {
		i := strings.IndexAny(p, "\x00\x01")
		if i < 0 {
			buf = append(buf, p...)
			break
		}
		buf = append(buf, p[:i]...)
		buf = append(buf, 1, p[i])
		p = p[i+1:]
	}
	return append(buf, 0)
}

// appendIDInt appends a decimal part, as strconv.FormatInt writes it (its
// digits and sign need no escaping).
func appendIDInt(buf []byte, v int64) []byte {
	return append(strconv.AppendInt(buf, v, 10), 0)
}

// idOf returns the hex of the first 128 bits of the input's SHA-256.
func idOf(buf []byte) string {
	sum := sha256.Sum256(buf)
	var out [32]byte
	hex.Encode(out[:], sum[:16])
	return string(out[:])
}
