package tracker

import (
	"hash/maphash"
	"unsafe"
)

// deviceIndex maps device ids to their slot in the device slice: an
// open-addressing hash table of 8-byte entries (32 bits of the id's hash,
// and the slot + 1), kept at most 3/4 full. It costs 11 to 21 bytes per
// device, against 30 to 60 for a Go map of string keys, and one cache miss
// less per lookup (the ids are compared in the device slice, which the
// lookup reads next anyway). Devices are never removed.
//
// The hash seed is random per process: nothing iterates the table, so
// decisions do not depend on it.
type deviceIndex struct {
	seed    maphash.Seed
	entries []uint64
	n       int
}

func newDeviceIndex() deviceIndex {
	return deviceIndex{seed: maphash.MakeSeed(), entries: make([]uint64, 64)}
}

func (x *deviceIndex) hash(id string) uint32 { return uint32(maphash.String(x.seed, id)) }

// reserve sizes the table for n devices.
func (x *deviceIndex) reserve(n int) {
	size := len(x.entries)
	for n*4 > size*3 {
		size *= 2
	}
	if size != len(x.entries) {
		old := x.entries
		x.entries = make([]uint64, size)
		for _, e := range old {
			if e != 0 {
				x.place(e)
			}
		}
	}
}

// lookup returns the slot of id, and its hash for insert when absent.
func (x *deviceIndex) lookup(devs []device, ids *idArena, id string) (slot uint32, h uint32, ok bool) {
	h = x.hash(id)
	mask := uint32(len(x.entries) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		e := x.entries[i]
		if e == 0 {
			return 0, h, false
		}
		if uint32(e>>32) == h {
			if s := uint32(e) - 1; ids.get(devs[s].id) == id {
				return s, h, true
			}
		}
	}
}

// insert adds a slot whose id hashes to h (and is not in the table).
func (x *deviceIndex) insert(h, slot uint32) {
	if (x.n+1)*4 > len(x.entries)*3 {
		old := x.entries
		x.entries = make([]uint64, 2*len(old))
		for _, e := range old {
			if e != 0 {
				x.place(e)
			}
		}
	}
	x.place(uint64(h)<<32 | uint64(slot+1))
	x.n++
}

func (x *deviceIndex) place(e uint64) {
	mask := uint32(len(x.entries) - 1)
	for i := uint32(e>>32) & mask; ; i = (i + 1) & mask {
		if x.entries[i] == 0 {
			x.entries[i] = e
			return
		}
	}
}

// idArena stores device ids back to back in 64 KiB chunks: a device id
// costs its length, without an allocation of its own, and a device refers
// to it with an 8-byte idRef instead of a string header, so that the device
// slice holds no pointer and the garbage collector never scans it. Chunks
// are never written after an id is stored in them, and ids are never freed
// (devices are never removed).
type idArena struct {
	chunks [][]byte
}

// idRef locates an id in the arena: chunk<<32 | offset<<16 | length.
type idRef uint64

const (
	idChunk = 64 << 10
	// maxIDLen is the longest device id: an MQTT client id is at most
	// 65535 bytes.
	maxIDLen = 1<<16 - 1
)

func (a *idArena) store(s string) idRef {
	n := len(a.chunks)
	if n == 0 || len(s) > idChunk/8 || cap(a.chunks[n-1])-len(a.chunks[n-1]) < len(s) {
		size := idChunk
		if len(s) > idChunk/8 {
			size = len(s) // a rare long id: a chunk of its own
		}
		a.chunks = append(a.chunks, make([]byte, 0, size))
		n++
	}
	c := &a.chunks[n-1]
	off := len(*c)
	*c = append(*c, s...)
	return idRef(uint64(n-1)<<32 | uint64(off)<<16 | uint64(len(s)))
}

func (a *idArena) get(r idRef) string {
	n := int(r & 0xffff)
	if n == 0 {
		return ""
	}
	c := a.chunks[r>>32]
	return unsafe.String(&c[int(r>>16&0xffff)], n)
}
