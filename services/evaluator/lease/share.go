package lease

import (
	"encoding/binary"
	"hash/fnv"
	"slices"
	"sort"
)

// quota is how many partitions replica should own when the (sorted,
// deduplicated) members share partitions evenly: floor(P/n) for every
// member, plus one for the first P mod n members in sorted order. The quotas
// of all members add up to P, and every member computes the same ones from
// the same member list. A replica missing from members gets 0.
func quota(replica string, members []string, partitions int) int {
	rank, ok := slices.BinarySearch(members, replica)
	if !ok {
		return 0
	}
	n := len(members)
	q := partitions / n
	if rank < partitions%n {
		q++
	}
	return q
}

// score is replica's rendezvous-hashing weight for partition p: each replica
// prefers the partitions it scores highest, so that replicas claiming at the
// same time mostly try different partitions, and a replica gives up the
// partitions it scores lowest.
func score(replica string, p int) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(replica))
	var b [9]byte
	b[0] = '/'
	binary.BigEndian.PutUint64(b[1:], uint64(p))
	_, _ = h.Write(b[:])
	// FNV's low bits mix poorly on short inputs: finish with splitmix64.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// byPreference sorts ps in place, the partitions replica prefers first
// (ties, which need a hash collision, by partition number).
func byPreference(replica string, ps []int) {
	sort.Slice(ps, func(i, j int) bool {
		si, sj := score(replica, ps[i]), score(replica, ps[j])
		if si != sj {
			return si > sj
		}
		return ps[i] < ps[j]
	})
}
