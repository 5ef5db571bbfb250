package tracker

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"unsafe"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// idHasher computes events.ContentID without allocating but for the
// result: the tracker derives two ids per notification (the group's
// fingerprint and the notification's id), which made ContentID's hashing
// the largest cost of a busy tick. TestIDHasherMatchesContentID holds it to
// the same bytes.
type idHasher struct {
	buf []byte
	// block holds the bytes of the notification ids handed out (see
	// sumShared); bytes once handed out are never written again.
	block []byte
}

// idBlock is the size of a block of notification ids: 32 ids.
const idBlock = 32 * 32

// add appends one part: escaped (NUL and 0x01 prefixed by 0x01), then NUL.
func (h *idHasher) add(p string) {
	if !hasLow(p) {
		// The common case: nothing to escape, one copy.
		h.buf = append(h.buf, p...)
		h.buf = append(h.buf, 0)
		return
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= 1 {
			h.buf = append(h.buf, 1)
		}
		h.buf = append(h.buf, p[i])
	}
	h.buf = append(h.buf, 0)
}

// hasLow reports whether p holds a NUL or a 0x01 byte, eight bytes at a
// time.
func hasLow(p string) bool {
	b := unsafe.Slice(unsafe.StringData(p), len(p))
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		if (x-0x0202020202020202)&^x&0x8080808080808080 != 0 { // a byte below 2
			return true
		}
	}
	for ; i < len(b); i++ {
		if b[i] <= 1 {
			return true
		}
	}
	return false
}

// sum returns the id of the parts added since the last sum.
func (h *idHasher) sum() string {
	s := sha256.Sum256(h.buf)
	h.buf = h.buf[:0]
	var out [32]byte
	hex.Encode(out[:], s[:16])
	return string(out[:])
}

// sumShared is sum for short-lived ids (notification ids, published and
// dropped): their bytes are carved from a block shared by 32 ids, one
// allocation instead of one per id. A block is never reused, so the
// strings stay immutable; it is freed when none of its ids is referenced.
func (h *idHasher) sumShared() string {
	s := sha256.Sum256(h.buf)
	h.buf = h.buf[:0]
	if cap(h.block)-len(h.block) < 32 {
		h.block = make([]byte, 0, idBlock)
	}
	i := len(h.block)
	h.block = h.block[:i+32]
	hex.Encode(h.block[i:i+32], s[:16])
	return unsafe.String(&h.block[i], 32)
}

// fingerprint is the stable fingerprint of a group's notifications:
// events.ContentID(kind, key).
func (t *Tracker) fingerprint(kind events.AlertKind, key string) string {
	t.ids2.add(string(kind))
	t.ids2.add(key)
	return t.ids2.sum()
}

// notificationID is a notification's idempotency key: the group episode
// (fingerprint and start) and the notification's sequence number in it, so
// that repeats and updates get distinct ids and a replay derives the same.
// It is events.ContentID("alert.v1", receiver, fp, status, start, end, seq),
// or, with Config.IDScope set, events.ContentID("alert.v1", scope, receiver,
// fp, status, start, end, seq).
func (t *Tracker) notificationID(receiver, fp string, status events.AlertStatus, start, end int64, seq uint32) string {
	h := &t.ids2
	h.buf = append(h.buf, "alert.v1\x00"...) // h.add("alert.v1")
	if t.idScope != "" {
		h.add(t.idScope)
	}
	h.add(receiver)
	h.add(fp)
	h.add(string(status))
	h.buf = strconv.AppendInt(h.buf, start, 10)
	h.buf = append(h.buf, 0)
	h.buf = strconv.AppendInt(h.buf, end, 10)
	h.buf = append(h.buf, 0)
	h.buf = strconv.AppendUint(h.buf, uint64(seq), 10)
	h.buf = append(h.buf, 0)
	return h.sumShared()
}
